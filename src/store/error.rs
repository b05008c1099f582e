//! `StoreError`: everything that can go wrong in the stores, precise enough that a
//! log line says what happened and to which file.

use std::path::PathBuf;

/// The kind of record an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A trust record.
    Trust,
    /// An identity record.
    Identity,
    /// A mailbox entry.
    MailboxEntry,
    /// An agent session.
    AgentSession,
    /// An enrollment token.
    EnrollmentToken,
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordKind::Trust => "trust record",
            RecordKind::Identity => "identity record",
            RecordKind::MailboxEntry => "mailbox entry",
            RecordKind::AgentSession => "agent session",
            RecordKind::EnrollmentToken => "enrollment token",
        })
    }
}

/// One invalid record of an input file: where it is and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordProblem {
    /// The file the record is in.
    pub file: PathBuf,
    /// 0-based position of the record in the file's array.
    pub index: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: record {}: {}",
            self.file.display(),
            self.index,
            self.reason
        )
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No record with this id.
    #[error("no {kind} with id {id}")]
    NotFound {
        /// Record kind.
        kind: RecordKind,
        /// The id looked up.
        id: String,
    },
    /// A record with this id exists already.
    #[error("a {kind} with id {id} already exists")]
    AlreadyExists {
        /// Record kind.
        kind: RecordKind,
        /// The id that is taken.
        id: String,
    },
    /// A record or argument breaks a rule of the spec.
    #[error("invalid {kind}: {reason}")]
    Invalid {
        /// Record kind.
        kind: RecordKind,
        /// Which rule, and how.
        reason: String,
    },
    /// A paging cursor that this store did not hand out.
    #[error("invalid paging cursor")]
    InvalidCursor,
    /// The database file exists but is not a btps database, or is damaged.
    #[error("{path}: not a usable btps database: {detail}", path = path.display())]
    Corrupted {
        /// The database file.
        path: PathBuf,
        /// What the backend reported.
        detail: String,
    },
    /// The database was written by a newer version of btps.
    #[error(
        "{path}: written with storage schema version {found}, this btps supports up to {supported}; use a newer btps",
        path = path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Schema version found in the file.
        found: u32,
        /// Newest schema version this build knows.
        supported: u32,
    },
    /// The database file is held by another process.
    #[error("{path}: the database is in use by another process", path = path.display())]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// A stored value does not decode: the file was damaged or written by a buggy version.
    #[error("{table}: undecodable stored value: {detail}")]
    Decode {
        /// Table the value is in.
        table: &'static str,
        /// What failed.
        detail: String,
    },
    /// The storage backend failed during a transaction (an I/O error beneath it, a
    /// damaged page, a transaction it could not begin or commit).
    #[error("{path}: database error: {source}", path = path.display())]
    Backend {
        /// The database file.
        path: PathBuf,
        /// The backend's own error, boxed so that no backend type appears in this
        /// API; its message is kept whole.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The storage cannot write now — the disk is full, the file system failed a
    /// write — and nothing of the failed operation was kept. Temporary: the backend
    /// recovers by itself (the redb store reopens its file), so a later attempt
    /// succeeds once the cause is gone (space freed).
    #[error("{path}: storage temporarily unavailable: {reason}", path = path.display())]
    Unavailable {
        /// The database file.
        path: PathBuf,
        /// Why, in a few lower-case words ("no space left on device").
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON store file does not have the reference's shape.
    #[error("{path}: {reason}", path = path.display())]
    FileFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Records of an input file are invalid; nothing was imported.
    #[error("{} invalid record(s), nothing imported:\n{}", problems.len(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    InvalidRecords {
        /// Every problem found.
        problems: Vec<RecordProblem>,
    },
    /// The database holds a table this build does not know, so a backup of it would
    /// be incomplete; nothing was written.
    #[error("{path}: table {table:?} is unknown to this btps; a backup would be incomplete", path = path.display())]
    UnknownTable {
        /// The database file.
        path: PathBuf,
        /// The table's name.
        table: String,
    },
    /// A blocking storage task died (it panicked or the runtime shut down).
    #[error("storage task failed: {0}")]
    TaskFailed(String),
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;
