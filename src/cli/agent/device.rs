//! The agent's own commands: enroll this machine as an agent of an identity, then
//! act for it — read and tidy its mailboxes, send documents, answer trust requests —
//! through the identity's server, with the agent's key and the session kept in a
//! private state file (`--state`, `BTPS_AGENT_STATE`, default `btps-agent.json`).
//!
//! Exit codes: 0 done, 1 the server refused the request (its message and reason
//! are printed), 2 nothing could be done (no state, no connection, bad arguments).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use btps::agent::{Agent, AgentError, AgentState, Query, QueryResult};
use btps::client::ClientOptions;
use btps::crypto::PrivateKey;
use btps::identity::Identity;
use btps::identity::dns::KeyDirectory;
use btps::protocol::json::{self, Object, Value};
use btps::protocol::response::now_iso;
use btps::store::Mailbox;
use clap::Subcommand;
use serde_json::json;

use crate::cli::admin::{print_fields, print_json};
use crate::cli::keys::write_private;

/// Where the state file is.
#[derive(Debug, clap::Args)]
pub(crate) struct StateArgs {
    /// The agent's state file (its id, refresh token and key file).
    #[arg(long, env = "BTPS_AGENT_STATE", default_value = "btps-agent.json")]
    state: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Connect and response timeout, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// Arguments of `btps agent enroll`.
#[derive(Debug, clap::Args)]
pub(crate) struct EnrollArgs {
    #[command(flatten)]
    state: StateArgs,
    /// The identity's server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    server: String,
    /// The identity the agent acts for (account$domain).
    #[arg(long)]
    identity: Identity,
    /// The one-time enrollment token (`btps agent token issue`).
    #[arg(long)]
    token: String,
    /// Where to write the agent's new private key (0600); beside the state file by
    /// default.
    #[arg(long, value_name = "FILE")]
    key_out: Option<PathBuf>,
    /// The device name sent as agentInfo.deviceName.
    #[arg(long, default_value = "btps agent")]
    device_name: String,
    /// Accept any server certificate (a fresh appliance's self-signed one).
    #[arg(long)]
    insecure: bool,
    /// A PEM file of additional trusted CA certificates.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The name to verify the server certificate for, instead of the host.
    #[arg(long)]
    server_name: Option<String>,
}

/// Arguments of `btps agent refresh`.
#[derive(Debug, clap::Args)]
pub(crate) struct RefreshArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Rotate the agent's key: a new key pair replaces the key file.
    #[arg(long)]
    rotate_key: bool,
}

/// Arguments of `btps agent inbox`.
#[derive(Debug, clap::Args)]
pub(crate) struct InboxArgs {
    #[command(flatten)]
    state: StateArgs,
    /// The mailbox: inbox, outbox, sentbox, draft or trash.
    #[arg(long, default_value = "inbox", value_parser = parse_mailbox)]
    mailbox: Mailbox,
    /// Maximum number of entries (the server caps it at 100).
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Only entries at or after this ISO timestamp (…Z).
    #[arg(long)]
    since: Option<String>,
    /// Only entries at or before this ISO timestamp (…Z).
    #[arg(long)]
    until: Option<String>,
    /// Oldest first (newest first by default).
    #[arg(long)]
    oldest_first: bool,
    /// Only entries from this identity.
    #[arg(long)]
    from: Option<String>,
    /// Only entries whose title contains this text (ignoring case).
    #[arg(long)]
    title: Option<String>,
    /// Continue after the page that printed this cursor.
    #[arg(long)]
    cursor: Option<String>,
}

/// Arguments of `btps agent seen`.
#[derive(Debug, clap::Args)]
pub(crate) struct IdsArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Artifact ids.
    #[arg(required = true)]
    ids: Vec<String>,
}

/// Arguments of `btps agent delete`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    #[command(flatten)]
    ids: IdsArgs,
    /// The mailbox: inbox, sentbox, draft (moved to the trash), trash (purged) or
    /// outbox (cancelled).
    #[arg(long, default_value = "inbox", value_parser = parse_mailbox)]
    mailbox: Mailbox,
}

/// Arguments of `btps agent send`.
#[derive(Debug, clap::Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    state: StateArgs,
    /// The recipient (account$domain).
    #[arg(long)]
    to: Identity,
    /// A JSON file holding the document (an invoice).
    #[arg(long)]
    document: PathBuf,
    /// Encrypt the document to the recipient's key from DNS.
    #[arg(long)]
    encrypt: bool,
    /// The selector of the recipient's key for --encrypt.
    #[arg(long, default_value = btps::config::DEFAULT_SELECTOR)]
    receiver_selector: String,
    /// DNS server(s) to ask for --encrypt (HOST:PORT); the system's by default.
    #[arg(long = "dns-server")]
    dns_servers: Vec<SocketAddr>,
}

/// Arguments of `btps agent trust`.
#[derive(Debug, clap::Args)]
pub(crate) struct TrustArgs {
    #[command(subcommand)]
    command: TrustCommand,
}

#[derive(Debug, Subcommand)]
enum TrustCommand {
    /// The identity's trust records (partners, requests, its agents).
    List(TrustListArgs),
    /// Answer a pending trust request (the answer is delivered to the requester).
    Respond(RespondArgs),
}

#[derive(Debug, clap::Args)]
struct TrustListArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Only records whose sender is this identity (or agent id).
    #[arg(long)]
    from: Option<String>,
    /// Maximum number of records.
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Continue after the page that printed this cursor.
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Debug, clap::Args)]
struct RespondArgs {
    #[command(flatten)]
    state: StateArgs,
    /// The requester (account$domain).
    #[arg(long)]
    to: Identity,
    /// accepted, rejected, revoked or blocked.
    #[arg(long, value_parser = ["accepted", "rejected", "revoked", "blocked"])]
    decision: String,
    /// The id of the answered request document (by default the one the pending
    /// record names).
    #[arg(long)]
    request_id: Option<String>,
    /// End of the trust (ISO timestamp).
    #[arg(long)]
    expires_at: Option<String>,
    /// No new request before this instant (ISO timestamp).
    #[arg(long)]
    retry_after: Option<String>,
    /// A message to the requester.
    #[arg(long)]
    message: Option<String>,
}

fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    Mailbox::parse(text)
        .ok_or_else(|| String::from("expected inbox, outbox, sentbox, draft or trash"))
}

/// The agent's state, key and connection options.
struct Loaded {
    state: AgentState,
    key: PrivateKey,
    options: ClientOptions,
}

fn options(state: &AgentState, args: &StateArgs) -> ClientOptions {
    ClientOptions {
        insecure: state.insecure,
        ca_file: state.ca_file.clone(),
        server_name: state.server_name.clone(),
        timeout: Duration::from_millis(args.timeout_ms),
        ..ClientOptions::default()
    }
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKey> {
    let pem = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    PrivateKey::from_pem(&pem).with_context(|| path.display().to_string())
}

fn load(args: &StateArgs) -> anyhow::Result<Loaded> {
    if !args.state.exists() {
        bail!(
            "no agent state at {} (enroll first with `btps agent enroll`, or give --state)",
            args.state.display()
        );
    }
    let state = AgentState::load(&args.state).context("reading the agent state")?;
    let key = read_key(&state.key_file)?;
    let options = options(&state, args);
    Ok(Loaded {
        state,
        key,
        options,
    })
}

fn host_port(server: &str) -> anyhow::Result<(String, u16)> {
    let record = crate::cli::send::fixed_host(server)?;
    Ok((record.host, record.port))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn connect(loaded: Loaded) -> anyhow::Result<(Agent, AgentState)> {
    let (host, port) = host_port(&loaded.state.server)?;
    let identity = Identity::parse(&loaded.state.identity)
        .map_err(|error| anyhow::anyhow!("the state's identity: {error}"))?;
    let agent = Agent::connect(
        &host,
        port,
        &loaded.options,
        identity,
        loaded.state.agent_id.clone(),
        loaded.key,
    )
    .await?;
    Ok((agent, loaded.state))
}

/// A refusal printed (exit 1); anything else is the command's error (exit 2).
fn finish(outcome: Result<ExitCode, AgentError>, json_output: bool) -> anyhow::Result<ExitCode> {
    match outcome {
        Ok(code) => Ok(code),
        Err(AgentError::Refused {
            action,
            message,
            reason,
            ..
        }) => {
            if json_output {
                print_json(&json!({
                    "ok": false,
                    "action": action.as_str(),
                    "message": message,
                    "reason": reason,
                }));
            } else {
                eprintln!(
                    "refused: {}{}",
                    message.trim_start(),
                    reason
                        .map(|reason| format!(" ({reason})"))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::from(1))
        }
        Err(other) => Err(other.into()),
    }
}

fn serde_value(value: &Value) -> serde_json::Value {
    serde_json::from_str(&value.to_canonical()).unwrap_or(serde_json::Value::Null)
}

/// Runs `btps agent enroll`.
pub(super) fn enroll(args: &EnrollArgs) -> anyhow::Result<ExitCode> {
    if args.state.state.exists() {
        bail!(
            "{} exists: this agent is enrolled already (give another --state)",
            args.state.state.display()
        );
    }
    let key_file = args.key_out.clone().unwrap_or_else(|| {
        let mut name = args.state.state.as_os_str().to_owned();
        name.push(".key.pem");
        PathBuf::from(name)
    });
    let (host, port) = host_port(&args.server)?;
    let key = PrivateKey::generate(2048).context("generating the agent's key pair")?;
    write_private(&key_file, &key.to_pkcs8_pem())?;
    let mut state = AgentState {
        server: args.server.clone(),
        identity: args.identity.as_str().to_owned(),
        agent_id: String::new(),
        refresh_token: String::new(),
        expires_at: String::new(),
        decrypt_by: String::new(),
        key_file: key_file.clone(),
        insecure: args.insecure,
        ca_file: args.ca_file.clone(),
        server_name: args.server_name.clone(),
    };
    let options = options(&state, &args.state);
    let mut info = Object::new();
    info.insert("deviceName", args.device_name.as_str());
    info.insert("platform", std::env::consts::OS);
    let enrolled = runtime()?.block_on(Agent::enroll(
        &host,
        port,
        &options,
        args.identity.clone(),
        &args.token,
        key,
        Some(info),
    ));
    let session = match enrolled {
        Ok((agent, session)) => {
            drop(agent);
            session
        }
        Err(error) => {
            // Nothing refers to the new key: do not leave it behind.
            let _ = fs::remove_file(&key_file);
            return finish(Err(error), args.state.json);
        }
    };
    state.update(&session);
    state.save(&args.state.state)?;
    if args.state.json {
        print_json(&json!({
            "agentId": session.agent_id,
            "identity": state.identity,
            "expiresAt": session.expires_at,
            "decryptBy": session.decrypt_by,
            "state": args.state.state,
            "keyFile": key_file,
        }));
    } else {
        print_fields(&[
            ("agent id", session.agent_id.clone()),
            ("identity", state.identity.clone()),
            ("expires", session.expires_at.clone()),
            ("state", args.state.state.display().to_string()),
            ("key", key_file.display().to_string()),
        ]);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `btps agent refresh`.
pub(super) fn refresh(args: &RefreshArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.state)?;
    let new_key = if args.rotate_key {
        Some(PrivateKey::generate(2048).context("generating the new key pair")?)
    } else {
        None
    };
    // The new key is on disk before the server knows it.
    let pending = {
        let mut name = loaded.state.key_file.as_os_str().to_owned();
        name.push(".new");
        PathBuf::from(name)
    };
    if let Some(key) = &new_key {
        let _ = fs::remove_file(&pending);
        write_private(&pending, &key.to_pkcs8_pem())?;
    }
    let refresh_token = loaded.state.refresh_token.clone();
    let outcome = runtime()?.block_on(async {
        let (mut agent, state) =
            connect(loaded)
                .await
                .map_err(|error| AgentError::UnexpectedAnswer {
                    action: btps::protocol::AgentAction::AuthRefresh,
                    detail: error.to_string(),
                })?;
        let session = agent.refresh(&refresh_token, new_key, None).await?;
        Ok::<_, AgentError>((state, session))
    });
    let (mut state, session) = match outcome {
        Ok(done) => done,
        Err(error) => {
            let _ = fs::remove_file(&pending);
            return finish(Err(error), args.state.json);
        }
    };
    state.update(&session);
    state.save(&args.state.state)?;
    if args.rotate_key {
        fs::rename(&pending, &state.key_file)
            .with_context(|| format!("replacing {}", state.key_file.display()))?;
    }
    if args.state.json {
        print_json(&json!({
            "agentId": session.agent_id,
            "expiresAt": session.expires_at,
            "keyRotated": args.rotate_key,
        }));
    } else {
        println!(
            "session of {} renewed until {}{}",
            session.agent_id,
            session.expires_at,
            if args.rotate_key { " (new key)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `btps agent ping`.
pub(super) fn ping(args: &StateArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(args)?;
    runtime()?.block_on(async {
        let (mut agent, _) = connect(loaded).await?;
        let outcome = agent.ping().await.map(|()| {
            if args.json {
                print_json(&json!({ "ok": true }));
            } else {
                println!("pong");
            }
            ExitCode::SUCCESS
        });
        finish(outcome, args.json)
    })
}

fn print_page(page: &QueryResult, json_output: bool) {
    if json_output {
        print_json(&json!({
            "results": page.results.iter().map(serde_value).collect::<Vec<_>>(),
            "cursor": page.cursor,
            "total": page.total,
            "hasNext": page.has_next,
        }));
        return;
    }
    for result in &page.results {
        let result = serde_value(result);
        let artifact = &result["artifact"];
        let meta = &result["meta"];
        let title = artifact["document"]["title"]
            .as_str()
            .or_else(|| artifact["document"]["reason"].as_str())
            .unwrap_or("-");
        println!(
            "{}  {}  {}  {}  {}{}",
            meta["entryId"].as_str().unwrap_or("-"),
            artifact["type"].as_str().unwrap_or("-"),
            artifact["from"].as_str().unwrap_or("-"),
            artifact["id"].as_str().unwrap_or("-"),
            title,
            if meta["seen"] == true { "  (seen)" } else { "" }
        );
    }
    println!(
        "{} of {} shown",
        page.results.len(),
        page.total
            .map_or_else(|| String::from("?"), |total| total.to_string())
    );
    if let Some(cursor) = &page.cursor {
        println!("more: --cursor {cursor}");
    }
}

/// Runs `btps agent inbox`.
pub(super) fn inbox(args: &InboxArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.state)?;
    let mut query = Query::new();
    if let Some(limit) = args.limit {
        query = query.limit(limit);
    }
    if let Some(since) = &args.since {
        query = query.since(since);
    }
    if let Some(until) = &args.until {
        query = query.until(until);
    }
    if args.oldest_first {
        query = query.oldest_first();
    }
    if let Some(from) = &args.from {
        query = query.filter("from", "eq", from.as_str());
    }
    if let Some(title) = &args.title {
        query = query.filter("title", "like", title.as_str());
    }
    if let Some(cursor) = &args.cursor {
        query = query.cursor(cursor);
    }
    runtime()?.block_on(async {
        let (mut agent, _) = connect(loaded).await?;
        let outcome = agent.fetch(args.mailbox, &query).await.map(|page| {
            print_page(&page, args.state.json);
            ExitCode::SUCCESS
        });
        finish(outcome, args.state.json)
    })
}

fn ids_command(args: &IdsArgs, mailbox: Option<Mailbox>) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.state)?;
    let ids: Vec<&str> = args.ids.iter().map(String::as_str).collect();
    runtime()?.block_on(async {
        let (mut agent, _) = connect(loaded).await?;
        let outcome = match mailbox {
            None => agent.mark_seen(&ids).await,
            Some(mailbox) => agent.delete(mailbox, &ids).await,
        }
        .map(|done| {
            if args.state.json {
                print_json(&json!({
                    "updated": done.updated,
                    "notFound": done.not_found,
                    "inFlight": done.in_flight,
                }));
            } else {
                println!("done: {}", done.updated.join(" "));
                if !done.not_found.is_empty() {
                    println!("not found: {}", done.not_found.join(" "));
                }
                if !done.in_flight.is_empty() {
                    println!("being sent, not cancelled: {}", done.in_flight.join(" "));
                }
            }
            ExitCode::SUCCESS
        });
        finish(outcome, args.state.json)
    })
}

/// Runs `btps agent seen`.
pub(super) fn seen(args: &IdsArgs) -> anyhow::Result<ExitCode> {
    ids_command(args, None)
}

/// Runs `btps agent delete`.
pub(super) fn delete(args: &DeleteArgs) -> anyhow::Result<ExitCode> {
    ids_command(&args.ids, Some(args.mailbox))
}

/// Runs `btps agent send`.
pub(super) fn send(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.state)?;
    let text = fs::read_to_string(&args.document)
        .with_context(|| format!("reading {}", args.document.display()))?;
    let document = json::parse(&text)
        .map_err(|error| anyhow::anyhow!("{}: not JSON: {error}", args.document.display()))?;
    runtime()?.block_on(async {
        let receiver_key = if args.encrypt {
            let directory = KeyDirectory::new(crate::cli::send::resolver(&args.dns_servers)?);
            Some(
                crate::cli::send::receiver_key(&directory, &args.to, &args.receiver_selector)
                    .await?,
            )
        } else {
            None
        };
        let (mut agent, _) = connect(loaded).await?;
        let outcome = agent
            .send_document(&args.to, document, receiver_key.as_ref())
            .await
            .map(|queued| {
                if args.state.json {
                    print_json(&json!({
                        "artifactId": queued.artifact_id,
                        "status": queued.status,
                    }));
                } else {
                    println!("{} {}", queued.artifact_id, queued.status);
                }
                ExitCode::SUCCESS
            });
        finish(outcome, args.state.json)
    })
}

/// Runs `btps agent trust …`.
pub(super) fn trust(args: &TrustArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        TrustCommand::List(args) => trust_list(args),
        TrustCommand::Respond(args) => respond(args),
    }
}

fn trust_list(args: &TrustListArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.state)?;
    let mut query = Query::new();
    if let Some(limit) = args.limit {
        query = query.limit(limit);
    }
    if let Some(from) = &args.from {
        query = query.filter("from", "eq", from.as_str());
    }
    if let Some(cursor) = &args.cursor {
        query = query.cursor(cursor);
    }
    runtime()?.block_on(async {
        let (mut agent, _) = connect(loaded).await?;
        let outcome = agent.trust_list(&query).await.map(|page| {
            if args.state.json {
                print_page(&page, true);
            } else {
                for record in &page.results {
                    let record = serde_value(record);
                    println!(
                        "{}  {} -> {}  {}",
                        record["id"].as_str().unwrap_or("-"),
                        record["senderId"].as_str().unwrap_or("-"),
                        record["receiverId"].as_str().unwrap_or("-"),
                        record["status"].as_str().unwrap_or("-"),
                    );
                }
                if let Some(cursor) = &page.cursor {
                    println!("more: --cursor {cursor}");
                }
            }
            ExitCode::SUCCESS
        });
        finish(outcome, args.state.json)
    })
}

fn respond(args: &RespondArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.state)?;
    let identity = loaded.state.identity.clone();
    runtime()?.block_on(async {
        let (mut agent, _) = connect(loaded).await?;
        let request_id = match &args.request_id {
            Some(id) => id.clone(),
            None => pending_request_id(&mut agent, &args.to).await?,
        };
        let mut document = Object::new();
        document.insert("id", request_id);
        document.insert("decision", args.decision.as_str());
        document.insert("decidedAt", now_iso());
        document.insert("decidedBy", identity);
        if let Some(expires_at) = &args.expires_at {
            document.insert("expiresAt", expires_at.as_str());
        }
        if let Some(retry_after) = &args.retry_after {
            document.insert("retryAfterDate", retry_after.as_str());
        }
        if let Some(message) = &args.message {
            document.insert("message", message.as_str());
        }
        let outcome = agent
            .trust_respond(&args.to, Value::Object(document))
            .await
            .map(|queued| {
                if args.state.json {
                    print_json(&json!({
                        "artifactId": queued.artifact_id,
                        "status": queued.status,
                    }));
                } else {
                    println!("{} {}", queued.artifact_id, queued.status);
                }
                ExitCode::SUCCESS
            });
        finish(outcome, args.state.json)
    })
}

/// The request document id the pending record from `requester` names, else a new id.
async fn pending_request_id(agent: &mut Agent, requester: &Identity) -> anyhow::Result<String> {
    let query = Query::new().filter("from", "eq", requester.as_str());
    let page = agent.trust_list(&query).await?;
    let named = page.results.iter().find_map(|record| {
        let record = record.as_object()?;
        (record.str("status") == Some("pending"))
            .then(|| {
                record
                    .get("metadata")?
                    .as_object()?
                    .get("request")?
                    .as_object()?
                    .str("documentId")
                    .map(str::to_owned)
            })
            .flatten()
    });
    Ok(named.unwrap_or_else(btps::protocol::response::new_id))
}
