//! The tables, and the versioned migrations that create them.
//!
//! `btps_meta` holds the schema version and the entry-id counter. At start
//! [`migrate`] takes an advisory lock (so that nodes starting together migrate
//! once), reads the version, refuses a database of a newer btps, applies the
//! missing migrations and records the new version — all in one transaction, so a
//! failed migration leaves the database as it was. `schema/postgres.md` describes
//! every table.
//!
//! Text columns that order a listing are `COLLATE "C"`: byte order, the order the
//! redb backend's keys have, whatever the database's default collation.

use super::Parts;
use crate::store::{StoreError, StoreResult};

/// The newest schema this build creates and reads.
pub const POSTGRES_SCHEMA_VERSION: u32 = 2;

/// The advisory lock migrations hold (`btps` in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x6274_7073_0000_0001;

/// The configured table names, quoted, and the SQL that names them.
pub(crate) struct Tables {
    /// The trust table's bare name.
    pub(crate) trust_name: String,
    /// The identity table's bare name.
    pub(crate) identity_name: String,
    /// `"<trust table>"`.
    pub(crate) trust: String,
    /// `"<identity table>"`.
    pub(crate) identity: String,
}

impl Tables {
    /// Names checked by [`super::valid_table_name`].
    pub(crate) fn new(trust: &str, identity: &str) -> Self {
        Tables {
            trust_name: trust.to_owned(),
            identity_name: identity.to_owned(),
            trust: format!("\"{trust}\""),
            identity: format!("\"{identity}\""),
        }
    }
}

/// Version 1: records, entries, counts, cursors.
fn version_1(tables: &Tables) -> String {
    let trust = &tables.trust;
    let trust_name = &tables.trust_name;
    let identity = &tables.identity;
    format!(
        r#"
CREATE TABLE {trust} (
    perspective smallint NOT NULL,
    id text COLLATE "C" NOT NULL,
    sender_lc text COLLATE "C" NOT NULL,
    receiver_lc text COLLATE "C" NOT NULL,
    status text COLLATE "C" NOT NULL,
    expires_at bigint,
    record text NOT NULL,
    PRIMARY KEY (perspective, id)
);
CREATE INDEX "{trust_name}_by_receiver" ON {trust} (perspective, receiver_lc, id);
CREATE INDEX "{trust_name}_by_sender" ON {trust} (perspective, sender_lc, id);
CREATE INDEX "{trust_name}_by_status" ON {trust} (perspective, status, id);
CREATE INDEX "{trust_name}_by_expiry" ON {trust} (perspective, expires_at, id)
    WHERE expires_at IS NOT NULL;

CREATE TABLE {identity} (
    id text COLLATE "C" PRIMARY KEY,
    identity_lc text COLLATE "C" NOT NULL UNIQUE,
    record text NOT NULL
);

CREATE TABLE btps_entries (
    entry_id bigint PRIMARY KEY,
    owner text NOT NULL,
    owner_lc text COLLATE "C" NOT NULL,
    mailbox smallint NOT NULL,
    origin smallint,
    at_millis bigint NOT NULL,
    kind smallint NOT NULL,
    artifact_id text COLLATE "C" NOT NULL,
    artifact_type text NOT NULL,
    from_id text NOT NULL,
    to_id text NOT NULL,
    from_lc text COLLATE "C" NOT NULL,
    to_lc text COLLATE "C" NOT NULL,
    title text,
    raw bytea NOT NULL,
    meta text NOT NULL,
    queue_head boolean NOT NULL DEFAULT false,
    due_at bigint,
    claimed_by text
);
CREATE INDEX btps_entries_listing ON btps_entries (owner_lc, mailbox, at_millis, entry_id);
CREATE UNIQUE INDEX btps_entries_inbound ON btps_entries (to_lc, from_lc, artifact_id)
    WHERE mailbox = 0;
CREATE INDEX btps_entries_inbox_feed ON btps_entries (entry_id) WHERE mailbox = 0;
CREATE INDEX btps_entries_outbox_order ON btps_entries (entry_id) WHERE mailbox = 1;
CREATE INDEX btps_entries_outbox_owner ON btps_entries (owner_lc, entry_id) WHERE mailbox = 1;
CREATE INDEX btps_entries_outbox_pair ON btps_entries (owner_lc, to_lc, entry_id)
    WHERE mailbox = 1;
CREATE INDEX btps_entries_outbox_due ON btps_entries (due_at, entry_id)
    WHERE mailbox = 1 AND queue_head;
CREATE INDEX btps_entries_outbox_heads ON btps_entries (owner_lc, to_lc)
    WHERE mailbox = 1 AND queue_head;
CREATE INDEX btps_entries_outbox_claims ON btps_entries (claimed_by)
    WHERE mailbox = 1 AND claimed_by IS NOT NULL;

CREATE TABLE btps_counts (
    owner_lc text COLLATE "C" NOT NULL,
    mailbox smallint NOT NULL,
    entries bigint NOT NULL,
    PRIMARY KEY (owner_lc, mailbox)
);
CREATE FUNCTION btps_count_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE btps_counts SET entries = entries - 1
            WHERE owner_lc = OLD.owner_lc AND mailbox = OLD.mailbox;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO btps_counts AS c VALUES (NEW.owner_lc, NEW.mailbox, 1)
            ON CONFLICT (owner_lc, mailbox) DO UPDATE SET entries = c.entries + 1;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER btps_entries_count AFTER INSERT OR DELETE ON btps_entries
    FOR EACH ROW EXECUTE FUNCTION btps_count_entry();
CREATE TRIGGER btps_entries_count_move AFTER UPDATE ON btps_entries
    FOR EACH ROW WHEN (OLD.owner_lc IS DISTINCT FROM NEW.owner_lc
                       OR OLD.mailbox IS DISTINCT FROM NEW.mailbox)
    EXECUTE FUNCTION btps_count_entry();

CREATE TABLE btps_cursors (
    name text COLLATE "C" PRIMARY KEY,
    entry_id bigint NOT NULL
);

INSERT INTO btps_meta (name, value) VALUES ('entry_seq', 0);
"#
    )
}

/// Version 2: enrollment tokens and agent sessions; the artifact-id lookup of the
/// agents' ids-based actions.
fn version_2() -> String {
    r#"
CREATE TABLE btps_enrollment_tokens (
    key bytea PRIMARY KEY,
    expires_at bigint NOT NULL,
    record text NOT NULL
);
CREATE INDEX btps_enrollment_tokens_expiry ON btps_enrollment_tokens (expires_at);

CREATE TABLE btps_agent_sessions (
    agent_id text COLLATE "C" PRIMARY KEY,
    owner_lc text COLLATE "C" NOT NULL,
    expires_at bigint NOT NULL,
    record text NOT NULL
);
CREATE INDEX btps_agent_sessions_owner ON btps_agent_sessions (owner_lc, agent_id);
CREATE INDEX btps_agent_sessions_expiry ON btps_agent_sessions (expires_at);

CREATE INDEX btps_entries_by_artifact ON btps_entries (owner_lc, mailbox, artifact_id, entry_id);
"#
    .to_owned()
}

/// Creates or migrates the schema in one transaction; refuses a newer one.
pub(crate) async fn migrate(parts: &Parts) -> StoreResult<()> {
    parts
        .in_transaction(|client, parts| async move {
            let errors = &parts.errors;
            let query = |e: tokio_postgres::Error| errors.query(&e);
            client
                .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(query)?;
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS btps_meta (
                        name text COLLATE \"C\" PRIMARY KEY,
                        value bigint NOT NULL)",
                )
                .await
                .map_err(query)?;
            let row = client
                .query_opt(
                    "SELECT value FROM btps_meta WHERE name = 'schema_version'",
                    &[],
                )
                .await
                .map_err(query)?;
            let found: i64 = match row {
                Some(row) => row.try_get(0).map_err(query)?,
                None => 0,
            };
            let found = u32::try_from(found)
                .map_err(|_| errors.decode("btps_meta", format!("schema version {found}")))?;
            if found > POSTGRES_SCHEMA_VERSION {
                return Err(StoreError::NewerSchema {
                    path: parts.errors.name.as_ref().into(),
                    found,
                    supported: POSTGRES_SCHEMA_VERSION,
                });
            }
            let migrations = [version_1(&parts.tables), version_2()];
            for (index, sql) in migrations.iter().enumerate() {
                let version = u32::try_from(index + 1).unwrap_or(u32::MAX);
                if version <= found {
                    continue;
                }
                tracing::info!(version, "migrating the PostgreSQL schema");
                client.batch_execute(sql).await.map_err(query)?;
            }
            client
                .execute(
                    "INSERT INTO btps_meta (name, value) VALUES ('schema_version', $1)
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    &[&i64::from(POSTGRES_SCHEMA_VERSION)],
                )
                .await
                .map_err(query)?;
            // The record tables named by this configuration must be the schema's:
            // a renamed table (another POSTGRES_TABLE) on a migrated database is
            // refused here, not at the first artifact.
            for name in [&parts.tables.trust_name, &parts.tables.identity_name] {
                let exists = client
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("\"{name}\"")])
                    .await
                    .map_err(query)?;
                let exists: bool = exists.try_get(0).map_err(query)?;
                if !exists {
                    return Err(errors.backend(format!(
                        "table {name} does not exist, but the database has btps schema version {found}: \
                         was storage.postgres.trust_table or identity_table (POSTGRES_TABLE, \
                         POSTGRES_IDENTITY_TABLE) changed after the first start?"
                    )));
                }
            }
            Ok(())
        })
        .await
}

/// Rows per table: trust records by perspective, identity records, entries by
/// mailbox, subscription cursors.
pub(crate) async fn table_counts(parts: &Parts) -> StoreResult<Vec<(String, u64)>> {
    parts
        .with(|client, parts| async move {
            let query = |e: tokio_postgres::Error| parts.errors.query(&e);
            let mut counts = Vec::new();
            let tables = &parts.tables;
            let statements = [
                (
                    "trust (inbound)".to_owned(),
                    format!(
                        "SELECT count(*) FROM {} WHERE perspective = 0",
                        tables.trust
                    ),
                ),
                (
                    "trust (outbound)".to_owned(),
                    format!(
                        "SELECT count(*) FROM {} WHERE perspective = 1",
                        tables.trust
                    ),
                ),
                (
                    "identities".to_owned(),
                    format!("SELECT count(*) FROM {}", tables.identity),
                ),
            ];
            for (name, sql) in statements {
                let row = client.query_one(sql.as_str(), &[]).await.map_err(query)?;
                let count: i64 = row.try_get(0).map_err(query)?;
                counts.push((name, u64::try_from(count).unwrap_or(0)));
            }
            for mailbox in crate::store::Mailbox::ALL {
                let row = client
                    .query_one(
                        "SELECT count(*) FROM btps_entries WHERE mailbox = $1",
                        &[&super::entries::mailbox_code(mailbox)],
                    )
                    .await
                    .map_err(query)?;
                let count: i64 = row.try_get(0).map_err(query)?;
                counts.push((
                    format!("entries ({mailbox})"),
                    u64::try_from(count).unwrap_or(0),
                ));
            }
            let row = client
                .query_one("SELECT count(*) FROM btps_cursors", &[])
                .await
                .map_err(query)?;
            let count: i64 = row.try_get(0).map_err(query)?;
            counts.push(("cursors".to_owned(), u64::try_from(count).unwrap_or(0)));
            Ok(counts)
        })
        .await
}
