//! Who may read the data directory: its files are private to the server's user.
//!
//! The data directory holds every trust relationship, every received document and
//! the server's private keys, so it is created 0700 and its secrets 0600 by every
//! command that creates them (`btps serve`'s bootstrap, the operator commands), and
//! `btps serve` takes group and other permissions away from the ones it finds wider
//! ([`tighten_data_files`]). A command run as root on a data directory owned by the
//! service user gives what it creates there back to that owner ([`give_to_owner_of`]),
//! so that the service can still open it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// The bits [`tighten`] takes away: everything for the group and for others.
const GROUP_AND_OTHERS: u32 = 0o077;

/// Creates `dir` and its missing parents with mode 0700. Returns whether `dir` was
/// created (false when it existed).
pub fn create_private_dir(dir: &Path) -> io::Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    Ok(true)
}

/// A mode [`tighten`] changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tightened {
    /// The file or directory.
    pub path: PathBuf,
    /// Its permission bits before.
    pub from: u32,
    /// Its permission bits now.
    pub to: u32,
}

impl std::fmt::Display for Tightened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tightened the mode of {} from {:04o} to {:04o} (it was open to other users)",
            self.path.display(),
            self.from,
            self.to
        )
    }
}

/// Takes the group's and others' permissions away from `path` (following a
/// symbolic link) when it has any. `None` when it had none or does not exist.
pub fn tighten(path: &Path) -> io::Result<Option<Tightened>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = match fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let from = metadata.permissions().mode() & 0o7777;
        if from & GROUP_AND_OTHERS == 0 {
            return Ok(None);
        }
        let to = from & !GROUP_AND_OTHERS;
        fs::set_permissions(path, fs::Permissions::from_mode(to))?;
        Ok(Some(Tightened {
            path: path.to_owned(),
            from,
            to,
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// The private files and directories of a configuration: the data directory, its
/// `keys/` and `tls/` folders, the database (and the copies `btps restore` keeps
/// beside it), the server's private key, the generated HTTP token, the TLS key
/// when it lives in the data directory, and the private keys the operator commands
/// wrote into `keys/`. Only those that exist.
pub fn private_paths(config: &Config) -> Vec<PathBuf> {
    let data_dir = &config.data_dir;
    let database = &config.storage.database_path;
    let mut paths = vec![
        data_dir.clone(),
        data_dir.join("keys"),
        data_dir.join("tls"),
        database.clone(),
        config.server.private_key_path.clone(),
        data_dir.join(super::bootstrap::HTTP_TOKEN_FILE),
    ];
    if config.tls.key_path.starts_with(data_dir) {
        paths.push(config.tls.key_path.clone());
    }
    // Private keys written by `btps identity add`, `rotate-key` and `keygen`.
    if let Ok(entries) = fs::read_dir(data_dir.join("keys")) {
        let mut keys: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.to_string_lossy().ends_with(".key.pem"))
            .collect();
        keys.sort();
        paths.extend(keys);
    }
    // Copies of earlier databases kept by `btps restore`.
    if let (Some(parent), Some(name)) = (database.parent(), database.file_name()) {
        let prefix = format!("{}.before-restore-", name.to_string_lossy());
        let directory = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(entries) = fs::read_dir(directory) {
            let mut kept: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
                .map(|entry| parent.join(entry.file_name()))
                .collect();
            kept.sort();
            paths.extend(kept);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    paths.retain(|path| path.exists() && seen.insert(path.clone()));
    paths
}

/// What [`tighten_data_files`] did.
#[derive(Debug, Default)]
pub struct TightenReport {
    /// The modes it changed.
    pub tightened: Vec<Tightened>,
    /// The files it could not change (not the owner, a read-only file system, …).
    pub failed: Vec<(PathBuf, io::Error)>,
}

/// Takes the group's and others' permissions away from every path of
/// [`private_paths`] that has any.
pub fn tighten_data_files(config: &Config) -> TightenReport {
    let mut report = TightenReport::default();
    for path in private_paths(config) {
        match tighten(&path) {
            Ok(Some(changed)) => report.tightened.push(changed),
            Ok(None) => {}
            Err(error) => report.failed.push((path, error)),
        }
    }
    report
}

/// Whether this process runs as root (and may give files away).
pub fn running_as_root() -> bool {
    #[cfg(unix)]
    {
        rustix::process::geteuid().is_root()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Gives `path` the owner and group of `reference` when they differ (a command run
/// as root writing into the service user's data directory). Returns whether it
/// changed anything; fails when the change is not allowed (not root).
pub fn give_to_owner_of(path: &Path, reference: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let wanted = fs::metadata(reference)?;
        let current = fs::metadata(path)?;
        if (current.uid(), current.gid()) == (wanted.uid(), wanted.gid()) {
            return Ok(false);
        }
        std::os::unix::fs::chown(path, Some(wanted.uid()), Some(wanted.gid()))?;
        Ok(true)
    }
    #[cfg(not(unix))]
    {
        let _ = (path, reference);
        Ok(false)
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_directories_are_private_and_wide_modes_are_tightened() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("a/b");
        assert!(create_private_dir(&dir).unwrap());
        assert!(!create_private_dir(&dir).unwrap());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&temp.path().join("a")), 0o700);

        let file = dir.join("f");
        fs::write(&file, b"x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let changed = tighten(&file).unwrap().unwrap();
        assert_eq!((changed.from, changed.to), (0o644, 0o600));
        assert!(changed.to_string().contains("from 0644 to 0600"));
        assert_eq!(mode(&file), 0o600);
        assert_eq!(tighten(&file).unwrap(), None);
        assert_eq!(tighten(&dir.join("missing")).unwrap(), None);
    }
}
