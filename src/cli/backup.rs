//! `btps backup`, `btps restore` and `btps check`: copies of the database, putting
//! one back, and integrity checks.
//!
//! A backup is a consistent copy: from a running server through its admin socket
//! (the server writes the copy and streams it), otherwise from the database file
//! opened here. Either way it is written under a temporary name beside the
//! destination, checked, synced and renamed into place, so that FILE is always
//! either the previous file or a complete, checked backup.
//!
//! When the admin socket does not answer but a server holds the database (the
//! socket turned off), the copy comes from the HTTP endpoint's `GET /backup`, with
//! the configured token or the one `btps serve` generated (`backup_http`).
//!
//! A restore never runs beside a server. The file is copied into the data
//! directory, checked there (so that what is checked is exactly what is put in
//! place), given the owner and mode of the database it replaces (so that a restore
//! run as root leaves a database the service user can open), the current database
//! is kept as `btps.redb.before-restore-<time>`, and the copy is renamed over the
//! database: a crash leaves either the old or the new database, never a mixture.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use btps::admin::operations::{
    AdminError, AdminRequest, AdminResponse, CheckReport, check_file, temporary_beside,
    write_backup,
};
use btps::admin::socket::AdminClient;
use btps::config::Config;
use btps::server::{bootstrap, permissions};
use btps::store::RedbStore;
use serde_json::json;

use super::admin::{OutputArgs, print_fields, print_json};
use super::store::{DataDirArg, Missing, open_database};

/// Arguments of `btps backup`.
#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Where to write the backup (replaced atomically if it exists).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Arguments of `btps restore`.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The backup to restore (a file written by `btps backup`).
    file: PathBuf,
    /// Create the data directory (mode 0700) if it does not exist.
    #[arg(long)]
    create: bool,
}

/// Arguments of `btps check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The database file to check (default: the configured database).
    file: Option<PathBuf>,
}

/// Exit status of a file that was checked and found damaged or unusable.
const DAMAGED: u8 = 1;

fn same_file(left: &Path, right: &Path) -> bool {
    match (left.canonicalize(), right.canonicalize()) {
        (Ok(left), Ok(right)) => left == right,
        _ => left == right,
    }
}

/// Syncs a directory, so that a rename in it survives a crash.
fn sync_directory(path: &Path) -> anyhow::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::File::open(directory)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("syncing the directory {}", directory.display()))
}

/// Readable by the owner only: a database holds every trust relationship and
/// every received document.
fn restrict(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn print_report(report: &CheckReport, json_output: bool) {
    if json_output {
        print_json(&json!({"ok": true, "report": report}));
        return;
    }
    let mut fields = vec![
        ("file", report.path.display().to_string()),
        ("bytes", report.bytes.to_string()),
        ("identities", report.identities.to_string()),
        ("trust (inbound)", report.trust_inbound.to_string()),
        ("trust (outbound)", report.trust_outbound.to_string()),
    ];
    if report.live {
        fields.push((
            "checked",
            String::from("live database, through a consistent copy"),
        ));
    }
    if report.recovered {
        fields.push((
            "note",
            String::from("the file had not been closed cleanly and was recovered"),
        ));
    }
    print_fields(&fields);
}

/// Refuses a redb-only command when the configured storage is PostgreSQL, saying
/// what to use instead (`None`: the storage has a redb file, go on).
fn redb_only(config: &Config, command: &str, json_output: bool) -> Option<ExitCode> {
    if config.storage.kind != btps::config::StorageKind::Postgres {
        return None;
    }
    let database = config
        .storage
        .postgres
        .uri
        .as_ref()
        .map_or_else(|| "(no uri)".to_owned(), ToString::to_string);
    let message = format!(
        "btps {command} works on the redb backend only; this server's storage is PostgreSQL \
         ({database}): use PostgreSQL's own tools — pg_dump --format=custom to back it up, \
         pg_restore to restore it, amcheck to check it (docs/postgres.md)"
    );
    if json_output {
        print_json(&json!({"ok": false, "error": message, "storage": "postgres"}));
    }
    eprintln!("error: {message}");
    Some(ExitCode::from(2))
}

/// Runs `btps backup`.
pub(crate) fn backup(args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let config = args.output.data.config()?;
    if let Some(refused) = redb_only(&config, "backup", args.output.json) {
        return Ok(refused);
    }
    let out = &args.out;
    if out.is_dir() {
        bail!(
            "{} is a directory; give the backup's file name",
            out.display()
        );
    }
    if same_file(out, &config.storage.database_path) {
        bail!("{} is the database itself", out.display());
    }
    let partial = temporary_beside(out, "partial");
    let outcome = write_copy(&args.output.data, &config, &partial).and_then(|source| {
        restrict(&partial)?;
        let report = quiet_check(&partial).map_err(|error| {
            anyhow::anyhow!("the copy failed its check, no backup written: {error}")
        })?;
        fs::rename(&partial, out)
            .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
        sync_directory(out)?;
        Ok((source, report))
    });
    let (source, mut report) = match outcome {
        Ok(done) => done,
        Err(error) => {
            let _ = fs::remove_file(&partial);
            return Err(error);
        }
    };
    report.path.clone_from(out);
    if args.output.json {
        print_json(&json!({"ok": true, "backup": out, "from": source, "report": report}));
    } else {
        println!("backup written to {} (from the {source})", out.display());
        print_report(&report, false);
    }
    Ok(ExitCode::SUCCESS)
}

/// A new file readable by its owner only.
pub(super) fn create_private_file(path: &Path) -> anyhow::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Writes a consistent copy of the configured database to `destination`: through
/// a running server's admin socket, else through its HTTP endpoint when a server
/// holds the database, else from the file. Says which.
fn write_copy(
    target: &DataDirArg,
    config: &Config,
    destination: &Path,
) -> anyhow::Result<&'static str> {
    if let Ok(client) = AdminClient::connect(&config.admin.socket) {
        let mut file = create_private_file(destination)?;
        client.backup(&mut file)?;
        file.sync_all()
            .with_context(|| format!("syncing {}", destination.display()))?;
        return Ok("running server");
    }
    target.existing_data_dir(config, Missing::Refuse)?;
    let database = &config.storage.database_path;
    // Without a token there is no way in: the database's own error says why.
    if config.http.listen.is_some()
        && database.exists()
        && RedbStore::held_by_another_process(database)
        && matches!(bootstrap::http_token(config), Ok(Some(_)))
    {
        super::backup_http::download(config, destination).with_context(|| {
            format!(
                "{} is in use and no server answers on the admin socket {}; the backup through the HTTP endpoint failed",
                database.display(),
                config.admin.socket.display()
            )
        })?;
        return Ok("running server's HTTP endpoint");
    }
    let store = open_database(config, false)?;
    write_backup(&store, destination)?;
    Ok("database file")
}

/// Runs `btps check`: exit 0 when the file is sound, 1 when it is damaged or not a
/// btps database, 2 when it could not be checked.
pub(crate) fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = args.output.data.config()?;
    // A redb file named with --file can still be checked.
    if args.file.is_none()
        && let Some(refused) = redb_only(&config, "check", args.output.json)
    {
        return Ok(refused);
    }
    let database = &config.storage.database_path;
    let path = args.file.clone().unwrap_or_else(|| database.clone());
    let live = same_file(&path, database);
    let socket = AdminClient::connect(&config.admin.socket);
    if socket.is_err() && args.file.is_none() {
        args.output
            .data
            .existing_data_dir(&config, Missing::Refuse)?;
    }
    let outcome = match socket {
        // The live database is held by the server: it checks a consistent copy.
        Ok(mut client) if live => client.call(&AdminRequest::Check).and_then(|response| {
            match response {
                AdminResponse::Checked { report } => Ok(report),
                other => Err(AdminError::Protocol(format!(
                    "unexpected answer from the server: {other:?}"
                ))),
            }
        }),
        _ => quiet_check(&path).map_err(|error| match error {
            AdminError::InUse(_) => AdminError::InUse(format!(
                "cannot check {}: it is in use by another process, and no server answers on the admin socket {}",
                path.display(),
                config.admin.socket.display()
            )),
            other => other,
        }),
    };
    match outcome {
        Ok(report) => {
            print_report(&report, args.output.json);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let code = if matches!(error, AdminError::Damaged(_)) {
                DAMAGED
            } else {
                2
            };
            if args.output.json {
                print_json(&json!({"ok": false, "error": error}));
            }
            let verdict = if code == DAMAGED { "damaged" } else { "error" };
            eprintln!("{verdict}: {error}");
            Ok(ExitCode::from(code))
        }
    }
}

/// Runs `btps restore`: exit 1 when the file fails its check (nothing changed),
/// 2 on other errors.
pub(crate) fn restore(args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let config = args.output.data.config()?;
    if let Some(refused) = redb_only(&config, "restore", args.output.json) {
        return Ok(refused);
    }
    let database = &config.storage.database_path;
    if !args.file.is_file() {
        bail!("{}: no such file", args.file.display());
    }
    if same_file(&args.file, database) {
        bail!("{} is the database itself", args.file.display());
    }
    refuse_if_running(&config)?;
    args.output
        .data
        .existing_data_dir(&config, Missing::CreateIf(args.create))?;
    let parent = database
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    permissions::create_private_dir(parent)
        .with_context(|| format!("creating {}", parent.display()))?;
    // The copy in the data directory is what is checked, given the owner and mode
    // of the database it replaces, and then renamed into place.
    let incoming = temporary_beside(database, "restore");
    let outcome = copy_and_check(&args.file, &incoming).and_then(|report| {
        let (owner, mode) = take_over_ownership(&incoming, database, parent)?;
        // The new owner and mode are durable before the name is.
        fs::File::open(&incoming)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("syncing {}", incoming.display()))?;
        Ok((report, owner, mode))
    });
    let (report, owner, mode) = match outcome {
        Ok(done) => done,
        Err(error) => {
            let _ = fs::remove_file(&incoming);
            let damaged = matches!(
                error.downcast_ref::<AdminError>(),
                Some(AdminError::Damaged(_))
            );
            if damaged {
                eprintln!(
                    "refused: {} is not a sound btps database; the current database is unchanged: {error:#}",
                    args.file.display()
                );
                return Ok(ExitCode::from(DAMAGED));
            }
            return Err(error);
        }
    };
    let kept = match keep_current(database) {
        Ok(kept) => kept,
        Err(error) => {
            let _ = fs::remove_file(&incoming);
            return Err(error);
        }
    };
    fs::rename(&incoming, database)
        .with_context(|| format!("renaming {} to {}", incoming.display(), database.display()))?;
    sync_directory(database)?;
    if args.output.json {
        print_json(&json!({
            "ok": true,
            "restored": args.file,
            "database": database,
            "previous": kept,
            "owner": owner,
            "mode": format!("{mode:04o}"),
            "report": report,
        }));
    } else {
        println!(
            "restored {} into {} (owner {owner}, mode {mode:04o})",
            args.file.display(),
            database.display()
        );
        if let Some(kept) = &kept {
            println!("the previous database is kept as {}", kept.display());
        }
        print_report(&report, false);
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses while a server runs: its admin socket answers, or the database is held.
fn refuse_if_running(config: &Config) -> anyhow::Result<()> {
    let database = &config.storage.database_path;
    if AdminClient::connect(&config.admin.socket).is_ok() {
        bail!(
            "the server is running (its admin socket {} answers); stop it before restoring",
            config.admin.socket.display()
        );
    }
    // Probed without writing: the current database must stay as it is if the
    // restore is refused. (A damaged one is a reason to restore, not to refuse.)
    if database.exists() && RedbStore::held_by_another_process(database) {
        bail!(
            "{}: the database is in use by another process (is btps serve running?); stop it before restoring",
            database.display()
        );
    }
    Ok(())
}

/// [`check_file`] without the panic messages redb's debug assertions print for
/// some damaged files (they are caught and reported as damage).
fn quiet_check(path: &Path) -> Result<CheckReport, AdminError> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = check_file(path);
    std::panic::set_hook(previous);
    outcome
}

fn copy_and_check(source: &Path, incoming: &Path) -> anyhow::Result<CheckReport> {
    fs::copy(source, incoming)
        .with_context(|| format!("copying {} to {}", source.display(), incoming.display()))?;
    restrict(incoming)?;
    fs::File::open(incoming)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("syncing {}", incoming.display()))?;
    let mut report = quiet_check(incoming).map_err(|error| {
        // Name the file the operator gave, not its copy.
        let message = error.to_string().replace(
            &incoming.display().to_string(),
            &source.display().to_string(),
        );
        match error {
            AdminError::Damaged(_) => AdminError::Damaged(message),
            _ => AdminError::Storage(message),
        }
    })?;
    report.path = source.to_owned();
    Ok(report)
}

/// Gives the restored copy the owner (uid:gid) and mode of the database it
/// replaces, or of the directory it goes into when there is none, without bits
/// for other users: a restore run as root must leave a database the service user
/// can open. Returns them as `uid:gid` and the mode.
fn take_over_ownership(
    incoming: &Path,
    database: &Path,
    parent: &Path,
) -> anyhow::Result<(String, u32)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let reference = if database.exists() { database } else { parent };
        let wanted = fs::metadata(reference)
            .with_context(|| format!("reading the owner of {}", reference.display()))?;
        let mode = if reference == database {
            (wanted.mode() & 0o700) | 0o600
        } else {
            0o600
        };
        fs::set_permissions(incoming, fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", incoming.display()))?;
        permissions::give_to_owner_of(incoming, reference).with_context(|| {
            format!(
                "{} belongs to uid {} (gid {}); run btps restore as that user or as root, so that the restored database keeps its owner",
                reference.display(),
                wanted.uid(),
                wanted.gid()
            )
        })?;
        Ok((format!("{}:{}", wanted.uid(), wanted.gid()), mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (incoming, database, parent);
        Ok((String::from("-"), 0o600))
    }
}

/// Keeps the current database (if any) as `<name>.before-restore-<UTC time>`, a
/// second name of the same file, so that the rename that follows cannot lose it.
fn keep_current(database: &Path) -> anyhow::Result<Option<PathBuf>> {
    if !database.exists() {
        return Ok(None);
    }
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .context("formatting the time")?;
    let name = database
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    for attempt in 0u32..100 {
        let suffix = if attempt == 0 {
            String::new()
        } else {
            format!("-{attempt}")
        };
        let kept = database.with_file_name(format!("{name}.before-restore-{stamp}{suffix}"));
        match fs::hard_link(database, &kept) {
            Ok(()) => return Ok(Some(kept)),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("keeping {} as {}", database.display(), kept.display())
                });
            }
        }
    }
    bail!("too many earlier restores at {stamp}; remove some {name}.before-restore-* files")
}
