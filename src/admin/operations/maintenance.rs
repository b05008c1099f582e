//! The database file itself: its integrity check (of a stopped server's file, or of
//! a running server's database through a consistent copy) and the backup writer.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::{PageRequest, Perspective, RedbOptions, RedbStore};

use super::{AdminContext, AdminError, AdminResult, FULL_LISTING_PAGE};

/// The outcome of an integrity check of a database file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// The file checked (for a live check: the live database).
    pub path: PathBuf,
    /// Whether this was the live database of a running server, checked through a
    /// consistent copy.
    pub live: bool,
    /// File size in bytes.
    pub bytes: u64,
    /// Whether the file had not been closed cleanly and was recovered.
    pub recovered: bool,
    /// Identity records (all decoded).
    pub identities: u64,
    /// Receiving-side trust records (all decoded).
    pub trust_inbound: u64,
    /// Requesting-side trust records (all decoded).
    pub trust_outbound: u64,
}

/// Writes a consistent copy of the database to `destination` (a new file) and
/// returns its size. Used directly when the server is stopped and by the admin
/// socket (which then streams the file) when it runs.
pub fn write_backup(store: &RedbStore, destination: &Path) -> AdminResult<u64> {
    store.backup_to(destination)?;
    let bytes = fs::metadata(destination)
        .map_err(|error| AdminError::Storage(format!("{}: {error}", destination.display())))?
        .len();
    Ok(bytes)
}

/// A temporary file name beside `path`, unique within this process.
pub fn temporary_beside(path: &Path, purpose: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let mut name = path
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(format!(".{purpose}-{}-{serial}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Checks the database file at `path`, which no process may hold: it must be a
/// btps database of a schema this build reads, pass redb's integrity check (every
/// page checksum), and every identity and trust record must decode.
///
/// The check never writes to the file (its size, bytes and time stamps stay as
/// they were; a read-only file can be checked): it opens the file read-only and
/// keeps in memory what redb writes while checking ([`RedbStore::open_unwritten`]).
/// A file left by a crash is recovered there, as opening it would (and reported as
/// `recovered`); a file of an older schema is read as the server would after
/// migrating it.
pub fn check_file(path: &Path) -> AdminResult<CheckReport> {
    let metadata = fs::metadata(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            AdminError::NotFound(format!("{}: no such file", path.display()))
        } else {
            AdminError::Storage(format!("{}: {error}", path.display()))
        }
    })?;
    if !metadata.is_file() {
        return Err(AdminError::InvalidArgument(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    // `open_unwritten` runs redb's full check itself.
    let options = RedbOptions {
        cache_size: 4 << 20,
        check_integrity_on_open: false,
    };
    let (store, intact) = RedbStore::open_unwritten(path, &options)?;
    let (identities, trust_inbound, trust_outbound) = count_records(&store)?;
    drop(store);
    let bytes = fs::metadata(path)
        .map_err(|error| AdminError::Storage(format!("{}: {error}", path.display())))?
        .len();
    Ok(CheckReport {
        path: path.to_owned(),
        live: false,
        bytes,
        recovered: !intact,
        identities,
        trust_inbound,
        trust_outbound,
    })
}

/// Reads (and so decodes) every identity and trust record, page by page.
fn count_records(store: &RedbStore) -> AdminResult<(u64, u64, u64)> {
    let mut identities = 0u64;
    let mut request = PageRequest::first(FULL_LISTING_PAGE);
    loop {
        let page = store.read(|s| s.list_identities(&request))?;
        identities += page.items.len() as u64;
        match page.next {
            Some(cursor) => request = PageRequest::after(cursor, FULL_LISTING_PAGE),
            None => break,
        }
    }
    let mut trust = [0u64; 2];
    for (count, perspective) in trust
        .iter_mut()
        .zip([Perspective::Inbound, Perspective::Outbound])
    {
        let mut request = PageRequest::first(FULL_LISTING_PAGE);
        loop {
            let page = store.read(|s| s.list_all(perspective, &request))?;
            *count += page.items.len() as u64;
            match page.next {
                Some(cursor) => request = PageRequest::after(cursor, FULL_LISTING_PAGE),
                None => break,
            }
        }
    }
    Ok((identities, trust[0], trust[1]))
}

/// Checks the live database of a running server: a consistent copy is written
/// beside it, checked like a file, and removed.
pub(super) fn check_live(context: &AdminContext) -> AdminResult<CheckReport> {
    let database = context.database()?;
    let live = database.path();
    let copy = temporary_beside(live, "check");
    let outcome = write_backup(database, &copy).and_then(|_| check_file(&copy));
    let _ = fs::remove_file(&copy);
    let mut report = outcome?;
    report.path = live.to_owned();
    report.live = true;
    Ok(report)
}
