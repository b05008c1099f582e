//! `btps identity`: add a hosted identity (generating its key pair unless a public
//! key is given), list and show the records, rotate to a new key, and print the DNS
//! records to publish. A generated private key is written (0600) into the data
//! directory's `keys/` (0700) unless `--key-out` names another directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use btps::admin::operations::{
    AdminError, AdminRequest, AdminResponse, DnsRecord, check_selector, parse_identity,
};
use btps::config::Config;
use btps::crypto::{PrivateKey, PublicKey};
use btps::identity::Identity;
use clap::Subcommand;
use serde_json::{Value, json};

use super::output::{print_fields, print_json, print_table, text};
use super::{Admin, OutputArgs, unexpected};
use crate::cli::keys::write_private;
use crate::cli::store::{Missing, create_key_directory};

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
    /// Directory for the generated private key (never overwritten; default: the
    /// data directory's keys/).
    #[arg(long, value_name = "DIR", conflicts_with = "public_key")]
    key_out: Option<PathBuf>,
    /// Create the data directory (mode 0700) if it does not exist.
    #[arg(long)]
    create: bool,
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
    /// Directory for the generated private key (never overwritten; default: the
    /// data directory's keys/).
    #[arg(long, value_name = "DIR", conflicts_with = "public_key")]
    key_out: Option<PathBuf>,
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

/// Where a generated private key goes: `--key-out`, else the data directory's
/// `keys/` (never the working directory unless named).
fn key_directory(given: Option<&Path>, config: &Config) -> PathBuf {
    given.map_or_else(|| config.data_dir.join("keys"), Path::to_owned)
}

/// Generates a key pair for `identity` under `selector`, writes the private key to
/// `DIR/<account>.<domain>.<selector>.key.pem` (mode 0600, never overwritten; DIR
/// created 0700, see [`create_key_directory`]) and returns the public key PEM and
/// the file.
fn generate_key(
    identity: &Identity,
    selector: &str,
    key_out: &Path,
    data_dir: &Path,
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
    create_key_directory(key_out, data_dir)
        .context("--key-out DIR writes the private key elsewhere")?;
    let key = PrivateKey::generate(2048).context("generating the key pair")?;
    write_private(&path, &key.to_pkcs8_pem())
        .context("writing the private key (--key-out DIR writes it elsewhere)")?;
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
    let target = &args.output.data;
    let config = target.config()?;
    let missing = Missing::CreateIf(args.create);
    let key_out = key_directory(args.key_out.as_deref(), &config);
    let data_dir = config.data_dir.clone();
    if given.is_none() && args.key_out.is_none() {
        target.existing_data_dir(&config, missing)?;
    }
    let mut admin = Admin::connect_with(target, config, missing)?;
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
            let (pem, path) = generate_key(&identity, &args.selector, &key_out, &data_dir)?;
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
    let config = args.output.data.config()?;
    let key_out = key_directory(args.key_out.as_deref(), &config);
    let data_dir = config.data_dir.clone();
    if given.is_none() && args.key_out.is_none() {
        args.output
            .data
            .existing_data_dir(&config, Missing::Refuse)?;
    }
    let mut admin = Admin::connect_with(&args.output.data, config, Missing::Refuse)?;
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
            let (pem, path) = generate_key(&identity, &selector, &key_out, &data_dir)?;
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
