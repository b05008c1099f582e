//! `btps import` and `btps export`: move a reference deployment's trust and identity
//! JSON files into the database and back.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use btps::config::Config;
use btps::store::transfer::{self, ImportOptions};
use btps::store::{RedbStore, StoreError};

/// Where the stored state lives: shared by every command that touches it. The
/// database and the admin socket are found through the configuration, exactly as
/// `btps serve` finds them.
#[derive(Debug, clap::Args)]
pub(crate) struct DataDirArg {
    /// Data directory (the database is `btps.redb` inside it unless configured
    /// otherwise; default ./btps-data, or BTPS_DATA_DIR).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// The server's configuration file (TOML), to find its database and admin socket.
    #[arg(long, env = "BTPS_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

impl DataDirArg {
    /// The configuration: defaults < --config file < environment < --data-dir.
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        super::serve::load_config(self.config.as_deref(), self.data_dir.clone())
    }

    /// Opens (creating if needed) the database of this configuration.
    pub(crate) fn open(&self) -> anyhow::Result<RedbStore> {
        open_database(&self.config()?, true)
    }
}

/// Opens the configured database directly. A database held by another process is
/// reported with what is known about the admin socket, which is how a running
/// server is reached instead.
pub(crate) fn open_database(config: &Config, create: bool) -> anyhow::Result<RedbStore> {
    let path = &config.storage.database_path;
    if !create && !path.exists() {
        bail!("no database at {} (wrong --data-dir?)", path.display());
    }
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match RedbStore::open(path, &config.redb_options()) {
        Ok(store) => Ok(store),
        // redb locks the file for one process; the usual holder is the server.
        Err(StoreError::InUse { path }) => bail!(
            "{}: the database is in use (is btps serve running?), and {}",
            path.display(),
            socket_state(config)
        ),
        Err(error) => {
            Err(error).with_context(|| format!("cannot open the database {}", path.display()))
        }
    }
}

/// Why the admin socket did not help: it does not exist, or it does not answer.
pub(crate) fn socket_state(config: &Config) -> String {
    let socket = &config.admin.socket;
    match std::fs::symlink_metadata(socket) {
        Err(_) => format!(
            "there is no admin socket at {} (is the server's [admin] socket configured elsewhere, or disabled?)",
            socket.display()
        ),
        Ok(_) => match std::os::unix::net::UnixStream::connect(socket) {
            Ok(_) => format!(
                "the server answers on its admin socket {}; stop it for this command",
                socket.display()
            ),
            Err(error) => format!(
                "its admin socket {} does not answer ({error}); the server may be starting or stopping",
                socket.display()
            ),
        },
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
