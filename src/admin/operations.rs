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
//! reference's JSON shape (`store::wire`), the shape the commands print.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Config;
use crate::crypto::{PublicKey, encode_base64};
use crate::identity::dns::{host_record_text, key_record_text};
use crate::identity::{Identity, compute_trust_id};
use crate::store::wire::{identity_to_json, trust_to_json};
use crate::store::{
    Cursor, IdentityRecord, Mailbox, MailboxEntry, PageRequest, Perspective, PublicKeyRecord,
    RedbOptions, RedbStore, StoreError, Timestamp, TrustPatch, TrustRecord, TrustStatus,
};

/// Version label of keys the appliance adds to identity records.
const KEY_VERSION: &str = "1.0.0";
/// Page size when an operation reads a whole table.
const FULL_LISTING_PAGE: u32 = 500;

/// What an operation works on: the database and the server's configuration.
#[derive(Clone, Debug)]
pub struct AdminContext {
    store: RedbStore,
    config: std::sync::Arc<Config>,
}

impl AdminContext {
    /// A context over `store`, configured by `config` (listen address, server key,
    /// lookup signers: what DNS records name).
    pub fn new(store: RedbStore, config: Config) -> Self {
        AdminContext {
            store,
            config: std::sync::Arc::new(config),
        }
    }

    /// The database.
    pub fn store(&self) -> &RedbStore {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// The operator's decision on a trust record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// The sender may deliver documents.
    Accept,
    /// The sender's request is refused (a new one is allowed after `retry_after`).
    Reject,
    /// A granted trust is withdrawn.
    Revoke,
    /// Nothing from the sender is accepted, not even a new request.
    Block,
}

impl Decision {
    fn status(self) -> TrustStatus {
        match self {
            Decision::Accept => TrustStatus::Accepted,
            Decision::Reject => TrustStatus::Rejected,
            Decision::Revoke => TrustStatus::Revoked,
            Decision::Block => TrustStatus::Blocked,
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
    /// Integrity check of the live database (through a consistent copy).
    Check,
    /// A consistent copy of the live database. Only over the admin socket, which
    /// answers with [`AdminResponse::BackupStream`] followed by the file's bytes.
    Backup,
}

/// One DNS TXT record to publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// The owner name, without the final dot.
    pub name: String,
    /// Always `TXT`.
    #[serde(rename = "type")]
    pub record_type: String,
    /// The record's text (one record; split into strings of at most 255 bytes).
    pub value: String,
    /// What the record is for.
    pub purpose: String,
}

impl DnsRecord {
    fn txt(name: String, value: String, purpose: impl Into<String>) -> Self {
        DnsRecord {
            name,
            record_type: String::from("TXT"),
            value,
            purpose: purpose.into(),
        }
    }
}

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
            database: context.store.path().to_owned(),
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
        } => trust_decide(
            context,
            &sender,
            &receiver,
            decision,
            expires_at.as_deref(),
            retry_after.as_deref(),
            &decided_by,
        ),
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
        AdminRequest::Check => check_live(context).map(|report| AdminResponse::Checked { report }),
        AdminRequest::Backup => Err(AdminError::Unsupported(String::from(
            "a backup is streamed over the admin socket; use write_backup to write one directly",
        ))),
    }
}

// ---- arguments ----

/// Parses an identity argument, naming it in the error.
pub fn parse_identity(text: &str) -> AdminResult<Identity> {
    Identity::parse(text)
        .map_err(|error| AdminError::InvalidArgument(format!("invalid identity {text:?}: {error}")))
}

/// A selector is the first label of a DNS name.
pub fn check_selector(selector: &str) -> AdminResult<()> {
    let valid = !selector.is_empty()
        && selector.len() <= 63
        && selector
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(AdminError::InvalidArgument(format!(
            "invalid selector {selector:?}: use 1 to 63 letters, digits, '-' or '_' (it is a DNS label)"
        )))
    }
}

fn parse_public_key(text: &str) -> AdminResult<PublicKey> {
    let text = text.trim();
    let parsed = if text.starts_with("-----") {
        PublicKey::from_pem(text)
    } else {
        PublicKey::from_base64_spki(text)
    };
    parsed.map_err(|error| AdminError::InvalidArgument(format!("invalid public key: {error}")))
}

fn parse_time(option: &str, text: &str) -> AdminResult<Timestamp> {
    Timestamp::parse(text).map_err(|_| {
        AdminError::InvalidArgument(format!(
            "invalid {option} {text:?}: expected an RFC 3339 instant such as 2026-01-31T00:00:00Z"
        ))
    })
}

fn parse_cursor(text: Option<&str>) -> AdminResult<Option<Cursor>> {
    text.map(|text| {
        text.parse::<Cursor>()
            .map_err(|_| AdminError::InvalidArgument(format!("invalid --cursor {text:?}")))
    })
    .transpose()
}

fn parse_status(text: &str) -> AdminResult<TrustStatus> {
    let status = TrustStatus::from_wire(text);
    if !status.is_known() {
        return Err(AdminError::InvalidArgument(format!(
            "invalid --status {text:?}: use pending, accepted, rejected, revoked or blocked"
        )));
    }
    Ok(status)
}

fn check_sender(sender: &str) -> AdminResult<()> {
    // An agent id is a sender too (agent records), so only identities are parsed.
    if sender.trim().is_empty() {
        return Err(AdminError::InvalidArgument(String::from(
            "the sender must not be empty",
        )));
    }
    if sender.contains('$') {
        parse_identity(sender)?;
    }
    Ok(())
}

// ---- identities ----

fn identity_record(context: &AdminContext, text: &str) -> AdminResult<IdentityRecord> {
    let identity = parse_identity(text)?;
    context
        .store
        .read(|s| s.identity_by_name(identity.as_str()))?
        .ok_or_else(|| AdminError::NotFound(format!("no identity record for {identity}")))
}

fn new_key_record(selector: &str, key: &PublicKey) -> PublicKeyRecord {
    // Node's `export({type: 'spki', format: 'pem'})` ends with a newline.
    let mut pem = key.to_pem();
    pem.push('\n');
    PublicKeyRecord {
        selector: selector.to_owned(),
        public_key: pem,
        key_type: String::from("rsa"),
        version: String::from(KEY_VERSION),
        created_at: Timestamp::now(),
        source: None,
    }
}

fn identity_add(
    context: &AdminContext,
    identity: &str,
    selector: &str,
    public_key: &str,
) -> AdminResult<AdminResponse> {
    let identity = parse_identity(identity)?;
    check_selector(selector)?;
    let key = parse_public_key(public_key)?;
    let record = IdentityRecord::new(
        identity.as_str(),
        new_key_record(selector, &key),
        Timestamp::now(),
    );
    let record = context
        .store
        .create_identity(record)
        .map_err(|error| match error {
            StoreError::AlreadyExists { .. } => {
                AdminError::Conflict(format!("identity {identity} already exists"))
            }
            other => other.into(),
        })?;
    let mut warnings = Vec::new();
    let host = host_address(context.config(), None, &mut warnings)?;
    let dns = vec![
        key_record(&identity, selector, &key, &mut warnings),
        host_record(&identity, &host, selector),
    ];
    Ok(AdminResponse::IdentityAdded {
        record: identity_json(&record),
        selector: selector.to_owned(),
        fingerprint: key.fingerprint().to_owned(),
        dns,
        warnings,
    })
}

fn identity_list(context: &AdminContext) -> AdminResult<AdminResponse> {
    let mut records = Vec::new();
    let mut request = PageRequest::first(FULL_LISTING_PAGE);
    loop {
        let page = context.store.read(|s| s.list_identities(&request))?;
        records.extend(page.items.iter().map(identity_json));
        match page.next {
            Some(cursor) => request = PageRequest::after(cursor, FULL_LISTING_PAGE),
            None => break,
        }
    }
    Ok(AdminResponse::Identities { records })
}

/// The selector a rotation uses when none is given: `btps<N+1>` after the highest
/// `btps<N>` the record has (`btps2` after `btps1`), skipping taken names.
pub fn next_selector(record: &IdentityRecord) -> String {
    let taken: Vec<&str> = record
        .public_keys
        .iter()
        .map(|key| key.selector.as_str())
        .collect();
    next_selector_after(&taken)
}

/// [`next_selector`] over the selectors in use.
pub fn next_selector_after(taken: &[&str]) -> String {
    let highest = taken
        .iter()
        .filter_map(|selector| selector.strip_prefix("btps")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let mut number = highest.saturating_add(1);
    loop {
        let candidate = format!("btps{number}");
        if !taken.contains(&candidate.as_str()) {
            return candidate;
        }
        number = number.saturating_add(1);
    }
}

fn identity_rotate_key(
    context: &AdminContext,
    identity: &str,
    selector: Option<&str>,
    public_key: &str,
) -> AdminResult<AdminResponse> {
    let identity = parse_identity(identity)?;
    if let Some(selector) = selector {
        check_selector(selector)?;
    }
    let key = parse_public_key(public_key)?;
    // Read, check and write in one transaction, so that two rotations cannot pick
    // the same selector.
    let outcome = context.store.write(|batch| {
        let Some(record) = batch.identity(&identity.id())? else {
            return Ok(Err(AdminError::NotFound(format!(
                "no identity record for {identity}"
            ))));
        };
        let selector = selector.map_or_else(|| next_selector(&record), str::to_owned);
        if record.key(Some(&selector)).is_some() {
            return Ok(Err(AdminError::Conflict(format!(
                "{identity} already has a key with selector {selector:?}; choose a new selector (the old key must stay published)"
            ))));
        }
        let previous = record.current_selector;
        let stored =
            batch.put_public_key(identity.as_str(), new_key_record(&selector, &key), true)?;
        Ok(Ok((stored, selector, previous)))
    })?;
    let (record, selector, previous_selector) = outcome?;
    let mut warnings = Vec::new();
    let host = host_address(context.config(), None, &mut warnings)?;
    let dns = vec![
        key_record(&identity, &selector, &key, &mut warnings),
        host_record(&identity, &host, &selector),
    ];
    Ok(AdminResponse::KeyRotated {
        record: identity_json(&record),
        selector,
        previous_selector,
        fingerprint: key.fingerprint().to_owned(),
        dns,
        warnings,
    })
}

fn identity_dns_records(
    context: &AdminContext,
    identity: &str,
    host: Option<&str>,
) -> AdminResult<AdminResponse> {
    let record = identity_record(context, identity)?;
    let identity = parse_identity(&record.identity)?;
    let mut warnings = Vec::new();
    let host = host_address(context.config(), host, &mut warnings)?;
    let mut records = Vec::new();
    for stored in &record.public_keys {
        match parse_public_key(&stored.public_key) {
            Ok(key) => records.push(key_record(&identity, &stored.selector, &key, &mut warnings)),
            Err(_) => warnings.push(format!(
                "the stored key {:?} does not parse; no record for it",
                stored.selector
            )),
        }
    }
    records.push(host_record(&identity, &host, &record.current_selector));
    let config = context.config();
    let signer = config.lookup_signer(identity.domain());
    let server_key = &config.server.public_key_path;
    match fs::read_to_string(server_key)
        .map_err(|error| error.to_string())
        .and_then(|pem| PublicKey::from_pem(&pem).map_err(|error| error.to_string()))
    {
        Ok(key) => records.push(DnsRecord::txt(
            signer.key_record_name(&config.server.selector),
            key_record_text(&key.to_base64()),
            format!(
                "the server key of {signer}, which signs identity-lookup answers for {}",
                identity.domain()
            ),
        )),
        Err(error) => warnings.push(format!(
            "no record for the lookup signer {signer}: the server key {} is unreadable ({error}); start btps serve once to create it",
            server_key.display()
        )),
    }
    Ok(AdminResponse::DnsRecords {
        identity: record.identity,
        records,
        warnings,
    })
}

/// The `u=` value of the host record: the given `host[:port]`, else the configured
/// listen address (with a warning when other machines cannot reach it).
fn host_address(
    config: &Config,
    given: Option<&str>,
    warnings: &mut Vec<String>,
) -> AdminResult<String> {
    if let Some(host) = given {
        let valid = !host.is_empty()
            && !host
                .chars()
                .any(|c| c.is_whitespace() || c == ';' || c == '=' || c == '"');
        if !valid {
            return Err(AdminError::InvalidArgument(format!(
                "invalid --host {host:?}: expected HOST[:PORT] without spaces, ';', '=' or quotes"
            )));
        }
        return Ok(host.to_owned());
    }
    let listen = config.listen;
    if listen.ip().is_loopback() || listen.ip().is_unspecified() {
        warnings.push(format!(
            "the host record names the listen address {listen}, which other machines cannot reach; pass --host with the public HOST:PORT"
        ));
    }
    Ok(listen.to_string())
}

fn key_record(
    identity: &Identity,
    selector: &str,
    key: &PublicKey,
    warnings: &mut Vec<String>,
) -> DnsRecord {
    let base64 = key.to_base64();
    if base64.ends_with('=') {
        warnings.push(format!(
            "the key {selector:?} of {identity} has padded base64; reference peers cannot read padded keys from DNS (use a 2048-bit key)"
        ));
    }
    DnsRecord::txt(
        identity.key_record_name(selector),
        key_record_text(&base64),
        format!("public key {selector} of {identity}"),
    )
}

fn host_record(identity: &Identity, host: &str, selector: &str) -> DnsRecord {
    DnsRecord::txt(
        identity.host_record_name(),
        host_record_text(host, selector),
        format!(
            "the server and current selector of {} (one record per domain)",
            identity.domain()
        ),
    )
}

/// The reference's JSON record plus each key's fingerprint.
fn identity_json(record: &IdentityRecord) -> Value {
    let mut value = object_json(&identity_to_json(record).to_canonical());
    if let Some(keys) = value.get_mut("publicKeys").and_then(Value::as_array_mut) {
        for (key, stored) in keys.iter_mut().zip(&record.public_keys) {
            if let Some(object) = key.as_object_mut() {
                let fingerprint = parse_public_key(&stored.public_key)
                    .ok()
                    .map(|key| Value::from(key.fingerprint()));
                object.insert(
                    String::from("fingerprint"),
                    fingerprint.unwrap_or(Value::Null),
                );
            }
        }
    }
    value
}

// ---- trust ----

/// The arguments of a trust listing.
struct TrustListing {
    outbound: bool,
    receiver: Option<String>,
    sender: Option<String>,
    status: Option<String>,
    expiring_before: Option<String>,
    limit: u32,
    cursor: Option<String>,
}

fn perspective(outbound: bool) -> (Perspective, &'static str) {
    if outbound {
        (Perspective::Outbound, "outbound")
    } else {
        (Perspective::Inbound, "inbound")
    }
}

fn trust_list(context: &AdminContext, listing: &TrustListing) -> AdminResult<AdminResponse> {
    let (perspective, _) = perspective(listing.outbound);
    let status = listing.status.as_deref().map(parse_status).transpose()?;
    let expiring = listing
        .expiring_before
        .as_deref()
        .map(|text| parse_time("--expiring-before", text))
        .transpose()?;
    let page = PageRequest {
        after: parse_cursor(listing.cursor.as_deref())?,
        limit: listing.limit,
    };
    let listed = context.store.read(|s| {
        if let Some(before) = &expiring {
            s.list_expiring_before(perspective, before.millis(), status.as_ref(), &page)
        } else if let Some(receiver) = &listing.receiver {
            s.list_by_receiver(perspective, receiver, &page)
        } else if let Some(sender) = &listing.sender {
            s.list_by_sender(perspective, sender, &page)
        } else if let Some(status) = &status {
            s.list_by_status(perspective, status, &page)
        } else {
            s.list_all(perspective, &page)
        }
    })?;
    Ok(AdminResponse::TrustRecords {
        records: listed.items.iter().map(trust_json).collect(),
        next: listed.next.as_ref().map(ToString::to_string),
    })
}

fn trust_show(context: &AdminContext, sender: &str, receiver: &str) -> AdminResult<AdminResponse> {
    check_sender(sender)?;
    parse_identity(receiver)?;
    let id = compute_trust_id(sender, receiver);
    let (inbound, outbound) = context.store.read(|s| {
        Ok((
            s.trust(Perspective::Inbound, &id)?,
            s.trust(Perspective::Outbound, &id)?,
        ))
    })?;
    if inbound.is_none() && outbound.is_none() {
        return Err(AdminError::NotFound(format!(
            "no trust record from {sender} to {receiver} (id {id})"
        )));
    }
    Ok(AdminResponse::TrustPair {
        inbound: inbound.as_ref().map(trust_json),
        outbound: outbound.as_ref().map(trust_json),
    })
}

fn trust_decide(
    context: &AdminContext,
    sender: &str,
    receiver: &str,
    decision: Decision,
    expires_at: Option<&str>,
    retry_after: Option<&str>,
    decided_by: &str,
) -> AdminResult<AdminResponse> {
    check_sender(sender)?;
    parse_identity(receiver)?;
    let expires_at = expires_at
        .map(|text| parse_time("--expires-at", text))
        .transpose()?;
    let retry_after = retry_after
        .map(|text| parse_time("--retry-after", text))
        .transpose()?;
    if decided_by.trim().is_empty() {
        return Err(AdminError::InvalidArgument(String::from(
            "--decided-by must not be empty",
        )));
    }
    let id = compute_trust_id(sender, receiver);
    let patch = TrustPatch {
        status: Some(decision.status()),
        decided_by: Some(decided_by.to_owned()),
        decided_at: Some(Timestamp::now()),
        expires_at: expires_at.map(Some),
        retry_after_date: retry_after.map(Some),
        ..TrustPatch::default()
    };
    // The receiving side's record: the local party is the receiver (05-trust.md §4.2).
    let updated = context.store.write(|batch| {
        if batch.trust(Perspective::Inbound, &id)?.is_none() {
            return Ok(None);
        }
        batch
            .update_trust(Perspective::Inbound, &id, patch)
            .map(Some)
    })?;
    let record = updated.ok_or_else(|| {
        AdminError::NotFound(format!(
            "no trust record from {sender} to {receiver} (nothing to decide on)"
        ))
    })?;
    Ok(AdminResponse::TrustDecided {
        record: trust_json(&record),
    })
}

fn trust_delete(
    context: &AdminContext,
    sender: &str,
    receiver: &str,
    outbound: bool,
) -> AdminResult<AdminResponse> {
    check_sender(sender)?;
    parse_identity(receiver)?;
    let (perspective, name) = perspective(outbound);
    let id = compute_trust_id(sender, receiver);
    if !context.store.delete_trust(perspective, &id)? {
        return Err(AdminError::NotFound(format!(
            "no {name} trust record from {sender} to {receiver}"
        )));
    }
    Ok(AdminResponse::TrustDeleted {
        id,
        perspective: name.to_owned(),
    })
}

fn trust_json(record: &TrustRecord) -> Value {
    object_json(&trust_to_json(record).to_canonical())
}

// ---- inbox ----

fn inbox_list(
    context: &AdminContext,
    identity: &str,
    limit: u32,
    cursor: Option<&str>,
) -> AdminResult<AdminResponse> {
    let identity = parse_identity(identity)?;
    let page = PageRequest {
        after: parse_cursor(cursor)?,
        limit,
    };
    let listed = context.store.read(|s| {
        if s.identity_by_name(identity.as_str())?.is_none() {
            return Ok(None);
        }
        let page = s.list_mailbox(identity.as_str(), Mailbox::Inbox, &page, true)?;
        let total = s.mailbox_count(identity.as_str(), Mailbox::Inbox)?;
        Ok(Some((page, total)))
    })?;
    let (listed, total) = listed
        .ok_or_else(|| AdminError::NotFound(format!("{identity} is not a hosted identity")))?;
    Ok(AdminResponse::InboxEntries {
        entries: listed.items.iter().map(entry_json).collect(),
        total,
        next: listed.next.as_ref().map(ToString::to_string),
    })
}

fn inbox_show(context: &AdminContext, entry_id: u64) -> AdminResult<AdminResponse> {
    let entry = context
        .store
        .mailbox_entry(entry_id)?
        .ok_or_else(|| AdminError::NotFound(format!("no mailbox entry {entry_id}")))?;
    let mut value = entry_json(&entry);
    if let Some(object) = value.as_object_mut() {
        // The artifact as a JSON string holds the exact bytes; bytes that are not
        // UTF-8 (never accepted from the wire, but possible) go as base64.
        match std::str::from_utf8(&entry.raw) {
            Ok(text) => object.insert(String::from("artifact"), Value::from(text)),
            Err(_) => object.insert(
                String::from("artifactBase64"),
                Value::from(encode_base64(&entry.raw)),
            ),
        };
    }
    Ok(AdminResponse::InboxEntry { entry: value })
}

fn entry_json(entry: &MailboxEntry) -> Value {
    let meta = &entry.meta;
    let time = |timestamp: Option<&Timestamp>| timestamp.map(ToString::to_string);
    json!({
        "entryId": entry.entry_id,
        "owner": entry.owner,
        "mailbox": entry.mailbox.as_str(),
        "at": instant_text(entry.at_millis),
        "kind": entry.kind.as_str(),
        "artifactId": entry.artifact_id,
        "type": entry.artifact_type,
        "from": entry.from,
        "to": entry.to,
        "title": entry.title,
        "size": entry.raw.len(),
        "meta": {
            "seen": meta.seen,
            "seenAt": time(meta.seen_at.as_ref()),
            "receivedAt": time(meta.received_at.as_ref()),
            "remoteAddress": meta.remote_address,
        },
    })
}

/// An instant in milliseconds as RFC 3339 text (the number itself if out of range).
pub fn instant_text(millis: i64) -> String {
    Timestamp::from_millis(millis).map_or_else(|_| millis.to_string(), |t| t.to_string())
}

/// Canonical JSON text of a record as a `serde_json` value (key order kept).
fn object_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

// ---- backup and check ----

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
/// A damaged or foreign file is refused before anything is written to it. A file
/// left by a crash is recovered, as opening it would; a file of an older schema is
/// migrated forward, as the server would do.
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
    let options = RedbOptions {
        cache_size: 4 << 20,
        check_integrity_on_open: true,
    };
    let (identities, trust_inbound, trust_outbound) = {
        let store = RedbStore::open(path, &options)?;
        count_records(&store)?
    };
    // The file opened as a btps database; redb's full check once it is closed again.
    let intact = RedbStore::check_file_integrity(path)?;
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
fn check_live(context: &AdminContext) -> AdminResult<CheckReport> {
    let live = context.store.path();
    let copy = temporary_beside(live, "check");
    let outcome = write_backup(&context.store, &copy).and_then(|_| check_file(&copy));
    let _ = fs::remove_file(&copy);
    let mut report = outcome?;
    report.path = live.to_owned();
    report.live = true;
    Ok(report)
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

    #[test]
    fn the_next_selector_follows_the_highest_btps_number() {
        let key = |selector: &str| PublicKeyRecord {
            selector: selector.to_owned(),
            public_key: String::new(),
            key_type: String::from("rsa"),
            version: String::from("1.0.0"),
            created_at: Timestamp::now(),
            source: None,
        };
        let mut record = IdentityRecord::new("a$b.test", key("s2025"), Timestamp::now());
        assert_eq!(next_selector(&record), "btps1");
        record.put_key(key("btps1"), false);
        record.put_key(key("btps7"), false);
        assert_eq!(next_selector(&record), "btps8");
    }
}
