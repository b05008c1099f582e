//! `btps dns`: the DNS TXT records the hosted identities and their domains need,
//! printed for an operator to publish (`records`), or served on loopback by a
//! development-only responder (`serve`) so that `btps serve` and `btps send` work on
//! one machine without a real zone (docs/try-it.md).
//!
//! Both compute the records with the admin operation `DnsRecords`, through the usual
//! path: the running server's admin socket, or the database when no server runs.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::bail;
use btps::admin::operations::{AdminRequest, AdminResponse, DnsRecord, parse_identity};
use btps::identity::responder::DnsResponder;
use clap::Subcommand;
use serde_json::json;

use super::admin::{Admin, OutputArgs, print_json};
use super::store::DataDirArg;

/// The TTL the development responder gives its answers: short, so that a record
/// changed by restarting it is seen again within seconds.
const DEV_TTL_SECONDS: u32 = 5;

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
    /// Development only: serve exactly those records from a DNS responder on
    /// loopback (UDP and TCP) until Ctrl-C or SIGTERM, for `btps serve --dns-server`
    /// and `btps send --dns-server` on this machine.
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
    data: DataDirArg,
    /// Only this identity's records (`account$domain`).
    identity: Option<String>,
    /// `HOST:PORT` for the host records (default: the server's listen address).
    #[arg(long, value_name = "HOST:PORT")]
    host: Option<String>,
    /// Loopback address to answer on (UDP and TCP); port 0 picks a free one.
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

/// The records and warnings, through the server or from the database. The database
/// is closed again before this returns (a responder that kept it open would stop
/// `btps serve` from starting).
fn fetch(
    data: &DataDirArg,
    identity: Option<&str>,
    host: Option<&str>,
) -> anyhow::Result<(Vec<DnsRecord>, Vec<String>)> {
    let identity = identity
        .map(|text| parse_identity(text).map(|identity| identity.as_str().to_owned()))
        .transpose()?;
    let mut admin = Admin::connect(data, false)?;
    let response = admin.call(AdminRequest::DnsRecords {
        identity,
        host: host.map(str::to_owned),
    })?;
    drop(admin);
    match response {
        AdminResponse::DnsRecordSet { records, warnings } => Ok((records, warnings)),
        other => bail!("unexpected answer from the server: {other:?}"),
    }
}

fn records(args: &RecordsArgs) -> anyhow::Result<ExitCode> {
    let (records, warnings) = fetch(
        &args.output.data,
        args.identity.as_deref(),
        args.host.as_deref(),
    )?;
    if args.output.json {
        print_json(&json!({"records": records, "warnings": warnings}));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "DNS TXT records to publish (one record per name; split values into strings of at most 255 bytes):"
    );
    print_records(&records);
    print_warnings(&warnings);
    Ok(ExitCode::SUCCESS)
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "btps dns serve is for development on this machine only: --listen {} is not a loopback address (use 127.0.0.1:PORT or [::1]:PORT, and publish real records with your DNS provider: btps dns records)",
            args.listen
        );
    }
    let (records, warnings) =
        fetch(&args.data, args.identity.as_deref(), args.host.as_deref())?;
    let responder = DnsResponder::start(args.listen)
        .map_err(|error| anyhow::anyhow!("cannot answer DNS on {}: {error}", args.listen))?;
    // Ctrl-C and SIGTERM are handled from before the address is printed.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stop = {
        let _entered = runtime.enter();
        super::serve::shutdown_signal()
    };
    responder.set_ttl(DEV_TTL_SECONDS);
    for record in &records {
        responder.set_txt(&record.name, vec![record.value.clone()]);
    }
    println!(
        "btps dns listening on {} (development only; {} records, TTL {DEV_TTL_SECONDS} s; every other name is NXDOMAIN):",
        responder.local_addr(),
        records.len()
    );
    print_records(&records);
    print_warnings(&warnings);
    println!(
        "use --dns-server {} with btps serve and btps send; stop with Ctrl-C",
        responder.local_addr()
    );
    runtime.block_on(stop);
    drop(responder);
    println!("btps dns stopped");
    Ok(ExitCode::SUCCESS)
}

fn print_records(records: &[DnsRecord]) {
    for record in records {
        println!();
        println!("; {}", record.purpose);
        println!("{}. IN TXT \"{}\"", record.name, record.value);
    }
}

fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}
