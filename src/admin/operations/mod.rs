//! The operator's operations on the database, as serializable requests.
//!
//! Every operator command (`btps identity`, `trust`, `inbox`, `check`) is an
//! [`AdminRequest`] executed by [`execute`] against an [`AdminContext`] (the store
//! and the configuration). The command line calls [`execute`] itself when it can
//! open the database (server stopped) and sends the same request over the admin
//! socket when a server holds the database; the server then calls the same
//! function. There is no second implementation of any operation.
//!
//! Requests carry text as the operator typed it; parsing and validation happen
//! here, so that both paths report the same errors. Records travel in the
//! reference's JSON shape (`crate::wire`), the shape the commands print.
//!
//! This module holds the vocabulary (context, request, response, error) and the
//! dispatch; each family of operations has its own file: `args` (parsing the
//! operator's text), `identity` (hosted identities and their keys), `dns` (the
//! records to publish), `trust` (trust records and decisions), `inbox` (mailbox
//! entries) and `maintenance` (integrity check and backup of the database file).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::future::Future;
use std::sync::Arc;

use crate::config::Config;
use crate::delivery::Outbound;
use crate::store::{RedbStore, Storage, StoreError};

mod agent;
mod args;
mod dns;
mod identity;
mod inbox;
mod maintenance;
mod outbound;
mod trust;

pub use args::{check_selector, parse_identity};
pub use dns::DnsRecord;
pub use identity::{next_selector, next_selector_after};
pub use inbox::instant_text;
pub use maintenance::{CheckReport, check_file, temporary_beside, write_backup};
pub use outbound::{SendRequest, TrustRequestFields};
pub use trust::Decision;

use agent::{agent_list, agent_revoke, agent_token_issue, agent_token_list, agent_token_revoke};
use dns::{dns_records, identity_dns_records};
use identity::{identity_add, identity_json, identity_list, identity_record, identity_rotate_key};
use inbox::{inbox_list, inbox_show};
use maintenance::check_live;
use outbound::{outbox_cancel, outbox_list, outbox_retry, outbox_show, send, sentbox_list};
use trust::{TrustDecision, TrustListing, trust_decide, trust_delete, trust_list, trust_show};

/// Page size when an operation reads a whole table.
const FULL_LISTING_PAGE: u32 = 500;

/// What an operation works on: the storage (any backend of the contract), the
/// server's configuration, and — in a running server — what queues outbound
/// artifacts.
#[derive(Clone)]
pub struct AdminContext {
    storage: Arc<dyn Storage>,
    /// The redb file, when the storage is one: integrity check and backup.
    database: Option<RedbStore>,
    config: Arc<Config>,
    outbound: Option<Outbound>,
    /// A runtime of its own, for a context used outside one (the command line
    /// with the server stopped).
    runtime: Option<Arc<tokio::runtime::Runtime>>,
}

impl std::fmt::Debug for AdminContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminContext")
            .field("database", &self.database.as_ref().map(RedbStore::path))
            .finish_non_exhaustive()
    }
}

impl AdminContext {
    /// A context over `storage`, configured by `config` (listen address, server key,
    /// lookup signers: what DNS records name).
    pub fn new(storage: Arc<dyn Storage>, config: Config) -> Self {
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(_) => None,
            // Without a runtime (a stopped server's command line) the context brings
            // a small one; building it fails only when threads cannot be made.
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()
                .map(Arc::new),
        };
        AdminContext {
            storage,
            database: None,
            config: Arc::new(config),
            outbound: None,
            runtime,
        }
    }

    /// A context over the redb file `store` (which also serves `check` and backups).
    pub fn for_redb(store: RedbStore, config: Config) -> Self {
        let mut context = AdminContext::new(Arc::new(store.clone()), config);
        context.database = Some(store);
        context
    }

    /// With the redb file that holds the mailboxes (for `check` and backups).
    #[must_use]
    pub fn with_database(mut self, store: RedbStore) -> Self {
        self.database = Some(store);
        self
    }

    /// With what queues and signs outbound artifacts (a running server's delivery).
    #[must_use]
    pub fn with_outbound(mut self, outbound: Outbound) -> Self {
        self.outbound = Some(outbound);
        self
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The redb database, or why an operation that needs one cannot run.
    pub fn database(&self) -> AdminResult<&RedbStore> {
        self.database.as_ref().ok_or_else(|| {
            AdminError::Unsupported(String::from(
                "this needs the redb database file; this server's storage is another backend \
                 (back it up with that backend's own tools, e.g. pg_dump)",
            ))
        })
    }

    /// What queues outbound artifacts, if this is a running server with delivery.
    pub fn outbound(&self) -> Option<&Outbound> {
        self.outbound.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs `future` to its end from this blocking operation: on the server's
    /// runtime (operations run on its blocking pool), or on the context's own.
    pub fn wait<F: Future>(&self, future: F) -> AdminResult<F::Output> {
        match (&self.runtime, tokio::runtime::Handle::try_current()) {
            (_, Ok(handle)) => Ok(handle.block_on(future)),
            (Some(runtime), Err(_)) => Ok(runtime.block_on(future)),
            (None, Err(_)) => Err(AdminError::Storage(String::from(
                "no async runtime to run the operation on",
            ))),
        }
    }
}

/// One operator request. Serialized as a JSON object whose `op` member names the
/// operation (`{"op":"identityShow","identity":"pay$client.test"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
#[non_exhaustive]
pub enum AdminRequest {
    /// Is anyone there? Answered with [`AdminResponse::Pong`].
    Ping,
    /// Create the record of a hosted identity with one public key.
    IdentityAdd {
        /// `account$domain`.
        identity: String,
        /// DNS selector of the key.
        selector: String,
        /// SPKI PEM (or base64 SPKI) of the key.
        public_key: String,
    },
    /// Every hosted identity.
    IdentityList,
    /// One identity record.
    IdentityShow {
        /// `account$domain`.
        identity: String,
    },
    /// Add a key under a new selector and make it current; the old keys stay.
    IdentityRotateKey {
        /// `account$domain`.
        identity: String,
        /// The new selector; the next free `btpsN` when absent.
        selector: Option<String>,
        /// SPKI PEM (or base64 SPKI) of the new key.
        public_key: String,
    },
    /// The DNS TXT records to publish for an identity.
    IdentityDnsRecords {
        /// `account$domain`.
        identity: String,
        /// `host[:port]` for the host record; the listen address when absent.
        host: Option<String>,
    },
    /// The DNS TXT records to publish for every hosted identity and its domain (or
    /// for one identity), each name once.
    DnsRecords {
        /// Only this identity (`account$domain`).
        identity: Option<String>,
        /// `host[:port]` for the host records; the listen address when absent.
        host: Option<String>,
    },
    /// A page of trust records from one index.
    TrustList {
        /// The requesting-side records (local party = sender).
        outbound: bool,
        /// Records whose receiver is this identity.
        receiver: Option<String>,
        /// Records whose sender is this identity or agent id.
        sender: Option<String>,
        /// Records with this status.
        status: Option<String>,
        /// Records expiring before this RFC 3339 instant.
        expiring_before: Option<String>,
        /// Most records returned.
        limit: u32,
        /// Where the previous page ended.
        cursor: Option<String>,
    },
    /// Both records of one relationship.
    TrustShow {
        /// Sender identity or agent id.
        sender: String,
        /// Receiver identity.
        receiver: String,
    },
    /// The operator's decision on the receiving-side record.
    TrustDecide {
        /// Sender identity or agent id.
        sender: String,
        /// Hosted receiver identity.
        receiver: String,
        /// The decision.
        decision: Decision,
        /// New end of validity (RFC 3339).
        expires_at: Option<String>,
        /// No new request before this instant (RFC 3339).
        retry_after: Option<String>,
        /// Who decided.
        decided_by: String,
        /// Queue the TRUST_RES to the requester (while the request is pending).
        #[serde(default)]
        notify: bool,
    },
    /// Ask a partner for trust: the requesting side's pending record and the
    /// TRUST_REQ, queued.
    TrustRequest {
        /// The hosted requester.
        from: String,
        /// The partner asked.
        to: String,
        /// The request document's fields.
        fields: TrustRequestFields,
    },
    /// Queue an artifact for delivery.
    Send(SendRequest),
    /// A page of the outbox in queue order.
    OutboxList {
        /// Only this hosted identity's entries.
        identity: Option<String>,
        /// Most entries returned.
        limit: u32,
        /// Where the previous page ended.
        cursor: Option<String>,
    },
    /// One outbound entry with its artifact.
    OutboxShow {
        /// The entry id.
        entry_id: u64,
    },
    /// Make an outbox entry due now.
    OutboxRetry {
        /// The entry id.
        entry_id: u64,
    },
    /// Move an outbox entry that is not in flight to the trash.
    OutboxCancel {
        /// The entry id.
        entry_id: u64,
    },
    /// A page of an identity's sentbox, newest first.
    SentboxList {
        /// The hosted identity.
        identity: String,
        /// Most entries returned.
        limit: u32,
        /// Where the previous page ended.
        cursor: Option<String>,
    },
    /// Delete one trust record.
    TrustDelete {
        /// Sender identity or agent id.
        sender: String,
        /// Receiver identity.
        receiver: String,
        /// The requesting-side record instead of the receiving-side one.
        outbound: bool,
    },
    /// A page of an identity's inbox, newest first.
    InboxList {
        /// The hosted identity.
        identity: String,
        /// Most entries returned.
        limit: u32,
        /// Where the previous page ended.
        cursor: Option<String>,
    },
    /// One mailbox entry with its artifact as received.
    InboxShow {
        /// The entry id.
        entry_id: u64,
    },
    /// Issue a one-time enrollment token for a hosted identity's new agent.
    AgentTokenIssue {
        /// The hosted identity (`account$domain`).
        identity: String,
        /// Lifetime in milliseconds; `agents.enrollment_ttl_ms` when absent.
        ttl_ms: Option<u64>,
        /// Who issues it (recorded with the token).
        issued_by: String,
    },
    /// The outstanding enrollment tokens (of one identity, or all).
    AgentTokenList {
        /// Only this identity's.
        identity: Option<String>,
    },
    /// Delete an unused enrollment token.
    AgentTokenRevoke {
        /// The token id `agentTokenList` shows.
        token_id: String,
    },
    /// The enrolled agents (of one identity, or all).
    AgentList {
        /// Only this identity's.
        identity: Option<String>,
    },
    /// Revoke an agent: its trust record is revoked and its session deleted.
    AgentRevoke {
        /// `btps_ag_<uuid>`.
        agent_id: String,
        /// Who decided.
        decided_by: String,
    },
    /// Integrity check of the live database (through a consistent copy).
    Check,
    /// A consistent copy of the live database. Only over the admin socket, which
    /// answers with [`AdminResponse::BackupStream`] followed by the file's bytes.
    Backup,
}

/// The answer to one [`AdminRequest`]. Records are in the reference's JSON shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum AdminResponse {
    /// Answer to [`AdminRequest::Ping`].
    Pong {
        /// The server's btps version.
        version: String,
        /// The database it holds.
        database: PathBuf,
    },
    /// The identity was created.
    IdentityAdded {
        /// The stored record.
        record: Value,
        /// The key's selector.
        selector: String,
        /// The key's fingerprint.
        fingerprint: String,
        /// Records to publish.
        dns: Vec<DnsRecord>,
        /// Things the operator should know (a loopback host address, a padded key).
        warnings: Vec<String>,
    },
    /// Every hosted identity, ordered by identity.
    Identities {
        /// The records.
        records: Vec<Value>,
    },
    /// One identity record.
    Identity {
        /// The record.
        record: Value,
    },
    /// A new key was added and made current.
    KeyRotated {
        /// The stored record.
        record: Value,
        /// The new selector.
        selector: String,
        /// The selector that was current before.
        previous_selector: String,
        /// The new key's fingerprint.
        fingerprint: String,
        /// Records to publish: the new key record, then the host record naming it.
        dns: Vec<DnsRecord>,
        /// Things the operator should know.
        warnings: Vec<String>,
    },
    /// The records to publish for an identity.
    DnsRecords {
        /// The identity.
        identity: String,
        /// The records.
        records: Vec<DnsRecord>,
        /// Things the operator should know.
        warnings: Vec<String>,
    },
    /// The records to publish for the hosted identities and their domains.
    DnsRecordSet {
        /// The records, each name once.
        records: Vec<DnsRecord>,
        /// Things the operator should know.
        warnings: Vec<String>,
    },
    /// A page of trust records.
    TrustRecords {
        /// The records.
        records: Vec<Value>,
        /// Cursor of the next page.
        next: Option<String>,
    },
    /// Both records of a relationship (at least one exists).
    TrustPair {
        /// Receiving-side record.
        inbound: Option<Value>,
        /// Requesting-side record.
        outbound: Option<Value>,
    },
    /// The receiving-side record after the decision.
    TrustDecided {
        /// The record.
        record: Value,
        /// The TRUST_RES queued to the requester, if one was.
        notified: Option<Value>,
        /// Why none was, when notifying was asked for.
        note: Option<String>,
    },
    /// A trust request was queued.
    TrustRequested {
        /// The requesting side's record (pending).
        record: Value,
        /// The outbox entry of the TRUST_REQ.
        entry: Value,
    },
    /// One outbound entry.
    OutboxEntry {
        /// The entry.
        entry: Value,
    },
    /// A page of outbound entries.
    OutboxEntries {
        /// The entries.
        entries: Vec<Value>,
        /// Cursor of the next page.
        next: Option<String>,
    },
    /// A trust record was deleted.
    TrustDeleted {
        /// Its id.
        id: String,
        /// `inbound` or `outbound`.
        perspective: String,
    },
    /// A page of an inbox.
    InboxEntries {
        /// The entries (without artifacts).
        entries: Vec<Value>,
        /// Entries in the inbox.
        total: u64,
        /// Cursor of the next page.
        next: Option<String>,
    },
    /// One entry, with `artifact` (UTF-8 text) or `artifactBase64`.
    InboxEntry {
        /// The entry.
        entry: Value,
    },
    /// A new enrollment token: shown once, stored only hashed.
    AgentToken {
        /// The token to give the agent's user.
        token: String,
        /// Its id in listings (the first 16 hex digits of its stored hash).
        token_id: String,
        /// The identity it enrolls an agent for.
        identity: String,
        /// When it expires.
        expires_at: String,
    },
    /// The outstanding enrollment tokens (never the tokens themselves).
    AgentTokens {
        /// One object per token.
        tokens: Vec<Value>,
    },
    /// An enrollment token was deleted.
    AgentTokenRevoked {
        /// Its id.
        token_id: String,
    },
    /// The enrolled agents.
    Agents {
        /// One object per agent.
        agents: Vec<Value>,
    },
    /// An agent was revoked.
    AgentRevoked {
        /// Its id.
        agent_id: String,
        /// The identity it acted for.
        owner: String,
    },
    /// The check passed.
    Checked {
        /// What was checked and found.
        report: CheckReport,
    },
    /// A backup of this many bytes follows the response line on the socket.
    BackupStream {
        /// Size of the copy.
        bytes: u64,
    },
}

/// Why an operation failed. The message names what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "camelCase")]
#[non_exhaustive]
pub enum AdminError {
    /// An argument is malformed (identity, selector, time, key, cursor…).
    #[error("{0}")]
    InvalidArgument(String),
    /// The record or file does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The record exists already.
    #[error("{0}")]
    Conflict(String),
    /// The database file is damaged or not a btps database.
    #[error("{0}")]
    Damaged(String),
    /// The database is held by another process.
    #[error("{0}")]
    InUse(String),
    /// The storage or the file system failed.
    #[error("{0}")]
    Storage(String),
    /// The request cannot be served this way (e.g. a backup outside the socket).
    #[error("{0}")]
    Unsupported(String),
    /// The request line was not a request, or the connection failed.
    #[error("{0}")]
    Protocol(String),
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match error {
            StoreError::NotFound { .. } => AdminError::NotFound(message),
            StoreError::AlreadyExists { .. } => AdminError::Conflict(message),
            StoreError::Invalid { .. } => AdminError::InvalidArgument(message),
            StoreError::InvalidCursor => AdminError::InvalidArgument(String::from(
                "invalid --cursor: it belongs to another listing",
            )),
            StoreError::Corrupted { .. } | StoreError::Decode { .. } => {
                AdminError::Damaged(message)
            }
            StoreError::InUse { .. } => AdminError::InUse(message),
            _ => AdminError::Storage(message),
        }
    }
}

/// Result of an operation.
pub type AdminResult<T> = Result<T, AdminError>;

/// Runs one request against the context. Blocking (disk I/O): async callers run it
/// on `spawn_blocking`.
pub fn execute(context: &AdminContext, request: AdminRequest) -> AdminResult<AdminResponse> {
    match request {
        AdminRequest::Ping => Ok(AdminResponse::Pong {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            database: context
                .storage
                .maintenance()
                .map(|maintenance| maintenance.database_path().to_owned())
                .unwrap_or_default(),
        }),
        AdminRequest::IdentityAdd {
            identity,
            selector,
            public_key,
        } => identity_add(context, &identity, &selector, &public_key),
        AdminRequest::IdentityList => identity_list(context),
        AdminRequest::IdentityShow { identity } => {
            let record = identity_record(context, &identity)?;
            Ok(AdminResponse::Identity {
                record: identity_json(&record),
            })
        }
        AdminRequest::IdentityRotateKey {
            identity,
            selector,
            public_key,
        } => identity_rotate_key(context, &identity, selector.as_deref(), &public_key),
        AdminRequest::IdentityDnsRecords { identity, host } => {
            identity_dns_records(context, &identity, host.as_deref())
        }
        AdminRequest::DnsRecords { identity, host } => {
            dns_records(context, identity.as_deref(), host.as_deref())
        }
        AdminRequest::TrustList {
            outbound,
            receiver,
            sender,
            status,
            expiring_before,
            limit,
            cursor,
        } => trust_list(
            context,
            &TrustListing {
                outbound,
                receiver,
                sender,
                status,
                expiring_before,
                limit,
                cursor,
            },
        ),
        AdminRequest::TrustShow { sender, receiver } => trust_show(context, &sender, &receiver),
        AdminRequest::TrustDecide {
            sender,
            receiver,
            decision,
            expires_at,
            retry_after,
            decided_by,
            notify,
        } => trust_decide(
            context,
            &TrustDecision {
                sender,
                receiver,
                decision,
                expires_at,
                retry_after,
                decided_by,
                notify,
            },
        ),
        AdminRequest::TrustRequest { from, to, fields } => {
            outbound::trust_request(context, &from, &to, &fields)
        }
        AdminRequest::Send(request) => send(context, &request),
        AdminRequest::OutboxList {
            identity,
            limit,
            cursor,
        } => outbox_list(context, identity.as_deref(), limit, cursor.as_deref()),
        AdminRequest::OutboxShow { entry_id } => outbox_show(context, entry_id),
        AdminRequest::OutboxRetry { entry_id } => outbox_retry(context, entry_id),
        AdminRequest::OutboxCancel { entry_id } => outbox_cancel(context, entry_id),
        AdminRequest::SentboxList {
            identity,
            limit,
            cursor,
        } => sentbox_list(context, &identity, limit, cursor.as_deref()),
        AdminRequest::TrustDelete {
            sender,
            receiver,
            outbound,
        } => trust_delete(context, &sender, &receiver, outbound),
        AdminRequest::InboxList {
            identity,
            limit,
            cursor,
        } => inbox_list(context, &identity, limit, cursor.as_deref()),
        AdminRequest::InboxShow { entry_id } => inbox_show(context, entry_id),
        AdminRequest::AgentTokenIssue {
            identity,
            ttl_ms,
            issued_by,
        } => agent_token_issue(context, &identity, ttl_ms, &issued_by),
        AdminRequest::AgentTokenList { identity } => agent_token_list(context, identity.as_deref()),
        AdminRequest::AgentTokenRevoke { token_id } => agent_token_revoke(context, &token_id),
        AdminRequest::AgentList { identity } => agent_list(context, identity.as_deref()),
        AdminRequest::AgentRevoke {
            agent_id,
            decided_by,
        } => agent_revoke(context, &agent_id, &decided_by),
        AdminRequest::Check => check_live(context).map(|report| AdminResponse::Checked { report }),
        AdminRequest::Backup => Err(AdminError::Unsupported(String::from(
            "a backup is streamed over the admin socket; use write_backup to write one directly",
        ))),
    }
}

/// Canonical JSON text of a record as a `serde_json` value (key order kept).
fn object_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_travel_as_tagged_json() {
        let request = AdminRequest::TrustDecide {
            sender: String::from("a$b.test"),
            receiver: String::from("c$d.test"),
            decision: Decision::Block,
            expires_at: None,
            retry_after: Some(String::from("2030-01-01T00:00:00Z")),
            decided_by: String::from("operator"),
            notify: true,
        };
        let text = serde_json::to_string(&request).unwrap();
        assert!(text.starts_with(r#"{"op":"trustDecide","sender":"a$b.test""#));
        assert!(text.contains(r#""decision":"block""#));
        assert!(text.contains(r#""retryAfter":"2030-01-01T00:00:00Z""#));
        assert_eq!(
            serde_json::from_str::<AdminRequest>(&text).unwrap(),
            request
        );
        let error = AdminError::NotFound(String::from("no mailbox entry 9"));
        let text = serde_json::to_string(&error).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"notFound","message":"no mailbox entry 9"}"#
        );
        assert_eq!(serde_json::from_str::<AdminError>(&text).unwrap(), error);
    }
}
