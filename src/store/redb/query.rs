//! Mailbox queries over the listing index (`07-agents-auth.md` §4.2).
//!
//! A query walks only the listing keys of one (owner, mailbox) inside its time
//! window — `str(lower(owner)) ++ mailbox ++ instant(at) ++ u64be(entry_id)` —
//! starting after the cursor's position, so its cost does not depend on the size of
//! the store or of other mailboxes:
//!
//! * without filters, a page reads `limit + 1` index keys and `limit` entries;
//!   `total` comes from the per-mailbox count (no time bounds) or from counting
//!   the window's index keys, which reads no entry;
//! * with filters (which need an entry's `from`, `to` and title), one pass over the
//!   window reads each entry once, counting matches for `total` and taking the page
//!   from those after the cursor.

use std::ops::Bound;

use crate::model::ListingPosition;
use crate::store::keys::{concat, instant_part, prefix_end};
use crate::store::{Mailbox, MailboxEntry, MailboxQuery, QueryPage, StoreError, StoreResult};

use super::Snapshot;
use super::codec;
use super::error::database_error;
use super::tables::{LISTING_SORT_LEN, MAILBOX_ENTRY, MAILBOX_LISTING, owner_prefix};

/// The listing key of a position under `prefix`.
fn listing_key(prefix: &[u8], position: ListingPosition) -> Vec<u8> {
    concat(&[
        prefix,
        &instant_part(position.at_millis),
        &position.entry_id.to_be_bytes(),
    ])
}

/// The position a listing key under a prefix of `prefix_len` bytes stands for.
fn position_of(prefix_len: usize, key: &[u8]) -> StoreResult<ListingPosition> {
    let malformed = || StoreError::Decode {
        table: "mailbox_listing",
        detail: String::from("malformed index key"),
    };
    let sort = key.get(prefix_len..).ok_or_else(malformed)?;
    if sort.len() != LISTING_SORT_LEN {
        return Err(malformed());
    }
    let instant = <[u8; 8]>::try_from(&sort[..8]).map_err(|_| malformed())?;
    let entry = <[u8; 8]>::try_from(&sort[8..]).map_err(|_| malformed())?;
    // `instant_part` flips the sign bit; flipping it back gives the value.
    let at_millis = i64::from_be_bytes((u64::from_be_bytes(instant) ^ (1 << 63)).to_be_bytes());
    Ok(ListingPosition {
        at_millis,
        entry_id: u64::from_be_bytes(entry),
    })
}

impl Snapshot<'_> {
    /// Runs `query` over the entries of (`owner` case-insensitive, `mailbox`).
    pub fn query_mailbox(
        &self,
        owner: &str,
        mailbox: Mailbox,
        query: &MailboxQuery,
    ) -> StoreResult<QueryPage> {
        let error = |e: redb::Error| database_error(self.path, e);
        let empty = QueryPage {
            items: Vec::new(),
            has_next: false,
            total: 0,
        };
        if let (Some(since), Some(until)) = (query.since, query.until)
            && since > until
        {
            return Ok(empty);
        }
        let prefix = owner_prefix(owner, mailbox);
        // The window: [since, until] inside the prefix.
        let low = match query.since {
            Some(since) => concat(&[&prefix, &instant_part(since)]),
            None => prefix.clone(),
        };
        let high = query
            .until
            .map(|until| concat(&[&prefix, &instant_part(until), &u64::MAX.to_be_bytes()]));
        let window_start = Bound::Included(low.clone());
        let window_end = match &high {
            Some(high) => Bound::Included(high.clone()),
            None => prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded),
        };
        let index = self
            .txn
            .open_table(MAILBOX_LISTING)
            .map_err(|e| error(e.into()))?;
        let entries = self
            .txn
            .open_table(MAILBOX_ENTRY)
            .map_err(|e| error(e.into()))?;
        let read = |entry_id: u64| -> StoreResult<MailboxEntry> {
            let found = entries
                .get(entry_id)
                .map_err(|e| database_error(self.path, e))?;
            let found = found.ok_or_else(|| StoreError::Decode {
                table: "mailbox_listing",
                detail: format!("index entry without an entry: {entry_id}"),
            })?;
            codec::decode_entry("mailbox_entry", entry_id, found.value())
        };
        let limit = query.effective_limit();

        if !query.filter.is_empty() {
            // One pass over the window: every entry is needed for `total` anyway.
            let range = index
                .range::<&[u8]>(as_slices(&window_start, &window_end))
                .map_err(|e| error(e.into()))?;
            let mut page = empty;
            for item in ordered(range, query.newest_first) {
                let (key, _) = item.map_err(|e| error(e.into()))?;
                let position = position_of(prefix.len(), key.value())?;
                let entry = read(position.entry_id)?;
                if !query.filter.matches(&entry) {
                    continue;
                }
                page.total += 1;
                if !query.is_after_cursor(position) {
                    continue;
                }
                if page.items.len() < limit {
                    page.items.push(entry);
                } else {
                    page.has_next = true;
                }
            }
            return Ok(page);
        }

        // No filter: the page starts at the cursor and reads `limit + 1` keys.
        let (mut start, mut end) = (window_start.clone(), window_end.clone());
        if let Some(after) = query.after {
            let cursor = listing_key(&prefix, after);
            if query.newest_first {
                if high.as_ref().is_none_or(|high| cursor <= *high) {
                    end = Bound::Excluded(cursor);
                }
            } else if cursor >= low {
                start = Bound::Excluded(cursor);
            }
        }
        let mut items = Vec::new();
        let mut has_next = false;
        let range = index
            .range::<&[u8]>(as_slices(&start, &end))
            .map_err(|e| error(e.into()))?;
        for item in ordered(range, query.newest_first) {
            let (key, _) = item.map_err(|e| error(e.into()))?;
            if items.len() == limit {
                has_next = true;
                break;
            }
            let position = position_of(prefix.len(), key.value())?;
            items.push(read(position.entry_id)?);
        }
        let total = if query.since.is_none() && query.until.is_none() {
            self.mailbox_count(owner, mailbox)?
        } else {
            let range = index
                .range::<&[u8]>(as_slices(&window_start, &window_end))
                .map_err(|e| error(e.into()))?;
            let mut count = 0u64;
            for item in range {
                item.map_err(|e| error(e.into()))?;
                count += 1;
            }
            count
        };
        Ok(QueryPage {
            items,
            has_next,
            total,
        })
    }
}

fn as_slices<'b>(
    start: &'b Bound<Vec<u8>>,
    end: &'b Bound<Vec<u8>>,
) -> (Bound<&'b [u8]>, Bound<&'b [u8]>) {
    (
        start.as_ref().map(Vec::as_slice),
        end.as_ref().map(Vec::as_slice),
    )
}

/// The range in the query's order.
fn ordered<'r, I: DoubleEndedIterator + 'r>(
    range: I,
    newest_first: bool,
) -> Box<dyn Iterator<Item = I::Item> + 'r> {
    if newest_first {
        Box::new(range.rev())
    } else {
        Box::new(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_keys() {
        let prefix = owner_prefix("a$b.c", Mailbox::Inbox);
        for position in [
            ListingPosition {
                at_millis: 1_700_000_000_000,
                entry_id: 42,
            },
            ListingPosition {
                at_millis: -5,
                entry_id: u64::MAX,
            },
        ] {
            let key = listing_key(&prefix, position);
            assert_eq!(position_of(prefix.len(), &key).unwrap(), position);
        }
        assert!(position_of(prefix.len(), &prefix).is_err());
    }
}
