//! `btps identity`, `btps trust` and `btps inbox`: the operator's commands on the
//! hosted identities, the trust records and the inboxes.
//!
//! They open the database directly (redb lets one process hold it, so they refuse
//! to run beside a server that holds it) and print a table, or JSON with `--json`.
//! The appliance never keeps a hosted user's private key: `identity add` hands a
//! generated one to its owner as a file and stores only the public key.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use btps::crypto::{PrivateKey, PublicKey};
use btps::identity::dns::{host_record_text, key_record_text};
use btps::identity::{Identity, compute_trust_id};
use btps::store::wire::{identity_to_json, trust_to_json};
use btps::store::{
    Cursor, IdentityRecord, Mailbox, MailboxEntry, PageRequest, Perspective, PublicKeyRecord,
    StoreError, Timestamp, TrustPatch, TrustRecord, TrustStatus,
};
use clap::Subcommand;
use serde_json::{Value, json};

use super::keys::write_private;
use super::store::DataDirArg;

/// Version label of keys the appliance adds to identity records.
const KEY_VERSION: &str = "1.0.0";
/// Page size when a command lists everything.
const FULL_LISTING_PAGE: u32 = 500;

/// Options every admin command has.
#[derive(Debug, clap::Args)]
pub(crate) struct OutputArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `btps identity`.
#[derive(Debug, clap::Args)]
pub(crate) struct IdentityArgs {
    #[command(subcommand)]
    command: IdentityCommand,
}

#[derive(Debug, Subcommand)]
enum IdentityCommand {
    /// Create the identity record of a hosted identity (generating its key pair
    /// unless a public key is given) and print the DNS records to publish.
    Add(IdentityAddArgs),
    /// List the hosted identities.
    List(IdentityListArgs),
    /// Show one identity record with its keys.
    Show(IdentityShowArgs),
}

#[derive(Debug, clap::Args)]
struct IdentityAddArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The identity, `account$domain`.
    identity: String,
    /// DNS selector of the key.
    #[arg(long, default_value = "btps1")]
    selector: String,
    /// The identity's public key (SPKI PEM file); without it a key pair is generated.
    #[arg(long, value_name = "PEM")]
    public_key: Option<PathBuf>,
    /// Directory for the generated private key (never overwritten).
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".",
        conflicts_with = "public_key"
    )]
    key_out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct IdentityListArgs {
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, clap::Args)]
struct IdentityShowArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The identity, `account$domain`.
    identity: String,
}

/// Arguments of `btps trust`.
#[derive(Debug, clap::Args)]
pub(crate) struct TrustArgs {
    #[command(subcommand)]
    command: TrustCommand,
}

#[derive(Debug, Subcommand)]
enum TrustCommand {
    /// List trust records from an index.
    List(TrustListArgs),
    /// Show the records of one relationship.
    Show(TrustPairArgs),
    /// Accept a sender: it may deliver documents (until --expires-at).
    Accept(TrustDecisionArgs),
    /// Reject a sender's request (a new one is allowed after --retry-after).
    Reject(TrustDecisionArgs),
    /// Withdraw a granted trust.
    Revoke(TrustDecisionArgs),
    /// Block a sender: nothing from it is accepted, not even a new request.
    Block(TrustDecisionArgs),
    /// Delete a trust record.
    Delete(TrustDeleteArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("index").args(["receiver", "sender", "expiring_before"])))]
struct TrustListArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Records whose receiver is this identity.
    #[arg(long, value_name = "ID")]
    receiver: Option<String>,
    /// Records whose sender is this identity (or agent id).
    #[arg(long, value_name = "ID")]
    sender: Option<String>,
    /// Records with this status (pending, accepted, rejected, revoked, blocked).
    #[arg(long, value_name = "S", conflicts_with_all = ["receiver", "sender"])]
    status: Option<String>,
    /// Records that expire before this RFC 3339 instant, soonest first.
    #[arg(long, value_name = "TIME")]
    expiring_before: Option<String>,
    /// The requesting-side records (local party = sender) instead of the receiving side.
    #[arg(long)]
    outbound: bool,
    /// Maximum number of records.
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: u32,
    /// Continue after the listing that printed this cursor.
    #[arg(long, value_name = "C")]
    cursor: Option<String>,
}

#[derive(Debug, clap::Args)]
struct TrustPairArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The sender (identity or agent id).
    sender: String,
    /// The receiver identity.
    receiver: String,
}

#[derive(Debug, clap::Args)]
struct TrustDecisionArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The sender (identity or agent id).
    sender: String,
    /// The hosted receiver identity.
    receiver: String,
    /// End of validity (RFC 3339); unchanged when absent.
    #[arg(long, value_name = "TIME")]
    expires_at: Option<String>,
    /// No new request before this instant (RFC 3339); unchanged when absent.
    #[arg(long, value_name = "TIME")]
    retry_after: Option<String>,
    /// Who decided.
    #[arg(long, value_name = "NAME", default_value = "operator")]
    decided_by: String,
}

#[derive(Debug, clap::Args)]
struct TrustDeleteArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The sender (identity or agent id).
    sender: String,
    /// The receiver identity.
    receiver: String,
    /// Delete the requesting-side record instead of the receiving-side one.
    #[arg(long)]
    outbound: bool,
}

/// Arguments of `btps inbox`.
#[derive(Debug, clap::Args)]
pub(crate) struct InboxArgs {
    #[command(subcommand)]
    command: InboxCommand,
}

#[derive(Debug, Subcommand)]
enum InboxCommand {
    /// List the inbox of a hosted identity, newest first.
    List(InboxListArgs),
    /// Print one entry's artifact exactly as received (with its state in --json).
    Show(InboxShowArgs),
}

#[derive(Debug, clap::Args)]
struct InboxListArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The hosted identity.
    identity: String,
    /// Maximum number of entries.
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: u32,
    /// Continue after the listing that printed this cursor.
    #[arg(long, value_name = "C")]
    cursor: Option<String>,
}

#[derive(Debug, clap::Args)]
struct InboxShowArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The entry id (from `btps inbox list`).
    entry_id: u64,
}

// ---- identity ----

/// Runs `btps identity …`.
pub(crate) fn identity(args: &IdentityArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        IdentityCommand::Add(args) => identity_add(args),
        IdentityCommand::List(args) => identity_list(args),
        IdentityCommand::Show(args) => identity_show(args),
    }
}

fn parse_identity(text: &str) -> anyhow::Result<Identity> {
    Identity::parse(text).map_err(|error| anyhow::anyhow!("invalid identity {text:?}: {error}"))
}

/// A selector is the first label of a DNS name.
fn check_selector(selector: &str) -> anyhow::Result<()> {
    let valid = !selector.is_empty()
        && selector.len() <= 63
        && selector
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !valid {
        bail!(
            "invalid selector {selector:?}: use 1 to 63 letters, digits, '-' or '_' (it is a DNS label)"
        );
    }
    Ok(())
}

fn identity_add(args: &IdentityAddArgs) -> anyhow::Result<ExitCode> {
    let identity = parse_identity(&args.identity)?;
    check_selector(&args.selector)?;
    let given = match &args.public_key {
        Some(path) => {
            let pem =
                fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(PublicKey::from_pem(&pem).with_context(|| format!("{}", path.display()))?)
        }
        None => None,
    };
    let store = args.output.data.open()?;
    if store
        .read(|s| s.identity_by_name(identity.as_str()))?
        .is_some()
    {
        bail!("identity {identity} already exists");
    }
    // The private key goes to its owner before the record exists, so that a record
    // never points at a key nobody holds; if the record cannot be written, the file
    // is removed again.
    let (public, private_file) = match given {
        Some(key) => (key, None),
        None => {
            let file_name = format!(
                "{}.{}.{}.key.pem",
                identity.account(),
                identity.domain(),
                args.selector
            );
            let path = args.key_out.join(file_name);
            if path.exists() {
                bail!(
                    "{} already exists; refusing to overwrite a key",
                    path.display()
                );
            }
            fs::create_dir_all(&args.key_out)
                .with_context(|| format!("creating {}", args.key_out.display()))?;
            let key = PrivateKey::generate(2048).context("generating the key pair")?;
            write_private(&path, &key.to_pkcs8_pem())?;
            (key.public_key().clone(), Some(path))
        }
    };
    let now = Timestamp::now();
    // Node's `export({type: 'spki', format: 'pem'})` ends with a newline.
    let mut pem = public.to_pem();
    pem.push('\n');
    let key = PublicKeyRecord {
        selector: args.selector.clone(),
        public_key: pem,
        key_type: String::from("rsa"),
        version: String::from(KEY_VERSION),
        created_at: now.clone(),
        source: None,
    };
    let record = match store.create_identity(IdentityRecord::new(identity.as_str(), key, now)) {
        Ok(record) => record,
        Err(error) => {
            if let Some(path) = &private_file {
                let _ = fs::remove_file(path);
            }
            return Err(error).context(format!("storing identity {identity}"));
        }
    };

    let key_name = identity.key_record_name(&args.selector);
    let key_text = key_record_text(&public.to_base64());
    let host_name = identity.host_record_name();
    let host_text = host_record_text("<host:port>", &args.selector);
    if args.output.json {
        let value = json!({
            "identity": record.identity,
            "id": record.id,
            "selector": args.selector,
            "fingerprint": public.fingerprint(),
            "publicKey": record.public_keys.first().map(|key| key.public_key.clone()),
            "privateKeyFile": private_file.as_ref().map(|path| path.display().to_string()),
            "dns": [
                {"name": key_name, "type": "TXT", "value": key_text},
                {"name": host_name, "type": "TXT", "value": host_text},
            ],
        });
        print_json(&value);
    } else {
        print_fields(&[
            ("identity", record.identity),
            ("id", record.id),
            ("selector", args.selector.clone()),
            ("fingerprint", public.fingerprint().to_owned()),
        ]);
        if let Some(path) = &private_file {
            println!(
                "private key: {} (mode 0600): give it to the identity's owner; the appliance keeps no copy",
                path.display()
            );
        }
        println!();
        println!(
            "Publish this DNS TXT record (one record; split the value into strings of at most 255 bytes):"
        );
        println!("{key_name}. IN TXT \"{key_text}\"");
        println!();
        println!("and, once per domain, the host record naming this server:");
        println!("{host_name}. IN TXT \"{host_text}\"");
        if public.to_base64().ends_with('=') {
            println!(
                "note: this key's base64 is padded; reference peers cannot read padded keys from DNS (use a 2048-bit key)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn identity_list(args: &IdentityListArgs) -> anyhow::Result<ExitCode> {
    let store = args.output.data.open_existing()?;
    let mut records = Vec::new();
    let mut request = PageRequest::first(FULL_LISTING_PAGE);
    loop {
        let page = store.read(|s| s.list_identities(&request))?;
        records.extend(page.items);
        match page.next {
            Some(cursor) => request = PageRequest::after(cursor, FULL_LISTING_PAGE),
            None => break,
        }
    }
    if args.output.json {
        print_json(&Value::Array(records.iter().map(identity_json).collect()));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            let current = record.key(None);
            vec![
                record.identity.clone(),
                record.current_selector.clone(),
                record.public_keys.len().to_string(),
                current.map_or_else(|| String::from("-"), key_fingerprint),
                record.created_at.to_string(),
            ]
        })
        .collect();
    print_table(
        &["IDENTITY", "SELECTOR", "KEYS", "FINGERPRINT", "CREATED"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

fn identity_show(args: &IdentityShowArgs) -> anyhow::Result<ExitCode> {
    let identity = parse_identity(&args.identity)?;
    let store = args.output.data.open_existing()?;
    let Some(record) = store.read(|s| s.identity_by_name(identity.as_str()))? else {
        bail!("no identity record for {identity}");
    };
    if args.output.json {
        print_json(&identity_json(&record));
        return Ok(ExitCode::SUCCESS);
    }
    let mut fields = vec![
        ("identity", record.identity.clone()),
        ("id", record.id.clone()),
        ("current selector", record.current_selector.clone()),
        ("created", record.created_at.to_string()),
    ];
    if let Some(updated) = &record.updated_at {
        fields.push(("updated", updated.to_string()));
    }
    print_fields(&fields);
    println!();
    let rows: Vec<Vec<String>> = record
        .public_keys
        .iter()
        .map(|key| {
            let current = if key.selector == record.current_selector {
                "*"
            } else {
                ""
            };
            vec![
                format!("{}{current}", key.selector),
                key.key_type.clone(),
                key.version.clone(),
                key_fingerprint(key),
                key.created_at.to_string(),
            ]
        })
        .collect();
    print_table(
        &["SELECTOR", "TYPE", "VERSION", "FINGERPRINT", "CREATED"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// The key's fingerprint, or why there is none (a stored key may be a placeholder).
fn key_fingerprint(key: &PublicKeyRecord) -> String {
    parse_stored_key(&key.public_key).map_or_else(
        || String::from("(unparsable key)"),
        |key| key.fingerprint().to_owned(),
    )
}

fn parse_stored_key(text: &str) -> Option<PublicKey> {
    let text = text.trim();
    if text.starts_with("-----") {
        PublicKey::from_pem(text).ok()
    } else {
        PublicKey::from_base64_spki(text).ok()
    }
}

/// The reference's JSON record plus each key's fingerprint.
fn identity_json(record: &IdentityRecord) -> Value {
    let mut value = object_json(&identity_to_json(record).to_canonical());
    if let Some(keys) = value.get_mut("publicKeys").and_then(Value::as_array_mut) {
        for (key, stored) in keys.iter_mut().zip(&record.public_keys) {
            if let Some(object) = key.as_object_mut() {
                let fingerprint =
                    parse_stored_key(&stored.public_key).map(|key| Value::from(key.fingerprint()));
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

/// Runs `btps trust …`.
pub(crate) fn trust(args: &TrustArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        TrustCommand::List(args) => trust_list(args),
        TrustCommand::Show(args) => trust_show(args),
        TrustCommand::Accept(args) => trust_decide(args, TrustStatus::Accepted),
        TrustCommand::Reject(args) => trust_decide(args, TrustStatus::Rejected),
        TrustCommand::Revoke(args) => trust_decide(args, TrustStatus::Revoked),
        TrustCommand::Block(args) => trust_decide(args, TrustStatus::Blocked),
        TrustCommand::Delete(args) => trust_delete(args),
    }
}

fn parse_time(option: &str, text: &str) -> anyhow::Result<Timestamp> {
    Timestamp::parse(text).map_err(|_| {
        anyhow::anyhow!(
            "invalid {option} {text:?}: expected an RFC 3339 instant such as 2026-01-31T00:00:00Z"
        )
    })
}

fn parse_cursor(text: Option<&str>) -> anyhow::Result<Option<Cursor>> {
    text.map(|text| {
        text.parse::<Cursor>()
            .map_err(|_| anyhow::anyhow!("invalid --cursor {text:?}"))
    })
    .transpose()
}

fn parse_status(text: &str) -> anyhow::Result<TrustStatus> {
    let status = TrustStatus::from_wire(text);
    if !status.is_known() {
        bail!("invalid --status {text:?}: use pending, accepted, rejected, revoked or blocked");
    }
    Ok(status)
}

fn check_sender(sender: &str) -> anyhow::Result<()> {
    // An agent id is a sender too (agent records), so only identities are parsed.
    if sender.trim().is_empty() {
        bail!("the sender must not be empty");
    }
    if sender.contains('$') {
        parse_identity(sender)?;
    }
    Ok(())
}

fn trust_list(args: &TrustListArgs) -> anyhow::Result<ExitCode> {
    let perspective = if args.outbound {
        Perspective::Outbound
    } else {
        Perspective::Inbound
    };
    let status = args.status.as_deref().map(parse_status).transpose()?;
    let expiring = args
        .expiring_before
        .as_deref()
        .map(|text| parse_time("--expiring-before", text))
        .transpose()?;
    let page = PageRequest {
        after: parse_cursor(args.cursor.as_deref())?,
        limit: args.limit,
    };
    let store = args.output.data.open_existing()?;
    let listed = store.read(|s| {
        if let Some(before) = &expiring {
            s.list_expiring_before(perspective, before.millis(), status.as_ref(), &page)
        } else if let Some(receiver) = &args.receiver {
            s.list_by_receiver(perspective, receiver, &page)
        } else if let Some(sender) = &args.sender {
            s.list_by_sender(perspective, sender, &page)
        } else if let Some(status) = &status {
            s.list_by_status(perspective, status, &page)
        } else {
            s.list_all(perspective, &page)
        }
    });
    let listed = match listed {
        Err(StoreError::InvalidCursor) => {
            bail!("invalid --cursor: it belongs to another listing")
        }
        other => other?,
    };
    let next = listed.next.as_ref().map(ToString::to_string);
    if args.output.json {
        let records: Vec<Value> = listed.items.iter().map(trust_json).collect();
        print_json(&json!({"records": records, "next": next}));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = listed
        .items
        .iter()
        .map(|record| {
            vec![
                record.sender_id.clone(),
                record.receiver_id.clone(),
                record.status.to_string(),
                optional(record.expires_at.as_ref()),
                record.decided_by.clone(),
                record.decided_at.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "SENDER",
            "RECEIVER",
            "STATUS",
            "EXPIRES",
            "DECIDED BY",
            "DECIDED AT",
        ],
        &rows,
    );
    if let Some(next) = next {
        println!("more: --cursor {next}");
    }
    Ok(ExitCode::SUCCESS)
}

fn trust_show(args: &TrustPairArgs) -> anyhow::Result<ExitCode> {
    check_sender(&args.sender)?;
    parse_identity(&args.receiver)?;
    let id = compute_trust_id(&args.sender, &args.receiver);
    let store = args.output.data.open_existing()?;
    let (inbound, outbound) = store.read(|s| {
        Ok((
            s.trust(Perspective::Inbound, &id)?,
            s.trust(Perspective::Outbound, &id)?,
        ))
    })?;
    if inbound.is_none() && outbound.is_none() {
        bail!(
            "no trust record from {} to {} (id {id})",
            args.sender,
            args.receiver
        );
    }
    if args.output.json {
        print_json(&json!({
            "inbound": inbound.as_ref().map(trust_json),
            "outbound": outbound.as_ref().map(trust_json),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut first = true;
    for (name, record) in [("inbound", &inbound), ("outbound", &outbound)] {
        if let Some(record) = record {
            if !first {
                println!();
            }
            first = false;
            print_trust(name, record);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_trust(perspective: &str, record: &TrustRecord) {
    let mut fields = vec![
        ("perspective", perspective.to_owned()),
        ("id", record.id.clone()),
        ("sender", record.sender_id.clone()),
        ("receiver", record.receiver_id.clone()),
        ("status", record.status.to_string()),
        ("decided by", record.decided_by.clone()),
        ("decided at", record.decided_at.to_string()),
        ("expires at", optional(record.expires_at.as_ref())),
        ("retry after", optional(record.retry_after_date.as_ref())),
        ("privacy", record.privacy_type.as_str().to_owned()),
        ("fingerprint", record.public_key_fingerprint.clone()),
        ("created", record.created_at.to_string()),
    ];
    if let Some(updated) = &record.updated_at {
        fields.push(("updated", updated.to_string()));
    }
    print_fields(&fields);
}

fn trust_decide(args: &TrustDecisionArgs, status: TrustStatus) -> anyhow::Result<ExitCode> {
    check_sender(&args.sender)?;
    parse_identity(&args.receiver)?;
    let expires_at = args
        .expires_at
        .as_deref()
        .map(|text| parse_time("--expires-at", text))
        .transpose()?;
    let retry_after = args
        .retry_after
        .as_deref()
        .map(|text| parse_time("--retry-after", text))
        .transpose()?;
    if args.decided_by.trim().is_empty() {
        bail!("--decided-by must not be empty");
    }
    let id = compute_trust_id(&args.sender, &args.receiver);
    let store = args.output.data.open_existing()?;
    let patch = TrustPatch {
        status: Some(status),
        decided_by: Some(args.decided_by.clone()),
        decided_at: Some(Timestamp::now()),
        expires_at: expires_at.map(Some),
        retry_after_date: retry_after.map(Some),
        ..TrustPatch::default()
    };
    // The receiving side's record: the local party is the receiver (05-trust.md §4.2).
    let updated = store.write(|batch| {
        if batch.trust(Perspective::Inbound, &id)?.is_none() {
            return Ok(None);
        }
        batch
            .update_trust(Perspective::Inbound, &id, patch)
            .map(Some)
    })?;
    let Some(record) = updated else {
        bail!(
            "no trust record from {} to {} (nothing to decide on)",
            args.sender,
            args.receiver
        );
    };
    if args.output.json {
        print_json(&trust_json(&record));
    } else {
        print_trust("inbound", &record);
    }
    Ok(ExitCode::SUCCESS)
}

fn trust_delete(args: &TrustDeleteArgs) -> anyhow::Result<ExitCode> {
    check_sender(&args.sender)?;
    parse_identity(&args.receiver)?;
    let (perspective, name) = if args.outbound {
        (Perspective::Outbound, "outbound")
    } else {
        (Perspective::Inbound, "inbound")
    };
    let id = compute_trust_id(&args.sender, &args.receiver);
    let store = args.output.data.open_existing()?;
    if !store.delete_trust(perspective, &id)? {
        bail!(
            "no {name} trust record from {} to {}",
            args.sender,
            args.receiver
        );
    }
    if args.output.json {
        print_json(&json!({"deleted": id, "perspective": name}));
    } else {
        println!(
            "deleted the {name} trust record from {} to {} ({id})",
            args.sender, args.receiver
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn trust_json(record: &TrustRecord) -> Value {
    object_json(&trust_to_json(record).to_canonical())
}

// ---- inbox ----

/// Runs `btps inbox …`.
pub(crate) fn inbox(args: &InboxArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        InboxCommand::List(args) => inbox_list(args),
        InboxCommand::Show(args) => inbox_show(args),
    }
}

fn inbox_list(args: &InboxListArgs) -> anyhow::Result<ExitCode> {
    let identity = parse_identity(&args.identity)?;
    let page = PageRequest {
        after: parse_cursor(args.cursor.as_deref())?,
        limit: args.limit,
    };
    let store = args.output.data.open_existing()?;
    let listed = store.read(|s| {
        if s.identity_by_name(identity.as_str())?.is_none() {
            return Ok(None);
        }
        let page = s.list_mailbox(identity.as_str(), Mailbox::Inbox, &page, true)?;
        let total = s.mailbox_count(identity.as_str(), Mailbox::Inbox)?;
        Ok(Some((page, total)))
    });
    let (listed, total) = match listed {
        Ok(Some(found)) => found,
        Ok(None) => bail!("{identity} is not a hosted identity"),
        Err(StoreError::InvalidCursor) => bail!("invalid --cursor: it belongs to another listing"),
        Err(error) => return Err(error.into()),
    };
    let next = listed.next.as_ref().map(ToString::to_string);
    if args.output.json {
        let entries: Vec<Value> = listed.items.iter().map(entry_json).collect();
        print_json(&json!({"entries": entries, "total": total, "next": next}));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = listed
        .items
        .iter()
        .map(|entry| {
            vec![
                entry.entry_id.to_string(),
                instant_text(entry.at_millis),
                entry.from.clone(),
                entry.artifact_type.clone(),
                entry.artifact_id.clone(),
                if entry.meta.seen { "yes" } else { "no" }.to_owned(),
                entry.title.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "ENTRY",
            "RECEIVED",
            "FROM",
            "TYPE",
            "ARTIFACT ID",
            "SEEN",
            "TITLE",
        ],
        &rows,
    );
    println!(
        "{total} entr{} in the inbox",
        if total == 1 { "y" } else { "ies" }
    );
    if let Some(next) = next {
        println!("more: --cursor {next}");
    }
    Ok(ExitCode::SUCCESS)
}

fn inbox_show(args: &InboxShowArgs) -> anyhow::Result<ExitCode> {
    let store = args.output.data.open_existing()?;
    let Some(entry) = store.mailbox_entry(args.entry_id)? else {
        bail!("no mailbox entry {}", args.entry_id);
    };
    if args.output.json {
        let mut value = entry_json(&entry);
        if let Some(object) = value.as_object_mut() {
            // The artifact as a JSON string holds the exact bytes; bytes that are not
            // UTF-8 (never accepted from the wire, but possible) go as base64.
            match std::str::from_utf8(&entry.raw) {
                Ok(text) => object.insert(String::from("artifact"), Value::from(text)),
                Err(_) => object.insert(
                    String::from("artifactBase64"),
                    Value::from(btps::crypto::encode_base64(&entry.raw)),
                ),
            };
        }
        print_json(&value);
    } else {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&entry.raw)
            .and_then(|()| stdout.flush())
            .context("writing the artifact")?;
    }
    Ok(ExitCode::SUCCESS)
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

// ---- output ----

fn optional(timestamp: Option<&Timestamp>) -> String {
    timestamp.map_or_else(|| String::from("-"), ToString::to_string)
}

fn instant_text(millis: i64) -> String {
    Timestamp::from_millis(millis).map_or_else(|_| millis.to_string(), |t| t.to_string())
}

/// Canonical JSON text of a record as a `serde_json` value (key order kept).
fn object_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn print_json(value: &Value) {
    // Serialising a `Value` cannot fail.
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// `name: value` lines, names aligned.
fn print_fields(fields: &[(&str, String)]) {
    let width = fields
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    for (name, value) in fields {
        let label = format!("{name}:");
        println!("{label:<width$} {value}", width = width + 1);
    }
}

/// A table with a header row, columns padded to their widest cell.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (position, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if position + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", text.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
