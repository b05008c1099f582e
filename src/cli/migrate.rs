//! `btps migrate --from redb:PATH --to postgres:URI` (and back): copies every
//! identity and trust record, every mailbox entry under its own id (the outbox's
//! queues and the de-duplication of inbound artifacts with them), every
//! subscription cursor, enrollment token and agent session from a stopped source
//! into an empty destination, then
//! reads both back and compares them record by record.
//!
//! The source must be stopped: a redb file is opened for writing, which fails
//! while a server holds it; on PostgreSQL, sessions of a running btps
//! (`application_name` `btps`) refuse the copy. The destination must be empty
//! (a new redb file, 0600, or a database without btps rows); a failed copy into
//! redb leaves no file behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use btps::store::{
    ImportBatch, Mailbox, MailboxEntry, PgOptions, PgStorage, RedbOptions, RedbStore, Storage,
    StoreError, TrustRecord, redact_uri,
};
use serde_json::json;

use super::admin::print_json;

/// Entries copied per transaction.
const BATCH: u32 = 500;

/// Arguments of `btps migrate`.
#[derive(Debug, clap::Args)]
pub(crate) struct MigrateArgs {
    /// Where the data is: `redb:PATH` (a btps.redb file) or `postgres:URI`
    /// (a connection string; `postgres://…` alone is accepted too). Stop every
    /// server using it first.
    #[arg(long, value_name = "redb:PATH|postgres:URI")]
    from: String,
    /// Where it goes: an empty destination of the other kind (or of the same).
    #[arg(long, value_name = "redb:PATH|postgres:URI")]
    to: String,
    /// The PostgreSQL trust table (the reference's POSTGRES_TABLE).
    #[arg(long, env = "POSTGRES_TABLE", default_value = btps::store::DEFAULT_TRUST_TABLE)]
    trust_table: String,
    /// The PostgreSQL identity table (the reference's POSTGRES_IDENTITY_TABLE).
    #[arg(long, env = "POSTGRES_IDENTITY_TABLE", default_value = btps::store::DEFAULT_IDENTITY_TABLE)]
    identity_table: String,
    /// Print JSON: `{"ok", "from", "to", "tables": [{"table", "source",
    /// "destination"}], "verified"}`, or `{"ok": false, "error"}`.
    #[arg(long)]
    json: bool,
}

/// One side of the copy.
enum Endpoint {
    Redb(PathBuf),
    Postgres(String),
}

impl Endpoint {
    fn parse(text: &str) -> anyhow::Result<Self> {
        if let Some(path) = text.strip_prefix("redb:") {
            if path.is_empty() {
                bail!("{text:?}: redb: needs a file path");
            }
            return Ok(Endpoint::Redb(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Endpoint::Postgres(text.to_owned()));
        }
        for prefix in ["postgres:", "postgresql:"] {
            if let Some(uri) = text.strip_prefix(prefix) {
                if uri.is_empty() {
                    bail!("postgres: needs a connection string");
                }
                return Ok(Endpoint::Postgres(uri.to_owned()));
            }
        }
        // Not echoed whole: it may be a connection string with a password.
        let kind = text.split(':').next().unwrap_or_default();
        bail!("{kind:?}: expected redb:PATH or postgres:URI")
    }

    fn describe(&self) -> String {
        match self {
            Endpoint::Redb(path) => format!("redb:{}", path.display()),
            Endpoint::Postgres(uri) => format!("postgres:{}", redact_uri(uri)),
        }
    }
}

/// An opened side.
enum Side {
    Redb(RedbStore),
    Postgres(PgStorage),
}

/// Rows per table, by name.
type Counts = BTreeMap<String, u64>;

/// Enrollment tokens with their keys, and agent sessions.
type AgentRows = (Vec<btps::store::KeyedToken>, Vec<btps::store::AgentSession>);

impl Side {
    fn identities(&self) -> anyhow::Result<Vec<btps::store::IdentityRecord>> {
        let mut records = match self {
            Side::Redb(store) => store.read(|snapshot| snapshot.identities_in_insertion_order())?,
            Side::Postgres(storage) => storage.export_identities()?,
        };
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    fn trust(&self) -> anyhow::Result<Vec<(btps::store::Perspective, TrustRecord)>> {
        let mut records = match self {
            Side::Redb(store) => store.read(|snapshot| snapshot.trust_in_insertion_order())?,
            Side::Postgres(storage) => storage.export_trust()?,
        };
        records.sort_by(|a, b| {
            (a.0 == btps::store::Perspective::Outbound, &a.1.id)
                .cmp(&(b.0 == btps::store::Perspective::Outbound, &b.1.id))
        });
        Ok(records)
    }

    fn entries_after(&self, after: u64) -> anyhow::Result<Vec<MailboxEntry>> {
        Ok(match self {
            Side::Redb(store) => store.read(|snapshot| {
                snapshot.entries_after(after, usize::try_from(BATCH).unwrap_or(500))
            })?,
            Side::Postgres(storage) => storage.entries_after(after, BATCH)?,
        })
    }

    fn cursors(&self) -> anyhow::Result<Vec<(String, u64)>> {
        Ok(match self {
            Side::Redb(store) => store.subscription_cursors()?,
            Side::Postgres(storage) => storage.subscription_cursors()?,
        })
    }

    fn storage(&self) -> &dyn Storage {
        match self {
            Side::Redb(store) => store,
            Side::Postgres(storage) => storage,
        }
    }

    /// Enrollment tokens (by key) and agent sessions (by agent id).
    fn agents(&self) -> anyhow::Result<AgentRows> {
        let Some(agents) = self.storage().agents() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime")?;
        let mut tokens = runtime.block_on(agents.enrollment_tokens())?;
        tokens.sort_by_key(|(key, _)| *key);
        let mut sessions = runtime.block_on(agents.sessions(None))?;
        sessions.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok((tokens, sessions))
    }

    fn write_agents(&self, (tokens, sessions): &AgentRows) -> anyhow::Result<()> {
        if tokens.is_empty() && sessions.is_empty() {
            return Ok(());
        }
        self.storage().transact("", &mut |tx| {
            for (key, token) in tokens {
                tx.put_enrollment_token(key, token)?;
            }
            for session in sessions {
                tx.put_session(session)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    fn write(&self, batch: ImportBatch) -> anyhow::Result<()> {
        match self {
            Side::Postgres(storage) => storage.import(batch)?,
            Side::Redb(store) => {
                store.write(|write| {
                    for record in &batch.identities {
                        write.create_identity(record.clone())?;
                    }
                    for (perspective, record) in &batch.trust {
                        write.insert_trust(*perspective, record)?;
                    }
                    for entry in &batch.entries {
                        write.put_entry(entry)?;
                    }
                    Ok(())
                })?;
                if !batch.cursors.is_empty() {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("starting a runtime")?;
                    for (name, entry_id) in &batch.cursors {
                        runtime.block_on(store.mailboxes().set_cursor(name, *entry_id))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Rows per table, by reading them all.
    fn counts(&self) -> anyhow::Result<Counts> {
        let mut counts = Counts::new();
        counts.insert("identities".to_owned(), len(self.identities()?.len()));
        for (perspective, _) in self.trust()? {
            let name = match perspective {
                btps::store::Perspective::Inbound => "trust (inbound)",
                btps::store::Perspective::Outbound => "trust (outbound)",
            };
            *counts.entry(name.to_owned()).or_default() += 1;
        }
        for mailbox in Mailbox::ALL {
            counts.insert(format!("entries ({mailbox})"), 0);
        }
        counts.entry("trust (inbound)".to_owned()).or_default();
        counts.entry("trust (outbound)".to_owned()).or_default();
        let mut after = 0;
        loop {
            let entries = self.entries_after(after)?;
            let Some(last) = entries.last() else { break };
            after = last.entry_id;
            for entry in &entries {
                *counts
                    .entry(format!("entries ({})", entry.mailbox))
                    .or_default() += 1;
            }
        }
        counts.insert("cursors".to_owned(), len(self.cursors()?.len()));
        let (tokens, sessions) = self.agents()?;
        counts.insert("enrollment tokens".to_owned(), len(tokens.len()));
        counts.insert("agent sessions".to_owned(), len(sessions.len()));
        Ok(counts)
    }
}

fn len(count: usize) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX)
}

fn open(endpoint: &Endpoint, args: &MigrateArgs, destination: bool) -> anyhow::Result<Side> {
    match endpoint {
        Endpoint::Redb(path) => {
            if destination && path.exists() {
                bail!(
                    "{}: the destination exists; btps migrate writes a new redb file",
                    path.display()
                );
            }
            if !destination && !path.is_file() {
                bail!("{}: no such redb file", path.display());
            }
            let options = RedbOptions::default();
            match RedbStore::open(path, &options) {
                Ok(store) => Ok(Side::Redb(store)),
                Err(StoreError::InUse { .. }) => bail!(
                    "{}: the database is in use; stop btps serve first (migrate copies from a stopped source)",
                    path.display()
                ),
                Err(error) => Err(error).with_context(|| format!("opening {}", path.display())),
            }
        }
        Endpoint::Postgres(uri) => {
            let options = PgOptions {
                trust_table: args.trust_table.clone(),
                identity_table: args.identity_table.clone(),
                pool_size: 2,
                application_name: "btps-migrate".to_owned(),
                ..PgOptions::new(uri.clone())
            };
            let storage = PgStorage::connect(&options)
                .with_context(|| format!("opening {}", endpoint.describe()))?;
            let sessions = storage.server_sessions()?;
            if sessions > 0 {
                bail!(
                    "{}: {sessions} session(s) of a running btps are open on this database; stop every node first",
                    endpoint.describe()
                );
            }
            Ok(Side::Postgres(storage))
        }
    }
}

/// Runs `btps migrate`.
pub(crate) fn migrate(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let outcome = run(args);
    match outcome {
        Ok(report) => {
            if args.json {
                print_json(&report);
            } else {
                println!(
                    "copied {} to {}",
                    report["from"].as_str().unwrap_or(""),
                    report["to"].as_str().unwrap_or("")
                );
                for table in report["tables"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<20} {:>10} -> {:>10}",
                        table["table"].as_str().unwrap_or(""),
                        table["source"],
                        table["destination"]
                    );
                }
                println!("verified: every record and entry reads back equal");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            if args.json {
                print_json(&json!({"ok": false, "error": format!("{error:#}")}));
                return Ok(ExitCode::from(2));
            }
            Err(error)
        }
    }
}

fn run(args: &MigrateArgs) -> anyhow::Result<serde_json::Value> {
    let from = Endpoint::parse(&args.from)?;
    let to = Endpoint::parse(&args.to)?;
    if let (Endpoint::Redb(a), Endpoint::Redb(b)) = (&from, &to)
        && same_path(a, b)
    {
        bail!("the source and the destination are the same file");
    }
    let source = open(&from, args, false)?;
    let destination = open(&to, args, true)?;
    let copied = copy(&source, &destination).and_then(|()| verify(&source, &destination));
    let counts = match copied {
        Ok(counts) => counts,
        Err(error) => {
            // A new redb file that failed is removed: no half copy stays behind.
            if let (Endpoint::Redb(path), Side::Redb(store)) = (&to, destination) {
                drop(store);
                let _ = std::fs::remove_file(path);
            }
            return Err(error);
        }
    };
    let tables: Vec<_> = counts
        .iter()
        .map(|(table, (source, destination))| {
            json!({"table": table, "source": source, "destination": destination})
        })
        .collect();
    Ok(json!({
        "ok": true,
        "from": from.describe(),
        "to": to.describe(),
        "tables": tables,
        "verified": true,
    }))
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Copies everything: records in one batch, entries in batches, cursors last.
fn copy(source: &Side, destination: &Side) -> anyhow::Result<()> {
    let before = destination.counts()?;
    if before.values().any(|count| *count > 0) {
        bail!("the destination is not empty: {before:?}");
    }
    destination.write(ImportBatch {
        identities: source.identities()?,
        trust: source.trust()?,
        ..ImportBatch::default()
    })?;
    let mut after = 0;
    loop {
        let entries = source.entries_after(after)?;
        let Some(last) = entries.last() else { break };
        after = last.entry_id;
        destination.write(ImportBatch {
            entries,
            ..ImportBatch::default()
        })?;
    }
    destination.write(ImportBatch {
        cursors: source.cursors()?,
        ..ImportBatch::default()
    })?;
    destination.write_agents(&source.agents()?)
}

/// Reads both sides back and compares them; the counts per table.
fn verify(source: &Side, destination: &Side) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    if source.identities()? != destination.identities()? {
        bail!("verification failed: the identity records differ");
    }
    if source.trust()? != destination.trust()? {
        bail!("verification failed: the trust records differ");
    }
    if source.cursors()? != destination.cursors()? {
        bail!("verification failed: the subscription cursors differ");
    }
    if source.agents()? != destination.agents()? {
        bail!("verification failed: the enrollment tokens or agent sessions differ");
    }
    let mut after = 0;
    loop {
        let theirs = source.entries_after(after)?;
        let ours = destination.entries_after(after)?;
        if theirs != ours {
            bail!("verification failed: the mailbox entries after id {after} differ");
        }
        let Some(last) = theirs.last() else { break };
        after = last.entry_id;
    }
    let source_counts = source.counts()?;
    let destination_counts = destination.counts()?;
    let mut counts = BTreeMap::new();
    for (table, count) in &source_counts {
        let copied = destination_counts.get(table).copied().unwrap_or(0);
        if copied != *count {
            bail!("verification failed: {table}: {count} in the source, {copied} copied");
        }
        counts.insert(table.clone(), (*count, copied));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_hide_the_password() {
        assert!(matches!(
            Endpoint::parse("redb:/x/btps.redb"),
            Ok(Endpoint::Redb(_))
        ));
        let pg = Endpoint::parse("postgres:postgres://u:pw@h/db").unwrap();
        assert_eq!(pg.describe(), "postgres:postgres://u:***@h/db");
        assert!(matches!(
            Endpoint::parse("postgresql://u@h/db"),
            Ok(Endpoint::Postgres(_))
        ));
        let refused = Endpoint::parse("mysql://u:pw@h/db")
            .err()
            .unwrap()
            .to_string();
        assert!(!refused.contains("pw@"), "{refused}");
        assert!(Endpoint::parse("redb:").is_err());
    }
}
