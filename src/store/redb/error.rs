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

/// A failure of redb during a transaction on the file at `path`.
pub(super) fn database_error(path: &Path, error: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend {
        path: path.to_owned(),
        source: Box::new(error.into()),
    }
}
