//! `btps trust`: list trust records from an index, show both records of one
//! relationship, record the operator's decisions (accept, reject, revoke, block)
//! and delete a record.

use std::process::ExitCode;

use btps::admin::operations::{AdminRequest, AdminResponse, Decision, TrustRequestFields};
use clap::Subcommand;
use serde_json::{Value, json};

use super::output::{print_fields, print_json, print_table, text};
use super::{Admin, OutputArgs, unexpected};

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
    /// Ask a partner for trust: records the requesting side's pending record and
    /// queues the TRUST_REQ (signed by the domain's delegator).
    Request(TrustRequestArgs),
}

#[derive(Debug, clap::Args)]
struct TrustRequestArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The hosted identity asking.
    from: String,
    /// The partner asked.
    to: String,
    /// Legal name of the requester.
    #[arg(long)]
    name: Option<String>,
    /// Contact e-mail.
    #[arg(long)]
    email: Option<String>,
    /// Why trust is asked for.
    #[arg(long)]
    reason: Option<String>,
    /// Contact phone.
    #[arg(long)]
    phone: Option<String>,
    /// A JSON file holding the request document (the options above override its fields).
    #[arg(long, value_name = "FILE")]
    document: Option<std::path::PathBuf>,
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
    /// Change the record only: queue no TRUST_RES to the requester.
    #[arg(long)]
    no_notify: bool,
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
        TrustCommand::Request(args) => trust_request(args),
    }
}

fn trust_request(args: &TrustRequestArgs) -> anyhow::Result<ExitCode> {
    let document = match &args.document {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|error| anyhow::anyhow!("reading {}: {error}", path.display()))?,
        ),
        None => None,
    };
    let mut admin = Admin::connect(&args.output.data, false)?;
    let response = admin.run(AdminRequest::TrustRequest {
        from: args.from.clone(),
        to: args.to.clone(),
        fields: TrustRequestFields {
            name: args.name.clone(),
            email: args.email.clone(),
            reason: args.reason.clone(),
            phone: args.phone.clone(),
            document,
        },
    })?;
    let AdminResponse::TrustRequested { record, entry } = response else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&json!({"record": record, "entry": entry}));
    } else {
        print_trust("outbound", &record);
        println!();
        super::outbox::print_entry(&entry);
    }
    Ok(ExitCode::SUCCESS)
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
        notify: !args.no_notify,
    })?;
    let AdminResponse::TrustDecided {
        mut record,
        notified,
        note,
    } = response
    else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        // The record, with what became of the answer to the requester.
        if let Some(object) = record.as_object_mut() {
            object.insert(
                "notification".to_owned(),
                json!({"entry": notified, "note": note}),
            );
        }
        print_json(&record);
    } else {
        print_trust("inbound", &record);
        match (&notified, &note) {
            (Some(entry), _) => println!(
                "queued the TRUST_RES to {} (outbox entry {})",
                args.sender, entry["id"]
            ),
            (None, Some(note)) if !args.no_notify => eprintln!("warning: {note}"),
            _ => {}
        }
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
