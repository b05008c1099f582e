//! The PostgreSQL backend (cargo feature `postgres`): the whole storage contract on
//! one database that several btps nodes share.
//!
//! * [`PgStorage`] is the handle: a connection pool (deadpool over tokio-postgres)
//!   and a small runtime of its own on which every connection and query runs, so
//!   that the blocking calls of the contract (`commit_inbound`, `transact`,
//!   `check_ready`) work from any thread — the committer, a blocking-pool thread,
//!   even a runtime thread — without a second runtime being entered.
//! * `schema.rs` creates and migrates the tables at start, in one transaction,
//!   and refuses a database written by a newer btps.
//! * `records.rs` holds the trust and identity records (the reference's JSON form
//!   beside indexed columns), `entries.rs` the mailbox entries and the
//!   subscription cursors, `outbox.rs` the delivery queue, `transaction.rs` the
//!   group commit and [`Storage::transact`], `error.rs` the mapping of driver
//!   errors to [`StoreError`]s.
//!
//! Several nodes, one database:
//!
//! * every write transaction that inserts or moves mailbox entries (a group
//!   commit, a `transact`) first locks the entry-id counter row, so such
//!   transactions run one at a time across all nodes: entry ids are handed out and
//!   become visible in increasing order (`docs/embedding.md` §5.4), and the second
//!   node to receive an artifact finds the first one's entry (§5.3). The unique
//!   index on (receiver, sender, artifact id) of inbox entries holds regardless;
//! * outbox claims take queue heads with `FOR UPDATE SKIP LOCKED` and a lease
//!   (`08-delivery.md` §5): one node per entry, a dead node's claims due again
//!   when their lease runs out;
//! * nothing read from the database is cached in the process, and
//!   [`InboundTransaction::generation`](super::InboundTransaction::generation) is
//!   `None`, so a trust decision made on one node applies to the next artifact on
//!   every other node.
//!
//! A lost connection makes calls fail with [`StoreError::Unavailable`] (the server
//! answers "storage temporarily unavailable", never an acknowledgement without a
//! commit); the pool replaces broken connections on the next checkout, so the
//! backend recovers by itself when the database returns.

mod names;
pub use names::{DEFAULT_IDENTITY_TABLE, DEFAULT_TRUST_TABLE, redact_uri, valid_table_name};

#[cfg(feature = "postgres")]
mod agents;
#[cfg(feature = "postgres")]
mod bulk;
#[cfg(feature = "postgres")]
mod entries;
#[cfg(feature = "postgres")]
mod error;
#[cfg(feature = "postgres")]
mod outbox;
#[cfg(feature = "postgres")]
mod records;
#[cfg(feature = "postgres")]
mod schema;
#[cfg(feature = "postgres")]
mod storage;
#[cfg(feature = "postgres")]
mod transaction;

#[cfg(feature = "postgres")]
pub use bulk::ImportBatch;
#[cfg(feature = "postgres")]
pub use schema::POSTGRES_SCHEMA_VERSION;
#[cfg(feature = "postgres")]
pub(crate) use storage::{Db, Parts};
#[cfg(feature = "postgres")]
pub use storage::{PgOptions, PgStorage};
