//! What agents send (`07-agents-auth.md` §3.2, §8.3): the server's
//! [`AgentOutbound`], implemented by [`Outbound`].
//!
//! The agent signed the nested transporter artifact with its own key. Unless that
//! key is the owner's own DNS key (an end-to-end user), the artifact gets the
//! delegation of the owner's domain delegator — the same delegator, checked the
//! same way, as for the artifacts the appliance signs itself ([`Originator`]) —
//! so that receivers verify it. The delegated bytes are what the outbox keeps and
//! every attempt resends. Then, in one transaction:
//!
//! * `trust.request`: the requesting side's guard and pending record
//!   ([`queue::queue_trust_request_entry`]), and the entry;
//! * `trust.respond`: the receiving side's record must be `pending` (and, when its
//!   privacy type is `encrypted`, the answer encrypted); a readable decision is
//!   applied to it, and the entry queued;
//! * `artifact.send`: with `agents.require_outbound_trust`, an active
//!   requesting-side record; an `encrypted` privacy type refuses a plain document.
//!
//! [`Originator`]: super::Originator

use std::sync::Arc;

use crate::BoxFuture;
use crate::identity::compute_trust_id;
use crate::protocol::json::Value;
use crate::protocol::{ErrorCode, ProtocolError, TransporterType};
use crate::server::agent::{AgentOutbound, OutboundAction, OutboundRequest};
use crate::server::trust::Decision;
use crate::store::{
    NewOutboxEntry, Perspective, PrivacyType, Storage, StoreError, Timestamp, TrustStatus,
};

use super::Outbound;
use super::queue::{self, QueueError};

/// A trust refusal as the wire shows it (`05-trust.md` §5.5).
fn refused(code: ErrorCode, detail: String) -> QueueError {
    QueueError::Refused(ProtocolError::new(code, detail).with_reason(code.code()))
}

fn answer(error: QueueError) -> ProtocolError {
    match error {
        QueueError::Refused(error) => error,
        QueueError::Invalid(detail) | QueueError::State(detail) => {
            ProtocolError::validation(detail)
        }
        QueueError::Store(StoreError::Unavailable { path, reason }) => {
            ProtocolError::storage_unavailable(
                &reason,
                format!(
                    "{}: storage temporarily unavailable: {reason}",
                    path.display()
                ),
            )
        }
        QueueError::Store(error) => ProtocolError::storage(error.to_string()),
    }
}

impl Outbound {
    /// Whether the artifact's signature is by `owner`'s own DNS key (at its
    /// domain's host selector): then it needs no delegation.
    async fn signed_by_owner(&self, request: &OutboundRequest) -> bool {
        let Some(directory) = self.originator.directory() else {
            return false;
        };
        let Ok(host) = directory.host(request.owner.domain()).await else {
            return false;
        };
        let Ok(record) = directory.identity_key(&request.owner, &host.selector).await else {
            return false;
        };
        let fingerprint = request
            .artifact
            .get("signature")
            .and_then(Value::as_object)
            .and_then(|signature| signature.str("fingerprint"));
        crate::crypto::PublicKey::from_base64_spki(&record.public_key_base64)
            .is_ok_and(|key| Some(key.fingerprint()) == fingerprint)
    }

    async fn queue_agent_artifact(
        &self,
        storage: Arc<dyn Storage>,
        request: OutboundRequest,
    ) -> Result<String, QueueError> {
        if request.artifact.contains_key("delegation") {
            return Err(QueueError::Invalid(String::from(
                "document: the agent's artifact must not carry a delegation (the server adds it)",
            )));
        }
        let mut artifact = request.artifact.clone();
        if !self.signed_by_owner(&request).await {
            let domain = request.owner.domain();
            self.originator
                .check_delegator(domain)
                .await
                .map_err(|error| {
                    QueueError::Refused(
                        ProtocolError::new(ErrorCode::Unknown, error.to_string())
                            .with_reason("the domain's delegator is not verified"),
                    )
                })?;
            self.originator
                .delegate_agent_artifact(
                    &mut artifact,
                    &request.owner,
                    &request.agent_id,
                    &request.agent_key,
                )
                .map_err(|error| QueueError::Invalid(error.to_string()))?;
        }
        let now = Timestamp::now();
        let mut entry = queue::outbox_entry(&artifact, now.clone())?;
        entry.agent_artifact_id = Some(request.agent_artifact_id.clone());
        entry.agent_id = Some(request.agent_id.clone());
        let artifact_id = entry.artifact_id.clone();
        let action = request.action;
        let policy = self.policy.clone();
        tokio::task::spawn_blocking(move || match action {
            OutboundAction::TrustRequest => {
                queue::queue_trust_request_entry(storage.as_ref(), &artifact, &entry, &now, &policy)
                    .map(drop)
            }
            OutboundAction::TrustRespond => respond(storage.as_ref(), &artifact, &entry),
            OutboundAction::Send { require_trust } => {
                send(storage.as_ref(), &artifact, &entry, require_trust, &now)
            }
        })
        .await
        .map_err(|error| QueueError::Store(StoreError::TaskFailed(error.to_string())))??;
        self.wake();
        Ok(artifact_id)
    }
}

/// `trust.respond`: the request answered must be pending here.
fn respond(
    storage: &dyn Storage,
    artifact: &crate::protocol::json::Object,
    entry: &NewOutboxEntry,
) -> Result<(), QueueError> {
    let (owner, requester) = (entry.from.clone(), entry.to.clone());
    let id = compute_trust_id(&requester, &owner);
    let plain = matches!(artifact.get("encryption"), None | Some(Value::Null));
    let decision = if plain {
        artifact.get("document").and_then(Decision::from_document)
    } else {
        None
    };
    queue::transact(storage, &owner, |tx| {
        let Some(record) = tx.trust(Perspective::Inbound, &id)? else {
            return Err(refused(
                ErrorCode::TrustNotAllowed,
                format!("no trust request from {requester} to answer"),
            ));
        };
        if record.status != TrustStatus::Pending {
            return Err(refused(
                ErrorCode::TrustNotAllowed,
                format!("the trust request from {requester} is not pending"),
            ));
        }
        if plain && record.privacy_type == PrivacyType::Encrypted {
            return Err(QueueError::Refused(
                ProtocolError::validation(format!(
                    "{requester} asked for encrypted documents: the answer must be encrypted"
                ))
                .with_reason("encryption required by trust"),
            ));
        }
        if let Some(decision) = &decision {
            let mut patch = decision.patch();
            if decision.expires_at.is_none() {
                // The requester's wish stands when the answer names no end.
                patch.expires_at = None;
            }
            tx.update_trust(Perspective::Inbound, &id, patch)?;
        }
        tx.enqueue(entry.clone())?;
        Ok(())
    })
}

/// `artifact.send`: the requesting side's trust, when required, and its privacy.
fn send(
    storage: &dyn Storage,
    artifact: &crate::protocol::json::Object,
    entry: &NewOutboxEntry,
    require_trust: bool,
    now: &Timestamp,
) -> Result<(), QueueError> {
    let (owner, receiver) = (entry.from.clone(), entry.to.clone());
    let id = compute_trust_id(&owner, &receiver);
    let encrypted = !matches!(artifact.get("encryption"), None | Some(Value::Null));
    queue::transact(storage, &owner, |tx| {
        if !tx.is_hosted(&owner)? {
            return Err(QueueError::Invalid(format!("{owner} is not hosted here")));
        }
        let record = tx.trust(Perspective::Outbound, &id)?;
        let active = record
            .as_ref()
            .is_some_and(|record| record.is_active_at(now.millis()));
        if require_trust && !active {
            return Err(refused(
                ErrorCode::TrustNonExistent,
                format!("{receiver} has not accepted documents from {owner}"),
            ));
        }
        if record
            .as_ref()
            .is_some_and(|record| record.privacy_type == PrivacyType::Encrypted && !encrypted)
        {
            return Err(QueueError::Refused(
                ProtocolError::validation(format!(
                    "the trust with {receiver} requires encrypted documents"
                ))
                .with_reason("encryption required by trust"),
            ));
        }
        tx.enqueue(entry.clone())?;
        Ok(())
    })
}

impl AgentOutbound for Outbound {
    fn queue<'a>(
        &'a self,
        storage: &'a Arc<dyn Storage>,
        request: OutboundRequest,
    ) -> BoxFuture<'a, Result<String, ProtocolError>> {
        let storage = Arc::clone(storage);
        Box::pin(async move {
            let kind = request
                .artifact
                .str("type")
                .and_then(TransporterType::parse);
            if kind.is_none() {
                return Err(ProtocolError::validation(
                    "document.type: not a transporter type",
                ));
            }
            self.queue_agent_artifact(storage, request)
                .await
                .map_err(answer)
        })
    }
}
