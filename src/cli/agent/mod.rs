//! `btps agent`: agents of hosted identities.
//!
//! Two audiences share the command:
//!
//! * the **operator** (`operator.rs`): `token issue|list|revoke`, `list`, `revoke` —
//!   admin requests, run by the server through its admin socket while it serves,
//!   or on the database directly when it is stopped;
//! * the **agent** (`device.rs`): `enroll`, `refresh`, `ping`, `inbox`, `seen`,
//!   `delete`, `send`, `trust list|respond` — a BTPS agent built on
//!   [`btps::agent::Agent`], talking TLS to the identity's server and keeping its
//!   agent id and refresh token in a private state file.

use std::process::ExitCode;

use clap::Subcommand;

mod device;
mod operator;

pub(crate) use operator::policy;

/// Arguments of `btps agent`.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// One-time enrollment tokens (operator): issue, list, revoke.
    Token(operator::TokenArgs),
    /// The enrolled agents of the hosted identities (operator).
    List(operator::ListArgs),
    /// Revoke an agent (operator): its trust record is revoked and its session
    /// deleted; its next request is refused.
    Revoke(operator::RevokeArgs),
    /// Enroll this machine as an agent of an identity with a one-time token: makes
    /// the agent's key pair (0600) and a state file (0600) with its id and refresh
    /// token.
    Enroll(device::EnrollArgs),
    /// Renew the session (a new refresh token; with --rotate-key a new key pair).
    Refresh(device::RefreshArgs),
    /// Ask the server whether it and its storage answer.
    Ping(device::StateArgs),
    /// List a mailbox (the inbox by default) with filters and pagination.
    Inbox(device::InboxArgs),
    /// Mark inbox entries seen.
    Seen(device::IdsArgs),
    /// Move entries to the trash (from --mailbox, the inbox by default), purge trash
    /// entries, or cancel outbox entries.
    Delete(device::DeleteArgs),
    /// Send a document (invoice JSON) to a recipient through the server.
    Send(device::SendArgs),
    /// The identity's trust records: list them, answer a trust request.
    Trust(device::TrustArgs),
}

/// Runs `btps agent …`.
pub(crate) fn agent(args: &AgentArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        AgentCommand::Token(args) => operator::token(args),
        AgentCommand::List(args) => operator::list(args),
        AgentCommand::Revoke(args) => operator::revoke(args),
        AgentCommand::Enroll(args) => device::enroll(args),
        AgentCommand::Refresh(args) => device::refresh(args),
        AgentCommand::Ping(args) => device::ping(args),
        AgentCommand::Inbox(args) => device::inbox(args),
        AgentCommand::Seen(args) => device::seen(args),
        AgentCommand::Delete(args) => device::delete(args),
        AgentCommand::Send(args) => device::send(args),
        AgentCommand::Trust(args) => device::trust(args),
    }
}
