//! The outbox's queue (`08-delivery.md` §5) for several nodes on one database.
//!
//! Each outbox row carries `due_at` (`MailboxEntry::due_millis`: the end of its
//! claim while one holds it, else its next attempt) and `queue_head`, set on the
//! oldest entry of each (owner, receiver) pair only. The schedule is the partial
//! index on `(due_at, entry_id)` of queue heads, so a claim reads exactly what it
//! returns however long the queues are, as the redb backend's schedule table does.
//!
//! Claims lock the due heads with `FOR UPDATE SKIP LOCKED`, so two nodes claiming
//! at once get different entries, and write the lease (`in_flight_until`, the new
//! `due_at`) and the claiming node (`claimed_by`) in the same transaction. A
//! node that dies leaves its claims to run out: then they are due again for any
//! node. `queue_head` changes only inside transactions that hold the entry-id
//! counter's lock (`transaction.rs`), so two of them never race on one pair.

use std::sync::Arc;

use deadpool_postgres::ClientWrapper;

use super::entries::{ENTRY_COLUMNS, ENTRY_COLUMNS_E, decode_entry, encode_meta, id_column};
use super::records::{execute, rows};
use super::{Db, Parts};
use crate::store::contract::{OutboxStats, OutboxStore};
use crate::store::{
    BoxFuture, Cursor, MailboxEntry, Page, PageRequest, StoreError, StoreResult, Timestamp,
};

/// Marks the oldest outbox entry of (owner, receiver) as its queue's head, and
/// only it.
pub(crate) async fn requeue(
    client: &ClientWrapper,
    parts: &Parts,
    owner: &str,
    to: &str,
) -> StoreResult<()> {
    let owner = owner.to_lowercase();
    let to = to.to_lowercase();
    execute(
        client,
        &parts.errors,
        "WITH head AS (
             SELECT min(entry_id) AS id FROM btps_entries
             WHERE mailbox = 1 AND owner_lc = $1 AND to_lc = $2),
         marked AS (
             SELECT entry_id FROM btps_entries
             WHERE mailbox = 1 AND queue_head AND owner_lc = $1 AND to_lc = $2
             UNION SELECT id FROM head WHERE id IS NOT NULL)
         UPDATE btps_entries e SET queue_head = (e.entry_id = (SELECT id FROM head))
         WHERE e.entry_id IN (SELECT entry_id FROM marked)
           AND e.queue_head IS DISTINCT FROM (e.entry_id = (SELECT id FROM head))",
        &[&owner, &to],
    )
    .await?;
    Ok(())
}

/// [`OutboxStore`] on the database.
#[derive(Clone)]
pub(crate) struct PgOutbox {
    pub(crate) db: Arc<Db>,
}

impl OutboxStore for PgOutbox {
    fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<MailboxEntry>>> {
        let parts = self.db.parts();
        Box::pin(self.db.run(async move {
            parts
                .in_transaction(|client, parts| async move {
                    let sql = format!(
                        "SELECT {ENTRY_COLUMNS} FROM btps_entries
                         WHERE mailbox = 1 AND queue_head AND due_at <= $1
                         ORDER BY due_at, entry_id LIMIT $2
                         FOR UPDATE SKIP LOCKED"
                    );
                    let found = rows(
                        &client,
                        &parts.errors,
                        &sql,
                        &[&now.millis(), &i64::from(limit)],
                    )
                    .await?;
                    let mut claimed = Vec::with_capacity(found.len());
                    let mut ids = Vec::with_capacity(found.len());
                    let mut metas = Vec::with_capacity(found.len());
                    for row in &found {
                        let mut entry = decode_entry(&parts.errors, row)?;
                        entry.meta.in_flight_until = Some(lease_until.clone());
                        ids.push(id_column(entry.entry_id)?);
                        metas.push(encode_meta(&entry.meta));
                        claimed.push(entry);
                    }
                    if !ids.is_empty() {
                        execute(
                            &client,
                            &parts.errors,
                            "UPDATE btps_entries e SET meta = u.meta, due_at = $3, claimed_by = $4
                             FROM unnest($1::bigint[], $2::text[]) AS u(id, meta)
                             WHERE e.entry_id = u.id",
                            &[&ids, &metas, &lease_until.millis(), &parts.node.as_ref()],
                        )
                        .await?;
                    }
                    Ok(claimed)
                })
                .await
        }))
    }

    fn release_claims(&self, now: Timestamp) -> BoxFuture<'_, StoreResult<u64>> {
        let parts = self.db.parts();
        Box::pin(self.db.run(async move {
            parts
                .in_transaction(|client, parts| async move {
                    let sql = format!(
                        "SELECT {ENTRY_COLUMNS} FROM btps_entries
                         WHERE mailbox = 1 AND claimed_by = $1 FOR UPDATE"
                    );
                    let found = rows(&client, &parts.errors, &sql, &[&parts.node.as_ref()]).await?;
                    let mut ids = Vec::new();
                    let mut metas = Vec::new();
                    for row in &found {
                        let mut entry = decode_entry(&parts.errors, row)?;
                        if entry.meta.in_flight_until.take().is_some() {
                            entry.meta.next_attempt_at = Some(now.clone());
                            ids.push(id_column(entry.entry_id)?);
                            metas.push(encode_meta(&entry.meta));
                        }
                    }
                    execute(
                        &client,
                        &parts.errors,
                        "UPDATE btps_entries e SET meta = u.meta, due_at = $3, claimed_by = NULL
                         FROM unnest($1::bigint[], $2::text[]) AS u(id, meta)
                         WHERE e.entry_id = u.id",
                        &[&ids, &metas, &now.millis()],
                    )
                    .await?;
                    // Rows claimed but no longer in flight (cleared by hand): not ours.
                    execute(
                        &client,
                        &parts.errors,
                        "UPDATE btps_entries SET claimed_by = NULL
                         WHERE mailbox = 1 AND claimed_by = $1",
                        &[&parts.node.as_ref()],
                    )
                    .await?;
                    Ok(u64::try_from(ids.len()).unwrap_or(u64::MAX))
                })
                .await
        }))
    }

    fn next_due(&self) -> BoxFuture<'_, StoreResult<Option<i64>>> {
        let parts = self.db.parts();
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    let found = rows(
                        &client,
                        &parts.errors,
                        "SELECT due_at FROM btps_entries WHERE mailbox = 1 AND queue_head
                         ORDER BY due_at, entry_id LIMIT 1",
                        &[],
                    )
                    .await?;
                    match found.first() {
                        None => Ok(None),
                        Some(row) => row.try_get(0).map_err(|e| parts.errors.query(&e)),
                    }
                })
                .await
        }))
    }

    fn list<'a>(
        &'a self,
        owner: Option<&'a str>,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<MailboxEntry>>> {
        let parts = self.db.parts();
        let owner = owner.map(str::to_lowercase);
        Box::pin(self.db.run(async move {
            let after = match &page.after {
                None => 0,
                Some(cursor) => <[u8; 8]>::try_from(cursor.0.as_slice())
                    .ok()
                    .and_then(|bytes| i64::try_from(u64::from_be_bytes(bytes)).ok())
                    .ok_or(StoreError::InvalidCursor)?,
            };
            let limit = i64::try_from(page.effective_limit())
                .unwrap_or(i64::MAX)
                .saturating_add(1);
            parts
                .with(|client, parts| async move {
                    let found = match &owner {
                        None => {
                            let sql = format!(
                                "SELECT {ENTRY_COLUMNS} FROM btps_entries
                                 WHERE mailbox = 1 AND entry_id > $1 ORDER BY entry_id LIMIT $2"
                            );
                            rows(&client, &parts.errors, &sql, &[&after, &limit]).await?
                        }
                        Some(owner) => {
                            let sql = format!(
                                "SELECT {ENTRY_COLUMNS} FROM btps_entries
                                 WHERE mailbox = 1 AND owner_lc = $1 AND entry_id > $2
                                 ORDER BY entry_id LIMIT $3"
                            );
                            rows(&client, &parts.errors, &sql, &[owner, &after, &limit]).await?
                        }
                    };
                    let mut items = found
                        .iter()
                        .map(|row| decode_entry(&parts.errors, row))
                        .collect::<StoreResult<Vec<_>>>()?;
                    let wanted = page.effective_limit();
                    let more = items.len() > wanted;
                    items.truncate(wanted);
                    let next = if more {
                        items
                            .last()
                            .map(|entry| Cursor(entry.entry_id.to_be_bytes().to_vec()))
                    } else {
                        None
                    };
                    Ok(Page { items, next })
                })
                .await
        }))
    }

    fn stats(&self) -> BoxFuture<'_, StoreResult<OutboxStats>> {
        let parts = self.db.parts();
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    let counted = rows(
                        &client,
                        &parts.errors,
                        "SELECT coalesce(sum(entries), 0)::bigint FROM btps_counts WHERE mailbox = 1",
                        &[],
                    )
                    .await?;
                    let entries: i64 = match counted.first() {
                        Some(row) => row.try_get(0).map_err(|e| parts.errors.query(&e))?,
                        None => 0,
                    };
                    let sql = format!(
                        "SELECT {ENTRY_COLUMNS_E} FROM btps_entries e
                         WHERE e.mailbox = 1 ORDER BY e.entry_id LIMIT 1"
                    );
                    let oldest = rows(&client, &parts.errors, &sql, &[]).await?;
                    let oldest = oldest
                        .first()
                        .map(|row| decode_entry(&parts.errors, row))
                        .transpose()?;
                    Ok(OutboxStats {
                        entries: u64::try_from(entries).unwrap_or(0),
                        oldest_queued_at: oldest.and_then(|entry| entry.meta.queued_at),
                    })
                })
                .await
        }))
    }
}
