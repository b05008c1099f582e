//! `btps import` and `btps export`: move a reference deployment's trust and identity
//! JSON files into the database and back; and what every command that touches the
//! stored state shares: finding the data directory ([`DataDirArg`]) and opening the
//! database ([`open_database`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use btps::config::Config;
use btps::server::permissions;
use btps::store::transfer::{self, ImportOptions};
use btps::store::{RedbStore, StoreError};
use serde_json::json;

/// Where the stored state lives: shared by every command that touches it. The
/// database and the admin socket are found through the configuration, exactly as
/// `btps serve` finds them: `--config`, else `BTPS_CONFIG`, else
/// `/etc/btps/btps.toml` when it exists; `--data-dir` (or `BTPS_DATA_DIR`) wins over
/// the file's `data_dir`.
#[derive(Debug, clap::Args)]
pub(crate) struct DataDirArg {
    /// Data directory (the database is `btps.redb` inside it unless configured
    /// otherwise; default: data_dir of the configuration file, BTPS_DATA_DIR, or
    /// ./btps-data).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// The server's configuration file (TOML), to find its database and admin
    /// socket (default: /etc/btps/btps.toml when it exists).
    #[arg(long, env = "BTPS_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

/// What a command does when its data directory does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Refuse: the command works on existing data and has no `--create`.
    Refuse,
    /// Refuse unless `--create` was given (the flag's value): then create it.
    CreateIf(bool),
}

impl DataDirArg {
    /// The configuration file read: the one named, else the installed one.
    fn config_file(&self) -> Option<PathBuf> {
        super::serve::config_file(self.config.clone())
    }

    /// The configuration: defaults < configuration file < environment < --data-dir.
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        super::serve::load_config(self.config_file().as_deref(), self.data_dir.clone())
    }

    /// Makes sure the data directory of `config` exists: creates it (mode 0700)
    /// when `missing` allows it, and refuses otherwise with a message naming the
    /// path, where it came from, `--data-dir` and (when the command has it)
    /// `--create`. A command never creates a new, empty appliance by accident.
    pub(crate) fn existing_data_dir(
        &self,
        config: &Config,
        missing: Missing,
    ) -> anyhow::Result<()> {
        let dir = &config.data_dir;
        // A directory that cannot even be looked at is left to the next step's error.
        if dir.try_exists().unwrap_or(true) {
            return Ok(());
        }
        if missing == Missing::CreateIf(true) {
            permissions::create_private_dir(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
            eprintln!("created the data directory {} (mode 0700)", dir.display());
            return Ok(());
        }
        bail!(
            "{}",
            self.missing_message(config, missing == Missing::CreateIf(false))
        )
    }

    fn missing_message(&self, config: &Config, offer_create: bool) -> String {
        let dir = &config.data_dir;
        let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        let source = if self.data_dir.is_some() {
            String::from("given with --data-dir")
        } else if btps::config::process_env("BTPS_DATA_DIR").is_some_and(|v| !v.is_empty()) {
            String::from("from BTPS_DATA_DIR")
        } else {
            match self.config_file() {
                Some(file) if *dir != Config::default().data_dir => {
                    format!("data_dir in {}", file.display())
                }
                Some(file) => format!("the default: {} sets no data_dir", file.display()),
                None => format!(
                    "the default, since no configuration file was found: no --config, BTPS_CONFIG or {}",
                    super::serve::DEFAULT_CONFIG_FILE
                ),
            }
        };
        let mut message = format!(
            "the data directory {} does not exist ({source}); name the server's data directory with --data-dir DIR (or data_dir in the configuration file)",
            shown.display()
        );
        if offer_create {
            message.push_str(", or pass --create to create a new, empty one");
        }
        message
    }
}

/// Opens the configured database directly, creating it if `create` (mode 0600; as
/// root, given to the owner of its directory, so that the service user can open
/// it). A database held by another process is reported with what is known about
/// the admin socket, which is how a running server is reached instead.
pub(crate) fn open_database(config: &Config, create: bool) -> anyhow::Result<RedbStore> {
    let path = &config.storage.database_path;
    let exists = path.exists();
    if !create && !exists {
        bail!("no database at {} (wrong --data-dir?)", path.display());
    }
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    permissions::create_private_dir(parent)
        .with_context(|| format!("creating {}", parent.display()))?;
    let store = match RedbStore::open(path, &config.redb_options()) {
        Ok(store) => store,
        // redb locks the file for one process; the usual holder is the server.
        Err(StoreError::InUse { path }) => bail!(
            "{}: the database is in use (is btps serve running?), and {}",
            path.display(),
            socket_state(config)
        ),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot open the database {}", path.display()));
        }
    };
    if !exists && permissions::running_as_root() {
        permissions::give_to_owner_of(path, parent).with_context(|| {
            format!(
                "giving the new database {} to the owner of {}",
                path.display(),
                parent.display()
            )
        })?;
    }
    Ok(store)
}

/// Creates `dir`, where a command writes private keys, with mode 0700. The data
/// directory's own `keys/`, created by root in a data directory that belongs to
/// the service user, is given to that user: `btps serve` keeps its own key there.
/// (The private key written into it stays the writer's, for the operator to hand
/// over.)
pub(crate) fn create_key_directory(dir: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let created = permissions::create_private_dir(dir)
        .with_context(|| format!("creating {} for the private key", dir.display()))?;
    if created && permissions::running_as_root() && dir == data_dir.join("keys") {
        permissions::give_to_owner_of(dir, data_dir).with_context(|| {
            format!(
                "giving {} to the owner of {}",
                dir.display(),
                data_dir.display()
            )
        })?;
    }
    Ok(())
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
    /// Create the data directory (mode 0700) if it does not exist.
    #[arg(long)]
    pub(crate) create: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
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
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Where to write the trust store file.
    #[arg(long, value_name = "FILE")]
    pub(crate) trust: Option<PathBuf>,
    /// Where to write the identity store file.
    #[arg(long, value_name = "FILE")]
    pub(crate) identities: Option<PathBuf>,
}

/// `btps import`: one transaction; nothing is written if any record is invalid.
pub(crate) fn import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let config = args.data.config()?;
    args.data
        .existing_data_dir(&config, Missing::CreateIf(args.create))?;
    let store = open_database(&config, true)?;
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
    if args.json {
        let warnings: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
        super::admin::print_json(&json!({
            "ok": true,
            "identities": {
                "imported": report.identities_inserted,
                "unchanged": report.identities_unchanged,
                "replaced": report.identities_replaced,
            },
            "trust": {
                "imported": report.trust_inserted,
                "unchanged": report.trust_unchanged,
                "replaced": report.trust_replaced,
                "skipped": report.trust_skipped,
            },
            "warnings": warnings,
        }));
        return Ok(ExitCode::SUCCESS);
    }
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

/// `btps export`: writes each file atomically (mode 0600). Never creates a
/// database: exporting a directory that holds none is an error.
pub(crate) fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let config = args.data.config()?;
    args.data.existing_data_dir(&config, Missing::Refuse)?;
    let store = open_database(&config, false)?;
    let report = transfer::export(&store, args.trust.as_deref(), args.identities.as_deref())?;
    if args.json {
        super::admin::print_json(&json!({
            "ok": true,
            "trust": {"file": args.trust, "records": report.trust},
            "identities": {"file": args.identities, "records": report.identities},
        }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "exported {} trust record(s) and {} identity record(s)",
        report.trust, report.identities
    );
    Ok(ExitCode::SUCCESS)
}
