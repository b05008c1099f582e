//! `btps dns`: the DNS TXT records the hosted identities and their domains need,
//! printed for an operator to publish (`records`), or served on loopback by a
//! development-only responder (`serve`) so that `btps serve` and `btps send` work on
//! one machine without a real zone (docs/try-it.md).
//!
//! Both compute the records with the admin operation `DnsRecords`. `records` goes
//! the usual way: the running server's admin socket, or the database when no server
//! runs. `serve` only ever asks the running server, before answering each query, so
//! that its answers follow the server as it is now (an identity added a moment ago,
//! the port it actually bound) and so that it never holds the database, which would
//! keep `btps serve` from starting.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use btps::admin::operations::{AdminRequest, AdminResponse, DnsRecord, parse_identity};
use btps::admin::socket::AdminClient;
use btps::identity::responder::DnsResponder;
use clap::Subcommand;
use serde_json::{Value, json};

use super::admin::{Admin, OutputArgs, print_json};

/// The TTL of the development responder's answers (and of its "no such name"),
/// seconds: short, so that a changed record is seen again within seconds. It is
/// also the shortest time the server's DNS cache keeps an answer.
const DEV_TTL_SECONDS: u32 = 5;

/// How long `btps dns serve` waits for the server's answer before answering a
/// query from the records it already has: well within a resolver's patience.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Arguments of `btps dns`.
#[derive(Debug, clap::Args)]
pub(crate) struct DnsArgs {
    #[command(subcommand)]
    command: DnsCommand,
}

#[derive(Debug, Subcommand)]
enum DnsCommand {
    /// Print the DNS TXT records to publish for the hosted identities and their
    /// domains (or for one identity): keys, host records, lookup-signer keys.
    Records(RecordsArgs),
    /// Development only: answer exactly those records from a DNS responder on
    /// loopback (UDP and TCP), following the running server, until Ctrl-C or
    /// SIGTERM; for `--dns-server` of btps serve and btps send on this machine.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct RecordsArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Only this identity's records (`account$domain`).
    identity: Option<String>,
    /// `HOST:PORT` others reach this server at (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    host: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Only this identity's records (`account$domain`).
    identity: Option<String>,
    /// `HOST:PORT` for the host records (default: the address the server listens on).
    #[arg(long, value_name = "HOST:PORT")]
    host: Option<String>,
    /// Loopback address to answer on (UDP and TCP); port 0 picks a free one, and
    /// the address is printed.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8053")]
    listen: SocketAddr,
}

/// Runs `btps dns …`.
pub(crate) fn dns(args: &DnsArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        DnsCommand::Records(args) => records(args),
        DnsCommand::Serve(args) => serve(args),
    }
}

/// `IDENTITY` as the operation expects it, checked here so that a typo is reported
/// before anything else happens.
fn identity_argument(identity: Option<&str>) -> anyhow::Result<Option<String>> {
    identity
        .map(|text| parse_identity(text).map(|identity| identity.as_str().to_owned()))
        .transpose()
        .map_err(anyhow::Error::new)
}

fn records(args: &RecordsArgs) -> anyhow::Result<ExitCode> {
    let identity = identity_argument(args.identity.as_deref())?;
    let mut admin = Admin::connect(&args.output.data, false)?;
    let response = admin.call(AdminRequest::DnsRecords {
        identity,
        host: args.host.clone(),
    })?;
    // Close the database (if this process opened it) before printing.
    drop(admin);
    let AdminResponse::DnsRecordSet { records, warnings } = response else {
        bail!("unexpected answer from the server: {response:?}");
    };
    if args.output.json {
        print_json(&json!({"records": records, "warnings": warnings}));
        return Ok(ExitCode::SUCCESS);
    }
    let mut lines = vec![String::from(
        "DNS TXT records to publish (one record per name; split values into strings of at most 255 bytes):",
    )];
    lines.extend(record_lines(&records));
    emit(&lines);
    print_warnings(&warnings);
    Ok(ExitCode::SUCCESS)
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "btps dns serve is for development on this machine only: --listen {} is not a loopback address (use 127.0.0.1:PORT or [::1]:PORT; publish real records with your DNS provider, as btps dns records prints them)",
            args.listen
        );
    }
    let identity = identity_argument(args.identity.as_deref())?;
    let config = args.output.data.config()?;
    if !config.admin.enabled {
        bail!(
            "btps dns serve follows the running server through its admin socket, which this configuration disables ([admin] enabled = false)"
        );
    }
    let follower = Arc::new(Follower {
        socket: config.admin.socket,
        request: AdminRequest::DnsRecords {
            identity,
            host: args.host.clone(),
        },
        json: args.output.json,
        seen: Mutex::new(Seen::default()),
    });
    let responder = DnsResponder::start(args.listen).with_context(|| {
        format!(
            "cannot answer DNS on {} (is the port taken? choose another, or port 0 for a free one)",
            args.listen
        )
    })?;
    responder.set_ttl(DEV_TTL_SECONDS);
    // SIGTERM and Ctrl-C are handled from before the address is printed: a caller
    // that stops the responder as soon as it has read the address stops it cleanly.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let stop = {
        let _entered = runtime.enter();
        super::serve::shutdown_signal()
    };
    let address = responder.local_addr();
    if args.output.json {
        emit_json(&json!({
            "event": "listening",
            "address": address.to_string(),
            "ttl": DEV_TTL_SECONDS,
            "adminSocket": follower.socket.display().to_string(),
        }));
    } else {
        emit(&[
            format!(
                "btps dns listening on {address} (development only: UDP and TCP, TTL {DEV_TTL_SECONDS} s, NXDOMAIN for every name not listed)"
            ),
            format!(
                "following the server on {}; use --dns-server {address} with btps serve and btps send; stop with Ctrl-C",
                follower.socket.display()
            ),
        ]);
    }
    if let Some(records) = follower.zone() {
        responder.replace_all(records);
    }
    let source = Arc::clone(&follower);
    responder.follow(move || source.zone());
    runtime.block_on(stop);
    drop(responder);
    if args.output.json {
        emit_json(&json!({"event": "stopped"}));
    } else {
        emit(&[String::from("btps dns stopped")]);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `btps dns serve` asks the server for, and what it last told the operator.
struct Follower {
    socket: PathBuf,
    request: AdminRequest,
    json: bool,
    seen: Mutex<Seen>,
}

/// The last answer printed: records and warnings, or why there was none.
#[derive(Default)]
struct Seen {
    records: Option<(Vec<DnsRecord>, Vec<String>)>,
    problem: Option<String>,
}

impl Follower {
    /// The zone as the server gives it now, printed when it differs from the last
    /// one; `None` (keep the records already served) when the server does not
    /// answer, with the reason printed once.
    fn zone(&self) -> Option<Vec<(String, Vec<String>)>> {
        // Held while asking, so that the start-up question and a query's do not
        // print over each other.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match self.ask() {
            Ok((records, warnings)) => {
                let zone = records
                    .iter()
                    .map(|record| (record.name.clone(), vec![record.value.clone()]))
                    .collect();
                seen.problem = None;
                let answer = (records, warnings);
                if seen.records.as_ref() != Some(&answer) {
                    self.print_records(&answer.0, &answer.1);
                    seen.records = Some(answer);
                }
                Some(zone)
            }
            Err(problem) => {
                if seen.problem.as_ref() != Some(&problem) {
                    let served = seen
                        .records
                        .as_ref()
                        .map_or(0, |(records, _)| records.len());
                    self.print_problem(&problem, served);
                    seen.problem = Some(problem);
                }
                None
            }
        }
    }

    /// One `DnsRecords` request to the running server.
    fn ask(&self) -> Result<(Vec<DnsRecord>, Vec<String>), String> {
        let mut client = AdminClient::connect(&self.socket).map_err(|error| {
            format!(
                "no server answers on {} ({error}); start btps serve with the same data directory",
                self.socket.display()
            )
        })?;
        client
            .set_timeout(ADMIN_TIMEOUT)
            .map_err(|error| format!("admin socket {}: {error}", self.socket.display()))?;
        match client.call(&self.request) {
            Ok(AdminResponse::DnsRecordSet { records, warnings }) => Ok((records, warnings)),
            Ok(other) => Err(format!("unexpected answer from the server: {other:?}")),
            Err(error) => Err(format!("the server refused: {error}")),
        }
    }

    fn print_records(&self, records: &[DnsRecord], warnings: &[String]) {
        if self.json {
            emit_json(&json!({"event": "records", "records": records, "warnings": warnings}));
            return;
        }
        let mut lines = vec![format!("serving {} record(s):", records.len())];
        lines.extend(record_lines(records));
        emit(&lines);
        print_warnings(warnings);
    }

    fn print_problem(&self, problem: &str, served: usize) {
        let kept = match served {
            0 => String::from("no records served yet"),
            count => format!("still serving the {count} record(s) it last gave"),
        };
        if self.json {
            emit_json(&json!({"event": "waiting", "reason": problem, "served": served}));
        } else {
            emit(&[format!("{problem}; {kept}")]);
        }
    }
}

/// Each record as zone-file text, after a comment saying what it is for.
fn record_lines(records: &[DnsRecord]) -> Vec<String> {
    let mut lines = Vec::new();
    for record in records {
        lines.push(String::new());
        lines.push(format!("; {}", record.purpose));
        lines.push(format!("{}. IN TXT \"{}\"", record.name, record.value));
    }
    lines
}

/// Prints lines together (the responder's thread prints too). A closed standard
/// output (`| head`) is not a reason to stop answering queries, so write errors are
/// ignored.
fn emit(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// One event of `btps dns serve --json`: one JSON object per line.
fn emit_json(value: &Value) {
    emit(&[value.to_string()]);
}

fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}
