//! Whole-database reads and writes for `btps migrate`: every record and entry as
//! stored (ids, timestamps and the reference's source objects kept), and a batch
//! written back under the same ids.

use std::sync::Arc;

use deadpool_postgres::Object;

use super::entries::{ENTRY_COLUMNS, EntrySql, decode_entry, id_column};
use super::records::{
    IdentitySql, encode_trust, execute, parse_identity, parse_trust, perspective_code, rows,
};
use super::storage::{Parts, PgStorage};
use crate::store::{
    IdentityRecord, MailboxEntry, Perspective, RecordKind, StoreError, StoreResult, Timestamp,
    TrustRecord, validate_trust,
};

/// Records and entries to write in one transaction ([`PgStorage::import`]).
#[derive(Clone, Debug, Default)]
pub struct ImportBatch {
    /// Identity records.
    pub identities: Vec<IdentityRecord>,
    /// Trust records with their perspective.
    pub trust: Vec<(Perspective, TrustRecord)>,
    /// Mailbox entries, each under its own id.
    pub entries: Vec<MailboxEntry>,
    /// Subscription cursors: (name, entry id).
    pub cursors: Vec<(String, u64)>,
}

async fn insert_trust(
    client: &Object,
    parts: &Parts,
    perspective: Perspective,
    record: &TrustRecord,
) -> StoreResult<()> {
    validate_trust(record).map_err(|reason| StoreError::Invalid {
        kind: RecordKind::Trust,
        reason,
    })?;
    let sql = format!(
        "INSERT INTO {} (perspective, id, sender_lc, receiver_lc, status, expires_at, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        parts.tables.trust
    );
    let inserted = execute(
        client,
        &parts.errors,
        &sql,
        &[
            &perspective_code(perspective),
            &record.id.to_lowercase(),
            &record.sender_id.to_lowercase(),
            &record.receiver_id.to_lowercase(),
            &record.status.as_str(),
            &record.expires_at.as_ref().map(Timestamp::millis),
            &encode_trust(record),
        ],
    )
    .await?;
    inserted.map(drop).ok_or_else(|| StoreError::AlreadyExists {
        kind: RecordKind::Trust,
        id: record.id.clone(),
    })
}

impl PgStorage {
    /// Every identity record, by lower-cased identity.
    pub fn export_identities(&self) -> StoreResult<Vec<IdentityRecord>> {
        let parts = self.db.parts();
        self.db.block(async move {
            parts
                .with(|client, parts| async move {
                    let sql = format!(
                        "SELECT record FROM {} ORDER BY identity_lc",
                        parts.tables.identity
                    );
                    let found = rows(&client, &parts.errors, &sql, &[]).await?;
                    found
                        .iter()
                        .map(|row| {
                            let text: String =
                                row.try_get(0).map_err(|e| parts.errors.query(&e))?;
                            parse_identity(&text)
                                .map_err(|reason| parts.errors.decode("identity", reason))
                        })
                        .collect()
                })
                .await
        })
    }

    /// Every trust record of both perspectives, by perspective and id.
    pub fn export_trust(&self) -> StoreResult<Vec<(Perspective, TrustRecord)>> {
        let parts = self.db.parts();
        self.db.block(async move {
            parts
                .with(|client, parts| async move {
                    let sql = format!(
                        "SELECT perspective, record FROM {} ORDER BY perspective, id",
                        parts.tables.trust
                    );
                    let found = rows(&client, &parts.errors, &sql, &[]).await?;
                    found
                        .iter()
                        .map(|row| {
                            let code: i16 = row.try_get(0).map_err(|e| parts.errors.query(&e))?;
                            let perspective = Perspective::ALL
                                .into_iter()
                                .find(|p| perspective_code(*p) == code)
                                .ok_or_else(|| {
                                    parts.errors.decode("trust", format!("perspective {code}"))
                                })?;
                            let text: String =
                                row.try_get(1).map_err(|e| parts.errors.query(&e))?;
                            let record = parse_trust(&text)
                                .map_err(|reason| parts.errors.decode("trust", reason))?;
                            Ok((perspective, record))
                        })
                        .collect()
                })
                .await
        })
    }

    /// Entries of every mailbox with an id greater than `after`, by id, at most
    /// `limit`.
    pub fn entries_after(&self, after: u64, limit: u32) -> StoreResult<Vec<MailboxEntry>> {
        let parts = self.db.parts();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::from(limit.max(1));
        self.db.block(async move {
            parts
                .with(|client, parts| async move {
                    let sql = format!(
                        "SELECT {ENTRY_COLUMNS} FROM btps_entries WHERE entry_id > $1
                         ORDER BY entry_id LIMIT $2"
                    );
                    let found = rows(&client, &parts.errors, &sql, &[&after, &limit]).await?;
                    found
                        .iter()
                        .map(|row| decode_entry(&parts.errors, row))
                        .collect()
                })
                .await
        })
    }

    /// Every subscription cursor: (name, entry id), by name.
    pub fn subscription_cursors(&self) -> StoreResult<Vec<(String, u64)>> {
        let parts = self.db.parts();
        self.db.block(async move {
            parts
                .with(|client, parts| async move {
                    let found = rows(
                        &client,
                        &parts.errors,
                        "SELECT name, entry_id FROM btps_cursors ORDER BY name",
                        &[],
                    )
                    .await?;
                    found
                        .iter()
                        .map(|row| {
                            let name: String =
                                row.try_get(0).map_err(|e| parts.errors.query(&e))?;
                            let id: i64 = row.try_get(1).map_err(|e| parts.errors.query(&e))?;
                            Ok((name, u64::try_from(id).unwrap_or(0)))
                        })
                        .collect()
                })
                .await
        })
    }

    /// Writes `batch` in one transaction, entries under their own ids; the
    /// entry-id counter moves past the largest. Fails (writing nothing) when an id
    /// is taken.
    pub fn import(&self, batch: ImportBatch) -> StoreResult<()> {
        let parts = self.db.parts();
        self.db.block(async move {
            parts
                .in_transaction(
                    |client, parts| async move { import_in(&client, &parts, batch).await },
                )
                .await
        })
    }
}

async fn import_in(client: &Arc<Object>, parts: &Parts, batch: ImportBatch) -> StoreResult<()> {
    // The counter's lock, as every writer of entries takes it.
    let counter = rows(
        client,
        &parts.errors,
        "SELECT value FROM btps_meta WHERE name = 'entry_seq' FOR UPDATE",
        &[],
    )
    .await?;
    let mut last: i64 = match counter.first() {
        Some(row) => row.try_get(0).map_err(|e| parts.errors.query(&e))?,
        None => return Err(parts.errors.decode("btps_meta", "no entry counter")),
    };
    for record in batch.identities {
        IdentitySql::create(client, parts, record).await?;
    }
    for (perspective, record) in &batch.trust {
        insert_trust(client, parts, *perspective, record).await?;
    }
    for entry in &batch.entries {
        last = last.max(id_column(entry.entry_id)?);
        EntrySql::insert(client, parts, entry).await?;
    }
    for (name, entry_id) in &batch.cursors {
        execute(
            client,
            &parts.errors,
            "INSERT INTO btps_cursors (name, entry_id) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET entry_id = EXCLUDED.entry_id",
            &[name, &id_column(*entry_id)?],
        )
        .await?;
    }
    execute(
        client,
        &parts.errors,
        "UPDATE btps_meta SET value = $1 WHERE name = 'entry_seq'",
        &[&last],
    )
    .await?;
    Ok(())
}
