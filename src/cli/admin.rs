//! `btps identity`, `btps trust` and `btps inbox`: the operator's commands on the
//! hosted identities, the trust records and the inboxes.
//!
//! Each command is one [`AdminRequest`]. While a server runs (its admin socket
//! answers) the request goes to the server; otherwise the command opens the
//! database itself and runs the same operation (`btps::admin::operations`). Output
//! is a table, or JSON with `--json`. The appliance never keeps a hosted user's
//! private key: `identity add` and `identity rotate-key` write a generated one to a
//! file for its owner, here, and send only the public key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use btps::admin::operations::{
    AdminContext, AdminError, AdminRequest, AdminResponse, Decision, DnsRecord, check_selector,
    execute, parse_identity,
};
use btps::admin::socket::AdminClient;
use btps::crypto::{PrivateKey, PublicKey};
use btps::identity::Identity;
use clap::Subcommand;
use serde_json::{Value, json};

use super::keys::write_private;
use super::store::{DataDirArg, open_database};

/// Options every admin command has.
#[derive(Debug, clap::Args)]
pub(crate) struct OutputArgs {
    #[command(flatten)]
    pub(crate) data: DataDirArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// How a command reaches the database: through a running server's admin socket, or
/// directly.
pub(crate) enum Admin {
    /// A server answers on its admin socket.
    Socket(AdminClient),
    /// No server runs; the database is open in this process.
    Direct(AdminContext),
}

impl Admin {
    /// The server's admin socket if it answers, else the database itself (created
    /// if `create`). A database held by a process whose socket does not answer is
    /// an error saying so.
    pub(crate) fn connect(target: &DataDirArg, create: bool) -> anyhow::Result<Admin> {
        let config = target.config()?;
        if let Ok(client) = AdminClient::connect(&config.admin.socket) {
            return Ok(Admin::Socket(client));
        }
        let store = open_database(&config, create)?;
        Ok(Admin::Direct(AdminContext::new(store, config)))
    }

    /// Runs one request, here or in the server.
    pub(crate) fn call(&mut self, request: AdminRequest) -> Result<AdminResponse, AdminError> {
        match self {
            Admin::Socket(client) => client.call(&request),
            Admin::Direct(context) => execute(context, request),
        }
    }

    /// Like [`Admin::call`], with the error as the command's error.
    fn run(&mut self, request: AdminRequest) -> anyhow::Result<AdminResponse> {
        self.call(request).map_err(anyhow::Error::new)
    }
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
    /// Add a new key under a new selector and make it current (the old keys stay,
    /// so that artifacts naming them still verify), and print the new DNS records.
    RotateKey(IdentityRotateArgs),
    /// Print the DNS TXT records to publish for an identity: its keys, its domain's
    /// host record, and the key of the domain's lookup signer.
    DnsRecords(IdentityDnsArgs),
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

#[derive(Debug, clap::Args)]
struct IdentityRotateArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The identity, `account$domain`.
    identity: String,
    /// The new key's selector (default: the next `btpsN`).
    #[arg(long, value_name = "NEW")]
    selector: Option<String>,
    /// The new public key (SPKI PEM file); without it a key pair is generated.
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
struct IdentityDnsArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The identity, `account$domain`.
    identity: String,
    /// `HOST:PORT` others reach this server at (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    host: Option<String>,
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

/// An answer of another shape than the request's: a server of another version.
fn unexpected(response: &AdminResponse) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from the server: {response:?}")
}

// ---- identity ----

/// Runs `btps identity …`.
pub(crate) fn identity(args: &IdentityArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        IdentityCommand::Add(args) => identity_add(args),
        IdentityCommand::List(args) => identity_list(args),
        IdentityCommand::Show(args) => identity_show(args),
        IdentityCommand::RotateKey(args) => identity_rotate_key(args),
        IdentityCommand::DnsRecords(args) => identity_dns_records(args),
    }
}

/// Reads an SPKI PEM file given on the command line.
fn read_public_key(path: &Path) -> anyhow::Result<String> {
    let pem = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    PublicKey::from_pem(&pem).with_context(|| format!("{}", path.display()))?;
    Ok(pem)
}

/// Generates a key pair for `identity` under `selector`, writes the private key to
/// `DIR/<account>.<domain>.<selector>.key.pem` (mode 0600, never overwritten) and
/// returns the public key PEM and the file.
fn generate_key(
    identity: &Identity,
    selector: &str,
    key_out: &Path,
) -> anyhow::Result<(String, PathBuf)> {
    let file_name = format!(
        "{}.{}.{selector}.key.pem",
        identity.account(),
        identity.domain()
    );
    let path = key_out.join(file_name);
    if path.exists() {
        bail!(
            "{} already exists; refusing to overwrite a key",
            path.display()
        );
    }
    fs::create_dir_all(key_out).with_context(|| format!("creating {}", key_out.display()))?;
    let key = PrivateKey::generate(2048).context("generating the key pair")?;
    write_private(&path, &key.to_pkcs8_pem())?;
    Ok((key.public_key().to_pem(), path))
}

/// Sends a request that stores a key whose private half was just written to
/// `private_file`; removes the file again if the key was not stored, so that no
/// key exists that no record names.
fn store_key(
    admin: &mut Admin,
    request: AdminRequest,
    private_file: Option<&Path>,
) -> anyhow::Result<AdminResponse> {
    let outcome = admin.run(request);
    if outcome.is_err()
        && let Some(path) = private_file
    {
        let _ = fs::remove_file(path);
    }
    outcome
}

fn identity_add(args: &IdentityAddArgs) -> anyhow::Result<ExitCode> {
    let identity = parse_identity(&args.identity)?;
    check_selector(&args.selector)?;
    let given = args
        .public_key
        .as_deref()
        .map(read_public_key)
        .transpose()?;
    let mut admin = Admin::connect(&args.output.data, true)?;
    // Refuse before a private key file is written for a record that cannot be made.
    match admin.call(AdminRequest::IdentityShow {
        identity: identity.as_str().to_owned(),
    }) {
        Ok(_) => bail!("identity {identity} already exists"),
        Err(AdminError::NotFound(_)) => {}
        Err(error) => return Err(error.into()),
    }
    let (public_key, private_file) = match given {
        Some(pem) => (pem, None),
        None => {
            let (pem, path) = generate_key(&identity, &args.selector, &args.key_out)?;
            (pem, Some(path))
        }
    };
    let request = AdminRequest::IdentityAdd {
        identity: identity.as_str().to_owned(),
        selector: args.selector.clone(),
        public_key,
    };
    let response = store_key(&mut admin, request, private_file.as_deref())
        .with_context(|| format!("storing identity {identity}"))?;
    let AdminResponse::IdentityAdded {
        record,
        selector,
        fingerprint,
        dns,
        warnings,
    } = response
    else {
        return Err(unexpected(&response));
    };
    let private_text = private_file.as_ref().map(|path| path.display().to_string());
    if args.output.json {
        print_json(&json!({
            "identity": record["identity"],
            "id": record["id"],
            "selector": selector,
            "fingerprint": fingerprint,
            "publicKey": record["publicKeys"][0]["publicKey"],
            "privateKeyFile": private_text,
            "dns": dns,
            "warnings": warnings,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    print_fields(&[
        ("identity", text(&record["identity"])),
        ("id", text(&record["id"])),
        ("selector", selector),
        ("fingerprint", fingerprint),
    ]);
    if let Some(path) = private_text {
        println!(
            "private key: {path} (mode 0600): give it to the identity's owner; the appliance keeps no copy"
        );
    }
    println!();
    println!(
        "Publish this DNS TXT record (one record; split the value into strings of at most 255 bytes):"
    );
    print_dns(&dns[..1]);
    println!();
    println!("and, once per domain, the host record naming this server:");
    print_dns(&dns[1..]);
    print_warnings(&warnings);
    Ok(ExitCode::SUCCESS)
}

fn identity_list(args: &IdentityListArgs) -> anyhow::Result<ExitCode> {
    let mut admin = Admin::connect(&args.output.data, false)?;
    let response = admin.run(AdminRequest::IdentityList)?;
    let AdminResponse::Identities { records } = response else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&Value::Array(records));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            let keys = record["publicKeys"]
                .as_array()
                .map_or(&[][..], Vec::as_slice);
            let current = keys
                .iter()
                .find(|key| key["selector"] == record["currentSelector"]);
            vec![
                text(&record["identity"]),
                text(&record["currentSelector"]),
                keys.len().to_string(),
                current.map_or_else(|| String::from("-"), key_fingerprint),
                text(&record["createdAt"]),
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
    let mut admin = Admin::connect(&args.output.data, false)?;
    let response = admin.run(AdminRequest::IdentityShow {
        identity: identity.as_str().to_owned(),
    })?;
    let AdminResponse::Identity { record } = response else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&record);
    } else {
        print_identity(&record);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_identity(record: &Value) {
    let mut fields = vec![
        ("identity", text(&record["identity"])),
        ("id", text(&record["id"])),
        ("current selector", text(&record["currentSelector"])),
        ("created", text(&record["createdAt"])),
    ];
    if record["updatedAt"].is_string() {
        fields.push(("updated", text(&record["updatedAt"])));
    }
    print_fields(&fields);
    println!();
    let keys = record["publicKeys"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|key| {
            let current = if key["selector"] == record["currentSelector"] {
                "*"
            } else {
                ""
            };
            vec![
                format!("{}{current}", text(&key["selector"])),
                text(&key["keyType"]),
                text(&key["version"]),
                key_fingerprint(key),
                text(&key["createdAt"]),
            ]
        })
        .collect();
    print_table(
        &["SELECTOR", "TYPE", "VERSION", "FINGERPRINT", "CREATED"],
        &rows,
    );
}

/// The key's fingerprint, or why there is none (a stored key may be a placeholder).
fn key_fingerprint(key: &Value) -> String {
    key["fingerprint"]
        .as_str()
        .map_or_else(|| String::from("(unparsable key)"), str::to_owned)
}

fn identity_rotate_key(args: &IdentityRotateArgs) -> anyhow::Result<ExitCode> {
    let identity = parse_identity(&args.identity)?;
    if let Some(selector) = &args.selector {
        check_selector(selector)?;
    }
    let given = args
        .public_key
        .as_deref()
        .map(read_public_key)
        .transpose()?;
    let mut admin = Admin::connect(&args.output.data, false)?;
    // The selector is fixed before a key file named after it is written.
    let response = admin.run(AdminRequest::IdentityShow {
        identity: identity.as_str().to_owned(),
    })?;
    let AdminResponse::Identity { record } = response else {
        return Err(unexpected(&response));
    };
    let taken: Vec<&str> = record["publicKeys"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|key| key["selector"].as_str())
        .collect();
    let selector = match &args.selector {
        Some(selector) => selector.clone(),
        None => btps::admin::operations::next_selector_after(&taken),
    };
    if taken.contains(&selector.as_str()) {
        bail!(
            "{identity} already has a key with selector {selector:?}; choose a new selector (the old key must stay published)"
        );
    }
    let (public_key, private_file) = match given {
        Some(pem) => (pem, None),
        None => {
            let (pem, path) = generate_key(&identity, &selector, &args.key_out)?;
            (pem, Some(path))
        }
    };
    let request = AdminRequest::IdentityRotateKey {
        identity: identity.as_str().to_owned(),
        selector: Some(selector),
        public_key,
    };
    let response = store_key(&mut admin, request, private_file.as_deref())
        .with_context(|| format!("rotating the key of {identity}"))?;
    let AdminResponse::KeyRotated {
        record,
        selector,
        previous_selector,
        fingerprint,
        dns,
        warnings,
    } = response
    else {
        return Err(unexpected(&response));
    };
    let private_text = private_file.as_ref().map(|path| path.display().to_string());
    if args.output.json {
        print_json(&json!({
            "identity": record["identity"],
            "selector": selector,
            "previousSelector": previous_selector,
            "fingerprint": fingerprint,
            "privateKeyFile": private_text,
            "record": record,
            "dns": dns,
            "warnings": warnings,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    print_fields(&[
        ("identity", text(&record["identity"])),
        ("new selector", selector),
        ("old selector", previous_selector.clone()),
        ("fingerprint", fingerprint),
    ]);
    if let Some(path) = private_text {
        println!(
            "private key: {path} (mode 0600): give it to the identity's owner; the appliance keeps no copy"
        );
    }
    println!();
    println!("1. Publish the new key record (keep the {previous_selector} record published):");
    print_dns(&dns[..1]);
    println!();
    println!("2. Then switch the domain's host record to the new selector:");
    print_dns(&dns[1..]);
    println!();
    println!(
        "3. Remove the {previous_selector} key record only when no artifact naming it can still arrive."
    );
    print_warnings(&warnings);
    Ok(ExitCode::SUCCESS)
}

fn identity_dns_records(args: &IdentityDnsArgs) -> anyhow::Result<ExitCode> {
    let identity = parse_identity(&args.identity)?;
    let mut admin = Admin::connect(&args.output.data, false)?;
    let response = admin.run(AdminRequest::IdentityDnsRecords {
        identity: identity.as_str().to_owned(),
        host: args.host.clone(),
    })?;
    let AdminResponse::DnsRecords {
        identity,
        records,
        warnings,
    } = response
    else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&json!({"identity": identity, "records": records, "warnings": warnings}));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "DNS TXT records for {identity} (one record per name; split values into strings of at most 255 bytes):"
    );
    for record in &records {
        println!();
        println!("; {}", record.purpose);
        print_dns(std::slice::from_ref(record));
    }
    print_warnings(&warnings);
    Ok(ExitCode::SUCCESS)
}

fn print_dns(records: &[DnsRecord]) {
    for record in records {
        println!("{}. IN TXT \"{}\"", record.name, record.value);
    }
}

fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}

// ---- trust ----

/// Runs `btps trust …`.
pub(crate) fn trust(args: &TrustArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        TrustCommand::List(args) => trust_list(args),
        TrustCommand::Show(args) => trust_show(args),
        TrustCommand::Accept(args) => trust_decide(args, Decision::Accept),
        TrustCommand::Reject(args) => trust_decide(args, Decision::Reject),
        TrustCommand::Revoke(args) => trust_decide(args, Decision::Revoke),
        TrustCommand::Block(args) => trust_decide(args, Decision::Block),
        TrustCommand::Delete(args) => trust_delete(args),
    }
}

fn trust_list(args: &TrustListArgs) -> anyhow::Result<ExitCode> {
    let mut admin = Admin::connect(&args.output.data, false)?;
    let response = admin.run(AdminRequest::TrustList {
        outbound: args.outbound,
        receiver: args.receiver.clone(),
        sender: args.sender.clone(),
        status: args.status.clone(),
        expiring_before: args.expiring_before.clone(),
        limit: args.limit,
        cursor: args.cursor.clone(),
    })?;
    let AdminResponse::TrustRecords { records, next } = response else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&json!({"records": records, "next": next}));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            vec![
                text(&record["senderId"]),
                text(&record["receiverId"]),
                text(&record["status"]),
                text(&record["expiresAt"]),
                text(&record["decidedBy"]),
                text(&record["decidedAt"]),
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
    let mut admin = Admin::connect(&args.output.data, false)?;
    let response = admin.run(AdminRequest::TrustShow {
        sender: args.sender.clone(),
        receiver: args.receiver.clone(),
    })?;
    let AdminResponse::TrustPair { inbound, outbound } = response else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&json!({"inbound": inbound, "outbound": outbound}));
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

fn print_trust(perspective: &str, record: &Value) {
    let mut fields = vec![
        ("perspective", perspective.to_owned()),
        ("id", text(&record["id"])),
        ("sender", text(&record["senderId"])),
        ("receiver", text(&record["receiverId"])),
        ("status", text(&record["status"])),
        ("decided by", text(&record["decidedBy"])),
        ("decided at", text(&record["decidedAt"])),
        ("expires at", text(&record["expiresAt"])),
        ("retry after", text(&record["retryAfterDate"])),
        ("privacy", text(&record["privacyType"])),
        ("fingerprint", text(&record["publicKeyFingerprint"])),
        ("created", text(&record["createdAt"])),
    ];
    if record["updatedAt"].is_string() {
        fields.push(("updated", text(&record["updatedAt"])));
    }
    print_fields(&fields);
}

fn trust_decide(args: &TrustDecisionArgs, decision: Decision) -> anyhow::Result<ExitCode> {
    let mut admin = Admin::connect(&args.output.data, false)?;
    let response = admin.run(AdminRequest::TrustDecide {
        sender: args.sender.clone(),
        receiver: args.receiver.clone(),
        decision,
        expires_at: args.expires_at.clone(),
        retry_after: args.retry_after.clone(),
        decided_by: args.decided_by.clone(),
    })?;
    let AdminResponse::TrustDecided { record } = response else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&record);
    } else {
        print_trust("inbound", &record);
    }
    Ok(ExitCode::SUCCESS)
}

fn trust_delete(args: &TrustDeleteArgs) -> anyhow::Result<ExitCode> {
    let mut admin = Admin::connect(&args.output.data, false)?;
    let response = admin.run(AdminRequest::TrustDelete {
        sender: args.sender.clone(),
        receiver: args.receiver.clone(),
        outbound: args.outbound,
    })?;
    let AdminResponse::TrustDeleted { id, perspective } = response else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&json!({"deleted": id, "perspective": perspective}));
    } else {
        println!(
            "deleted the {perspective} trust record from {} to {} ({id})",
            args.sender, args.receiver
        );
    }
    Ok(ExitCode::SUCCESS)
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
    let mut admin = Admin::connect(&args.output.data, false)?;
    let response = admin.run(AdminRequest::InboxList {
        identity: args.identity.clone(),
        limit: args.limit,
        cursor: args.cursor.clone(),
    })?;
    let AdminResponse::InboxEntries {
        entries,
        total,
        next,
    } = response
    else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&json!({"entries": entries, "total": total, "next": next}));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            vec![
                text(&entry["entryId"]),
                text(&entry["at"]),
                text(&entry["from"]),
                text(&entry["type"]),
                text(&entry["artifactId"]),
                if entry["meta"]["seen"] == true {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
                entry["title"].as_str().unwrap_or_default().to_owned(),
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
    let mut admin = Admin::connect(&args.output.data, false)?;
    let response = admin.run(AdminRequest::InboxShow {
        entry_id: args.entry_id,
    })?;
    let AdminResponse::InboxEntry { entry } = response else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&entry);
        return Ok(ExitCode::SUCCESS);
    }
    // The artifact exactly as received.
    let raw = match (entry["artifact"].as_str(), entry["artifactBase64"].as_str()) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(encoded)) => {
            btps::crypto::decode_base64_lenient(encoded).context("decoding the stored artifact")?
        }
        (None, None) => bail!("the entry carries no artifact"),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&raw)
        .and_then(|()| stdout.flush())
        .context("writing the artifact")?;
    Ok(ExitCode::SUCCESS)
}

// ---- output ----

/// A JSON value as table text: strings bare, absent or null as `-`.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::from("-"),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Prints a value as indented JSON.
pub(crate) fn print_json(value: &Value) {
    // Serialising a `Value` cannot fail.
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// `name: value` lines, names aligned.
pub(crate) fn print_fields(fields: &[(&str, String)]) {
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
