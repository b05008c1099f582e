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
    AgentSession, AgentStore, PageRequest, Perspective, StoreError, StoreTransaction, Timestamp,
    TrustPatch, TrustRecord, TrustStatus,
};

use super::args::parse_identity;
use super::{AdminContext, AdminError, AdminResponse, AdminResult, object_json};

/// The storage's agent tables, or why there are none.
fn agents(context: &AdminContext) -> AdminResult<&dyn AgentStore> {
    context.storage().agents().ok_or_else(|| {
        AdminError::Unsupported(String::from(
            "this storage keeps no agent sessions or enrollment tokens",
        ))
    })
}

/// Runs `work` in one transaction of the storage for `owner`.
fn transact<T>(
    context: &AdminContext,
    owner: &str,
    mut work: impl FnMut(&mut dyn StoreTransaction) -> Result<T, StoreError>,
) -> AdminResult<T> {
    let mut outcome = None;
    context.storage().transact(owner, &mut |tx| {
        outcome = Some(work(tx)?);
        Ok(())
    })?;
    outcome.ok_or_else(|| AdminError::Storage(String::from("the transaction ran no work")))
}

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
    let hosted = transact(context, identity.as_str(), |tx| {
        if !tx.is_hosted(identity.as_str())? {
            return Ok(false);
        }
        tx.put_enrollment_token(&key, &record)?;
        Ok(true)
    })?;
    if !hosted {
        return Err(AdminError::NotFound(format!(
            "{identity} is not a hosted identity"
        )));
    }
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
    let mut tokens = context.wait(agents(context)?.enrollment_tokens())??;
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
    let keys: Vec<([u8; 32], String)> = context
        .wait(agents(context)?.enrollment_tokens())??
        .into_iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .map(|(key, token)| (key, token.identity))
        .collect();
    let mut removed = Vec::new();
    for (key, identity) in &keys {
        if transact(context, identity, |tx| tx.delete_enrollment_token(key))? {
            removed.push(*key);
        }
    }
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
    let storage = context.storage();
    let listed = context.wait(async {
        let sessions = agents(context)?
            .sessions(identity.as_ref().map(|identity| identity.as_str()))
            .await?;
        let mut listed = Vec::with_capacity(sessions.len());
        for session in sessions {
            let id = compute_trust_id(&session.agent_id, &session.owner);
            let record = storage.trust().get(Perspective::Inbound, &id).await?;
            listed.push(agent_json(&session, record.as_ref()));
        }
        Ok::<_, AdminError>(listed)
    })??;
    Ok(AdminResponse::Agents { agents: listed })
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
    let storage = context.storage();
    let (session, mut owners) = context.wait(async {
        let session = agents(context)?.session(agent_id).await?;
        let records = storage
            .trust()
            .list_by_sender(Perspective::Inbound, agent_id, PageRequest::first(100))
            .await?;
        let owners: Vec<String> = records
            .items
            .into_iter()
            .map(|record| record.receiver_id)
            .collect();
        Ok::<_, AdminError>((session, owners))
    })??;
    if let Some(session) = &session
        && !owners
            .iter()
            .any(|owner| owner.to_lowercase() == session.owner.to_lowercase())
    {
        owners.push(session.owner.clone());
    }
    let Some(first) = owners.first().cloned() else {
        return Err(AdminError::NotFound(format!("no agent {agent_id}")));
    };
    let now = Timestamp::now();
    let owner = transact(context, &first, |tx| {
        let mut revoked = None;
        for owner in &owners {
            let id = compute_trust_id(agent_id, owner);
            if tx.trust(Perspective::Inbound, &id)?.is_some() {
                tx.update_trust(
                    Perspective::Inbound,
                    &id,
                    TrustPatch {
                        status: Some(TrustStatus::Revoked),
                        decided_by: Some(decided_by.to_owned()),
                        decided_at: Some(now.clone()),
                        ..TrustPatch::default()
                    },
                )?;
                revoked.get_or_insert_with(|| owner.clone());
            }
        }
        tx.delete_session(agent_id)?;
        Ok(revoked.or_else(|| session.as_ref().map(|session| session.owner.clone())))
    })?;
    let owner = owner.ok_or_else(|| AdminError::NotFound(format!("no agent {agent_id}")))?;
    Ok(AdminResponse::AgentRevoked {
        agent_id: agent_id.to_owned(),
        owner,
    })
}
