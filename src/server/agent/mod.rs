//! Agent artifacts (`spec/07-agents-auth.md` §2.4): an agent — a phone app, an ERP
//! connector — acting for a hosted identity with its own key.
//!
//! The pipeline of one agent artifact, after parsing, validation and the clock check:
//!
//! 1. the **owner**: the nested `from` when the document is a transporter artifact
//!    (its `to` must be the agent artifact's `to`), the owner of the agent's
//!    session when the agent artifact itself is encrypted, else `to`; it must be
//!    hosted here;
//! 2. the **key**: `document.publicKey` for `auth.request` (and for a key rotation
//!    on `auth.refresh`), otherwise the inbound *agent* record
//!    `computeTrustId(agentId, owner)` — a partner's record never serves;
//! 3. **decryption** of an encrypted document, only after the signature verified,
//!    with the key of the session's `decryptBy` identity (the server key);
//! 4. the **trust** check: the agent record is active (`auth.request` excepted);
//! 5. the **action**, one transaction, answered after it committed.
//!
//! One file per family of actions: `auth` (enrollment and refresh, with the limit
//! on failed attempts), `fetch` (the mailbox queries), `trust` (the owner's trust
//! records), `answer` (answer documents, optionally encrypted and signed);
//! `documents` reads the action documents into types and `cursor` the query
//! cursors; `sweep` removes expired material.

mod answer;
mod auth;
mod cursor;
mod documents;
mod fetch;
mod mailbox;
mod outbound;
mod sweep;
mod trust;

use std::borrow::Cow;

use mailbox::Change;
use std::sync::Arc;
use std::time::Duration;

pub use auth::{TOKEN_ALPHABET, new_enrollment_token, new_refresh_token};
pub use outbound::{AgentOutbound, OutboundAction, OutboundRequest};
pub use sweep::{AgentSweeper, SweepReport};

use crate::crypto::PublicKey;
use crate::identity::{Identity, compute_trust_id, is_schema_identity};
use crate::protocol::json::{Object, Value};
use crate::protocol::response::{self, now_iso};
use crate::protocol::{AgentAction, AgentArtifact, ErrorCode, ProtocolError};
use crate::server::hooks::ErrorStage;
use crate::server::middleware::{Phase, Request};
use crate::server::pipeline::{After, Halt, Pipeline, Reply, internal, storage_failure};
use crate::signing;
use crate::store::{
    Mailbox, Perspective, Storage, StoreError, StoreResult, StoreTransaction, Timestamp,
};

/// How agents enroll, refresh and act (`[agents]` in the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentPolicy {
    /// Lifetime of a refresh token and of the agent's trust record.
    pub refresh_ttl: Duration,
    /// Encrypt query results to the agent's key and sign the answer (§6.8).
    pub encrypt_answers: bool,
    /// Failed authentication attempts allowed per address and per identity.
    pub auth_failures_burst: u32,
    /// Failed attempts forgiven per minute.
    pub auth_failures_per_minute: u32,
    /// `artifact.send` needs an active requesting-side trust record.
    pub require_outbound_trust: bool,
    /// How often expired tokens and sessions are removed.
    pub sweep_interval: Duration,
    /// How long an expired agent trust record is kept.
    pub expired_record_grace: Duration,
}

impl Default for AgentPolicy {
    /// The defaults of `[agents]`.
    fn default() -> Self {
        AgentPolicy {
            refresh_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            encrypt_answers: false,
            auth_failures_burst: 10,
            auth_failures_per_minute: 2,
            require_outbound_trust: true,
            sweep_interval: Duration::from_secs(5 * 60),
            expired_record_grace: Duration::from_secs(30 * 24 * 60 * 60),
        }
    }
}

/// The agent state the pipeline keeps: the policy, the failed-attempt counts and
/// what queues the agents' outbound artifacts.
pub(crate) struct Agents {
    policy: AgentPolicy,
    failures: auth::AuthFailures,
    outbound: Option<Arc<dyn AgentOutbound>>,
}

impl Agents {
    pub(crate) fn new(policy: AgentPolicy, outbound: Option<Arc<dyn AgentOutbound>>) -> Self {
        Agents {
            failures: auth::AuthFailures::new(
                policy.auth_failures_burst,
                policy.auth_failures_per_minute,
            ),
            policy,
            outbound,
        }
    }
}

/// A verified, trusted agent artifact, ready for its action.
struct Verified<'a> {
    artifact: &'a AgentArtifact,
    /// The hosted identity the agent acts for.
    owner: Identity,
    /// The document, decrypted when it arrived encrypted.
    document: Option<Cow<'a, Value>>,
    /// The key that verified the artifact.
    key: PublicKey,
}

impl Verified<'_> {
    fn document(&self) -> Option<&Value> {
        self.document.as_deref()
    }
}

impl Pipeline {
    /// Handles one agent artifact.
    pub(super) async fn agent(
        &self,
        artifact: &AgentArtifact,
        request: &Request<'_>,
    ) -> Result<Reply, Halt> {
        let authenticating = matches!(
            artifact.action,
            AgentAction::AuthRequest | AgentAction::AuthRefresh
        );
        if authenticating {
            self.agents
                .failures
                .check(request.remote.ip(), artifact.to.as_str())
                .map_err(Halt::at(ErrorStage::SignatureVerification))?;
        }
        let outcome = self.agent_checked(artifact, request).await;
        if authenticating && matches!(outcome, Err(Halt::Refuse { .. })) {
            self.agents
                .failures
                .failed(request.remote.ip(), artifact.to.as_str());
        }
        outcome
    }

    async fn agent_checked(
        &self,
        artifact: &AgentArtifact,
        request: &Request<'_>,
    ) -> Result<Reply, Halt> {
        let owner = self.agent_owner(artifact).await?;
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
        let verified = signing::verify_agent(artifact, stored_key.as_ref());
        self.run_after_hooks(Phase::AfterSignatureVerification, request, &verified)
            .await?;
        let key = verified.map_err(Halt::at(ErrorStage::SignatureVerification))?;
        // Only now may the document be decrypted (never decrypt unverified input).
        let document = self
            .agent_document(artifact, &owner)
            .map_err(Halt::at(ErrorStage::SignatureVerification))?;
        if let Some(document) = document.as_deref() {
            nested_artifact(artifact.action, document, &key)
                .map_err(Halt::at(ErrorStage::SignatureVerification))?;
        }
        self.run_hooks(Phase::BeforeTrustVerification, request)
            .await?;
        let trusted = artifact.action == AgentAction::AuthRequest
            || record
                .as_ref()
                .is_some_and(|record| record.is_active_at(Timestamp::now().millis()));
        let checked = if trusted {
            Ok(())
        } else {
            // The reason names the cause, as for transporter artifacts (05 §5.5).
            Err(ProtocolError::new(
                ErrorCode::TrustNotAllowed,
                "the agent's record is not active",
            )
            .with_reason(ErrorCode::TrustNotAllowed.code()))
        };
        self.run_after_hooks(Phase::AfterTrustVerification, request, &checked)
            .await?;
        checked.map_err(Halt::at(ErrorStage::TrustVerification))?;
        self.run_hooks(Phase::BeforeOnArtifact, request).await?;
        let verified = Verified {
            artifact,
            owner,
            document,
            key,
        };
        let reply = self
            .agent_action(&verified)
            .await
            .map_err(Halt::at(ErrorStage::OnArtifact))?;
        self.run_hooks(Phase::AfterOnArtifact, request).await?;
        Ok(reply)
    }

    /// The hosted identity an agent acts for (`spec/07-agents-auth.md` §2.4 step 2).
    async fn agent_owner(&self, artifact: &AgentArtifact) -> Result<Identity, Halt> {
        if artifact.encryption.is_none() {
            return nested_owner(artifact).map_err(Halt::at(ErrorStage::Parsing));
        }
        // An encrypted agent artifact: its owner is its session's.
        let unknown = || {
            Halt::at(ErrorStage::SignatureVerification)(ProtocolError::new(
                ErrorCode::SigVerification,
                "an encrypted agent artifact from an agent without a session",
            ))
        };
        let agents = self.storage.agents().ok_or_else(unknown)?;
        let session = agents
            .session(&artifact.agent_id)
            .await
            .map_err(|error| Halt::at(ErrorStage::SignatureVerification)(storage_failure(error)))?
            .ok_or_else(unknown)?;
        Identity::parse(&session.owner).map_err(|_| unknown())
    }

    /// The document of a verified agent artifact: as received, or decrypted with
    /// the server key (the key of every `decryptBy` identity this server names) and
    /// validated for the action.
    fn agent_document<'a>(
        &self,
        artifact: &'a AgentArtifact,
        owner: &Identity,
    ) -> Result<Option<Cow<'a, Value>>, ProtocolError> {
        let document = artifact.raw.get("document");
        let (Some(encryption), Some(document)) = (&artifact.encryption, document) else {
            return Ok(document.map(Cow::Borrowed));
        };
        let ciphertext = document.as_str().ok_or_else(|| {
            ProtocolError::validation("document: must be a string when encrypted")
        })?;
        let plain = signing::decrypt_document(ciphertext, encryption, &self.server_key)?;
        crate::protocol::validate::decrypted_agent_document(artifact.action, &plain)?;
        if let Some(nested) = plain.as_object()
            && nested.get("from").is_some_and(Value::is_string)
            && nested.get("type").is_some_and(Value::is_string)
        {
            let from = nested.str("from").unwrap_or_default();
            let to = nested.str("to").unwrap_or_default();
            if from.to_lowercase() != owner.as_str().to_lowercase() {
                return Err(ProtocolError::validation(
                    "document: the nested artifact's from must be the agent's owner",
                ));
            }
            if to.to_lowercase() != artifact.to.as_str().to_lowercase() {
                return Err(ProtocolError::validation(
                    "document: the nested artifact's to must be the agent artifact's to",
                ));
            }
        }
        Ok(Some(Cow::Owned(plain)))
    }

    /// The action of a verified, trusted agent artifact.
    async fn agent_action(&self, verified: &Verified<'_>) -> Result<Reply, ProtocolError> {
        use AgentAction::*;
        match verified.artifact.action {
            AuthRequest => self.auth_request(verified).await,
            AuthRefresh => self.auth_refresh(verified).await,
            SystemPing => self.ping(verified).await,
            InboxFetch => self.fetch(verified, Mailbox::Inbox).await,
            OutboxFetch => self.fetch(verified, Mailbox::Outbox).await,
            SentboxFetch => self.fetch(verified, Mailbox::Sentbox).await,
            DraftFetch => self.fetch(verified, Mailbox::Draft).await,
            TrashFetch => self.fetch(verified, Mailbox::Trash).await,
            TrustFetch => self.trust_fetch(verified).await,
            TrustUpdate => self.trust_update(verified).await,
            TrustDelete => self.trust_delete(verified).await,
            InboxSeen => {
                self.change_entries(verified, Mailbox::Inbox, Change::Seen)
                    .await
            }
            InboxDelete => {
                self.change_entries(verified, Mailbox::Inbox, Change::Trash)
                    .await
            }
            SentboxDelete => {
                self.change_entries(verified, Mailbox::Sentbox, Change::Trash)
                    .await
            }
            DraftDelete => {
                self.change_entries(verified, Mailbox::Draft, Change::Trash)
                    .await
            }
            TrashDelete => {
                self.change_entries(verified, Mailbox::Trash, Change::Purge)
                    .await
            }
            OutboxCancel => {
                self.change_entries(verified, Mailbox::Outbox, Change::Cancel)
                    .await
            }
            DraftCreate => self.draft_create(verified).await,
            DraftUpdate => self.draft_update(verified).await,
            TrustRequest | TrustRespond | ArtifactSend => self.outbound(verified).await,
        }
    }

    /// `system.ping`: a read of the storage proves it answers.
    async fn ping(&self, verified: &Verified<'_>) -> Result<Reply, ProtocolError> {
        let storage = Arc::clone(&self.storage);
        tokio::task::spawn_blocking(move || storage.check_ready())
            .await
            .map_err(internal)?
            .map_err(storage_failure)?;
        let mut document = Object::new();
        document.insert("status", "healthy");
        document.insert("timestamp", now_iso());
        let mut answer = response::success("pong", Some(&verified.artifact.id));
        answer.insert("document", Value::Object(document));
        Ok(Reply::respond(&answer, After::KeepOpen))
    }
}

/// Runs `work` in one [`Storage::transact`] for `owner` on the blocking pool.
/// `work` answers the action's outcome; a refusal must change nothing before it is
/// decided (what it changed is committed with it: a spent token, a revoked session).
pub(super) async fn transact<T: Send + 'static>(
    storage: &Arc<dyn Storage>,
    owner: &str,
    mut work: impl FnMut(&mut dyn StoreTransaction) -> StoreResult<Result<T, ProtocolError>>
    + Send
    + 'static,
) -> Result<T, ProtocolError> {
    let storage = Arc::clone(storage);
    let owner = owner.to_owned();
    tokio::task::spawn_blocking(move || {
        if storage.agents().is_none() {
            return Err(ProtocolError::new(
                ErrorCode::Unknown,
                "this storage keeps no agent sessions",
            )
            .with_reason("agents are not supported by this storage"));
        }
        let mut outcome = None;
        storage
            .transact(&owner, &mut |transaction| {
                outcome = Some(work(transaction)?);
                Ok(())
            })
            .map_err(store_failure)?;
        outcome.unwrap_or_else(|| Err(internal("the transaction did not run")))
    })
    .await
    .map_err(internal)?
}

/// A storage failure as answered: temporary while writes fail (a full disk).
pub(super) fn store_failure(error: StoreError) -> ProtocolError {
    match error {
        StoreError::Unavailable { path, reason } => ProtocolError::storage_unavailable(
            &reason,
            format!(
                "{}: storage temporarily unavailable: {reason}",
                path.display()
            ),
        ),
        other => storage_failure(other),
    }
}

/// The owner of an unencrypted agent artifact: for a document that is a transporter
/// artifact, its `from` (and the agent artifact's `to` must be the nested `to`);
/// otherwise the agent artifact's `to`.
fn nested_owner(artifact: &AgentArtifact) -> Result<Identity, ProtocolError> {
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

/// The nested transporter artifact of an outbound action (`spec/07-agents-auth.md`
/// §2.4 step 5): signed by the same agent key, of the action's type. A bare
/// document (no transporter artifact) is refused: the server holds no key of the
/// owner to sign one with.
fn nested_artifact(
    action: AgentAction,
    document: &Value,
    key: &PublicKey,
) -> Result<(), ProtocolError> {
    let expected = match action {
        AgentAction::TrustRequest => "TRUST_REQ",
        AgentAction::TrustRespond => "TRUST_RES",
        AgentAction::ArtifactSend => "BTPS_DOC",
        _ => return Ok(()),
    };
    let Some(nested) = document
        .as_object()
        .filter(|nested| nested.get("from").is_some() && nested.get("type").is_some())
    else {
        return Err(
            ProtocolError::validation("a bare document cannot be sent for the owner")
                .with_reason("signed transporter artifact required"),
        );
    };
    if nested.str("type") != Some(expected) {
        return Err(ProtocolError::validation(format!(
            "document.type: {action} sends a {expected}"
        )));
    }
    let signature = nested
        .get("signature")
        .and_then(Value::as_object)
        .ok_or_else(|| ProtocolError::validation("document.signature: required"))?;
    let (Some(value), Some(fingerprint)) = (signature.str("value"), signature.str("fingerprint"))
    else {
        return Err(ProtocolError::validation(
            "document.signature: value and fingerprint required",
        ));
    };
    let text = nested.to_canonical_without(&["signature", "delegation"]);
    crate::crypto::verify_text(key, &text, value, fingerprint).map_err(|error| {
        ProtocolError::new(
            ErrorCode::SigVerification,
            format!("the nested artifact is not signed by the agent's key: {error}"),
        )
    })
}
