//! The operator's agent commands: enrollment tokens and enrolled agents, through the
//! admin socket of a running server or on the database directly.

use std::process::ExitCode;
use std::time::Duration;

use btps::admin::operations::{AdminRequest, AdminResponse};
use btps::server::agent::AgentPolicy;
use clap::Subcommand;
use serde_json::json;

use crate::cli::admin::{Admin, OutputArgs, print_fields, print_json};

/// The server's agent policy from `[agents]`.
pub(crate) fn policy(settings: &btps::config::AgentSettings) -> AgentPolicy {
    AgentPolicy {
        refresh_ttl: settings.refresh_ttl,
        encrypt_answers: settings.encrypt_answers,
        auth_failures_burst: settings.auth_failures_burst,
        auth_failures_per_minute: settings.auth_failures_per_minute,
        require_outbound_trust: settings.require_outbound_trust,
        sweep_interval: settings.sweep_interval,
        expired_record_grace: settings.expired_record_grace,
    }
}

/// Arguments of `btps agent token`.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a one-time enrollment token for a hosted identity; printed once, stored
    /// only hashed.
    Issue(IssueArgs),
    /// The outstanding enrollment tokens (their ids, never the tokens).
    List(TokenListArgs),
    /// Delete an unused enrollment token.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, clap::Args)]
struct IssueArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The hosted identity the new agent will act for.
    identity: String,
    /// How long the token stays valid: e.g. 900s, 15m, 2h, 1d (default:
    /// agents.enrollment_ttl_ms, 15 minutes).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Who issues the token (recorded with it).
    #[arg(long, default_value = "operator")]
    issued_by: String,
}

#[derive(Debug, clap::Args)]
struct TokenListArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Only the tokens of this identity.
    identity: Option<String>,
}

#[derive(Debug, clap::Args)]
struct TokenRevokeArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The token id (16 hex digits, from `btps agent token list`).
    token_id: String,
}

/// Arguments of `btps agent list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Only the agents of this identity.
    identity: Option<String>,
}

/// Arguments of `btps agent revoke`.
#[derive(Debug, clap::Args)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The agent id (btps_ag_…, from `btps agent list`).
    agent_id: String,
    /// Who decided (recorded as the trust record's decidedBy).
    #[arg(long, default_value = "operator")]
    decided_by: String,
}

/// `900`, `900s`, `15m`, `2h`, `1d`, `500ms`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 900s, 15m, 2h, 1d)"))?;
    let millis = match unit {
        "ms" => Some(value),
        "" | "s" => value.checked_mul(1000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        "d" => value.checked_mul(86_400_000),
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (ms, s, m, h or d)"
            ));
        }
    }
    .ok_or_else(|| format!("{text:?} is too long"))?;
    if millis == 0 {
        return Err(String::from("a duration of 0"));
    }
    Ok(Duration::from_millis(millis))
}

fn call(output: &OutputArgs, request: AdminRequest) -> anyhow::Result<AdminResponse> {
    let mut admin = Admin::connect(&output.data, false)?;
    admin.call(request).map_err(anyhow::Error::new)
}

fn unexpected(response: &AdminResponse) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from the server: {response:?}")
}

/// Runs `btps agent token …`.
pub(super) fn token(args: &TokenArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        TokenCommand::Issue(args) => issue(args),
        TokenCommand::List(args) => token_list(args),
        TokenCommand::Revoke(args) => token_revoke(args),
    }
}

fn issue(args: &IssueArgs) -> anyhow::Result<ExitCode> {
    let response = call(
        &args.output,
        AdminRequest::AgentTokenIssue {
            identity: args.identity.clone(),
            ttl_ms: args
                .ttl
                .map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            issued_by: args.issued_by.clone(),
        },
    )?;
    let AdminResponse::AgentToken {
        token,
        token_id,
        identity,
        expires_at,
    } = response
    else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&json!({
            "token": token,
            "identity": identity,
            "expiresAt": expires_at,
            "tokenId": token_id,
        }));
    } else {
        print_fields(&[
            ("token", token),
            ("identity", identity),
            ("expires", expires_at),
            ("token id", token_id),
        ]);
        println!("The token is shown once; the agent enrolls with `btps agent enroll --token`.");
    }
    Ok(ExitCode::SUCCESS)
}

fn token_list(args: &TokenListArgs) -> anyhow::Result<ExitCode> {
    let response = call(
        &args.output,
        AdminRequest::AgentTokenList {
            identity: args.identity.clone(),
        },
    )?;
    let AdminResponse::AgentTokens { tokens } = response else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&json!({ "tokens": tokens }));
        return Ok(ExitCode::SUCCESS);
    }
    for token in &tokens {
        println!(
            "{}  {}  expires {}{}",
            token["tokenId"].as_str().unwrap_or_default(),
            token["identity"].as_str().unwrap_or_default(),
            token["expiresAt"].as_str().unwrap_or_default(),
            if token["expired"] == true {
                " (expired)"
            } else {
                ""
            }
        );
    }
    println!(
        "{} token{}",
        tokens.len(),
        if tokens.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

fn token_revoke(args: &TokenRevokeArgs) -> anyhow::Result<ExitCode> {
    let response = call(
        &args.output,
        AdminRequest::AgentTokenRevoke {
            token_id: args.token_id.clone(),
        },
    )?;
    let AdminResponse::AgentTokenRevoked { token_id } = response else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&json!({ "tokenId": token_id, "revoked": true }));
    } else {
        println!("token {token_id} deleted");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `btps agent list`.
pub(super) fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let response = call(
        &args.output,
        AdminRequest::AgentList {
            identity: args.identity.clone(),
        },
    )?;
    let AdminResponse::Agents { agents } = response else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&json!({ "agents": agents }));
        return Ok(ExitCode::SUCCESS);
    }
    for agent in &agents {
        let text = |key: &str| agent[key].as_str().unwrap_or("-").to_owned();
        println!(
            "{}  {}  {}  expires {}  last refresh {}",
            text("agentId"),
            text("owner"),
            text("status"),
            text("expiresAt"),
            text("lastRefreshAt"),
        );
    }
    println!(
        "{} agent{}",
        agents.len(),
        if agents.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `btps agent revoke`.
pub(super) fn revoke(args: &RevokeArgs) -> anyhow::Result<ExitCode> {
    let response = call(
        &args.output,
        AdminRequest::AgentRevoke {
            agent_id: args.agent_id.clone(),
            decided_by: args.decided_by.clone(),
        },
    )?;
    let AdminResponse::AgentRevoked { agent_id, owner } = response else {
        return Err(unexpected(&response));
    };
    if args.output.json {
        print_json(&json!({ "agentId": agent_id, "owner": owner, "revoked": true }));
    } else {
        println!("agent {agent_id} of {owner} revoked");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("900"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("m").is_err());
    }
}
