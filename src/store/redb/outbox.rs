//! Mailbox entries written one at a time (inserted in any mailbox, rewritten,
//! removed) and the outbox's own indexes (`08-delivery.md` §5): the delivery
//! schedule, the per-(owner, receiver) queue and the queue order.
//!
//! Every change keeps the entry table and all its indexes — the listing, the
//! artifact-id index, the per-mailbox counts and, for outbox entries, the three
//! outbox indexes — in step inside the caller's write transaction. Inbound
//! artifacts take the faster path of [`super::InboxWriter`]; what is written here
//! is what the delivery worker, the operator and agents change.

use std::ops::Bound;

use redb::{ReadableTable, ReadableTableMetadata};

use crate::store::keys::{concat, instant_part, prefix_end, string_part};
use crate::store::{
    Cursor, Mailbox, MailboxEntry, OutboxStats, Page, PageRequest, RecordKind, StoreError,
    StoreResult, Timestamp,
};

use super::codec;
use super::error::database_error;
use super::tables::{
    MAILBOX_ARTIFACT, MAILBOX_COUNT, MAILBOX_ENTRY, MAILBOX_LISTING, OUTBOX_DUE, OUTBOX_ORDER,
    OUTBOX_PAIR, SEQ_ENTRY, artifact_key, owner_prefix, trailing_entry_id,
};
use super::{Snapshot, WriteBatch};

/// `instant(due) ++ u64be(entry_id)`: the entry's key in [`OUTBOX_DUE`].
fn due_key(entry: &MailboxEntry) -> Vec<u8> {
    concat(&[
        &instant_part(entry.due_millis()),
        &entry.entry_id.to_be_bytes(),
    ])
}

/// `str(lower(owner)) ++ str(lower(to))`: the queue of one (owner, receiver) pair.
fn pair_prefix(owner: &str, to: &str) -> Vec<u8> {
    concat(&[
        &string_part(&owner.to_lowercase()),
        &string_part(&to.to_lowercase()),
    ])
}

fn pair_key(entry: &MailboxEntry) -> Vec<u8> {
    concat(&[
        &pair_prefix(&entry.owner, &entry.to),
        &entry.entry_id.to_be_bytes(),
    ])
}

fn listing_key(entry: &MailboxEntry) -> Vec<u8> {
    concat(&[
        &owner_prefix(&entry.owner, entry.mailbox),
        &instant_part(entry.at_millis),
        &entry.entry_id.to_be_bytes(),
    ])
}

impl WriteBatch<'_> {
    /// Stores `entry` under a fresh entry id (strictly increasing, never reused;
    /// the id it carries is ignored) with all its index entries; returns the id.
    ///
    /// Unlike [`WriteBatch::insert_inbox`] there is no de-duplication: this is for
    /// entries the server makes itself (outbox entries, delivery-failure notices,
    /// drafts), whose ids are fresh.
    pub fn insert_entry(&mut self, mut entry: MailboxEntry) -> StoreResult<u64> {
        entry.entry_id = self.next_seq(SEQ_ENTRY)? + 1;
        self.index_entry(&entry, 1)?;
        self.put_entry_value(&entry)?;
        Ok(entry.entry_id)
    }

    /// Stores `entry` under its own id, with all its index entries, and moves the
    /// entry-id counter past it (`btps migrate` copying a database). Fails with
    /// `AlreadyExists` when the id is taken.
    pub fn put_entry(&mut self, entry: &MailboxEntry) -> StoreResult<()> {
        if self.mailbox_entry(entry.entry_id)?.is_some() {
            return Err(StoreError::AlreadyExists {
                kind: RecordKind::MailboxEntry,
                id: entry.entry_id.to_string(),
            });
        }
        {
            let mut counters = self
                .txn
                .open_table(super::tables::COUNTERS)
                .map_err(|e| self.error(e))?;
            let current = counters
                .get(SEQ_ENTRY)
                .map_err(|e| self.error(e))?
                .map_or(0, |guard| guard.value());
            if entry.entry_id > current {
                counters
                    .insert(SEQ_ENTRY, entry.entry_id)
                    .map_err(|e| self.error(e))?;
            }
        }
        self.index_entry(entry, 1)?;
        self.put_entry_value(entry)
    }

    /// Replaces the stored entry with the same id by `entry` — its mailbox, time,
    /// meta or bytes may have changed — and moves its index entries accordingly.
    /// Fails with `NotFound` when there is no such entry.
    pub fn update_entry(&mut self, entry: &MailboxEntry) -> StoreResult<()> {
        let old = self
            .mailbox_entry(entry.entry_id)?
            .ok_or_else(|| StoreError::NotFound {
                kind: RecordKind::MailboxEntry,
                id: entry.entry_id.to_string(),
            })?;
        self.unindex_entry(&old)?;
        self.index_entry(entry, 1)?;
        self.put_entry_value(entry)
    }

    /// Removes the entry and its index entries; the removed entry, if there was one.
    pub fn remove_entry(&mut self, entry_id: u64) -> StoreResult<Option<MailboxEntry>> {
        let Some(old) = self.mailbox_entry(entry_id)? else {
            return Ok(None);
        };
        self.unindex_entry(&old)?;
        let mut entries = self
            .txn
            .open_table(MAILBOX_ENTRY)
            .map_err(|e| self.error(e))?;
        entries.remove(entry_id).map_err(|e| self.error(e))?;
        Ok(Some(old))
    }

    /// Claims up to `limit` outbox entries due at `now` for delivery until
    /// `lease_until`, oldest due first. The schedule holds only the first entry of
    /// each (owner, receiver) queue, so a pair's artifacts are attempted in the
    /// order they were queued. An entry whose claim has run out is due again.
    pub fn claim_due(
        &mut self,
        now: &Timestamp,
        lease_until: &Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<MailboxEntry>> {
        let mut claimed = Vec::new();
        for entry_id in self.due_ids(now.millis(), limit)? {
            let Some(mut entry) = self.mailbox_entry(entry_id)? else {
                continue;
            };
            entry.meta.in_flight_until = Some(lease_until.clone());
            self.update_entry(&entry)?;
            claimed.push(entry);
        }
        Ok(claimed)
    }

    /// Ends every claim (what a restart does: no attempt of this process survives
    /// it); each entry is due at once, its attempt count unchanged. How many.
    pub fn release_claims(&mut self, now: &Timestamp) -> StoreResult<u64> {
        // A held entry is at the head of its queue, scheduled at its claim's end.
        let mut held = Vec::new();
        {
            let due = self.txn.open_table(OUTBOX_DUE).map_err(|e| self.error(e))?;
            let start = concat(&[&instant_part(now.millis()), &0u64.to_be_bytes()]);
            for item in due
                .range::<&[u8]>(start.as_slice()..)
                .map_err(|e| self.error(e))?
            {
                let (key, _) = item.map_err(|e| self.error(e))?;
                held.push(trailing_entry_id("outbox_due", key.value())?);
            }
        }
        let mut released = 0;
        for entry_id in held {
            let Some(mut entry) = self.mailbox_entry(entry_id)? else {
                continue;
            };
            if entry.meta.in_flight_until.take().is_some() {
                entry.meta.next_attempt_at = Some(now.clone());
                self.update_entry(&entry)?;
                released += 1;
            }
        }
        Ok(released)
    }

    /// Up to `limit` entry ids in the schedule due at or before `now_millis`, in
    /// due order.
    fn due_ids(&self, now_millis: i64, limit: usize) -> StoreResult<Vec<u64>> {
        let due = self.txn.open_table(OUTBOX_DUE).map_err(|e| self.error(e))?;
        let end = concat(&[&instant_part(now_millis), &u64::MAX.to_be_bytes()]);
        let mut ids = Vec::new();
        for item in due
            .range::<&[u8]>(..=end.as_slice())
            .map_err(|e| self.error(e))?
        {
            let (key, ()) = item
                .map(|(key, value)| (key, value.value()))
                .map_err(|e| self.error(e))?;
            ids.push(trailing_entry_id("outbox_due", key.value())?);
            if ids.len() >= limit {
                break;
            }
        }
        Ok(ids)
    }

    /// The first (oldest) entry of a pair's queue after entry id `after` (0: the
    /// head of the queue).
    fn pair_first_after(&self, pair: &[u8], after: u64) -> StoreResult<Option<u64>> {
        let table = self
            .txn
            .open_table(OUTBOX_PAIR)
            .map_err(|e| self.error(e))?;
        let start = concat(&[pair, &after.saturating_add(1).to_be_bytes()]);
        let end = prefix_end(pair);
        let bounds = (
            Bound::Included(start.as_slice()),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        let mut range = table.range::<&[u8]>(bounds).map_err(|e| self.error(e))?;
        match range.next() {
            Some(item) => {
                let (key, _) = item.map_err(|e| self.error(e))?;
                trailing_entry_id("outbox_pair", key.value()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn put_entry_value(&self, entry: &MailboxEntry) -> StoreResult<()> {
        let mut entries = self
            .txn
            .open_table(MAILBOX_ENTRY)
            .map_err(|e| self.error(e))?;
        entries
            .insert(entry.entry_id, codec::encode_entry(entry).as_slice())
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Adds (`delta` = 1) the entry's index entries and count.
    fn index_entry(&self, entry: &MailboxEntry, delta: i64) -> StoreResult<()> {
        let error = |e: redb::Error| database_error(self.path, e);
        let mut listing = self
            .txn
            .open_table(MAILBOX_LISTING)
            .map_err(|e| error(e.into()))?;
        listing
            .insert(listing_key(entry).as_slice(), ())
            .map_err(|e| error(e.into()))?;
        let mut by_artifact = self
            .txn
            .open_table(MAILBOX_ARTIFACT)
            .map_err(|e| error(e.into()))?;
        by_artifact
            .insert(artifact_key(entry).as_slice(), ())
            .map_err(|e| error(e.into()))?;
        self.add_count(entry, delta)?;
        if entry.mailbox == Mailbox::Outbox {
            self.index_outbox(entry)?;
        }
        Ok(())
    }

    /// Adds an outbox entry to its pair's queue and the queue order, and to the
    /// schedule when it heads its queue (taking the former head off it).
    fn index_outbox(&self, entry: &MailboxEntry) -> StoreResult<()> {
        let pair = pair_prefix(&entry.owner, &entry.to);
        {
            let mut pairs = self
                .txn
                .open_table(OUTBOX_PAIR)
                .map_err(|e| self.error(e))?;
            pairs
                .insert(pair_key(entry).as_slice(), ())
                .map_err(|e| self.error(e))?;
            let mut order = self
                .txn
                .open_table(OUTBOX_ORDER)
                .map_err(|e| self.error(e))?;
            order
                .insert(entry.entry_id, ())
                .map_err(|e| self.error(e))?;
        }
        if self.pair_first_after(&pair, 0)? == Some(entry.entry_id) {
            if let Some(next) = self.pair_first_after(&pair, entry.entry_id)?
                && let Some(next) = self.mailbox_entry(next)?
            {
                self.schedule(&next, false)?;
            }
            self.schedule(entry, true)?;
        }
        Ok(())
    }

    /// Takes an outbox entry out of its queue, the queue order and the schedule;
    /// the next entry of its queue, if it now heads it, is scheduled.
    fn unindex_outbox(&self, entry: &MailboxEntry) -> StoreResult<()> {
        let pair = pair_prefix(&entry.owner, &entry.to);
        let was_head = self.pair_first_after(&pair, 0)? == Some(entry.entry_id);
        {
            let mut pairs = self
                .txn
                .open_table(OUTBOX_PAIR)
                .map_err(|e| self.error(e))?;
            pairs
                .remove(pair_key(entry).as_slice())
                .map_err(|e| self.error(e))?;
            let mut order = self
                .txn
                .open_table(OUTBOX_ORDER)
                .map_err(|e| self.error(e))?;
            order.remove(entry.entry_id).map_err(|e| self.error(e))?;
        }
        if was_head {
            self.schedule(entry, false)?;
            if let Some(next) = self.pair_first_after(&pair, 0)?
                && let Some(next) = self.mailbox_entry(next)?
            {
                self.schedule(&next, true)?;
            }
        }
        Ok(())
    }

    /// Puts the entry on the schedule at its due time, or takes it off.
    fn schedule(&self, entry: &MailboxEntry, on: bool) -> StoreResult<()> {
        let mut due = self.txn.open_table(OUTBOX_DUE).map_err(|e| self.error(e))?;
        let key = due_key(entry);
        if on {
            due.insert(key.as_slice(), ()).map_err(|e| self.error(e))?;
        } else {
            due.remove(key.as_slice()).map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// Removes the entry's index entries and count.
    fn unindex_entry(&self, entry: &MailboxEntry) -> StoreResult<()> {
        let error = |e: redb::Error| database_error(self.path, e);
        let mut listing = self
            .txn
            .open_table(MAILBOX_LISTING)
            .map_err(|e| error(e.into()))?;
        listing
            .remove(listing_key(entry).as_slice())
            .map_err(|e| error(e.into()))?;
        let mut by_artifact = self
            .txn
            .open_table(MAILBOX_ARTIFACT)
            .map_err(|e| error(e.into()))?;
        by_artifact
            .remove(artifact_key(entry).as_slice())
            .map_err(|e| error(e.into()))?;
        self.add_count(entry, -1)?;
        if entry.mailbox == Mailbox::Outbox {
            self.unindex_outbox(entry)?;
        }
        Ok(())
    }

    fn add_count(&self, entry: &MailboxEntry, delta: i64) -> StoreResult<()> {
        let mut counts = self
            .txn
            .open_table(MAILBOX_COUNT)
            .map_err(|e| self.error(e))?;
        let key = owner_prefix(&entry.owner, entry.mailbox);
        let current = counts
            .get(key.as_slice())
            .map_err(|e| self.error(e))?
            .map_or(0, |guard| guard.value());
        let next = current.saturating_add_signed(delta);
        if next == 0 {
            counts.remove(key.as_slice()).map_err(|e| self.error(e))?;
        } else {
            counts
                .insert(key.as_slice(), next)
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }
}

impl Snapshot<'_> {
    /// Entries of every mailbox with an entry id greater than `after`, in entry-id
    /// order, at most `limit` (`btps migrate` copying a database).
    pub fn entries_after(&self, after: u64, limit: usize) -> StoreResult<Vec<MailboxEntry>> {
        let error = |e: redb::Error| database_error(self.path, e);
        let table = self
            .txn
            .open_table(MAILBOX_ENTRY)
            .map_err(|e| error(e.into()))?;
        let mut entries = Vec::new();
        for item in table
            .range(after.saturating_add(1)..)
            .map_err(|e| error(e.into()))?
        {
            let (key, value) = item.map_err(|e| error(e.into()))?;
            entries.push(codec::decode_entry(
                "mailbox_entry",
                key.value(),
                value.value(),
            )?);
            if entries.len() >= limit {
                break;
            }
        }
        Ok(entries)
    }

    /// When the next outbox entry is due (its claim's end while one holds it), in
    /// milliseconds since the epoch; `None` when the outbox is empty.
    pub fn outbox_next_due(&self) -> StoreResult<Option<i64>> {
        let error = |e: redb::Error| database_error(self.path, e);
        let due = self
            .txn
            .open_table(OUTBOX_DUE)
            .map_err(|e| error(e.into()))?;
        let first = due.first().map_err(|e| error(e.into()))?;
        Ok(first.and_then(|(key, _)| {
            <[u8; 8]>::try_from(key.value().get(..8)?)
                .ok()
                .map(|bytes| i64::from_be_bytes(bytes) ^ i64::MIN)
        }))
    }

    /// Outbox entries in the order they were queued (entry id), of `owner` only
    /// when given; the cursor is the last entry id returned.
    pub fn list_outbox(
        &self,
        owner: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<MailboxEntry>> {
        let error = |e: redb::Error| database_error(self.path, e);
        let after = match &page.after {
            None => 0,
            Some(cursor) => <[u8; 8]>::try_from(cursor.0.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::InvalidCursor)?,
        };
        let owner = owner.map(str::to_lowercase);
        let order = self
            .txn
            .open_table(OUTBOX_ORDER)
            .map_err(|e| error(e.into()))?;
        let entries = self
            .txn
            .open_table(MAILBOX_ENTRY)
            .map_err(|e| error(e.into()))?;
        let limit = page.effective_limit();
        let mut items = Vec::new();
        let mut more = false;
        for item in order
            .range(after.saturating_add(1)..)
            .map_err(|e| error(e.into()))?
        {
            let (entry_id, ()) = item
                .map(|(key, value)| (key.value(), value.value()))
                .map_err(|e| error(e.into()))?;
            let Some(stored) = entries.get(entry_id).map_err(|e| error(e.into()))? else {
                continue;
            };
            let entry = codec::decode_entry("mailbox_entry", entry_id, stored.value())?;
            if owner
                .as_deref()
                .is_some_and(|owner| entry.owner.to_lowercase() != owner)
            {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(entry);
        }
        let next = if more {
            items
                .last()
                .map(|entry: &MailboxEntry| Cursor(entry.entry_id.to_be_bytes().to_vec()))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// How many entries the outbox holds and when the oldest was queued.
    pub fn outbox_stats(&self) -> StoreResult<OutboxStats> {
        let error = |e: redb::Error| database_error(self.path, e);
        let order = self
            .txn
            .open_table(OUTBOX_ORDER)
            .map_err(|e| error(e.into()))?;
        let entries = order.len().map_err(|e| error(e.into()))?;
        let oldest = match order.first().map_err(|e| error(e.into()))? {
            Some((key, _)) => self.mailbox_entry(key.value())?,
            None => None,
        };
        Ok(OutboxStats {
            entries,
            oldest_queued_at: oldest.and_then(|entry| entry.meta.queued_at),
        })
    }
}
