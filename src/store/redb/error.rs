//! How redb's errors become [`StoreError`]s.
//!
//! The only place that turns redb's error types into the store's: opening failures
//! are sorted into what an operator can act on (in use, unreadable, damaged), and
//! everything else is carried boxed in [`StoreError::Backend`], so that no redb type
//! appears in the store's public API and another backend can report its own errors
//! the same way.

use std::path::Path;

use redb::{DatabaseError, StorageError};

use crate::store::StoreError;

/// An error of opening or checking the file at `path`.
pub(super) fn open_error(path: &Path, error: DatabaseError) -> StoreError {
    match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::InUse {
                path: path.to_owned(),
            }
        }
        DatabaseError::Storage(StorageError::Io(source))
            if !matches!(
                source.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            StoreError::Io {
                path: path.to_owned(),
                source,
            }
        }
        other => StoreError::Corrupted {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    }
}

/// What a panic of redb over the file at `path` means: its structures are damaged.
pub(super) fn inconsistent(path: &Path) -> StoreError {
    StoreError::Corrupted {
        path: path.to_owned(),
        detail: String::from("the file's structures are inconsistent"),
    }
}

/// A failure of redb during a transaction on the file at `path`. An I/O error
/// beneath it (a full disk, a failed write) is [`StoreError::Unavailable`]: redb
/// refuses every later transaction of that handle until it is reopened, which
/// [`RedbStore`](super::RedbStore) does by itself.
pub(super) fn database_error(path: &Path, error: impl Into<redb::Error>) -> StoreError {
    let error = error.into();
    match io_failure(&error) {
        Some(reason) => StoreError::Unavailable {
            path: path.to_owned(),
            reason,
        },
        None => StoreError::Backend {
            path: path.to_owned(),
            source: Box::new(error),
        },
    }
}

/// What an earlier failure latched: the handle refuses transactions until reopened.
pub(super) const EARLIER_FAILURE: &str = "an earlier write failed";

/// The reason of an I/O failure of the storage, or `None` for another error. A
/// file cut short or holding bytes that are not redb's is damage, not a temporary
/// failure.
fn io_failure(error: &redb::Error) -> Option<String> {
    match error {
        redb::Error::Io(source)
            if !matches!(
                source.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            Some(describe_io(source))
        }
        redb::Error::PreviousIo => Some(EARLIER_FAILURE.to_owned()),
        _ => None,
    }
}

/// An I/O error in the words of `status.reason` and `/readyz`: lower case, no
/// error number.
pub(super) fn describe_io(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::StorageFull => "no space left on device".to_owned(),
        ErrorKind::QuotaExceeded => "disk quota exceeded".to_owned(),
        ErrorKind::ReadOnlyFilesystem => "read-only file system".to_owned(),
        ErrorKind::FileTooLarge => "file too large".to_owned(),
        _ => {
            let text = error.to_string();
            // "Input/output error (os error 5)" → "input/output error"
            let text = text.split(" (os error").next().unwrap_or(&text);
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => String::from("i/o error"),
            }
        }
    }
}
