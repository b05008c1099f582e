//! Command-line interface: one module per command group.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod agent;
mod backup;
mod backup_http;
mod bench;
mod config;
mod delivery;
mod dns;
mod keys;
mod logging;
#[cfg(feature = "postgres")]
mod migrate;
#[cfg(feature = "postgres")]
mod postgres;
mod send;
mod serve;
mod store;
mod verify;

/// btps — a self-contained BTPS server appliance.
#[derive(Debug, Parser)]
#[command(name = "btps", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the BTPS server (with no configuration: a development instance in ./btps-data on 127.0.0.1:3443).
    Serve(serve::ServeArgs),
    /// Generate an RSA key pair and print its fingerprint and the DNS TXT record to publish.
    Keygen(keys::KeygenArgs),
    /// Print the BTPS fingerprint of a public key: base64(SHA-256(SPKI DER)).
    Fingerprint(keys::FingerprintArgs),
    /// Verify one artifact or signed response as a receiving server does (exit 1 if invalid).
    Verify(verify::VerifyArgs),
    /// Import a reference deployment's trust and identity JSON files into the database.
    Import(store::ImportArgs),
    /// Export the database as the reference's trust and identity JSON files.
    Export(store::ExportArgs),
    /// Hosted identities: add one (with its key pair), list, show.
    Identity(admin::IdentityArgs),
    /// Trust records: list, show, and the operator's decisions on them.
    Trust(admin::TrustArgs),
    /// Inboxes of hosted identities: list entries, show an artifact as received.
    Inbox(admin::InboxArgs),
    /// Agents: enrollment tokens and enrolled agents (operator); enroll this machine
    /// as an agent and act for its identity (agent).
    Agent(agent::AgentArgs),
    /// What the hosted identities send: list the queue, show, retry or cancel an entry.
    Outbox(admin::OutboxArgs),
    /// What the hosted identities sent and was delivered.
    Sentbox(admin::SentboxArgs),
    /// DNS TXT records of the hosted identities and domains: print them to publish,
    /// or serve them on loopback for trying btps on one machine (development only).
    Dns(dns::DnsArgs),
    /// Write a consistent, checked copy of the database (from the running server
    /// through its admin socket, or from the file).
    Backup(backup::BackupArgs),
    /// Replace the database with a backup (checked first; refused while the server
    /// runs; the current database is kept beside it). Exit 1 if the file is refused.
    Restore(backup::RestoreArgs),
    /// Integrity check of a database file (exit 0 sound, 1 damaged, 2 not checked).
    Check(backup::CheckArgs),
    /// Queue an artifact in the running server's outbox (signed by the domain's
    /// delegator, or with --key); with --host, sign and send it directly and print the
    /// response line (exit 1 if the server refused it).
    Send(send::SendArgs),
    /// Check the configuration (defaults < --config file < environment) and print every
    /// problem, or a summary (exit 2 if invalid).
    CheckConfig(config::CheckConfigArgs),
    /// Copy every record and entry between a stopped redb file and a PostgreSQL
    /// database (`--from redb:PATH --to postgres:URI`, or back), then verify the copy.
    #[cfg(feature = "postgres")]
    Migrate(migrate::MigrateArgs),
    /// Load generator: start a server (or use --target), send signed BTPS_DOC artifacts
    /// over TLS and print one JSON line of throughput, latency and server resources.
    Bench(bench::BenchArgs),
}

/// Parses the command line, runs the command, and maps its outcome to an exit code.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Keygen(args) => keys::keygen(&args),
        Command::Fingerprint(args) => keys::fingerprint(&args),
        Command::Verify(args) => verify::verify(&args),
        Command::Import(args) => store::import(&args),
        Command::Export(args) => store::export(&args),
        Command::Identity(args) => admin::identity(&args),
        Command::Trust(args) => admin::trust(&args),
        Command::Inbox(args) => admin::inbox(&args),
        Command::Agent(args) => agent::agent(&args),
        Command::Outbox(args) => admin::outbox(&args),
        Command::Sentbox(args) => admin::sentbox(&args),
        Command::Dns(args) => dns::dns(&args),
        Command::Backup(args) => backup::backup(&args),
        Command::Restore(args) => backup::restore(&args),
        Command::Check(args) => backup::check(&args),
        Command::Send(args) => send::send(&args),
        Command::CheckConfig(args) => config::check_config(&args),
        Command::Bench(args) => bench::bench(args),
        #[cfg(feature = "postgres")]
        Command::Migrate(args) => migrate::migrate(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            // 1 is reserved for "checked and refused" (e.g. `btps verify`).
            ExitCode::from(2)
        }
    }
}
