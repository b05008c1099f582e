//! `btps send`: one transporter artifact from a hosted identity.
//!
//! Without `--host` the artifact goes into the running server's outbox through its
//! admin socket (found from `--data-dir` / `--config` like every operator command):
//! the server signs it through the sender's domain delegator, or — with `--key` —
//! this command signs it with that key and the server queues it unchanged. The
//! command prints the outbox entry (`--json`: one object with `id` and `state`); the
//! server delivers it with retries (`btps outbox list`, `btps sentbox list`).
//!
//! With `--direct` (or `--host`) it is a one-shot test of a peer: signed with
//! `--key`, sent to the receiver's server (from DNS, or `--host`) directly, the
//! response line printed; nothing is queued or recorded. Exit codes then: 0 when the
//! server answered `status.ok`, 1 when it answered with an error, 2 when nothing
//! could be sent or no valid answer came back.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use btps::admin::operations::{AdminRequest, AdminResponse, SendRequest};
use btps::client::{BtpsClient, ClientOptions, discover};
use btps::crypto::{EncryptionMode, PrivateKey, PublicKey};
use btps::identity::Identity;
use btps::identity::dns::{
    CacheConfig, CachingResolver, HickoryTxtResolver, HostRecord, KeyDirectory, RECORD_VERSION,
    ResolverOptions, TxtResolver,
};
use btps::protocol::response::parse_response;
use btps::protocol::{self, TransporterType};
use btps::signing::{TransporterDraft, build_transporter};

use super::admin::{Admin, OutputArgs, print_fields, print_json};

/// Arguments of `btps send`.
#[derive(Debug, clap::Args)]
pub(crate) struct SendArgs {
    /// The sender identity (account$domain).
    #[arg(long)]
    from: Identity,
    /// The sender's private key (PEM): sign with it instead of through the domain's
    /// delegator. Required with --host.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The DNS selector of the sender's key.
    #[arg(long, default_value = btps::config::DEFAULT_SELECTOR)]
    selector: String,
    /// The receiver identity (account$domain).
    #[arg(long)]
    to: Identity,
    /// The artifact type: TRUST_REQ, TRUST_RES or BTPS_DOC.
    #[arg(long = "type", value_parser = parse_type)]
    kind: TransporterType,
    /// A JSON file holding the document.
    #[arg(long)]
    document: PathBuf,
    /// Encrypt the document to the receiver's key from DNS.
    #[arg(long)]
    encrypt: bool,
    /// The selector of the receiver's key for --encrypt; by default the `s=` of the
    /// receiver domain's host record (btps1 with --host).
    #[arg(long)]
    receiver_selector: Option<String>,
    /// The receiver's server (HOST:PORT, HOST, or btps://HOST:PORT) instead of the
    /// `_btps.host` DNS record; implies --direct.
    #[arg(long)]
    host: Option<String>,
    /// Sign with --key and send directly to the receiver's server (found through
    /// DNS unless --host), once, printing its answer: for testing a peer. Nothing is
    /// queued, retried or recorded.
    #[arg(long)]
    direct: bool,
    /// DNS server(s) to ask (HOST:PORT); the system's resolvers by default.
    #[arg(long = "dns-server")]
    dns_servers: Vec<SocketAddr>,
    /// Accept any server certificate (a fresh appliance's self-signed one, tests).
    #[arg(long)]
    insecure: bool,
    /// A PEM file of additional trusted CA certificates.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The name to verify the server certificate for, instead of the host.
    #[arg(long)]
    server_name: Option<String>,
    /// Connect and response timeout, in milliseconds (with --host).
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(flatten)]
    output: OutputArgs,
}

fn parse_type(text: &str) -> Result<TransporterType, String> {
    TransporterType::parse(text)
        .ok_or_else(|| "expected TRUST_REQ, TRUST_RES or BTPS_DOC".to_owned())
}

pub(crate) fn send(args: &SendArgs) -> anyhow::Result<ExitCode> {
    if args.host.is_none() && !args.direct {
        return queue(args);
    }
    let Some(key_path) = &args.key else {
        bail!("--direct and --host send directly and need --key (the sender's private key)");
    };
    let key = read_key(key_path)?;
    let document_text = fs::read_to_string(&args.document)
        .with_context(|| format!("reading {}", args.document.display()))?;
    let document = protocol::json::parse(&document_text)
        .map_err(|error| anyhow::anyhow!("{}: not JSON: {error}", args.document.display()))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let needs_dns = args.host.is_none() || args.encrypt;
        let directory = if needs_dns {
            Some(KeyDirectory::new(resolver(&args.dns_servers)?))
        } else {
            None
        };
        let server = match (&args.host, &directory) {
            (Some(host), _) => fixed_host(host)?,
            (None, Some(directory)) => discover(directory, &args.to).await?,
            (None, None) => bail!("no --host and no DNS"),
        };

        let receiver_key = match (&directory, args.encrypt) {
            (Some(directory), true) => {
                let selector = args
                    .receiver_selector
                    .clone()
                    .unwrap_or_else(|| server.selector.clone());
                Some(receiver_key(directory, &args.to, &selector).await?)
            }
            _ => None,
        };

        let draft = TransporterDraft {
            kind: args.kind,
            from: args.from.clone(),
            to: args.to.clone(),
            selector: args.selector.clone(),
            document,
            id: None,
            issued_at: None,
        };
        let artifact = build_transporter(
            draft,
            &key,
            receiver_key
                .as_ref()
                .map(|key| (key, EncryptionMode::Standard)),
        )
        .map_err(|error| anyhow::anyhow!("building the artifact: {error}"))?;
        let line = btps::protocol::json::Value::from(artifact).to_canonical();
        // A reference client never sends what its server would refuse as malformed.
        protocol::parse_line(line.as_bytes())
            .map_err(|error| anyhow::anyhow!("the artifact is not valid: {error}"))?;

        let options = ClientOptions {
            insecure: args.insecure,
            timeout: Duration::from_millis(args.timeout_ms),
            server_name: args.server_name.clone(),
            ca_file: args.ca_file.clone(),
            ..ClientOptions::default()
        };
        eprintln!(
            "sending {} from {} to {}{} via {}:{}",
            args.kind,
            args.from,
            args.to,
            if receiver_key.is_some() {
                " (encrypted)"
            } else {
                ""
            },
            server.host,
            server.port
        );
        let mut client = BtpsClient::connect(&server.host, server.port, &options).await?;
        client.send_line(&line).await?;
        let answer = client
            .read_line()
            .await?
            .context("the server closed the connection without a response")?;
        // The answer is in hand; a failed close_notify changes nothing about it.
        let _ = client.close().await;
        println!("{answer}");
        let response = parse_response(&answer)
            .map_err(|error| anyhow::anyhow!("the server's answer is not a response: {error}"))?;
        Ok(if response.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

fn read_key(path: &std::path::Path) -> anyhow::Result<PrivateKey> {
    let pem = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    PrivateKey::from_pem(&pem).with_context(|| path.display().to_string())
}

/// Hands the artifact to the running server's outbox.
fn queue(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let document = fs::read_to_string(&args.document)
        .with_context(|| format!("reading {}", args.document.display()))?;
    let artifact = match &args.key {
        None => None,
        Some(path) => Some(sign_here(args, &read_key(path)?, &document)?),
    };
    let mut admin = Admin::connect(&args.output.data, false)?;
    if matches!(admin, Admin::Direct(_)) {
        bail!(
            "no server answers on the admin socket: `btps send` queues in the running \
             server's outbox (start `btps serve`), or give --host to send directly"
        );
    }
    let request = AdminRequest::Send(SendRequest {
        from: args.from.to_string(),
        to: args.to.to_string(),
        kind: args.kind.as_str().to_owned(),
        document: artifact.is_none().then_some(document),
        encrypt: args.encrypt,
        artifact,
    });
    let response = admin.call(request).map_err(anyhow::Error::new)?;
    let AdminResponse::OutboxEntry { entry } = response else {
        bail!("unexpected answer from the server: {response:?}");
    };
    if args.output.json {
        print_json(&entry);
    } else {
        print_fields(&[
            ("queued", format!("outbox entry {}", entry["id"])),
            (
                "state",
                entry["state"].as_str().unwrap_or_default().to_owned(),
            ),
            (
                "artifact id",
                entry["artifactId"].as_str().unwrap_or_default().to_owned(),
            ),
            (
                "from",
                entry["from"].as_str().unwrap_or_default().to_owned(),
            ),
            ("to", entry["to"].as_str().unwrap_or_default().to_owned()),
        ]);
    }
    Ok(ExitCode::SUCCESS)
}

/// Signs (and with --encrypt encrypts) the artifact with the operator's key.
fn sign_here(args: &SendArgs, key: &PrivateKey, document_text: &str) -> anyhow::Result<String> {
    let document = protocol::json::parse(document_text)
        .map_err(|error| anyhow::anyhow!("{}: not JSON: {error}", args.document.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let receiver_key = if args.encrypt {
        Some(runtime.block_on(async {
            let directory = KeyDirectory::new(resolver(&args.dns_servers)?);
            let selector = match &args.receiver_selector {
                Some(selector) => selector.clone(),
                None => discover(&directory, &args.to).await?.selector,
            };
            receiver_key(&directory, &args.to, &selector).await
        })?)
    } else {
        None
    };
    let draft = TransporterDraft {
        kind: args.kind,
        from: args.from.clone(),
        to: args.to.clone(),
        selector: args.selector.clone(),
        document,
        id: None,
        issued_at: None,
    };
    let artifact = build_transporter(
        draft,
        key,
        receiver_key
            .as_ref()
            .map(|key| (key, EncryptionMode::Standard)),
    )
    .map_err(|error| anyhow::anyhow!("building the artifact: {error}"))?;
    Ok(btps::protocol::json::Value::from(artifact).to_canonical())
}

pub(crate) fn resolver(servers: &[SocketAddr]) -> anyhow::Result<Arc<dyn TxtResolver>> {
    let resolver = if servers.is_empty() {
        HickoryTxtResolver::from_system_config(ResolverOptions::default())
            .context("reading the system DNS configuration (give --dns-server)")?
    } else {
        HickoryTxtResolver::with_name_servers(servers, ResolverOptions::default())
    };
    Ok(Arc::new(CachingResolver::new(
        resolver,
        CacheConfig::default(),
    )))
}

/// Reads `--host` the way a host record's `u=` is read (`btps://` optional, port
/// 3443 by default), with the reference's default selector.
pub(crate) fn fixed_host(text: &str) -> anyhow::Result<HostRecord> {
    let pairs = BTreeMap::from([
        ("v".to_owned(), RECORD_VERSION.to_owned()),
        ("u".to_owned(), text.to_owned()),
        ("s".to_owned(), btps::config::DEFAULT_SELECTOR.to_owned()),
    ]);
    HostRecord::from_pairs(&pairs).with_context(|| format!("--host {text}"))
}

/// The receiver's public key from its DNS key record.
pub(crate) async fn receiver_key(
    directory: &KeyDirectory,
    receiver: &Identity,
    selector: &str,
) -> anyhow::Result<PublicKey> {
    let record = directory
        .identity_key(receiver, selector)
        .await
        .with_context(|| format!("finding the key of {receiver} to encrypt to"))?;
    PublicKey::from_base64_spki(&record.public_key_base64).with_context(|| {
        format!(
            "the key published at {} is unusable",
            receiver.key_record_name(selector)
        )
    })
}
