//! Mailbox entries and the subscription cursors.
//!
//! One row per entry: the artifact's bytes, the fields the listings need, the
//! lower-cased owner, sender and receiver that the indexes are on, and `meta` as
//! a small JSON object (only the fields that are set). The per-mailbox counts are
//! kept by a trigger in the same transaction (`schema.rs`); the outbox's queue
//! columns (`queue_head`, `due_at`, `claimed_by`) by `outbox.rs`.

use std::sync::Arc;

use deadpool_postgres::ClientWrapper;
use serde_json::{Map, Value as Json};
use tokio_postgres::Row;

use super::error::PgErrors;
use super::records::{execute, rows};
use super::{Db, Parts};
use crate::model::run_query;
use crate::store::contract::MailboxStore;
use crate::store::keys::{concat, instant_part};
use crate::store::{
    BoxFuture, Cursor, EntryKind, EntryMeta, Mailbox, MailboxEntry, MailboxQuery, Page,
    PageRequest, QueryPage, RecordKind, StoreError, StoreResult, Timestamp,
};

/// The `mailbox` column.
pub(crate) fn mailbox_code(mailbox: Mailbox) -> i16 {
    match mailbox {
        Mailbox::Inbox => 0,
        Mailbox::Outbox => 1,
        Mailbox::Sentbox => 2,
        Mailbox::Draft => 3,
        Mailbox::Trash => 4,
    }
}

fn mailbox_of(code: i16) -> Option<Mailbox> {
    Mailbox::ALL
        .into_iter()
        .find(|mailbox| mailbox_code(*mailbox) == code)
}

fn kind_code(kind: EntryKind) -> i16 {
    match kind {
        EntryKind::Transporter => 0,
        EntryKind::DeliveryFailure => 1,
        EntryKind::Draft => 2,
    }
}

fn kind_of(code: i16) -> Option<EntryKind> {
    EntryKind::ALL
        .into_iter()
        .find(|kind| kind_code(*kind) == code)
}

/// An entry id as the `bigint` column holds it.
pub(crate) fn id_column(entry_id: u64) -> StoreResult<i64> {
    i64::try_from(entry_id).map_err(|_| StoreError::Invalid {
        kind: RecordKind::MailboxEntry,
        reason: format!("entry id {entry_id} is beyond this backend's range"),
    })
}

/// The columns every entry query selects, in [`decode_entry`]'s order.
pub(crate) const ENTRY_COLUMNS: &str = "entry_id, owner, mailbox, origin, at_millis, kind, \
     artifact_id, artifact_type, from_id, to_id, title, raw, meta";

/// The same columns of the table aliased `e`.
pub(crate) const ENTRY_COLUMNS_E: &str = "e.entry_id, e.owner, e.mailbox, e.origin, e.at_millis, \
     e.kind, e.artifact_id, e.artifact_type, e.from_id, e.to_id, e.title, e.raw, e.meta";

const TABLE: &str = "btps_entries";

pub(crate) fn decode_entry(errors: &PgErrors, row: &Row) -> StoreResult<MailboxEntry> {
    let column = |e: tokio_postgres::Error| errors.query(&e);
    let entry_id: i64 = row.try_get(0).map_err(column)?;
    let mailbox: i16 = row.try_get(2).map_err(column)?;
    let origin: Option<i16> = row.try_get(3).map_err(column)?;
    let kind: i16 = row.try_get(5).map_err(column)?;
    let meta: String = row.try_get(12).map_err(column)?;
    let bad = |what: String| errors.decode(TABLE, format!("entry {entry_id}: {what}"));
    Ok(MailboxEntry {
        entry_id: u64::try_from(entry_id).map_err(|_| bad("negative id".to_owned()))?,
        owner: row.try_get(1).map_err(column)?,
        mailbox: mailbox_of(mailbox).ok_or_else(|| bad(format!("mailbox {mailbox}")))?,
        origin: match origin {
            None => None,
            Some(code) => Some(mailbox_of(code).ok_or_else(|| bad(format!("origin {code}")))?),
        },
        at_millis: row.try_get(4).map_err(column)?,
        kind: kind_of(kind).ok_or_else(|| bad(format!("kind {kind}")))?,
        artifact_id: row.try_get(6).map_err(column)?,
        artifact_type: row.try_get(7).map_err(column)?,
        from: row.try_get(8).map_err(column)?,
        to: row.try_get(9).map_err(column)?,
        title: row.try_get(10).map_err(column)?,
        raw: row.try_get(11).map_err(column)?,
        meta: decode_meta(&meta).map_err(bad)?,
    })
}

/// `meta` as a JSON object of the fields that are set.
pub(crate) fn encode_meta(meta: &EntryMeta) -> String {
    let mut object = Map::new();
    let mut time = |key: &str, value: &Option<Timestamp>| {
        if let Some(value) = value {
            object.insert(key.to_owned(), Json::String(value.as_str().to_owned()));
        }
    };
    time("seenAt", &meta.seen_at);
    time("receivedAt", &meta.received_at);
    time("queuedAt", &meta.queued_at);
    time("nextAttemptAt", &meta.next_attempt_at);
    time("deliveredAt", &meta.delivered_at);
    time("trashedAt", &meta.trashed_at);
    time("cancelledAt", &meta.cancelled_at);
    time("inFlightUntil", &meta.in_flight_until);
    time("lastAttemptAt", &meta.last_attempt_at);
    let mut text = |key: &str, value: &Option<String>| {
        if let Some(value) = value {
            object.insert(key.to_owned(), Json::String(value.clone()));
        }
    };
    text("remoteAddress", &meta.remote_address);
    text("lastError", &meta.last_error);
    text("responseId", &meta.response_id);
    text("agentArtifactId", &meta.agent_artifact_id);
    text("agentId", &meta.agent_id);
    if meta.seen {
        object.insert("seen".to_owned(), Json::Bool(true));
    }
    if meta.attempts > 0 {
        object.insert("attempts".to_owned(), Json::from(meta.attempts));
    }
    Json::Object(object).to_string()
}

pub(crate) fn decode_meta(text: &str) -> Result<EntryMeta, String> {
    let Ok(Json::Object(object)) = serde_json::from_str::<Json>(text) else {
        return Err("meta is not a JSON object".to_owned());
    };
    let time = |key: &str| -> Result<Option<Timestamp>, String> {
        match object.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(text)) => Timestamp::parse(text)
                .map(Some)
                .map_err(|error| format!("meta.{key}: {error}")),
            Some(_) => Err(format!("meta.{key}: expected a string")),
        }
    };
    let text = |key: &str| -> Result<Option<String>, String> {
        match object.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(format!("meta.{key}: expected a string")),
        }
    };
    Ok(EntryMeta {
        seen: match object.get("seen") {
            None => false,
            Some(Json::Bool(value)) => *value,
            Some(_) => return Err("meta.seen: expected true or false".to_owned()),
        },
        seen_at: time("seenAt")?,
        received_at: time("receivedAt")?,
        remote_address: text("remoteAddress")?,
        queued_at: time("queuedAt")?,
        attempts: match object.get("attempts") {
            None => 0,
            Some(value) => value
                .as_u64()
                .and_then(|value| u32::try_from(value).ok())
                .ok_or_else(|| "meta.attempts: expected a small count".to_owned())?,
        },
        next_attempt_at: time("nextAttemptAt")?,
        last_error: text("lastError")?,
        delivered_at: time("deliveredAt")?,
        response_id: text("responseId")?,
        agent_artifact_id: text("agentArtifactId")?,
        agent_id: text("agentId")?,
        trashed_at: time("trashedAt")?,
        cancelled_at: time("cancelledAt")?,
        in_flight_until: time("inFlightUntil")?,
        last_attempt_at: time("lastAttemptAt")?,
    })
}

/// The outbox columns of an entry: its due time in the outbox (else `NULL`).
fn due_at(entry: &MailboxEntry) -> Option<i64> {
    (entry.mailbox == Mailbox::Outbox).then(|| entry.due_millis())
}

/// The statements on the entries.
pub(crate) struct EntrySql;

impl EntrySql {
    pub(crate) async fn get(
        client: &ClientWrapper,
        parts: &Parts,
        entry_id: u64,
        for_update: bool,
    ) -> StoreResult<Option<MailboxEntry>> {
        let Ok(id) = i64::try_from(entry_id) else {
            return Ok(None);
        };
        let sql = if for_update {
            "SELECT entry_id, owner, mailbox, origin, at_millis, kind, artifact_id, artifact_type, \
             from_id, to_id, title, raw, meta FROM btps_entries WHERE entry_id = $1 FOR UPDATE"
        } else {
            "SELECT entry_id, owner, mailbox, origin, at_millis, kind, artifact_id, artifact_type, \
             from_id, to_id, title, raw, meta FROM btps_entries WHERE entry_id = $1"
        };
        let found = rows(client, &parts.errors, sql, &[&id]).await?;
        found
            .first()
            .map(|row| decode_entry(&parts.errors, row))
            .transpose()
    }

    /// The inbox entry holding (receiver, sender, artifact id), if any.
    pub(crate) async fn duplicate_of(
        client: &ClientWrapper,
        parts: &Parts,
        receiver_lc: &str,
        sender_lc: &str,
        artifact_id: &str,
    ) -> StoreResult<Option<u64>> {
        let found = rows(
            client,
            &parts.errors,
            "SELECT entry_id FROM btps_entries
             WHERE mailbox = 0 AND to_lc = $1 AND from_lc = $2 AND artifact_id = $3",
            &[&receiver_lc, &sender_lc, &artifact_id],
        )
        .await?;
        match found.first() {
            None => Ok(None),
            Some(row) => {
                let id: i64 = row.try_get(0).map_err(|e| parts.errors.query(&e))?;
                Ok(u64::try_from(id).ok())
            }
        }
    }

    /// Inserts `entry` under its own id; `AlreadyExists` when the inbox holds the
    /// same (receiver, sender, artifact id) already (another node stored it).
    pub(crate) async fn insert(
        client: &ClientWrapper,
        parts: &Parts,
        entry: &MailboxEntry,
    ) -> StoreResult<()> {
        let inserted = execute(
            client,
            &parts.errors,
            "INSERT INTO btps_entries (entry_id, owner, owner_lc, mailbox, origin, at_millis, kind,
                 artifact_id, artifact_type, from_id, to_id, from_lc, to_lc, title, raw, meta, due_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            &[
                &id_column(entry.entry_id)?,
                &entry.owner,
                &entry.owner.to_lowercase(),
                &mailbox_code(entry.mailbox),
                &entry.origin.map(mailbox_code),
                &entry.at_millis,
                &kind_code(entry.kind),
                &entry.artifact_id,
                &entry.artifact_type,
                &entry.from,
                &entry.to,
                &entry.from.to_lowercase(),
                &entry.to.to_lowercase(),
                &entry.title,
                &entry.raw,
                &encode_meta(&entry.meta),
                &due_at(entry),
            ],
        )
        .await?;
        if inserted.is_none() {
            return Err(StoreError::AlreadyExists {
                kind: RecordKind::MailboxEntry,
                id: entry.artifact_id.clone(),
            });
        }
        if entry.mailbox == Mailbox::Outbox {
            super::outbox::requeue(client, parts, &entry.owner, &entry.to).await?;
        }
        Ok(())
    }

    /// Rewrites the entry with the same id; `NotFound` if there is none.
    pub(crate) async fn update(
        client: &ClientWrapper,
        parts: &Parts,
        entry: &MailboxEntry,
    ) -> StoreResult<()> {
        let old = Self::get(client, parts, entry.entry_id, true)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: RecordKind::MailboxEntry,
                id: entry.entry_id.to_string(),
            })?;
        let changed = execute(
            client,
            &parts.errors,
            "UPDATE btps_entries SET owner = $2, owner_lc = $3, mailbox = $4, origin = $5,
                 at_millis = $6, kind = $7, artifact_id = $8, artifact_type = $9, from_id = $10,
                 to_id = $11, from_lc = $12, to_lc = $13, title = $14, raw = $15, meta = $16,
                 due_at = $17,
                 queue_head = queue_head AND $19,
                 claimed_by = CASE WHEN $18 THEN claimed_by ELSE NULL END
             WHERE entry_id = $1",
            &[
                &id_column(entry.entry_id)?,
                &entry.owner,
                &entry.owner.to_lowercase(),
                &mailbox_code(entry.mailbox),
                &entry.origin.map(mailbox_code),
                &entry.at_millis,
                &kind_code(entry.kind),
                &entry.artifact_id,
                &entry.artifact_type,
                &entry.from,
                &entry.to,
                &entry.from.to_lowercase(),
                &entry.to.to_lowercase(),
                &entry.title,
                &entry.raw,
                &encode_meta(&entry.meta),
                &due_at(entry),
                &(entry.mailbox == Mailbox::Outbox && entry.meta.in_flight_until.is_some()),
                &(entry.mailbox == Mailbox::Outbox),
            ],
        )
        .await?;
        if changed.is_none() {
            return Err(StoreError::AlreadyExists {
                kind: RecordKind::MailboxEntry,
                id: entry.artifact_id.clone(),
            });
        }
        Self::requeue_after(client, parts, &old, Some(entry)).await
    }

    /// Removes the entry; the entry removed, if there was one.
    pub(crate) async fn remove(
        client: &ClientWrapper,
        parts: &Parts,
        entry_id: u64,
    ) -> StoreResult<Option<MailboxEntry>> {
        let Some(old) = Self::get(client, parts, entry_id, true).await? else {
            return Ok(None);
        };
        execute(
            client,
            &parts.errors,
            "DELETE FROM btps_entries WHERE entry_id = $1",
            &[&id_column(entry_id)?],
        )
        .await?;
        Self::requeue_after(client, parts, &old, None).await?;
        Ok(Some(old))
    }

    /// The entries of (owner, mailbox) holding `artifact_id`, by entry id.
    pub(crate) async fn by_artifact(
        client: &ClientWrapper,
        parts: &Parts,
        owner_lc: &str,
        mailbox: Mailbox,
        artifact_id: &str,
    ) -> StoreResult<Vec<MailboxEntry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM btps_entries
             WHERE owner_lc = $1 AND mailbox = $2 AND artifact_id = $3 ORDER BY entry_id"
        );
        let found = rows(
            client,
            &parts.errors,
            &sql,
            &[&owner_lc, &mailbox_code(mailbox), &artifact_id],
        )
        .await?;
        found
            .iter()
            .map(|row| decode_entry(&parts.errors, row))
            .collect()
    }

    /// Keeps the queue heads of the pairs an outbox entry left or entered.
    async fn requeue_after(
        client: &ClientWrapper,
        parts: &Parts,
        old: &MailboxEntry,
        new: Option<&MailboxEntry>,
    ) -> StoreResult<()> {
        let pair = |entry: &MailboxEntry| (entry.owner.to_lowercase(), entry.to.to_lowercase());
        let mut pairs = Vec::new();
        if old.mailbox == Mailbox::Outbox {
            pairs.push(pair(old));
        }
        if let Some(new) = new
            && new.mailbox == Mailbox::Outbox
            && !pairs.contains(&pair(new))
        {
            pairs.push(pair(new));
        }
        for (owner, to) in pairs {
            super::outbox::requeue(client, parts, &owner, &to).await?;
        }
        Ok(())
    }
}

/// [`MailboxStore`] on the database.
#[derive(Clone)]
pub(crate) struct PgMailboxes {
    pub(crate) db: Arc<Db>,
}

/// A listing cursor: the instant, then the entry id (16 bytes).
fn listing_cursor(entry: &MailboxEntry) -> Vec<u8> {
    concat(&[
        &instant_part(entry.at_millis),
        &entry.entry_id.to_be_bytes(),
    ])
}

fn decode_listing_cursor(cursor: &Cursor) -> StoreResult<(i64, i64)> {
    let bytes: &[u8; 16] = cursor
        .0
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::InvalidCursor)?;
    let mut instant = [0u8; 8];
    instant.copy_from_slice(&bytes[..8]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[8..]);
    let entry_id = i64::try_from(u64::from_be_bytes(id)).map_err(|_| StoreError::InvalidCursor)?;
    Ok((i64::from_be_bytes(instant) ^ i64::MIN, entry_id))
}

impl MailboxStore for PgMailboxes {
    fn entry(&self, entry_id: u64) -> BoxFuture<'_, StoreResult<Option<MailboxEntry>>> {
        let parts = self.db.parts();
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    EntrySql::get(&client, &parts, entry_id, false).await
                })
                .await
        }))
    }

    fn list<'a>(
        &'a self,
        owner: &'a str,
        mailbox: Mailbox,
        page: PageRequest,
        newest_first: bool,
    ) -> BoxFuture<'a, StoreResult<Page<MailboxEntry>>> {
        let parts = self.db.parts();
        let owner = owner.to_lowercase();
        Box::pin(self.db.run(async move {
            let after = page.after.as_ref().map(decode_listing_cursor).transpose()?;
            let limit = i64::try_from(page.effective_limit())
                .unwrap_or(i64::MAX)
                .saturating_add(1);
            parts
                .with(|client, parts| async move {
                    let code = mailbox_code(mailbox);
                    let (order, compare) = if newest_first {
                        ("DESC", "<")
                    } else {
                        ("ASC", ">")
                    };
                    let found = match after {
                        None => {
                            let sql = format!(
                                "SELECT {ENTRY_COLUMNS} FROM btps_entries
                                 WHERE owner_lc = $1 AND mailbox = $2
                                 ORDER BY at_millis {order}, entry_id {order} LIMIT $3"
                            );
                            rows(&client, &parts.errors, &sql, &[&owner, &code, &limit]).await?
                        }
                        Some((at, id)) => {
                            let sql = format!(
                                "SELECT {ENTRY_COLUMNS} FROM btps_entries
                                 WHERE owner_lc = $1 AND mailbox = $2
                                 AND (at_millis, entry_id) {compare} ($3, $4)
                                 ORDER BY at_millis {order}, entry_id {order} LIMIT $5"
                            );
                            rows(
                                &client,
                                &parts.errors,
                                &sql,
                                &[&owner, &code, &at, &id, &limit],
                            )
                            .await?
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
                        items.last().map(|entry| Cursor(listing_cursor(entry)))
                    } else {
                        None
                    };
                    Ok(Page { items, next })
                })
                .await
        }))
    }

    fn count<'a>(&'a self, owner: &'a str, mailbox: Mailbox) -> BoxFuture<'a, StoreResult<u64>> {
        let parts = self.db.parts();
        let owner = owner.to_lowercase();
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    let found = rows(
                        &client,
                        &parts.errors,
                        "SELECT entries FROM btps_counts WHERE owner_lc = $1 AND mailbox = $2",
                        &[&owner, &mailbox_code(mailbox)],
                    )
                    .await?;
                    match found.first() {
                        None => Ok(0),
                        Some(row) => {
                            let count: i64 = row.try_get(0).map_err(|e| parts.errors.query(&e))?;
                            Ok(u64::try_from(count).unwrap_or(0))
                        }
                    }
                })
                .await
        }))
    }

    fn inbox_after(&self, after: u64, limit: u32) -> BoxFuture<'_, StoreResult<Vec<MailboxEntry>>> {
        let parts = self.db.parts();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::from(limit.max(1));
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    let sql = format!(
                        "SELECT {ENTRY_COLUMNS} FROM btps_entries
                         WHERE mailbox = 0 AND entry_id > $1 ORDER BY entry_id LIMIT $2"
                    );
                    let found = rows(&client, &parts.errors, &sql, &[&after, &limit]).await?;
                    found
                        .iter()
                        .map(|row| decode_entry(&parts.errors, row))
                        .collect()
                })
                .await
        }))
    }

    fn cursor<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StoreResult<u64>> {
        let parts = self.db.parts();
        let name = name.to_owned();
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    let found = rows(
                        &client,
                        &parts.errors,
                        "SELECT entry_id FROM btps_cursors WHERE name = $1",
                        &[&name],
                    )
                    .await?;
                    match found.first() {
                        None => Ok(0),
                        Some(row) => {
                            let id: i64 = row.try_get(0).map_err(|e| parts.errors.query(&e))?;
                            Ok(u64::try_from(id).unwrap_or(0))
                        }
                    }
                })
                .await
        }))
    }

    /// Reads only the owner's entries inside the query's time window (the listing
    /// index), then applies the reference semantics of [`run_query`].
    fn query<'a>(
        &'a self,
        owner: &'a str,
        mailbox: Mailbox,
        query: &'a MailboxQuery,
    ) -> BoxFuture<'a, StoreResult<QueryPage>> {
        let parts = self.db.parts();
        let owner = owner.to_lowercase();
        let since = query.since.unwrap_or(i64::MIN);
        let until = query.until.unwrap_or(i64::MAX);
        let query = query.clone();
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    let sql = format!(
                        "SELECT {ENTRY_COLUMNS} FROM btps_entries
                         WHERE owner_lc = $1 AND mailbox = $2 AND at_millis >= $3
                         AND at_millis <= $4 ORDER BY at_millis, entry_id"
                    );
                    let found = rows(
                        &client,
                        &parts.errors,
                        &sql,
                        &[&owner, &mailbox_code(mailbox), &since, &until],
                    )
                    .await?;
                    let entries = found
                        .iter()
                        .map(|row| decode_entry(&parts.errors, row))
                        .collect::<StoreResult<Vec<_>>>()?;
                    Ok(run_query(entries.iter(), &query))
                })
                .await
        }))
    }

    fn set_cursor<'a>(&'a self, name: &'a str, entry_id: u64) -> BoxFuture<'a, StoreResult<()>> {
        let parts = self.db.parts();
        let name = name.to_owned();
        Box::pin(self.db.run(async move {
            let id = id_column(entry_id)?;
            parts
                .in_transaction(|client, parts| async move {
                    execute(
                        &client,
                        &parts.errors,
                        "INSERT INTO btps_cursors (name, entry_id) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET entry_id = EXCLUDED.entry_id",
                        &[&name, &id],
                    )
                    .await?;
                    Ok(())
                })
                .await
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_stays_small() {
        assert_eq!(encode_meta(&EntryMeta::default()), "{}");
        let meta = EntryMeta {
            seen: true,
            seen_at: Some(Timestamp::from_millis(1_700_000_000_000).unwrap()),
            remote_address: Some("127.0.0.1".to_owned()),
            attempts: 3,
            in_flight_until: Some(Timestamp::parse("2025-01-01T00:00:00+02:00").unwrap()),
            last_error: Some("refused \"x\"".to_owned()),
            ..EntryMeta::default()
        };
        assert_eq!(decode_meta(&encode_meta(&meta)), Ok(meta));
        assert!(decode_meta("[]").is_err());
        assert!(decode_meta(r#"{"attempts":-1}"#).is_err());
        assert!(decode_meta(r#"{"seenAt":"yesterday"}"#).is_err());
    }

    #[test]
    fn codes_round_trip() {
        for mailbox in Mailbox::ALL {
            assert_eq!(mailbox_of(mailbox_code(mailbox)), Some(mailbox));
        }
        for kind in EntryKind::ALL {
            assert_eq!(kind_of(kind_code(kind)), Some(kind));
        }
        assert_eq!(mailbox_of(9), None);
    }
}
