//! The inbound pipeline: one line in, at most one response line out, in the reference's
//! order with the appliance's additions (`spec/01-wire.md` §4, "Appliance order"):
//!
//! parse → classify → validate → hosted check → signature verification (keys from DNS)
//! → duplicate check → trust check → handler → commit → response.
//!
//! Middleware runs at the reference's phases. Every refused artifact is logged once
//! with its error code, sender, receiver and remote address; documents and keys are
//! never logged.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::crypto::{PrivateKey, PublicKey};
use crate::identity::{Identity, compute_trust_id, is_schema_identity};
use crate::metrics::{self, ArtifactLabel, Outcome};
use crate::protocol::json::{Object, Value};
use crate::protocol::response::{self, now_iso};
use crate::protocol::{
    AgentAction, AgentArtifact, Artifact, ControlAction, ErrorCode, IdentityLookupRequest,
    ProtocolError, TransporterArtifact,
};
use crate::server::inbound::{
    self, AcceptError, Accepted, Committer, RecordSource, VerifiedArtifact,
};
use crate::server::middleware::{Middleware, Phase, Request, Verdict};
use crate::server::trust::{TrustPolicy, VerifyingKey};
use crate::signing::{self, KeySource, VerifiedSigner};
use crate::store::{
    IdentityRecord, NewInboxEntry, Perspective, RedbStore, StoreError, Timestamp, TrustRecord,
};

/// What the connection does after writing the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Wait for the next line.
    KeepOpen,
    /// Close gracefully (TLS close_notify, then FIN).
    End,
}

/// The pipeline's answer to one line.
#[derive(Debug)]
pub struct Reply {
    /// The response line to write (without `\n`), if any.
    pub line: Option<String>,
    /// What to do afterwards.
    pub after: After,
    /// The `id` of the artifact the line carried, once parsed (for the `reqId` of a
    /// later timeout answer on the same connection).
    pub request_id: Option<String>,
}

impl Reply {
    fn silent() -> Self {
        Reply {
            line: None,
            after: After::KeepOpen,
            request_id: None,
        }
    }

    fn respond(response: &Object, after: After) -> Self {
        Reply {
            line: Some(response.to_canonical()),
            after,
            request_id: None,
        }
    }
}

/// How long an answer of the hosted check is reused.
const HOSTED_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// How many identities the hosted check remembers (about 100 bytes each).
const HOSTED_CACHE_CAPACITY: usize = 10_000;

/// Picks the identity that signs identity-lookup answers for a domain.
pub type LookupSigner = Arc<dyn Fn(&str) -> Identity + Send + Sync>;

/// Everything the pipeline needs; shared by all connections.
pub struct Pipeline {
    store: RedbStore,
    records: RecordSource,
    /// Group commit of accepted artifacts (redb records only).
    committer: Option<Committer>,
    /// Recent answers of the hosted check: lower-cased identity → (hosted, when).
    hosted_cache: std::sync::Mutex<std::collections::HashMap<String, (bool, std::time::Instant)>>,
    keys: Arc<dyn KeySource>,
    server_key: Arc<PrivateKey>,
    server_selector: String,
    lookup_signer: LookupSigner,
    policy: TrustPolicy,
    middleware: Vec<Arc<dyn Middleware>>,
}

/// The parts of a [`Pipeline`].
pub struct PipelineParts {
    /// The database (inboxes, and records unless `records` says otherwise).
    pub store: RedbStore,
    /// Where trust and identity records live.
    pub records: RecordSource,
    /// Where signer keys come from (normally DNS).
    pub keys: Arc<dyn KeySource>,
    /// The server's own key (signs identity-lookup answers).
    pub server_key: Arc<PrivateKey>,
    /// The selector the server key is published under.
    pub server_selector: String,
    /// The signing identity for lookups, per domain.
    pub lookup_signer: LookupSigner,
    /// The trust policy.
    pub policy: TrustPolicy,
    /// Hooks, run in order.
    pub middleware: Vec<Arc<dyn Middleware>>,
    /// How far below the connection threads the group-commit thread runs
    /// (`limits.committer_nice`).
    pub committer_nice: u8,
}

fn internal(error: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::new(ErrorCode::Unknown, error.to_string()).with_reason("internal error")
}

impl Pipeline {
    /// A pipeline from its parts; starts the group-commit thread when records live
    /// in the redb file.
    pub fn new(parts: PipelineParts) -> std::io::Result<Self> {
        let committer = match &parts.records {
            RecordSource::Redb => Some(Committer::start(
                parts.store.clone(),
                parts.policy.clone(),
                parts.committer_nice,
            )?),
            RecordSource::Json { .. } => None,
        };
        Ok(Pipeline {
            store: parts.store,
            records: parts.records,
            committer,
            hosted_cache: std::sync::Mutex::default(),
            keys: parts.keys,
            server_key: parts.server_key,
            server_selector: parts.server_selector,
            lookup_signer: parts.lookup_signer,
            policy: parts.policy,
            middleware: parts.middleware,
        })
    }

    /// The middleware, for connection-level checks.
    pub fn middleware(&self) -> &[Arc<dyn Middleware>] {
        &self.middleware
    }

    fn run_hooks(&self, phase: Phase, request: &Request<'_>) -> Result<(), ProtocolError> {
        for hook in &self.middleware {
            if let Verdict::Respond(error) = hook.handle(phase, request) {
                return Err(error);
            }
        }
        Ok(())
    }

    /// Runs the hooks of an "after" phase, showing them the stage's outcome.
    fn run_after_hooks<T>(
        &self,
        phase: Phase,
        request: &Request<'_>,
        outcome: &Result<T, ProtocolError>,
    ) -> Result<(), ProtocolError> {
        self.run_hooks(
            phase,
            &Request {
                error: outcome.as_ref().err(),
                ..*request
            },
        )
    }

    /// Handles one line (without its `\n`) from `remote`.
    pub async fn handle_line(&self, line: &[u8], remote: SocketAddr) -> Reply {
        let request = Request {
            remote,
            line,
            artifact: None,
            error: None,
        };
        if let Err(error) = self.run_hooks(Phase::BeforeParsing, &request) {
            return self.refuse(&error, None, None, remote);
        }
        let artifact = match crate::protocol::parse_line(line) {
            Ok(None) => return Reply::silent(),
            Ok(Some(artifact)) => artifact,
            Err(error) => {
                let _ = self.run_hooks(
                    Phase::AfterParsing,
                    &Request {
                        error: Some(&error),
                        ..request
                    },
                );
                return self.refuse(&error, None, None, remote);
            }
        };
        let request = Request {
            artifact: Some(&artifact),
            ..request
        };
        if let Err(error) = self.run_hooks(Phase::AfterParsing, &request) {
            return self.refuse(&error, Some(&artifact), Some(artifact.id()), remote);
        }
        let outcome = match &artifact {
            Artifact::Control(control) => Ok(match control.action {
                ControlAction::Quit => {
                    Reply::respond(&response::success("bye", Some(&control.id)), After::End)
                }
                // The documented behaviour, not the reference's unfinished one (docs/compatibility.md).
                ControlAction::Ping => Reply::respond(
                    &response::success("pong", Some(&control.id)),
                    After::KeepOpen,
                ),
            }),
            Artifact::IdentityLookup(lookup) => self.identity_lookup(lookup).await,
            Artifact::Transporter(transporter) => {
                self.transporter(transporter, line, &request).await
            }
            Artifact::Agent(agent) => self.agent(agent, &request).await,
        };
        let mut reply = match outcome {
            Ok(reply) => {
                // Transporter artifacts count themselves: they also know "duplicate".
                if !matches!(artifact, Artifact::Transporter(_)) {
                    metrics::artifact(label(Some(&artifact)), Outcome::Accepted);
                }
                reply
            }
            Err(error) => self.refuse(&error, Some(&artifact), Some(artifact.id()), remote),
        };
        reply.request_id = Some(artifact.id().to_owned()).filter(|id| !id.is_empty());
        reply
    }

    /// Answers an error, logging the refusal once.
    fn refuse(
        &self,
        error: &ProtocolError,
        artifact: Option<&Artifact>,
        req_id: Option<&str>,
        remote: SocketAddr,
    ) -> Reply {
        let request = Request {
            remote,
            line: &[],
            artifact,
            error: Some(error),
        };
        let _ = self.run_hooks(Phase::BeforeOnError, &request);
        metrics::artifact(label(artifact), Outcome::Refused(error.code));
        let (from, to) = match artifact {
            Some(Artifact::Transporter(artifact)) => (artifact.from.as_str(), artifact.to.as_str()),
            Some(Artifact::Agent(artifact)) => (artifact.agent_id.as_str(), artifact.to.as_str()),
            Some(Artifact::IdentityLookup(lookup)) => {
                (lookup.from.as_str(), lookup.identity.as_str())
            }
            _ => ("", ""),
        };
        tracing::info!(
            code = error.code.code(),
            reason = error.reason().unwrap_or(""),
            sender = from,
            receiver = to,
            remote = %remote,
            detail = %error.detail,
            "artifact refused"
        );
        let reply = Reply::respond(&response::error(error, req_id), After::KeepOpen);
        let _ = self.run_hooks(Phase::AfterOnError, &request);
        reply
    }

    /// Runs storage work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&RedbStore, &RecordSource) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ProtocolError> {
        let store = self.store.clone();
        let records = self.records.clone();
        tokio::task::spawn_blocking(move || work(&store, &records))
            .await
            .map_err(internal)?
            .map_err(internal)
    }

    async fn hosted(&self, identity: &Identity) -> Result<Option<IdentityRecord>, ProtocolError> {
        let name = identity.as_str().to_owned();
        self.blocking(move |store, records| records.hosted(store, &name))
            .await
    }

    /// The hosted check of every transporter and agent artifact. Answers are
    /// remembered for [`HOSTED_TTL`], so a stream of artifacts to one receiver does not
    /// hand a database read to the blocking pool per artifact; an identity added while
    /// the server runs is served within that time.
    async fn require_hosted(&self, identity: &Identity) -> Result<(), ProtocolError> {
        let key = identity.as_str().to_lowercase();
        let now = std::time::Instant::now();
        let cached = self
            .hosted_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .copied();
        let hosted = match cached {
            Some((hosted, at)) if now.duration_since(at) < HOSTED_TTL => hosted,
            _ => {
                let hosted = self.hosted(identity).await?.is_some();
                let mut cache = self
                    .hosted_cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if cache.len() >= HOSTED_CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(key, (hosted, now));
                hosted
            }
        };
        if hosted {
            Ok(())
        } else {
            Err(ProtocolError::new(
                ErrorCode::IdentityNotFound,
                format!("{identity} is not hosted here"),
            )
            .with_reason("identity not hosted here"))
        }
    }

    async fn transporter(
        &self,
        artifact: &TransporterArtifact,
        line: &[u8],
        request: &Request<'_>,
    ) -> Result<Reply, ProtocolError> {
        self.require_hosted(&artifact.to).await?;
        self.run_hooks(Phase::BeforeSignatureVerification, request)?;
        let verified = signing::verify_transporter(artifact, self.keys.as_ref()).await;
        self.run_after_hooks(Phase::AfterSignatureVerification, request, &verified)?;
        let key = match verified? {
            VerifiedSigner::Sender(key) => verifying_key(&key, None),
            VerifiedSigner::Delegated {
                delegator,
                delegator_key,
                ..
            } => verifying_key(&delegator_key, Some(delegator.as_str().to_owned())),
        };
        let content = inbound::Content::read(
            artifact.kind,
            artifact.encryption.is_none().then(|| artifact.document()),
        );
        // The inbox entry is encoded here, on the connection's thread, so that the
        // group-commit thread only inserts its bytes.
        let entry = NewInboxEntry {
            owner: artifact.to.as_str().to_owned(),
            artifact_id: artifact.id.clone(),
            artifact_type: artifact.kind.as_str().to_owned(),
            from: artifact.from.as_str().to_owned(),
            to: artifact.to.as_str().to_owned(),
            title: content.title.clone(),
            raw: line.strip_suffix(b"\r").unwrap_or(line).to_vec(),
            received_at: Timestamp::now(),
            remote_address: Some(request.remote.to_string()),
        }
        .prepare()
        .map_err(internal)?;
        let trust_id =
            VerifiedArtifact::checked_trust_id(artifact.kind, &artifact.from, &artifact.to);
        let verified = VerifiedArtifact {
            trust_id,
            kind: artifact.kind,
            id: artifact.id.clone(),
            from: artifact.from.clone(),
            to: artifact.to.clone(),
            content,
            encrypted: artifact.encryption.is_some(),
            key,
            entry,
        };
        self.run_hooks(Phase::BeforeTrustVerification, request)?;
        let outcome = match &self.committer {
            Some(committer) => committer.accept(verified).await,
            None => {
                let store = self.store.clone();
                let records = self.records.clone();
                let policy = self.policy.clone();
                tokio::task::spawn_blocking(move || {
                    inbound::accept(&store, &records, &verified, &policy)
                })
                .await
                .map_err(internal)?
            }
        };
        let outcome = match outcome {
            Ok(accepted) => Ok(accepted),
            Err(AcceptError::Refused(error)) => Err(error),
            Err(AcceptError::Store(error)) => {
                tracing::error!(error = %error, "storing an artifact failed; nothing was committed");
                Err(internal(error))
            }
        };
        self.run_after_hooks(Phase::AfterTrustVerification, request, &outcome)?;
        let accepted = outcome?;
        self.run_hooks(Phase::AfterOnArtifact, request)?;
        match accepted {
            Accepted::Stored { entry_id } => {
                metrics::artifact(transporter_label(artifact.kind), Outcome::Accepted);
                tracing::debug!(entry_id, id = %artifact.id, "artifact stored");
            }
            Accepted::Duplicate { entry_id } => {
                metrics::artifact(transporter_label(artifact.kind), Outcome::Duplicate);
                tracing::info!(entry_id, id = %artifact.id, "duplicate delivery acknowledged");
            }
        }
        Ok(Reply::respond(
            &response::success("success", Some(&artifact.id)),
            After::KeepOpen,
        ))
    }

    async fn agent(
        &self,
        artifact: &AgentArtifact,
        request: &Request<'_>,
    ) -> Result<Reply, ProtocolError> {
        let owner = agent_owner(artifact)?;
        self.require_hosted(&owner).await?;
        self.run_hooks(Phase::BeforeSignatureVerification, request)?;
        let record = if artifact.action == AgentAction::AuthRequest {
            None
        } else {
            let id = compute_trust_id(&artifact.agent_id, owner.as_str());
            self.blocking(move |store, records| records.trust(store, Perspective::Inbound, &id))
                .await?
        };
        // Only agent records verify agent artifacts; a partner's record never does.
        let record = record.filter(|record| !is_schema_identity(&record.sender_id));
        let stored_key = match &record {
            Some(record) => Some(
                PublicKey::from_base64_spki(&record.public_key_base64).map_err(|error| {
                    ProtocolError::new(
                        ErrorCode::SigVerification,
                        format!("the agent record's key is unusable: {error}"),
                    )
                })?,
            ),
            None => None,
        };
        let verified = signing::verify_agent(artifact, stored_key.as_ref()).map(drop);
        self.run_after_hooks(Phase::AfterSignatureVerification, request, &verified)?;
        verified?;
        self.run_hooks(Phase::BeforeTrustVerification, request)?;
        let trusted = artifact.action == AgentAction::AuthRequest
            || record
                .as_ref()
                .is_some_and(|record: &TrustRecord| record.is_active_at(Timestamp::now().millis()));
        if !trusted {
            return Err(ProtocolError::new(
                ErrorCode::TrustNotAllowed,
                "the agent's record is not active",
            ));
        }
        self.run_hooks(Phase::AfterTrustVerification, request)?;
        match artifact.action {
            AgentAction::SystemPing => {
                // A health answer proves the database is readable.
                self.blocking(|store, _| store.read(|snapshot| snapshot.identity_count()))
                    .await?;
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

    async fn identity_lookup(
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

/// The `kind` label of a handled line (`None`: it did not parse).
fn label(artifact: Option<&Artifact>) -> ArtifactLabel {
    match artifact {
        None => ArtifactLabel::Unparsed,
        Some(Artifact::Control(_)) => ArtifactLabel::Control,
        Some(Artifact::IdentityLookup(_)) => ArtifactLabel::IdentityLookup,
        Some(Artifact::Agent(_)) => ArtifactLabel::Agent,
        Some(Artifact::Transporter(transporter)) => transporter_label(transporter.kind),
    }
}

fn transporter_label(kind: crate::protocol::TransporterType) -> ArtifactLabel {
    use crate::protocol::TransporterType;
    match kind {
        TransporterType::TrustRequest => ArtifactLabel::TrustRequest,
        TransporterType::TrustResponse => ArtifactLabel::TrustResponse,
        TransporterType::Document => ArtifactLabel::Document,
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

fn verifying_key(key: &PublicKey, delegated_by: Option<String>) -> VerifyingKey {
    VerifyingKey {
        base64: key.to_base64(),
        fingerprint: key.fingerprint().to_owned(),
        delegated_by,
    }
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
