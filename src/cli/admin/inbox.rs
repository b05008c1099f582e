//! `btps inbox`: list the inbox of a hosted identity and print one entry's
//! artifact exactly as received.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use btps::admin::operations::{AdminRequest, AdminResponse};
use clap::Subcommand;
use serde_json::json;

use super::output::{print_json, print_table, text};
use super::{Admin, OutputArgs, unexpected};

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
