//! `btps outbox` and `btps sentbox`: what the hosted identities send, queued or
//! delivered; an entry retried now or cancelled.
//!
//! With `--json` a listing prints a JSON array of entries (each with at least `id`,
//! `from`, `to`, `state` and `attempts`), and a single entry one JSON object.

use std::process::ExitCode;

use btps::admin::operations::{AdminRequest, AdminResponse};
use clap::Subcommand;
use serde_json::Value;

use super::output::{print_fields, print_json, print_table, text};
use super::{Admin, OutputArgs, unexpected};

/// Arguments of `btps outbox`.
#[derive(Debug, clap::Args)]
pub(crate) struct OutboxArgs {
    #[command(subcommand)]
    command: OutboxCommand,
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// List what waits to be delivered, in queue order (of one identity, or all).
    List(OutboxListArgs),
    /// Show one outbound entry with its artifact.
    Show(EntryArgs),
    /// Make an entry due now (its attempt count stays).
    Retry(EntryArgs),
    /// Move an entry that is not being delivered right now to the trash.
    Cancel(EntryArgs),
}

#[derive(Debug, clap::Args)]
struct OutboxListArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Only this hosted identity's entries.
    identity: Option<String>,
    /// Maximum number of entries.
    #[arg(long, value_name = "N", default_value_t = 100)]
    limit: u32,
    /// Continue after the listing that printed this cursor.
    #[arg(long, value_name = "C")]
    cursor: Option<String>,
}

#[derive(Debug, clap::Args)]
struct EntryArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The entry id (from `btps outbox list`).
    entry_id: u64,
}

/// Arguments of `btps sentbox`.
#[derive(Debug, clap::Args)]
pub(crate) struct SentboxArgs {
    #[command(subcommand)]
    command: SentboxCommand,
}

#[derive(Debug, Subcommand)]
enum SentboxCommand {
    /// List what a hosted identity sent and was delivered, newest first.
    List(SentboxListArgs),
}

#[derive(Debug, clap::Args)]
struct SentboxListArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The hosted identity.
    identity: String,
    /// Maximum number of entries.
    #[arg(long, value_name = "N", default_value_t = 100)]
    limit: u32,
    /// Continue after the listing that printed this cursor.
    #[arg(long, value_name = "C")]
    cursor: Option<String>,
}

/// Runs `btps outbox …`.
pub(crate) fn outbox(args: &OutboxArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        OutboxCommand::List(args) => listing(
            &args.output,
            AdminRequest::OutboxList {
                identity: args.identity.clone(),
                limit: args.limit,
                cursor: args.cursor.clone(),
            },
        ),
        OutboxCommand::Show(args) => one(
            &args.output,
            AdminRequest::OutboxShow {
                entry_id: args.entry_id,
            },
        ),
        OutboxCommand::Retry(args) => one(
            &args.output,
            AdminRequest::OutboxRetry {
                entry_id: args.entry_id,
            },
        ),
        OutboxCommand::Cancel(args) => one(
            &args.output,
            AdminRequest::OutboxCancel {
                entry_id: args.entry_id,
            },
        ),
    }
}

/// Runs `btps sentbox …`.
pub(crate) fn sentbox(args: &SentboxArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        SentboxCommand::List(args) => listing(
            &args.output,
            AdminRequest::SentboxList {
                identity: args.identity.clone(),
                limit: args.limit,
                cursor: args.cursor.clone(),
            },
        ),
    }
}

fn listing(output: &OutputArgs, request: AdminRequest) -> anyhow::Result<ExitCode> {
    let mut admin = Admin::connect(&output.data, false)?;
    let response = admin.run(request)?;
    let AdminResponse::OutboxEntries { entries, next } = response else {
        return Err(unexpected(&response));
    };
    if output.json {
        print_json(&Value::from(entries));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            vec![
                text(&entry["id"]),
                text(&entry["state"]),
                text(&entry["attempts"]),
                text(&entry["type"]),
                text(&entry["from"]),
                text(&entry["to"]),
                text(&entry["at"]),
                entry["lastError"].as_str().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    print_table(
        &[
            "ENTRY",
            "STATE",
            "ATTEMPTS",
            "TYPE",
            "FROM",
            "TO",
            "SINCE",
            "LAST ERROR",
        ],
        &rows,
    );
    if let Some(next) = next {
        println!("more: --cursor {next}");
    }
    Ok(ExitCode::SUCCESS)
}

fn one(output: &OutputArgs, request: AdminRequest) -> anyhow::Result<ExitCode> {
    let mut admin = Admin::connect(&output.data, false)?;
    let response = admin.run(request)?;
    let AdminResponse::OutboxEntry { entry } = response else {
        return Err(unexpected(&response));
    };
    if output.json {
        print_json(&entry);
    } else {
        print_entry(&entry);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints one outbound entry as fields.
pub(super) fn print_entry(entry: &Value) {
    let mut fields = vec![
        ("entry", text(&entry["id"])),
        ("state", text(&entry["state"])),
        ("type", text(&entry["type"])),
        ("artifact id", text(&entry["artifactId"])),
        ("from", text(&entry["from"])),
        ("to", text(&entry["to"])),
        ("queued at", text(&entry["queuedAt"])),
        ("attempts", text(&entry["attempts"])),
        ("next attempt", text(&entry["nextAttemptAt"])),
        ("last error", text(&entry["lastError"])),
        ("delivered at", text(&entry["deliveredAt"])),
    ];
    if let Some(artifact) = entry["artifact"].as_str() {
        fields.push(("artifact", artifact.to_owned()));
    }
    print_fields(&fields);
}
