//! Agents of hosted identities (`spec/07-agents-auth.md` §6.7): one-time enrollment
//! tokens (issued, listed, revoked) and enrolled agents (listed, revoked).
//!
//! A token is shown once, when it is issued; the database keeps only the SHA-256
//! of its lookup key. Tokens are named afterwards by their *token id*, the first
//! 16 hex digits of that hash. Revoking an agent revokes its trust record and
//! deletes its session in one transaction: its next request is refused.

use std::time::Duration;

use serde_json::{Value, json};

use crate::identity::{compute_trust_id, is_schema_identity};
use crate::model::{EnrollmentToken, enrollment_token_key};
use crate::protocol::json::Object;
use crate::server::agent::new_enrollment_token;
use crate::store::{
    AgentSession, PageRequest, Perspective, Timestamp, TrustPatch, TrustRecord, TrustStatus,
};

use super::args::parse_identity;
use super::{AdminContext, AdminError, AdminResponse, AdminResult, object_json};

/// Hex digits of a token id.
const TOKEN_ID_DIGITS: usize = 16;

fn token_id(key: &[u8; 32]) -> String {
    key[..TOKEN_ID_DIGITS / 2]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The bytes of a token id (hex, either case).
fn token_id_bytes(text: &str) -> Option<Vec<u8>> {
    if text.len() != TOKEN_ID_DIGITS || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
        .collect()
}

fn metadata_json(metadata: Option<&Object>) -> Value {
    metadata.map_or(Value::Null, |object| object_json(&object.to_canonical()))
}

fn later(now: &Timestamp, by: Duration) -> AdminResult<Timestamp> {
    let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millis(now.millis().saturating_add(millis))
        .map_err(|error| AdminError::InvalidArgument(format!("invalid lifetime: {error}")))
}

/// Issues a one-time enrollment token for the hosted `identity`.
pub(super) fn agent_token_issue(
    context: &AdminContext,
    identity: &str,
    ttl_ms: Option<u64>,
    issued_by: &str,
) -> AdminResult<AdminResponse> {
    let identity = parse_identity(identity)?;
    let ttl = match ttl_ms {
        Some(0) => {
            return Err(AdminError::InvalidArgument(String::from(
                "invalid --ttl: a token must live longer than 0 ms",
            )));
        }
        Some(millis) => Duration::from_millis(millis),
        None => context.config.agents.enrollment_ttl,
    };
    let config = &context.config;
    let token = new_enrollment_token(config.agents.token_length)
        .map_err(|error| AdminError::Storage(error.to_string()))?;
    let now = Timestamp::now();
    let record = EnrollmentToken {
        identity: identity.as_str().to_owned(),
        created_at: now.clone(),
        expires_at: later(&now, ttl)?,
        decrypt_by: config.lookup_signer(identity.domain()).as_str().to_owned(),
        issued_by: issued_by.to_owned(),
        metadata: None,
    };
    let key = enrollment_token_key(identity.as_str(), &token);
    context.store.write(|batch| {
        if batch
            .identity(&crate::identity::compute_id(identity.as_str()))?
            .is_none()
        {
            return Ok(Err(AdminError::NotFound(format!(
                "{identity} is not a hosted identity"
            ))));
        }
        batch.put_enrollment_token(&key, &record)?;
        Ok(Ok(()))
    })??;
    Ok(AdminResponse::AgentToken {
        token,
        token_id: token_id(&key),
        identity: identity.as_str().to_owned(),
        expires_at: record.expires_at.as_str().to_owned(),
    })
}

/// The outstanding enrollment tokens (of `identity`, or all), oldest first.
pub(super) fn agent_token_list(
    context: &AdminContext,
    identity: Option<&str>,
) -> AdminResult<AdminResponse> {
    let identity = identity.map(parse_identity).transpose()?;
    let mut tokens = context
        .store
        .read(|snapshot| snapshot.enrollment_tokens())?;
    if let Some(identity) = &identity {
        let wanted = identity.as_str().to_lowercase();
        tokens.retain(|(_, token)| token.identity.to_lowercase() == wanted);
    }
    tokens.sort_by_key(|(_, token)| token.created_at.millis());
    let now = Timestamp::now().millis();
    Ok(AdminResponse::AgentTokens {
        tokens: tokens
            .iter()
            .map(|(key, token)| {
                json!({
                    "tokenId": token_id(key),
                    "identity": token.identity,
                    "createdAt": token.created_at.as_str(),
                    "expiresAt": token.expires_at.as_str(),
                    "expired": !token.is_valid_at(now),
                    "issuedBy": token.issued_by,
                    "decryptBy": token.decrypt_by,
                    "metadata": metadata_json(token.metadata.as_ref()),
                })
            })
            .collect(),
    })
}

/// Deletes the unused token `token_id`.
pub(super) fn agent_token_revoke(
    context: &AdminContext,
    token_id: &str,
) -> AdminResult<AdminResponse> {
    let prefix = token_id_bytes(token_id).ok_or_else(|| {
            AdminError::InvalidArgument(format!(
                "invalid token id {token_id:?}: {TOKEN_ID_DIGITS} hex digits, as `btps agent token list` shows"
            ))
        })?;
    let removed = context
        .store
        .write(|batch| batch.delete_enrollment_tokens(&prefix))?;
    if removed.is_empty() {
        return Err(AdminError::NotFound(format!(
            "no enrollment token {token_id}"
        )));
    }
    Ok(AdminResponse::AgentTokenRevoked {
        token_id: token_id.to_lowercase(),
    })
}

fn agent_json(session: &AgentSession, record: Option<&TrustRecord>) -> Value {
    json!({
        "agentId": session.agent_id,
        "owner": session.owner,
        "status": record.map(|record| record.status.as_str().to_owned()),
        "expiresAt": record.and_then(|record| record.expires_at.as_ref()).map(|at| at.as_str().to_owned()),
        "publicKeyFingerprint": record.map(|record| record.public_key_fingerprint.clone()),
        "createdAt": session.created_at.as_str(),
        "lastRefreshAt": session.last_refresh_at.as_ref().map(|at| at.as_str().to_owned()),
        "refreshExpiresAt": session.refresh_expires_at.as_str(),
        "decryptBy": session.decrypt_by,
        "agentInfo": metadata_json(session.agent_info.as_ref()),
    })
}

/// The enrolled agents (of `identity`, or all), with their trust record's state.
pub(super) fn agent_list(
    context: &AdminContext,
    identity: Option<&str>,
) -> AdminResult<AdminResponse> {
    let identity = identity.map(parse_identity).transpose()?;
    let agents = context.store.read(|snapshot| {
        let sessions =
            snapshot.agent_sessions(identity.as_ref().map(|identity| identity.as_str()))?;
        sessions
            .into_iter()
            .map(|session| {
                let id = compute_trust_id(&session.agent_id, &session.owner);
                let record = snapshot.trust(Perspective::Inbound, &id)?;
                Ok(agent_json(&session, record.as_ref()))
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok(AdminResponse::Agents { agents })
}

/// Revokes the agent `agent_id`: its trust records become `revoked` and its
/// session is deleted, in one transaction. An agent record without a session (an
/// imported one) is revoked too.
pub(super) fn agent_revoke(
    context: &AdminContext,
    agent_id: &str,
    decided_by: &str,
) -> AdminResult<AdminResponse> {
    if agent_id.is_empty() || is_schema_identity(agent_id) {
        return Err(AdminError::InvalidArgument(format!(
            "invalid agent id {agent_id:?}: an agent id looks like btps_ag_<uuid> (see `btps agent list`)"
        )));
    }
    let owners: Vec<String> = context.store.read(|snapshot| {
        let page =
            snapshot.list_by_sender(Perspective::Inbound, agent_id, &PageRequest::first(100))?;
        Ok(page
            .items
            .into_iter()
            .map(|record| record.receiver_id)
            .collect())
    })?;
    let owner = context.store.write(|batch| {
        let session = batch.agent_session(agent_id)?;
        let mut owners = owners.clone();
        if let Some(session) = &session {
            owners.push(session.owner.clone());
        }
        let mut revoked = None;
        for owner in &owners {
            let id = compute_trust_id(agent_id, owner);
            if batch.trust(Perspective::Inbound, &id)?.is_some() {
                batch.update_trust(
                    Perspective::Inbound,
                    &id,
                    TrustPatch {
                        status: Some(TrustStatus::Revoked),
                        decided_by: Some(decided_by.to_owned()),
                        decided_at: Some(Timestamp::now()),
                        ..TrustPatch::default()
                    },
                )?;
                revoked = Some(owner.clone());
            }
        }
        if session.is_some() {
            batch.delete_agent_session(agent_id)?;
        }
        Ok(revoked.or(session.map(|session| session.owner)))
    })?;
    let owner = owner.ok_or_else(|| AdminError::NotFound(format!("no agent {agent_id}")))?;
    Ok(AdminResponse::AgentRevoked {
        agent_id: agent_id.to_owned(),
        owner,
    })
}
