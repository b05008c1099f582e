//! The mailbox tables of the redb store (`06-storage.md` §5.2): entries, the
//! listing index, the artifact-id index (which also serves de-duplication) and
//! per-mailbox counts.
//!
//! Every entry is written together with all its index entries in the caller's
//! write transaction, so an index can never disagree with the entry table. The
//! tables and key layouts are in `tables` and documented in `schema/storage.md`.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;

use redb::ReadableTable;

use crate::store::keys::{concat, instant_part, prefix_end};
use crate::store::{
    Cursor, Mailbox, MailboxEntry, NewInboxEntry, Page, PageRequest, RecordKind, StoreError,
    StoreResult,
};

use super::codec;
use super::error::database_error;
use super::tables::{
    Bytes, COUNTERS, LISTING_SORT_LEN, MAILBOX_ARTIFACT, MAILBOX_COUNT, MAILBOX_ENTRY,
    MAILBOX_LISTING, SEQ_ENTRY, artifact_digest, owner_prefix, trailing_entry_id,
};
use super::{RedbStore, Snapshot, WriteBatch};

fn read_entry(
    table: &impl ReadableTable<u64, Bytes>,
    path: &Path,
    entry_id: u64,
) -> StoreResult<Option<MailboxEntry>> {
    let found = table
        .get(entry_id)
        .map_err(|error| database_error(path, error))?;
    found
        .map(|guard| codec::decode_entry("mailbox_entry", entry_id, guard.value()))
        .transpose()
}

/// The entries under `digest` in the artifact index that belong to
/// (`owner_lower`, `mailbox`) and hold `artifact_id` (exact), in entry-id order.
fn entries_under_digest(
    index: &impl ReadableTable<Bytes, ()>,
    entries: &impl ReadableTable<u64, Bytes>,
    path: &Path,
    digest: &[u8; 16],
    owner_lower: &str,
    mailbox: Mailbox,
    artifact_id: &str,
) -> StoreResult<Vec<MailboxEntry>> {
    let error = |e: redb::StorageError| database_error(path, e);
    let end = prefix_end(digest);
    let bounds = (
        Bound::Included(digest.as_slice()),
        end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
    );
    let mut found = Vec::new();
    for item in index.range::<&[u8]>(bounds).map_err(error)? {
        let (key, _) = item.map_err(error)?;
        let entry_id = trailing_entry_id("mailbox_artifact", key.value())?;
        let entry = read_entry(entries, path, entry_id)?.ok_or_else(|| StoreError::Decode {
            table: "mailbox_artifact",
            detail: format!("index entry without an entry: {entry_id}"),
        })?;
        if entry.mailbox == mailbox
            && entry.artifact_id == artifact_id
            && entry.owner.to_lowercase() == owner_lower
        {
            found.push(entry);
        }
    }
    Ok(found)
}

/// The entries of (`owner` case-insensitive, `mailbox`) whose artifact id is
/// `artifact_id` (exact), in entry-id order.
pub(super) fn entries_by_artifact(
    index: &impl ReadableTable<Bytes, ()>,
    entries: &impl ReadableTable<u64, Bytes>,
    path: &Path,
    owner: &str,
    mailbox: Mailbox,
    artifact_id: &str,
) -> StoreResult<Vec<MailboxEntry>> {
    let digest = artifact_digest(owner, mailbox, artifact_id);
    let owner = owner.to_lowercase();
    entries_under_digest(index, entries, path, &digest, &owner, mailbox, artifact_id)
}

/// The de-duplication check: the inbox entry of `to` holding the artifact
/// `artifact_id` (exact) from `from` (case-insensitive), if any.
fn read_dedup(
    index: &impl ReadableTable<Bytes, ()>,
    entries: &impl ReadableTable<u64, Bytes>,
    path: &Path,
    to: &str,
    from: &str,
    artifact_id: &str,
) -> StoreResult<Option<u64>> {
    let digest = artifact_digest(to, Mailbox::Inbox, artifact_id);
    let (to, from) = (to.to_lowercase(), from.to_lowercase());
    dedup_under_digest(index, entries, path, &digest, &to, &from, artifact_id)
}

fn dedup_under_digest(
    index: &impl ReadableTable<Bytes, ()>,
    entries: &impl ReadableTable<u64, Bytes>,
    path: &Path,
    digest: &[u8; 16],
    to_lower: &str,
    from_lower: &str,
    artifact_id: &str,
) -> StoreResult<Option<u64>> {
    let found = entries_under_digest(
        index,
        entries,
        path,
        digest,
        to_lower,
        Mailbox::Inbox,
        artifact_id,
    )?;
    Ok(found
        .into_iter()
        .find(|entry| entry.from.to_lowercase() == from_lower)
        .map(|entry| entry.entry_id))
}

/// An inbound inbox entry made ready for its write transaction on any thread:
/// validated, encoded, its index keys computed. The group-commit thread then only
/// checks for a duplicate and inserts bytes.
#[derive(Clone, Debug)]
pub struct PreparedInboxEntry {
    /// `str(lower(owner)) ++ inbox`: the listing prefix and the count key.
    owner_prefix: Vec<u8>,
    to_lower: String,
    from_lower: String,
    artifact_id: String,
    at_millis: i64,
    digest: [u8; 16],
    /// The encoded entry (`0x01 ++ postcard(EntryV1)`).
    value: Vec<u8>,
    /// The writer (serial number) and its entry counter when this entry was last
    /// found not to be a duplicate: while both are unchanged, inserting it needs no
    /// second look-up.
    checked: Cell<Option<(u64, u64)>>,
}

impl NewInboxEntry {
    /// Validates and encodes the entry for [`InboxWriter::insert_prepared`].
    pub fn prepare(self) -> StoreResult<PreparedInboxEntry> {
        self.validate().map_err(|reason| StoreError::Invalid {
            kind: RecordKind::MailboxEntry,
            reason,
        })?;
        // The entry id is the table key, not part of the value.
        let entry = self.into_entry(0);
        Ok(PreparedInboxEntry {
            owner_prefix: owner_prefix(&entry.owner, entry.mailbox),
            to_lower: entry.to.to_lowercase(),
            from_lower: entry.from.to_lowercase(),
            digest: artifact_digest(&entry.owner, entry.mailbox, &entry.artifact_id),
            at_millis: entry.at_millis,
            value: codec::encode_entry(&entry),
            artifact_id: entry.artifact_id,
            checked: Cell::new(None),
        })
    }
}

impl RedbStore {
    /// [`WriteBatch::insert_inbox`] in a transaction of its own.
    pub fn insert_inbox(&self, entry: NewInboxEntry) -> StoreResult<u64> {
        self.write(|batch| batch.insert_inbox(entry))
    }

    /// The entry `entry_id`, if any.
    pub fn mailbox_entry(&self, entry_id: u64) -> StoreResult<Option<MailboxEntry>> {
        self.read(|snapshot| snapshot.mailbox_entry(entry_id))
    }
}

impl Snapshot<'_> {
    /// The de-duplication index: the entry that stored the artifact `artifact_id`
    /// (exact) from `from` to `to` (both case-insensitive), if any.
    pub fn inbound_duplicate(
        &self,
        to: &str,
        from: &str,
        artifact_id: &str,
    ) -> StoreResult<Option<u64>> {
        let error = |e| database_error(self.path, e);
        let index = self.txn.open_table(MAILBOX_ARTIFACT).map_err(error)?;
        let entries = self.txn.open_table(MAILBOX_ENTRY).map_err(error)?;
        read_dedup(&index, &entries, self.path, to, from, artifact_id)
    }

    /// The entry `entry_id`, if any.
    pub fn mailbox_entry(&self, entry_id: u64) -> StoreResult<Option<MailboxEntry>> {
        let table = self
            .txn
            .open_table(MAILBOX_ENTRY)
            .map_err(|e| database_error(self.path, e))?;
        read_entry(&table, self.path, entry_id)
    }

    /// Entries of (`owner` case-insensitive, `mailbox`) ordered by (`at`, entry id),
    /// newest first when `newest_first`.
    ///
    /// The cursor is the (`at`, entry id) of the last entry returned and the next
    /// page starts strictly after it in the chosen direction, so entries added
    /// meanwhile never make a page repeat or skip an entry that existed before.
    pub fn list_mailbox(
        &self,
        owner: &str,
        mailbox: Mailbox,
        page: &PageRequest,
        newest_first: bool,
    ) -> StoreResult<Page<MailboxEntry>> {
        let error = |e: redb::Error| database_error(self.path, e);
        let prefix = owner_prefix(owner, mailbox);
        let after = match &page.after {
            Some(cursor) if cursor.0.len() != LISTING_SORT_LEN => {
                return Err(StoreError::InvalidCursor);
            }
            Some(cursor) => Some(concat(&[&prefix, &cursor.0])),
            None => None,
        };
        let prefix_bound = Bound::Included(prefix.clone());
        let end_bound = prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        let (start, end) = match (after, newest_first) {
            (None, _) => (prefix_bound, end_bound),
            (Some(after), false) => (Bound::Excluded(after), end_bound),
            (Some(after), true) => (prefix_bound, Bound::Excluded(after)),
        };
        let bounds = (
            start.as_ref().map(Vec::as_slice),
            end.as_ref().map(Vec::as_slice),
        );
        let index = self
            .txn
            .open_table(MAILBOX_LISTING)
            .map_err(|e| error(e.into()))?;
        let range = index.range::<&[u8]>(bounds).map_err(|e| error(e.into()))?;
        let entries: Box<dyn Iterator<Item = _>> = if newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let limit = page.effective_limit();
        let mut sorts = Vec::new();
        let mut more = false;
        for entry in entries {
            let (key, ()) = entry
                .map(|(key, value)| (key, value.value()))
                .map_err(|e| error(e.into()))?;
            if sorts.len() == limit {
                more = true;
                break;
            }
            sorts.push(key.value().get(prefix.len()..).unwrap_or_default().to_vec());
        }
        let table = self
            .txn
            .open_table(MAILBOX_ENTRY)
            .map_err(|e| error(e.into()))?;
        let items = sorts
            .iter()
            .map(|sort| {
                let entry_id = trailing_entry_id("mailbox_listing", sort)?;
                read_entry(&table, self.path, entry_id)?.ok_or_else(|| StoreError::Decode {
                    table: "mailbox_listing",
                    detail: format!("index entry without an entry: {entry_id}"),
                })
            })
            .collect::<StoreResult<_>>()?;
        let next = if more {
            sorts.last().map(|last| Cursor(last.clone()))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Number of entries of (`owner` case-insensitive, `mailbox`), from the counts table.
    pub fn mailbox_count(&self, owner: &str, mailbox: Mailbox) -> StoreResult<u64> {
        let table = self
            .txn
            .open_table(MAILBOX_COUNT)
            .map_err(|e| database_error(self.path, e))?;
        let key = owner_prefix(owner, mailbox);
        let found = table
            .get(key.as_slice())
            .map_err(|e| database_error(self.path, e))?;
        Ok(found.map_or(0, |guard| guard.value()))
    }

    /// Entries of (`owner`, `mailbox`) whose artifact id is `artifact_id` (exact),
    /// in entry-id order. Usually one; two senders may use the same id.
    pub fn mailbox_entries_by_artifact(
        &self,
        owner: &str,
        mailbox: Mailbox,
        artifact_id: &str,
    ) -> StoreResult<Vec<MailboxEntry>> {
        let error = |e| database_error(self.path, e);
        let index = self.txn.open_table(MAILBOX_ARTIFACT).map_err(error)?;
        let entries = self.txn.open_table(MAILBOX_ENTRY).map_err(error)?;
        entries_by_artifact(&index, &entries, self.path, owner, mailbox, artifact_id)
    }
}

impl WriteBatch<'_> {
    /// The de-duplication index as this transaction sees it
    /// (see [`Snapshot::inbound_duplicate`]).
    pub fn inbound_duplicate(
        &self,
        to: &str,
        from: &str,
        artifact_id: &str,
    ) -> StoreResult<Option<u64>> {
        let error = |e| database_error(self.path, e);
        let index = self.txn.open_table(MAILBOX_ARTIFACT).map_err(error)?;
        let entries = self.txn.open_table(MAILBOX_ENTRY).map_err(error)?;
        read_dedup(&index, &entries, self.path, to, from, artifact_id)
    }

    /// The entry `entry_id` as this transaction sees it.
    pub fn mailbox_entry(&self, entry_id: u64) -> StoreResult<Option<MailboxEntry>> {
        let table = self
            .txn
            .open_table(MAILBOX_ENTRY)
            .map_err(|e| database_error(self.path, e))?;
        read_entry(&table, self.path, entry_id)
    }

    /// Stores an accepted inbound artifact as a new, unseen inbox entry of its owner
    /// and returns its entry id: a fresh id from the counter (strictly increasing,
    /// never reused), the entry, its listing and artifact-id index entries and the
    /// mailbox count, all in this transaction.
    ///
    /// Fails with `AlreadyExists` (naming the stored entry id) when the inbox of
    /// `to` already holds `artifact_id` from `from`: callers
    /// check [`WriteBatch::inbound_duplicate`] first and answer a re-delivery
    /// without storing it again.
    pub fn insert_inbox(&mut self, entry: NewInboxEntry) -> StoreResult<u64> {
        self.with_inbox(|_, inbox| inbox.insert(entry))
    }
}

impl<'t> WriteBatch<'t> {
    /// Runs `work` with the mailbox tables of this transaction opened once for many
    /// inbox entries (group commit), then writes the entry counter and the mailbox
    /// counts. While `work` runs, the other mailbox methods of the batch cannot open
    /// those tables: use the writer's. An error from `work` is returned as is (and
    /// aborts the transaction, as every error of [`RedbStore::write`] does).
    pub fn with_inbox<T>(
        &mut self,
        work: impl FnOnce(&mut Self, &mut InboxWriter<'t>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut inbox = self.inbox_writer()?;
        let value = work(self, &mut inbox)?;
        inbox.finish()?;
        Ok(value)
    }

    fn inbox_writer(&self) -> StoreResult<InboxWriter<'t>> {
        let (txn, path) = (self.txn, self.path);
        let error = |e: redb::TableError| database_error(path, e);
        let next_entry = {
            let counters = txn.open_table(COUNTERS).map_err(error)?;
            counters
                .get(SEQ_ENTRY)
                .map_err(|e| database_error(path, e))?
                .map_or(0, |guard| guard.value())
        };
        Ok(InboxWriter {
            txn,
            path,
            entries: txn.open_table(MAILBOX_ENTRY).map_err(error)?,
            listing: txn.open_table(MAILBOX_LISTING).map_err(error)?,
            by_artifact: txn.open_table(MAILBOX_ARTIFACT).map_err(error)?,
            serial: WRITER_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            first_entry: next_entry,
            next_entry,
            added: HashMap::new(),
        })
    }
}

/// The mailbox tables opened for a run of inbox inserts in one write transaction.
///
/// Entry ids come from the transaction's counter, and the per-mailbox counts are
/// added up in memory; [`WriteBatch::with_inbox`] writes both when its work is done.
pub struct InboxWriter<'t> {
    txn: &'t redb::WriteTransaction,
    path: &'t Path,
    entries: redb::Table<'t, u64, Bytes>,
    listing: redb::Table<'t, Bytes, ()>,
    by_artifact: redb::Table<'t, Bytes, ()>,
    /// This writer's serial number ([`WRITER_SERIAL`]).
    serial: u64,
    first_entry: u64,
    next_entry: u64,
    /// Entries added per mailbox (key: the owner prefix).
    added: HashMap<Vec<u8>, u64>,
}

/// Serial numbers of [`InboxWriter`]s, so that a duplicate check made by one writer
/// is never taken for another's.
static WRITER_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl InboxWriter<'_> {
    /// [`WriteBatch::inbound_duplicate`], including the entries of this writer.
    pub fn duplicate(&self, to: &str, from: &str, artifact_id: &str) -> StoreResult<Option<u64>> {
        read_dedup(
            &self.by_artifact,
            &self.entries,
            self.path,
            to,
            from,
            artifact_id,
        )
    }

    /// [`InboxWriter::duplicate`] for a prepared entry. When it is not a duplicate,
    /// the entry remembers it, so that inserting it next skips the look-up.
    pub fn duplicate_of(&self, entry: &PreparedInboxEntry) -> StoreResult<Option<u64>> {
        let found = dedup_under_digest(
            &self.by_artifact,
            &self.entries,
            self.path,
            &entry.digest,
            &entry.to_lower,
            &entry.from_lower,
            &entry.artifact_id,
        )?;
        entry
            .checked
            .set(found.is_none().then_some((self.serial, self.next_entry)));
        Ok(found)
    }

    /// [`WriteBatch::insert_inbox`] through the open tables.
    pub fn insert(&mut self, entry: NewInboxEntry) -> StoreResult<u64> {
        self.insert_prepared(&entry.prepare()?)
    }

    /// [`InboxWriter::insert`] of an entry prepared beforehand. The duplicate check
    /// is repeated unless this writer made it and has inserted nothing since.
    pub fn insert_prepared(&mut self, entry: &PreparedInboxEntry) -> StoreResult<u64> {
        if entry.checked.get() != Some((self.serial, self.next_entry))
            && let Some(existing) = self.duplicate_of(entry)?
        {
            return Err(StoreError::AlreadyExists {
                kind: RecordKind::MailboxEntry,
                id: existing.to_string(),
            });
        }
        let entry_id = self.next_entry + 1;
        let path = self.path;
        let error = |e: redb::StorageError| database_error(path, e);
        self.entries
            .insert(entry_id, entry.value.as_slice())
            .map_err(error)?;
        let listing = concat(&[
            &entry.owner_prefix,
            &instant_part(entry.at_millis),
            &entry_id.to_be_bytes(),
        ]);
        self.listing.insert(listing.as_slice(), ()).map_err(error)?;
        let mut key = [0u8; 24];
        key[..16].copy_from_slice(&entry.digest);
        key[16..].copy_from_slice(&entry_id.to_be_bytes());
        self.by_artifact.insert(key.as_slice(), ()).map_err(error)?;
        match self.added.get_mut(&entry.owner_prefix) {
            Some(added) => *added += 1,
            None => {
                self.added.insert(entry.owner_prefix.clone(), 1);
            }
        }
        self.next_entry = entry_id;
        Ok(entry_id)
    }

    /// Writes the entry counter and the mailbox counts and closes the tables.
    fn finish(self) -> StoreResult<()> {
        if self.next_entry == self.first_entry {
            return Ok(());
        }
        let InboxWriter {
            txn,
            path,
            next_entry,
            added,
            ..
        } = self;
        let error = |e: redb::Error| database_error(path, e);
        let mut counters = txn.open_table(COUNTERS).map_err(|e| error(e.into()))?;
        counters
            .insert(SEQ_ENTRY, next_entry)
            .map_err(|e| error(e.into()))?;
        let mut counts = txn.open_table(MAILBOX_COUNT).map_err(|e| error(e.into()))?;
        for (key, added) in added {
            let current = counts
                .get(key.as_slice())
                .map_err(|e| error(e.into()))?
                .map_or(0, |guard| guard.value());
            counts
                .insert(key.as_slice(), current + added)
                .map_err(|e| error(e.into()))?;
        }
        Ok(())
    }
}

impl PreparedInboxEntry {
    /// The entry as it will be stored under `entry_id`, decoded from its encoding:
    /// what a backend other than redb stores.
    pub fn to_entry(&self, entry_id: u64) -> StoreResult<MailboxEntry> {
        codec::decode_entry("prepared entry", entry_id, &self.value)
    }

    /// The receiver (the inbox owner), lower-cased.
    pub fn to_lowercase_receiver(&self) -> &str {
        &self.to_lower
    }

    /// The sender, lower-cased.
    pub fn to_lowercase_sender(&self) -> &str {
        &self.from_lower
    }

    /// The artifact's `id`, exact.
    pub fn artifact_id(&self) -> &str {
        &self.artifact_id
    }
}

impl Snapshot<'_> {
    /// Inbox entries (of every owner) with an entry id greater than `after`, in
    /// entry-id order, at most `limit`.
    pub fn inbox_after(&self, after: u64, limit: usize) -> StoreResult<Vec<MailboxEntry>> {
        let error = |e: redb::Error| database_error(self.path, e);
        let table = self
            .txn
            .open_table(MAILBOX_ENTRY)
            .map_err(|e| error(e.into()))?;
        let mut entries = Vec::new();
        let range = table
            .range(after.saturating_add(1)..)
            .map_err(|e| error(e.into()))?;
        for item in range {
            let (key, value) = item.map_err(|e| error(e.into()))?;
            let entry = codec::decode_entry("mailbox_entry", key.value(), value.value())?;
            if entry.mailbox == Mailbox::Inbox {
                entries.push(entry);
                if entries.len() >= limit {
                    break;
                }
            }
        }
        Ok(entries)
    }
}
