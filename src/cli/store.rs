//! `btps import` and `btps export`: move a reference deployment's trust and identity
//! JSON files into the database and back.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use btps::store::transfer::{self, ImportOptions};
use btps::store::{DATABASE_FILE_NAME, RedbOptions, RedbStore, StoreError};

/// Where the stored state lives: shared by every command that touches it.
#[derive(Debug, clap::Args)]
pub(crate) struct DataDirArg {
    /// Data directory (the database is the file `btps.redb` inside it).
    #[arg(long, env = "BTPS_DATA_DIR", default_value = "./btps-data")]
    pub(crate) data_dir: PathBuf,
}

impl DataDirArg {
    /// Opens (creating if needed) the database of this data directory.
    pub(crate) fn open(&self) -> anyhow::Result<RedbStore> {
        match RedbStore::open_dir(&self.data_dir, &RedbOptions::default()) {
            Ok(store) => Ok(store),
            // redb locks the file for one process; the usual holder is the server.
            Err(StoreError::InUse { path }) => bail!(
                "{}: the database is in use (is btps serve running?)",
                path.display()
            ),
            Err(error) => Err(error).with_context(|| {
                format!("cannot open the database in {}", self.data_dir.display())
            }),
        }
    }

    /// Opens the database of this data directory, which must exist: commands that
    /// only read or change existing records never create an empty database.
    pub(crate) fn open_existing(&self) -> anyhow::Result<RedbStore> {
        let path = self.data_dir.join(DATABASE_FILE_NAME);
        if !path.exists() {
            bail!("no database at {} (wrong --data-dir?)", path.display());
        }
        self.open()
    }
}

/// Arguments of `btps import`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("files").required(true).multiple(true).args(["trust", "identities"])))]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    pub(crate) data: DataDirArg,
    /// The reference's trust store file (JsonTrustStore).
    #[arg(long, value_name = "FILE")]
    pub(crate) trust: Option<PathBuf>,
    /// The reference's identity store file (JsonIdentityStore).
    #[arg(long, value_name = "FILE")]
    pub(crate) identities: Option<PathBuf>,
    /// Entity name of the trust file (detected when absent).
    #[arg(long, value_name = "NAME")]
    pub(crate) trust_entity: Option<String>,
    /// Entity name of the identity file (detected when absent).
    #[arg(long, value_name = "NAME")]
    pub(crate) identity_entity: Option<String>,
    /// Replace stored records whose content differs from the file.
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Skip trust records where neither party is a hosted identity.
    #[arg(long)]
    pub(crate) skip_foreign: bool,
    /// Refuse records whose keys do not parse or whose fingerprint is not the
    /// key's (otherwise they are imported with a warning).
    #[arg(long)]
    pub(crate) strict: bool,
}

/// Arguments of `btps export`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("files").required(true).multiple(true).args(["trust", "identities"])))]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) data: DataDirArg,
    /// Where to write the trust store file.
    #[arg(long, value_name = "FILE")]
    pub(crate) trust: Option<PathBuf>,
    /// Where to write the identity store file.
    #[arg(long, value_name = "FILE")]
    pub(crate) identities: Option<PathBuf>,
}

/// `btps import`: one transaction; nothing is written if any record is invalid.
pub(crate) fn import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let store = args.data.open()?;
    let options = ImportOptions {
        trust_entity: args.trust_entity.clone(),
        identity_entity: args.identity_entity.clone(),
        overwrite: args.overwrite,
        skip_foreign: args.skip_foreign,
        strict: args.strict,
    };
    let report = transfer::import(
        &store,
        args.trust.as_deref(),
        args.identities.as_deref(),
        &options,
    )?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    println!(
        "identities: {} imported, {} unchanged, {} replaced; trust records: {} imported, {} unchanged, {} replaced, {} skipped",
        report.identities_inserted,
        report.identities_unchanged,
        report.identities_replaced,
        report.trust_inserted,
        report.trust_unchanged,
        report.trust_replaced,
        report.trust_skipped,
    );
    Ok(ExitCode::SUCCESS)
}

/// `btps export`: writes each file atomically.
pub(crate) fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let store = args.data.open()?;
    let report = transfer::export(&store, args.trust.as_deref(), args.identities.as_deref())?;
    println!(
        "exported {} trust record(s) and {} identity record(s)",
        report.trust, report.identities
    );
    Ok(ExitCode::SUCCESS)
}
