//! Trust and identity records: the reference's JSON form of each record
//! (`crate::wire`, lossless) in a `record` column, beside the columns its indexes
//! need — lower-cased sender and receiver, status, expiry, lower-cased identity.
//!
//! The statements are plain functions over one connection, shared by the async
//! stores (each call its own transaction) and by [`super::transaction`] (inside
//! the group commit or a `transact`).

use std::collections::BTreeMap;
use std::sync::Arc;

use deadpool_postgres::ClientWrapper;
use tokio_postgres::Row;

use super::error::{PgErrors, is_unique_violation};
use super::{Db, Parts};
use crate::protocol::json::{Object, Value, parse};
use crate::store::keys::{concat, id_bytes, id_text, instant_part};
use crate::store::{
    BoxFuture, Cursor, IdentityPatch, IdentityRecord, IdentityStore, NewTrustRecord, Page,
    PageRequest, Perspective, PublicKeyRecord, RecordKind, Source, StoreError, StoreResult,
    Timestamp, TrustPatch, TrustRecord, TrustStatus, TrustStore, validate_identity, validate_trust,
};
use crate::wire;

/// The `perspective` column.
pub(crate) fn perspective_code(perspective: Perspective) -> i16 {
    match perspective {
        Perspective::Inbound => 0,
        Perspective::Outbound => 1,
    }
}

fn limit_of(page: &PageRequest) -> i64 {
    i64::try_from(page.effective_limit())
        .unwrap_or(i64::MAX)
        .saturating_add(1)
}

/// `items` fetched one beyond the page, cut to the page, with the next cursor.
fn page_of<T>(mut items: Vec<T>, page: &PageRequest, key: impl Fn(&T) -> Vec<u8>) -> Page<T> {
    let limit = page.effective_limit();
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(|item| Cursor(key(item)))
    } else {
        None
    };
    Page { items, next }
}

fn trust_key(record: &TrustRecord) -> Vec<u8> {
    id_bytes(&record.id).map_or_else(|| record.id.as_bytes().to_vec(), |bytes| bytes.to_vec())
}

/// The id after which an id-ordered listing continues (`""`: from the start).
fn id_after(page: &PageRequest) -> StoreResult<String> {
    match &page.after {
        None => Ok(String::new()),
        Some(cursor) if cursor.0.len() == 32 => Ok(id_text(&cursor.0)),
        Some(_) => Err(StoreError::InvalidCursor),
    }
}

/// A record as stored: `{"record": <the reference's JSON form without the
/// source>, "source": <the object it was read from>, "keySources": [...]}`.
/// Keeping the source apart (as the redb codec does) gives back exactly the
/// record that was stored, including whether it had a source.
fn envelope(record: Object, source: Option<&Source>, key_sources: Option<Vec<Value>>) -> String {
    let mut envelope = Object::new();
    envelope.insert("record", Value::Object(record));
    if let Some(source) = source {
        envelope.insert("source", Value::Object(source.0.clone()));
    }
    if let Some(sources) = key_sources
        && sources.iter().any(|source| !matches!(source, Value::Null))
    {
        envelope.insert("keySources", Value::Array(sources));
    }
    Value::Object(envelope).to_canonical()
}

/// A stored envelope: the record's object, its source, its keys' sources.
type Envelope = (Object, Option<Source>, Vec<Option<Source>>);

/// The parts of a stored envelope.
fn open_envelope(text: &str) -> Result<Envelope, String> {
    let Ok(Value::Object(mut envelope)) = parse(text) else {
        return Err("the stored record is not a JSON object".to_owned());
    };
    let Some(Value::Object(record)) = envelope.remove("record") else {
        return Err("the stored record has no record object".to_owned());
    };
    let source = match envelope.remove("source") {
        None => None,
        Some(Value::Object(object)) => Some(Source(object)),
        Some(_) => return Err("source: expected an object".to_owned()),
    };
    let key_sources = match envelope.remove("keySources") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::Object(object) => Ok(Some(Source(object))),
                Value::Null => Ok(None),
                _ => Err("keySources: expected objects or null".to_owned()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("keySources: expected an array".to_owned()),
    };
    Ok((record, source, key_sources))
}

pub(crate) fn encode_trust(record: &TrustRecord) -> String {
    let mut bare = record.clone();
    bare.source = None;
    envelope(wire::trust_to_json(&bare), record.source.as_ref(), None)
}

pub(crate) fn parse_trust(text: &str) -> Result<TrustRecord, String> {
    let (object, source, _) = open_envelope(text)?;
    let mut record = wire::trust_from_json(&object)?;
    record.source = source;
    Ok(record)
}

fn decode_trust(errors: &PgErrors, row: &Row, column: usize) -> StoreResult<TrustRecord> {
    let text: String = row.try_get(column).map_err(|e| errors.query(&e))?;
    parse_trust(&text).map_err(|reason| errors.decode("trust", reason))
}

pub(crate) fn encode_identity(record: &IdentityRecord) -> String {
    let mut bare = record.clone();
    bare.source = None;
    let key_sources = bare
        .public_keys
        .iter_mut()
        .map(|key| match key.source.take() {
            Some(source) => Value::Object(source.0),
            None => Value::Null,
        })
        .collect();
    envelope(
        wire::identity_to_json(&bare),
        record.source.as_ref(),
        Some(key_sources),
    )
}

pub(crate) fn parse_identity(text: &str) -> Result<IdentityRecord, String> {
    let (object, source, key_sources) = open_envelope(text)?;
    let mut record = wire::identity_from_json(&object)?;
    record.source = source;
    for (position, key) in record.public_keys.iter_mut().enumerate() {
        key.source = key_sources.get(position).cloned().flatten();
    }
    Ok(record)
}

fn decode_identity(errors: &PgErrors, row: &Row, column: usize) -> StoreResult<IdentityRecord> {
    let text: String = row.try_get(column).map_err(|e| errors.query(&e))?;
    parse_identity(&text).map_err(|reason| errors.decode("identity", reason))
}

/// Runs a statement (prepared once per connection) and returns its rows.
pub(crate) async fn rows(
    client: &ClientWrapper,
    errors: &PgErrors,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> StoreResult<Vec<Row>> {
    let statement = client
        .prepare_cached(sql)
        .await
        .map_err(|e| errors.query(&e))?;
    client
        .query(&statement, params)
        .await
        .map_err(|e| errors.query(&e))
}

/// Runs a statement; the number of rows it changed. A unique index refusing the
/// change is `Ok(None)`.
pub(crate) async fn execute(
    client: &ClientWrapper,
    errors: &PgErrors,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> StoreResult<Option<u64>> {
    let statement = client
        .prepare_cached(sql)
        .await
        .map_err(|e| errors.query(&e))?;
    match client.execute(&statement, params).await {
        Ok(changed) => Ok(Some(changed)),
        Err(error) if is_unique_violation(&error) => Ok(None),
        Err(error) => Err(errors.query(&error)),
    }
}

/// The statements on the trust table, by the table's name.
pub(crate) struct TrustSql;

impl TrustSql {
    pub(crate) async fn get(
        client: &ClientWrapper,
        parts: &Parts,
        perspective: Perspective,
        id: &str,
        for_update: bool,
    ) -> StoreResult<Option<TrustRecord>> {
        let sql = format!(
            "SELECT record FROM {} WHERE perspective = $1 AND id = $2{}",
            parts.tables.trust,
            if for_update { " FOR UPDATE" } else { "" }
        );
        let id = id.to_lowercase();
        let found = rows(
            client,
            &parts.errors,
            &sql,
            &[&perspective_code(perspective), &id],
        )
        .await?;
        found
            .first()
            .map(|row| decode_trust(&parts.errors, row, 0))
            .transpose()
    }

    pub(crate) async fn create(
        client: &ClientWrapper,
        parts: &Parts,
        perspective: Perspective,
        record: NewTrustRecord,
        id: Option<&str>,
    ) -> StoreResult<TrustRecord> {
        let record = TrustRecord::with_computed_id(record, id)?;
        validate_trust(&record).map_err(|reason| StoreError::Invalid {
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
                &record.id,
                &record.sender_id.to_lowercase(),
                &record.receiver_id.to_lowercase(),
                &record.status.as_str(),
                &record.expires_at.as_ref().map(Timestamp::millis),
                &encode_trust(&record),
            ],
        )
        .await?;
        match inserted {
            Some(_) => Ok(record),
            None => Err(StoreError::AlreadyExists {
                kind: RecordKind::Trust,
                id: record.id,
            }),
        }
    }

    /// Writes a changed record back under its id (the caller read it for update).
    pub(crate) async fn put(
        client: &ClientWrapper,
        parts: &Parts,
        perspective: Perspective,
        record: &TrustRecord,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE {} SET sender_lc = $3, receiver_lc = $4, status = $5, expires_at = $6,
             record = $7 WHERE perspective = $1 AND id = $2",
            parts.tables.trust
        );
        execute(
            client,
            &parts.errors,
            &sql,
            &[
                &perspective_code(perspective),
                &record.id,
                &record.sender_id.to_lowercase(),
                &record.receiver_id.to_lowercase(),
                &record.status.as_str(),
                &record.expires_at.as_ref().map(Timestamp::millis),
                &encode_trust(record),
            ],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn update(
        client: &ClientWrapper,
        parts: &Parts,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<TrustRecord> {
        let mut record = Self::get(client, parts, perspective, id, true)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: RecordKind::Trust,
                id: id.to_owned(),
            })?;
        record.apply(patch);
        record.updated_at = Some(Timestamp::now());
        validate_trust(&record).map_err(|reason| StoreError::Invalid {
            kind: RecordKind::Trust,
            reason,
        })?;
        Self::put(client, parts, perspective, &record).await?;
        Ok(record)
    }

    pub(crate) async fn delete(
        client: &ClientWrapper,
        parts: &Parts,
        perspective: Perspective,
        id: &str,
    ) -> StoreResult<bool> {
        let sql = format!(
            "DELETE FROM {} WHERE perspective = $1 AND id = $2",
            parts.tables.trust
        );
        let id = id.to_lowercase();
        let changed = execute(
            client,
            &parts.errors,
            &sql,
            &[&perspective_code(perspective), &id],
        )
        .await?;
        Ok(changed.unwrap_or(0) > 0)
    }

    /// One page of records by id where `column = value` (or of all records).
    async fn list(
        client: &ClientWrapper,
        parts: &Parts,
        perspective: Perspective,
        filter: Option<(&str, &str)>,
        page: &PageRequest,
    ) -> StoreResult<Page<TrustRecord>> {
        let after = id_after(page)?;
        let limit = limit_of(page);
        let code = perspective_code(perspective);
        let found = match filter {
            Some((column, value)) => {
                let sql = format!(
                    "SELECT record FROM {} WHERE perspective = $1 AND {column} = $2 AND id > $3
                     ORDER BY id LIMIT $4",
                    parts.tables.trust
                );
                rows(
                    client,
                    &parts.errors,
                    &sql,
                    &[&code, &value, &after, &limit],
                )
                .await?
            }
            None => {
                let sql = format!(
                    "SELECT record FROM {} WHERE perspective = $1 AND id > $2 ORDER BY id LIMIT $3",
                    parts.tables.trust
                );
                rows(client, &parts.errors, &sql, &[&code, &after, &limit]).await?
            }
        };
        let records = found
            .iter()
            .map(|row| decode_trust(&parts.errors, row, 0))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page_of(records, page, trust_key))
    }

    async fn expiring(
        client: &ClientWrapper,
        parts: &Parts,
        perspective: Perspective,
        before_millis: i64,
        status: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<TrustRecord>> {
        let (after_expiry, after_id) = match &page.after {
            None => (i64::MIN, String::new()),
            Some(cursor) if cursor.0.len() == 40 => {
                let mut instant = [0u8; 8];
                instant.copy_from_slice(&cursor.0[..8]);
                (
                    i64::from_be_bytes(instant) ^ i64::MIN,
                    id_text(&cursor.0[8..]),
                )
            }
            Some(_) => return Err(StoreError::InvalidCursor),
        };
        let sql = format!(
            "SELECT record FROM {} WHERE perspective = $1 AND expires_at IS NOT NULL
             AND expires_at < $2 AND ($3::text IS NULL OR status = $3)
             AND (expires_at, id) > ($4, $5) ORDER BY expires_at, id LIMIT $6",
            parts.tables.trust
        );
        let found = rows(
            client,
            &parts.errors,
            &sql,
            &[
                &perspective_code(perspective),
                &before_millis,
                &status,
                &after_expiry,
                &after_id,
                &limit_of(page),
            ],
        )
        .await?;
        let records = found
            .iter()
            .map(|row| decode_trust(&parts.errors, row, 0))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page_of(records, page, |record| {
            let expiry = record.expires_at.as_ref().map_or(0, Timestamp::millis);
            concat(&[&instant_part(expiry), &trust_key(record)])
        }))
    }
}

/// [`TrustStore`] on the database.
#[derive(Clone)]
pub(crate) struct PgTrust {
    pub(crate) db: Arc<Db>,
}

impl PgTrust {
    fn list<'a>(
        &'a self,
        perspective: Perspective,
        filter: Option<(&'static str, String)>,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let parts = self.db.parts();
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    let filter = filter.as_ref().map(|(c, v)| (*c, v.as_str()));
                    TrustSql::list(&client, &parts, perspective, filter, &page).await
                })
                .await
        }))
    }
}

impl TrustStore for PgTrust {
    fn get<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<TrustRecord>>> {
        let parts = self.db.parts();
        let id = id.to_owned();
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    TrustSql::get(&client, &parts, perspective, &id, false).await
                })
                .await
        }))
    }

    fn create<'a>(
        &'a self,
        perspective: Perspective,
        record: NewTrustRecord,
        id: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>> {
        let parts = self.db.parts();
        let id = id.map(str::to_owned);
        Box::pin(self.db.run(async move {
            parts
                .in_transaction(|client, parts| async move {
                    TrustSql::create(&client, &parts, perspective, record, id.as_deref()).await
                })
                .await
        }))
    }

    fn update<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
        patch: TrustPatch,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>> {
        let parts = self.db.parts();
        let id = id.to_owned();
        Box::pin(self.db.run(async move {
            parts
                .in_transaction(|client, parts| async move {
                    TrustSql::update(&client, &parts, perspective, &id, patch).await
                })
                .await
        }))
    }

    fn delete<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let parts = self.db.parts();
        let id = id.to_owned();
        Box::pin(self.db.run(async move {
            parts
                .in_transaction(|client, parts| async move {
                    TrustSql::delete(&client, &parts, perspective, &id).await
                })
                .await
        }))
    }

    fn list_by_receiver<'a>(
        &'a self,
        perspective: Perspective,
        receiver: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        self.list(
            perspective,
            Some(("receiver_lc", receiver.to_lowercase())),
            page,
        )
    }

    fn list_by_sender<'a>(
        &'a self,
        perspective: Perspective,
        sender: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        self.list(
            perspective,
            Some(("sender_lc", sender.to_lowercase())),
            page,
        )
    }

    fn list_by_status<'a>(
        &'a self,
        perspective: Perspective,
        status: &'a TrustStatus,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        self.list(
            perspective,
            Some(("status", status.as_str().to_owned())),
            page,
        )
    }

    fn list_expiring_before<'a>(
        &'a self,
        perspective: Perspective,
        before_millis: i64,
        status: Option<&'a TrustStatus>,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let parts = self.db.parts();
        let status = status.map(|status| status.as_str().to_owned());
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    TrustSql::expiring(
                        &client,
                        &parts,
                        perspective,
                        before_millis,
                        status.as_deref(),
                        &page,
                    )
                    .await
                })
                .await
        }))
    }

    fn list_all<'a>(
        &'a self,
        perspective: Perspective,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        self.list(perspective, None, page)
    }

    fn count_by_status(
        &self,
        perspective: Perspective,
    ) -> BoxFuture<'_, StoreResult<BTreeMap<TrustStatus, u64>>> {
        let parts = self.db.parts();
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    let sql = format!(
                        "SELECT status, count(*) FROM {} WHERE perspective = $1 GROUP BY status",
                        parts.tables.trust
                    );
                    let found = rows(
                        &client,
                        &parts.errors,
                        &sql,
                        &[&perspective_code(perspective)],
                    )
                    .await?;
                    let mut counts = BTreeMap::new();
                    for row in found {
                        let status: String = row.try_get(0).map_err(|e| parts.errors.query(&e))?;
                        let count: i64 = row.try_get(1).map_err(|e| parts.errors.query(&e))?;
                        counts.insert(
                            TrustStatus::from_wire(&status),
                            u64::try_from(count).unwrap_or(0),
                        );
                    }
                    Ok(counts)
                })
                .await
        }))
    }
}

/// The statements on the identity table.
pub(crate) struct IdentitySql;

impl IdentitySql {
    pub(crate) async fn get(
        client: &ClientWrapper,
        parts: &Parts,
        id: &str,
        for_update: bool,
    ) -> StoreResult<Option<IdentityRecord>> {
        let sql = format!(
            "SELECT record FROM {} WHERE id = $1{}",
            parts.tables.identity,
            if for_update { " FOR UPDATE" } else { "" }
        );
        let id = id.to_lowercase();
        let found = rows(client, &parts.errors, &sql, &[&id]).await?;
        found
            .first()
            .map(|row| decode_identity(&parts.errors, row, 0))
            .transpose()
    }

    /// Whether `identity` (any case) has a record.
    pub(crate) async fn is_hosted(
        client: &ClientWrapper,
        parts: &Parts,
        identity: &str,
    ) -> StoreResult<bool> {
        let sql = format!("SELECT 1 FROM {} WHERE id = $1", parts.tables.identity);
        let id = crate::identity::compute_id(identity);
        Ok(!rows(client, &parts.errors, &sql, &[&id]).await?.is_empty())
    }

    pub(crate) async fn create(
        client: &ClientWrapper,
        parts: &Parts,
        record: IdentityRecord,
    ) -> StoreResult<IdentityRecord> {
        validate_identity(&record).map_err(|reason| StoreError::Invalid {
            kind: RecordKind::Identity,
            reason,
        })?;
        let sql = format!(
            "INSERT INTO {} (id, identity_lc, record) VALUES ($1, $2, $3)",
            parts.tables.identity
        );
        let inserted = execute(
            client,
            &parts.errors,
            &sql,
            &[
                &record.id,
                &record.identity.to_lowercase(),
                &encode_identity(&record),
            ],
        )
        .await?;
        match inserted {
            Some(_) => Ok(record),
            None => Err(StoreError::AlreadyExists {
                kind: RecordKind::Identity,
                id: record.id,
            }),
        }
    }

    pub(crate) async fn update(
        client: &ClientWrapper,
        parts: &Parts,
        id: &str,
        patch: IdentityPatch,
    ) -> StoreResult<IdentityRecord> {
        let mut record =
            Self::get(client, parts, id, true)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    kind: RecordKind::Identity,
                    id: id.to_owned(),
                })?;
        record.apply(patch);
        record.updated_at = Some(Timestamp::now());
        validate_identity(&record).map_err(|reason| StoreError::Invalid {
            kind: RecordKind::Identity,
            reason,
        })?;
        let sql = format!(
            "UPDATE {} SET record = $2 WHERE id = $1",
            parts.tables.identity
        );
        execute(
            client,
            &parts.errors,
            &sql,
            &[&record.id, &encode_identity(&record)],
        )
        .await?;
        Ok(record)
    }
}

/// [`IdentityStore`] on the database.
#[derive(Clone)]
pub(crate) struct PgIdentities {
    pub(crate) db: Arc<Db>,
}

impl IdentityStore for PgIdentities {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<IdentityRecord>>> {
        let parts = self.db.parts();
        let id = id.to_owned();
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    IdentitySql::get(&client, &parts, &id, false).await
                })
                .await
        }))
    }

    fn create(&self, record: IdentityRecord) -> BoxFuture<'_, StoreResult<IdentityRecord>> {
        let parts = self.db.parts();
        Box::pin(self.db.run(async move {
            parts
                .in_transaction(|client, parts| async move {
                    IdentitySql::create(&client, &parts, record).await
                })
                .await
        }))
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        patch: IdentityPatch,
    ) -> BoxFuture<'a, StoreResult<IdentityRecord>> {
        let parts = self.db.parts();
        let id = id.to_owned();
        Box::pin(self.db.run(async move {
            parts
                .in_transaction(|client, parts| async move {
                    IdentitySql::update(&client, &parts, &id, patch).await
                })
                .await
        }))
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        let parts = self.db.parts();
        let id = id.to_lowercase();
        Box::pin(self.db.run(async move {
            parts
                .in_transaction(|client, parts| async move {
                    let sql = format!("DELETE FROM {} WHERE id = $1", parts.tables.identity);
                    let changed = execute(&client, &parts.errors, &sql, &[&id]).await?;
                    Ok(changed.unwrap_or(0) > 0)
                })
                .await
        }))
    }

    fn public_key<'a>(
        &'a self,
        identity: &'a str,
        selector: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Option<PublicKeyRecord>>> {
        let id = crate::identity::compute_id(identity);
        Box::pin(async move {
            let record = self.get(&id).await?;
            Ok(record.and_then(|record| record.key(selector).cloned()))
        })
    }

    fn put_public_key<'a>(
        &'a self,
        identity: &'a str,
        key: PublicKeyRecord,
        make_current: bool,
    ) -> BoxFuture<'a, StoreResult<IdentityRecord>> {
        let parts = self.db.parts();
        let identity = identity.to_owned();
        Box::pin(self.db.run(async move {
            parts
                .in_transaction(|client, parts| async move {
                    let id = crate::identity::compute_id(&identity);
                    match IdentitySql::get(&client, &parts, &id, true).await? {
                        None => {
                            let record = IdentityRecord::new(&identity, key, Timestamp::now());
                            IdentitySql::create(&client, &parts, record).await
                        }
                        Some(mut record) => {
                            record.put_key(key, make_current);
                            let patch = IdentityPatch {
                                current_selector: Some(record.current_selector),
                                public_keys: Some(record.public_keys),
                                metadata: None,
                            };
                            IdentitySql::update(&client, &parts, &id, patch).await
                        }
                    }
                })
                .await
        }))
    }

    fn list(&self, page: PageRequest) -> BoxFuture<'_, StoreResult<Page<IdentityRecord>>> {
        let parts = self.db.parts();
        Box::pin(self.db.run(async move {
            let after = match &page.after {
                None => String::new(),
                Some(cursor) => String::from_utf8(cursor.0.clone())
                    .map_err(|_| StoreError::InvalidCursor)?,
            };
            parts
                .with(|client, parts| async move {
                    let sql = format!(
                        "SELECT record FROM {} WHERE identity_lc > $1 ORDER BY identity_lc LIMIT $2",
                        parts.tables.identity
                    );
                    let found =
                        rows(&client, &parts.errors, &sql, &[&after, &limit_of(&page)]).await?;
                    let records = found
                        .iter()
                        .map(|row| decode_identity(&parts.errors, row, 0))
                        .collect::<StoreResult<Vec<_>>>()?;
                    Ok(page_of(records, &page, |record| {
                        record.identity.to_lowercase().into_bytes()
                    }))
                })
                .await
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KeyHistoryEntry, PrivacyType};

    fn record() -> TrustRecord {
        let at = Timestamp::parse("2025-06-01T10:00:00.000Z").unwrap();
        TrustRecord::from_new(
            crate::identity::compute_trust_id("a$b.test", "c$d.test"),
            NewTrustRecord {
                sender_id: "a$b.test".to_owned(),
                receiver_id: "c$d.test".to_owned(),
                status: TrustStatus::Accepted,
                created_at: at.clone(),
                decided_by: "op".to_owned(),
                decided_at: at.clone(),
                expires_at: None,
                public_key_base64: "MIIB".to_owned(),
                public_key_fingerprint: "fp=".to_owned(),
                key_history: vec![KeyHistoryEntry {
                    fingerprint: "old=".to_owned(),
                    first_seen: at.clone(),
                    last_seen: at,
                }],
                privacy_type: PrivacyType::Encrypted,
                retry_after_date: None,
                metadata: None,
            },
        )
    }

    #[test]
    fn records_come_back_exactly_with_or_without_a_source() {
        let plain = record();
        assert_eq!(parse_trust(&encode_trust(&plain)), Ok(plain.clone()));
        let mut source = Object::new();
        source.insert("unknownField", Value::Bool(true));
        source.insert("status", Value::String("pending".into()));
        let sourced = TrustRecord {
            source: Some(Source(source)),
            ..plain
        };
        assert_eq!(parse_trust(&encode_trust(&sourced)), Ok(sourced));
        assert!(parse_trust("[]").is_err());
        assert!(parse_trust(r#"{"record":1}"#).is_err());
    }
}
