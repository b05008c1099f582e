//! `trust.request`, `trust.respond`, `artifact.send` (`spec/07-agents-auth.md`
//! §3.2, §8.3): the nested transporter artifact, signed by the agent, is delegated
//! for its owner's domain and queued in the owner's outbox together with the trust
//! change it implies, and the answer is `202 queued` once that has committed.
//!
//! The server does not queue by itself: delegation and the outbox's rules belong to
//! outbound delivery, a layer above it, which the server reaches through
//! [`AgentOutbound`] (given to [`crate::server::ServerBuilder::agent_outbound`]).
//! Without one the three actions are refused.

use std::sync::Arc;

use crate::BoxFuture;
use crate::crypto::PublicKey;
use crate::identity::Identity;
use crate::protocol::json::{Object, Value};
use crate::protocol::response;
use crate::protocol::{AgentAction, ErrorCode, ProtocolError};
use crate::server::pipeline::{After, Pipeline, Reply};
use crate::store::Storage;

use super::Verified;

/// Which outbound action an agent asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundAction {
    /// `trust.request`: a TRUST_REQ, with the requesting side's pending record.
    TrustRequest,
    /// `trust.respond`: a TRUST_RES to a pending request, whose decision the
    /// receiving side's record takes.
    TrustRespond,
    /// `artifact.send`: a BTPS_DOC.
    Send {
        /// An active requesting-side trust record is required (`agents.require_outbound_trust`).
        require_trust: bool,
    },
}

/// What an agent asked to send.
#[derive(Clone, Debug)]
pub struct OutboundRequest {
    /// The action.
    pub action: OutboundAction,
    /// The hosted identity sending (the nested artifact's `from`).
    pub owner: Identity,
    /// The nested transporter artifact as the agent signed it.
    pub artifact: Object,
    /// The agent's id.
    pub agent_id: String,
    /// The agent's key (from its trust record): the delegation's `agentPubKey`.
    pub agent_key: PublicKey,
    /// The id of the agent artifact that asked.
    pub agent_artifact_id: String,
}

/// Queues what agents send; implemented by outbound delivery
/// ([`crate::delivery::Outbound`]).
pub trait AgentOutbound: Send + Sync {
    /// Delegates `request.artifact` when the owner's own key did not sign it, and
    /// queues it with its trust change in one transaction. Answers the id of the
    /// queued artifact, or the refusal (trust rules, storage).
    fn queue<'a>(
        &'a self,
        storage: &'a Arc<dyn Storage>,
        request: OutboundRequest,
    ) -> BoxFuture<'a, Result<String, ProtocolError>>;
}

impl Pipeline {
    /// An outbound agent action.
    pub(super) async fn outbound(&self, verified: &Verified<'_>) -> Result<Reply, ProtocolError> {
        let action = match verified.artifact.action {
            AgentAction::TrustRequest => OutboundAction::TrustRequest,
            AgentAction::TrustRespond => OutboundAction::TrustRespond,
            _ => OutboundAction::Send {
                require_trust: self.agents.policy.require_outbound_trust,
            },
        };
        let outbound: Arc<dyn AgentOutbound> = self.agents.outbound.clone().ok_or_else(|| {
            ProtocolError::new(ErrorCode::Unknown, "no outbound delivery in this server")
                .with_reason("outbound delivery is not configured")
        })?;
        // The nested artifact was checked against the agent's key (§2.4 step 5).
        let artifact = verified
            .document()
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| ProtocolError::validation("document: a transporter artifact"))?;
        let request = OutboundRequest {
            action,
            owner: verified.owner.clone(),
            artifact,
            agent_id: verified.artifact.agent_id.clone(),
            agent_key: verified.key.clone(),
            agent_artifact_id: verified.artifact.id.clone(),
        };
        let artifact_id = outbound.queue(&self.storage, request).await?;
        tracing::info!(
            agent = %verified.artifact.agent_id,
            owner = %verified.owner,
            artifact = %artifact_id,
            action = %verified.artifact.action,
            "agent artifact queued"
        );
        let mut status = Object::new();
        status.insert("ok", true);
        status.insert("message", "queued");
        status.insert("code", 202.0);
        let mut answer = response::success("queued", Some(&verified.artifact.id));
        answer.insert("status", status);
        let mut document = Object::new();
        document.insert("artifactId", artifact_id);
        document.insert("status", "queued");
        answer.insert("document", document);
        Ok(Reply::respond(&answer, After::KeepOpen))
    }
}
