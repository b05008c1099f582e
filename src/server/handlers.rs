//! The handlers of identity lookups and agent artifacts (`spec/04-identity-dns.md`
//! §7, `spec/07-agents-auth.md` §2.4).

use std::sync::Arc;

use crate::crypto::PublicKey;
use crate::identity::{Identity, compute_trust_id, is_schema_identity};
use crate::protocol::json::{Object, Value};
use crate::protocol::response::{self, now_iso};
use crate::protocol::{
    AgentAction, AgentArtifact, ErrorCode, IdentityLookupRequest, ProtocolError,
};
use crate::server::hooks::ErrorStage;
use crate::server::middleware::{Phase, Request};
use crate::server::pipeline::{After, Halt, Pipeline, Reply, internal, storage_failure};
use crate::signing;
use crate::store::{Perspective, Timestamp, TrustRecord};

impl Pipeline {
    pub(super) async fn agent(
        &self,
        artifact: &AgentArtifact,
        request: &Request<'_>,
    ) -> Result<Reply, Halt> {
        let owner = agent_owner(artifact).map_err(Halt::at(ErrorStage::Parsing))?;
        self.require_hosted(&owner).await?;
        self.run_hooks(Phase::BeforeSignatureVerification, request)
            .await?;
        let signature = Halt::at(ErrorStage::SignatureVerification);
        let record = if artifact.action == AgentAction::AuthRequest {
            None
        } else {
            let id = compute_trust_id(&artifact.agent_id, owner.as_str());
            self.storage
                .trust()
                .get(Perspective::Inbound, &id)
                .await
                .map_err(|error| signature(storage_failure(error)))?
        };
        // Only agent records verify agent artifacts; a partner's record never does.
        let record = record.filter(|record| !is_schema_identity(&record.sender_id));
        let stored_key = match &record {
            Some(record) => Some(
                PublicKey::from_base64_spki(&record.public_key_base64).map_err(|error| {
                    Halt::at(ErrorStage::SignatureVerification)(ProtocolError::new(
                        ErrorCode::SigVerification,
                        format!("the agent record's key is unusable: {error}"),
                    ))
                })?,
            ),
            None => None,
        };
        let verified = signing::verify_agent(artifact, stored_key.as_ref()).map(drop);
        self.run_after_hooks(Phase::AfterSignatureVerification, request, &verified)
            .await?;
        verified.map_err(Halt::at(ErrorStage::SignatureVerification))?;
        self.run_hooks(Phase::BeforeTrustVerification, request)
            .await?;
        let trusted = artifact.action == AgentAction::AuthRequest
            || record
                .as_ref()
                .is_some_and(|record: &TrustRecord| record.is_active_at(Timestamp::now().millis()));
        let checked = if trusted {
            Ok(())
        } else {
            Err(ProtocolError::new(
                ErrorCode::TrustNotAllowed,
                "the agent's record is not active",
            ))
        };
        self.run_after_hooks(Phase::AfterTrustVerification, request, &checked)
            .await?;
        checked.map_err(Halt::at(ErrorStage::TrustVerification))?;
        self.run_hooks(Phase::BeforeOnArtifact, request).await?;
        let reply = self
            .agent_action(artifact)
            .await
            .map_err(Halt::at(ErrorStage::OnArtifact))?;
        self.run_hooks(Phase::AfterOnArtifact, request).await?;
        Ok(reply)
    }

    /// The agent action itself, once the artifact is verified and trusted.
    async fn agent_action(&self, artifact: &AgentArtifact) -> Result<Reply, ProtocolError> {
        match artifact.action {
            AgentAction::SystemPing => {
                // A health answer proves the storage answers.
                let storage = Arc::clone(&self.storage);
                tokio::task::spawn_blocking(move || storage.check_ready())
                    .await
                    .map_err(internal)?
                    .map_err(storage_failure)?;
                let mut document = Object::new();
                document.insert("status", "healthy");
                document.insert("timestamp", now_iso());
                let mut answer = response::success("pong", Some(&artifact.id));
                answer.insert("document", Value::Object(document));
                Ok(Reply::respond(&answer, After::KeepOpen))
            }
            other => Err(ProtocolError::new(
                ErrorCode::InvalidAction,
                format!("agent action {other} is not supported"),
            )
            .with_reason("unsupported agent action")),
        }
    }

    pub(super) async fn identity_lookup(
        &self,
        lookup: &IdentityLookupRequest,
    ) -> Result<Reply, ProtocolError> {
        let not_found = || {
            ProtocolError::new(
                ErrorCode::IdentityNotFound,
                format!("no key for {}", lookup.identity),
            )
        };
        let record = self.hosted(&lookup.identity).await?.ok_or_else(not_found)?;
        let selector = lookup
            .identity_selector
            .as_deref()
            .unwrap_or(&record.current_selector);
        let key = record
            .public_keys
            .iter()
            .find(|key| key.selector == selector)
            .ok_or_else(not_found)?;
        let document = key_document(key);
        let mut answer = response::success("success", Some(&lookup.id));
        answer.insert("selector", self.server_selector.as_str());
        answer.insert("document", Value::Object(document));
        answer.insert(
            "signedBy",
            (self.lookup_signer)(lookup.identity.domain()).as_str(),
        );
        signing::sign_object(&mut answer, &self.server_key);
        Ok(Reply::respond(&answer, After::End))
    }
}

/// The hosted identity an agent acts for (`spec/07-agents-auth.md` §2.4): for actions
/// whose document is a transporter artifact, its `from` (and the agent artifact's `to`
/// must be the nested `to`); otherwise the agent artifact's `to`.
fn agent_owner(artifact: &AgentArtifact) -> Result<Identity, ProtocolError> {
    let nested = artifact
        .raw
        .get("document")
        .and_then(Value::as_object)
        .filter(|document| {
            document.get("from").is_some_and(Value::is_string)
                && document.get("type").is_some_and(Value::is_string)
        });
    let Some(nested) = nested else {
        return Ok(artifact.to.clone());
    };
    let invalid = |what: &str| ProtocolError::validation(format!("document: {what}"));
    let identity = |key: &str| nested.str(key).and_then(|text| Identity::parse(text).ok());
    let from = identity("from").ok_or_else(|| invalid("from is not an identity"))?;
    let to = identity("to").ok_or_else(|| invalid("to is not an identity"))?;
    if !to.eq_ignore_case(&artifact.to) {
        return Err(invalid(
            "the nested artifact's to must be the agent artifact's to",
        ));
    }
    Ok(from)
}

/// The identity key document of a lookup answer: the stored key record minus
/// `createdAt`, members in stored order, the key as SPKI PEM (`spec/04-identity-dns.md` §7).
fn key_document(key: &crate::store::PublicKeyRecord) -> Object {
    let pem = if key.public_key.trim_start().starts_with("-----BEGIN") {
        key.public_key.clone()
    } else {
        PublicKey::from_base64_spki(key.public_key.trim())
            .map_or_else(|_| key.public_key.clone(), |parsed| parsed.to_pem())
    };
    match &key.source {
        Some(source) => {
            let mut document = source.0.clone();
            document.remove("createdAt");
            if document.contains_key("publicKey") {
                document.insert("publicKey", pem);
            }
            document
        }
        None => {
            let mut document = Object::new();
            document.insert("selector", key.selector.as_str());
            document.insert("publicKey", pem);
            document.insert("keyType", key.key_type.as_str());
            document.insert("version", key.version.as_str());
            document
        }
    }
}
