//! The inbound pipeline: one line in, at most one response line out, in the reference's
//! order with the appliance's additions (`spec/01-wire.md` §4, "Appliance order"):
//!
//! parse → classify → validate → clock sanity (`issuedAt`, [`super::clock`]) → hosted
//! check → signature verification (keys from DNS) → duplicate check → trust check →
//! handler → commit → response.
//!
//! Middleware runs at every phase of the reference (`spec/08-delivery.md` §7.3): for
//! a transporter artifact the trust check and the store are one transaction, so
//! `before.trustVerification` and `before.onArtifact` run before it, and
//! `after.trustVerification` and `after.onArtifact` after it has committed. Every
//! refused artifact is logged once with its error code, sender, receiver and remote
//! address, and reported to the error callback; documents and keys are never logged.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::crypto::PrivateKey;
use crate::identity::Identity;
use crate::metrics::{self, ArtifactLabel, Outcome};
use crate::protocol::json::Object;
use crate::protocol::response;
use crate::protocol::{
    Artifact, ControlAction, ErrorCode, ProtocolError, TransporterArtifact, TransporterType,
};
use crate::server::clock::ClockPolicy;
use crate::server::events::Events;
use crate::server::hooks::{ErrorCallback, ErrorEvent, ErrorStage, Lifecycle, ResponseSent};
use crate::server::inbound::{AcceptError, Accepted, Committer, Content, VerifiedArtifact};
use crate::server::middleware::{Middleware, Phase, Request, Verdict};
use crate::server::trust::{TrustPolicy, VerifyingKey};
use crate::signing::{self, KeySource, VerifiedSigner};
use crate::store::{IdentityRecord, NewInboxEntry, Storage, StoreError, Timestamp};

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
    /// An error answered, for the `after.onError` hooks that run once the answer
    /// is written ([`Pipeline::after_error`]); only when such hooks exist.
    pub answered_error: Option<Box<AnsweredError>>,
}

/// An error answer, kept for the `after.onError` hooks.
#[derive(Debug)]
pub struct AnsweredError {
    error: ProtocolError,
    artifact: Option<Artifact>,
}

impl Reply {
    fn silent() -> Self {
        Reply {
            line: None,
            after: After::KeepOpen,
            request_id: None,
            answered_error: None,
        }
    }

    pub(super) fn respond(response: &Object, after: After) -> Self {
        Reply {
            line: Some(response.to_canonical()),
            after,
            request_id: None,
            answered_error: None,
        }
    }
}

/// Why the processing of a line stopped before its success answer.
pub(super) enum Halt {
    /// Refused with this error at this stage; `close` ends the connection after.
    Refuse {
        error: ProtocolError,
        stage: ErrorStage,
        close: bool,
    },
    /// A hook answered the line itself.
    Answer(Object),
}

impl Halt {
    pub(super) fn at(stage: ErrorStage) -> impl FnOnce(ProtocolError) -> Halt {
        move |error| Halt::Refuse {
            error,
            stage,
            close: false,
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
    pub(super) storage: Arc<dyn Storage>,
    /// Group commit of accepted artifacts.
    committer: Committer,
    /// Recent answers of the hosted check: lower-cased identity → (hosted, when).
    hosted_cache: std::sync::Mutex<std::collections::HashMap<String, (bool, std::time::Instant)>>,
    keys: Arc<dyn KeySource>,
    pub(super) server_key: Arc<PrivateKey>,
    pub(super) server_selector: String,
    pub(super) lookup_signer: LookupSigner,
    middleware: Vec<Arc<dyn Middleware>>,
    /// Per phase, the indexes into `middleware` of the hooks that run there, in
    /// priority order.
    by_phase: [Vec<usize>; Phase::ALL.len()],
    lifecycle: Vec<Arc<dyn Lifecycle>>,
    on_error: Option<ErrorCallback>,
    clock: ClockPolicy,
    /// Woken after every group commit that stored something.
    committed: Arc<tokio::sync::Notify>,
    /// The agent policy and the failed-authentication counts.
    pub(super) agents: crate::server::agent::Agents,
}

/// The parts of a [`Pipeline`].
pub struct PipelineParts {
    /// Where everything is stored.
    pub storage: Arc<dyn Storage>,
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
    /// How far `issuedAt` may be from the clock.
    pub clock: ClockPolicy,
    /// Hooks, in registration order (they run by priority, then this order).
    pub middleware: Vec<Arc<dyn Middleware>>,
    /// Lifecycle hooks (`on_response_sent` is called by the pipeline).
    pub lifecycle: Vec<Arc<dyn Lifecycle>>,
    /// Called for every error answered.
    pub on_error: Option<ErrorCallback>,
    /// How far below the connection threads the group-commit thread runs
    /// (`limits.committer_nice`).
    pub committer_nice: u8,
    /// How agents enroll, refresh and act.
    pub agents: crate::server::agent::AgentPolicy,
    /// What queues the agents' outbound artifacts (outbound delivery), if any.
    pub agent_outbound: Option<Arc<dyn crate::server::agent::AgentOutbound>>,
}

pub(super) fn internal(error: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::new(ErrorCode::Unknown, error.to_string()).with_reason("internal error")
}

/// The storage failed: `Unknown error` on the wire, counted as `storage_failure`.
pub(super) fn storage_failure(error: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::storage(error.to_string())
}

impl Pipeline {
    /// A pipeline from its parts; starts the group-commit thread.
    pub fn new(parts: PipelineParts) -> std::io::Result<Self> {
        let committed = Arc::new(tokio::sync::Notify::new());
        let committer = Committer::start(
            Arc::clone(&parts.storage),
            parts.policy,
            parts.committer_nice,
            Arc::clone(&committed),
        )?;
        let mut order: Vec<usize> = (0..parts.middleware.len()).collect();
        // Stable: equal priorities keep registration order.
        order.sort_by_key(|&index| parts.middleware[index].priority());
        let by_phase = Phase::ALL.map(|phase| {
            order
                .iter()
                .copied()
                .filter(|&index| parts.middleware[index].phases().contains(&phase))
                .collect()
        });
        Ok(Pipeline {
            storage: parts.storage,
            committer,
            hosted_cache: std::sync::Mutex::default(),
            keys: parts.keys,
            server_key: parts.server_key,
            server_selector: parts.server_selector,
            lookup_signer: parts.lookup_signer,
            middleware: parts.middleware,
            by_phase,
            lifecycle: parts.lifecycle,
            on_error: parts.on_error,
            clock: parts.clock,
            committed,
            agents: crate::server::agent::Agents::new(parts.agents, parts.agent_outbound),
        })
    }

    /// Subscriptions to what the pipeline stores ([`Events::subscribe`]).
    pub fn events(&self) -> Events {
        Events::new(Arc::clone(&self.storage), Arc::clone(&self.committed))
    }

    /// The middleware, for connection-level checks.
    pub fn middleware(&self) -> &[Arc<dyn Middleware>] {
        &self.middleware
    }

    /// The storage the pipeline runs on.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// A request context for the hooks.
    pub(super) fn request<'a>(
        &'a self,
        remote: SocketAddr,
        line: &'a [u8],
        artifact: Option<&'a Artifact>,
    ) -> Request<'a> {
        Request {
            remote,
            line,
            artifact,
            error: None,
            storage: self.storage.as_ref(),
        }
    }

    /// Runs the hooks of `phase` in order until one does not continue. A hook that
    /// panics refuses the line with `BTP_ERROR_UNKNOWN`.
    pub(super) async fn run_hooks(&self, phase: Phase, request: &Request<'_>) -> Result<(), Halt> {
        for &index in &self.by_phase[phase.index()] {
            let hook = &self.middleware[index];
            // A hook may panic while making its future or while it runs.
            let verdict = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                hook.handle(phase, request)
            })) {
                Ok(future) => {
                    futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(future))
                        .await
                }
                Err(panic) => Err(panic),
            };
            let stage = ErrorStage::Middleware(phase);
            match verdict {
                Ok(Verdict::Continue) => {}
                Ok(Verdict::Respond(answer)) => return Err(Halt::Answer(answer)),
                Ok(Verdict::Reject { error, close }) => {
                    return Err(Halt::Refuse {
                        error,
                        stage,
                        close,
                    });
                }
                Err(_) => {
                    tracing::error!(hook = hook.name(), phase = %phase, "a middleware hook panicked");
                    return Err(Halt::at(stage)(internal(format!(
                        "middleware {} failed",
                        hook.name()
                    ))));
                }
            }
        }
        Ok(())
    }

    /// Runs the hooks of an "after" phase, showing them the stage's outcome.
    pub(super) async fn run_after_hooks<T>(
        &self,
        phase: Phase,
        request: &Request<'_>,
        outcome: &Result<T, ProtocolError>,
    ) -> Result<(), Halt> {
        if self.by_phase[phase.index()].is_empty() {
            return Ok(());
        }
        let request = Request {
            error: outcome.as_ref().err(),
            ..*request
        };
        self.run_hooks(phase, &request).await
    }

    /// Handles one line (without its `\n`) from `remote`.
    pub async fn handle_line(&self, line: &[u8], remote: SocketAddr) -> Reply {
        let request = self.request(remote, line, None);
        if let Err(halt) = self.run_hooks(Phase::BeforeParsing, &request).await {
            return self.halted(halt, None, remote).await;
        }
        let artifact = match crate::protocol::parse_line(line) {
            Ok(None) => return Reply::silent(),
            Ok(Some(artifact)) => artifact,
            Err(error) => {
                let failed: Result<(), ProtocolError> = Err(error);
                if let Err(halt) = self
                    .run_after_hooks(Phase::AfterParsing, &request, &failed)
                    .await
                {
                    return self.halted(halt, None, remote).await;
                }
                let Err(error) = failed else {
                    return Reply::silent();
                };
                return self
                    .halted(Halt::at(ErrorStage::Parsing)(error), None, remote)
                    .await;
            }
        };
        let request = self.request(remote, line, Some(&artifact));
        let outcome = self.handle_artifact(&artifact, line, &request).await;
        let mut reply = match outcome {
            Ok(reply) => {
                // Transporter artifacts count themselves: they also know "duplicate".
                if !matches!(artifact, Artifact::Transporter(_)) {
                    metrics::artifact(label(Some(&artifact)), Outcome::Accepted);
                }
                reply
            }
            Err(halt) => self.halted(halt, Some(&artifact), remote).await,
        };
        reply.request_id = Some(artifact.id().to_owned()).filter(|id| !id.is_empty());
        reply
    }

    async fn handle_artifact(
        &self,
        artifact: &Artifact,
        line: &[u8],
        request: &Request<'_>,
    ) -> Result<Reply, Halt> {
        self.run_hooks(Phase::AfterParsing, request).await?;
        self.clock
            .check(artifact, Timestamp::now().millis())
            .map_err(Halt::at(ErrorStage::Parsing))?;
        match artifact {
            Artifact::Control(control) => {
                self.run_hooks(Phase::BeforeOnArtifact, request).await?;
                let reply = match control.action {
                    ControlAction::Quit => {
                        Reply::respond(&response::success("bye", Some(&control.id)), After::End)
                    }
                    // The documented behaviour, not the reference's unfinished one
                    // (docs/compatibility.md).
                    ControlAction::Ping => Reply::respond(
                        &response::success("pong", Some(&control.id)),
                        After::KeepOpen,
                    ),
                };
                self.run_hooks(Phase::AfterOnArtifact, request).await?;
                Ok(reply)
            }
            Artifact::IdentityLookup(lookup) => {
                self.run_hooks(Phase::BeforeOnArtifact, request).await?;
                let reply = self
                    .identity_lookup(lookup)
                    .await
                    .map_err(Halt::at(ErrorStage::OnArtifact))?;
                self.run_hooks(Phase::AfterOnArtifact, request).await?;
                Ok(reply)
            }
            Artifact::Transporter(transporter) => {
                self.transporter(transporter, line, request).await
            }
            Artifact::Agent(agent) => self.agent(agent, request).await,
        }
    }

    /// Answers a halted line: a hook's own answer, or an error (logged once,
    /// reported to the error callback and the error hooks).
    async fn halted(&self, halt: Halt, artifact: Option<&Artifact>, remote: SocketAddr) -> Reply {
        let request_id = artifact.map(Artifact::id).filter(|id| !id.is_empty());
        let (error, stage, close) = match halt {
            Halt::Answer(mut answer) => {
                if let Some(id) = request_id {
                    answer.insert("reqId", id);
                }
                return Reply::respond(&answer, After::KeepOpen);
            }
            Halt::Refuse {
                error,
                stage,
                close,
            } => (error, stage, close),
        };
        let mut request = self.request(remote, &[], artifact);
        request.error = Some(&error);
        // The error hooks may answer differently; they cannot un-refuse the line.
        let replacement = match self.run_hooks(Phase::BeforeOnError, &request).await {
            Err(Halt::Answer(answer)) => Some(answer),
            _ => None,
        };
        metrics::artifact(label(artifact), Outcome::of(&error));
        let parties = request.parties();
        let (from, to) = parties.unwrap_or(("", ""));
        tracing::info!(
            code = error.code.code(),
            reason = error.reason().unwrap_or(""),
            sender = from,
            receiver = to,
            remote = %remote,
            detail = %error.detail,
            "artifact refused"
        );
        if let Some(callback) = &self.on_error {
            callback(&ErrorEvent {
                remote,
                stage,
                error: &error,
                request_id,
                parties,
            });
        }
        let after = if close { After::End } else { After::KeepOpen };
        let mut reply = match replacement {
            Some(mut answer) => {
                if let Some(id) = request_id {
                    answer.insert("reqId", id);
                }
                Reply::respond(&answer, after)
            }
            None => Reply::respond(&response::error(&error, request_id), after),
        };
        if !self.by_phase[Phase::AfterOnError.index()].is_empty() {
            reply.answered_error = Some(Box::new(AnsweredError {
                artifact: artifact.cloned(),
                error,
            }));
        }
        reply
    }

    /// Runs the `after.onError` hooks once the error answer has been written
    /// (`spec/08-delivery.md` §7.3); they can no longer change the answer.
    pub async fn after_error(&self, remote: SocketAddr, answered: &AnsweredError) {
        let mut request = self.request(remote, &[], answered.artifact.as_ref());
        request.error = Some(&answered.error);
        let _ = self.run_hooks(Phase::AfterOnError, &request).await;
    }

    /// Tells the lifecycle hooks that `line` was written to `remote`.
    pub fn response_sent(&self, remote: SocketAddr, line: &str, request_id: Option<&str>) {
        if self.lifecycle.is_empty() {
            return;
        }
        let sent = ResponseSent {
            remote,
            line,
            request_id,
        };
        for hook in &self.lifecycle {
            hook.on_response_sent(&sent);
        }
    }

    /// Reports an error the connection answered itself (a line too long, an idle
    /// timeout) to the error callback.
    pub fn connection_error(&self, remote: SocketAddr, error: &ProtocolError) {
        if let Some(callback) = &self.on_error {
            callback(&ErrorEvent {
                remote,
                stage: ErrorStage::Connection,
                error,
                request_id: None,
                parties: None,
            });
        }
    }

    /// The identity record of `identity` if it is hosted here.
    pub(super) async fn hosted(
        &self,
        identity: &Identity,
    ) -> Result<Option<IdentityRecord>, ProtocolError> {
        self.storage
            .identities()
            .get_by_identity(identity.as_str())
            .await
            .map_err(storage_failure)
    }

    /// The hosted check of every transporter and agent artifact. Answers are
    /// remembered for [`HOSTED_TTL`], so a stream of artifacts to one receiver does not
    /// read the store per artifact; an identity added while the server runs is served
    /// within that time.
    pub(super) async fn require_hosted(&self, identity: &Identity) -> Result<(), Halt> {
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
                let hosted = self
                    .hosted(identity)
                    .await
                    .map_err(Halt::at(ErrorStage::Hosted))?
                    .is_some();
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
            Err(Halt::at(ErrorStage::Hosted)(
                ProtocolError::new(
                    ErrorCode::IdentityNotFound,
                    format!("{identity} is not hosted here"),
                )
                .with_reason("identity not hosted here"),
            ))
        }
    }

    async fn transporter(
        &self,
        artifact: &TransporterArtifact,
        line: &[u8],
        request: &Request<'_>,
    ) -> Result<Reply, Halt> {
        self.require_hosted(&artifact.to).await?;
        self.run_hooks(Phase::BeforeSignatureVerification, request)
            .await?;
        let verified = signing::verify_transporter(artifact, self.keys.as_ref()).await;
        self.run_after_hooks(Phase::AfterSignatureVerification, request, &verified)
            .await?;
        let key = match verified.map_err(Halt::at(ErrorStage::SignatureVerification))? {
            VerifiedSigner::Sender(key) => verifying_key(&key, None),
            VerifiedSigner::Delegated {
                delegator,
                delegator_key,
                ..
            } => verifying_key(&delegator_key, Some(delegator.as_str().to_owned())),
        };
        let content = Content::read(
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
        .map_err(|error| Halt::at(ErrorStage::OnArtifact)(internal(error)))?;
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
        self.run_hooks(Phase::BeforeTrustVerification, request)
            .await?;
        self.run_hooks(Phase::BeforeOnArtifact, request).await?;
        let outcome = match self.committer.accept(verified).await {
            Ok(accepted) => Ok(accepted),
            Err(AcceptError::Refused(error)) => Err(error),
            // A full disk: a temporary error the sender retries; the store recovers
            // by itself once writes succeed again.
            Err(AcceptError::Store(StoreError::Unavailable { path, reason })) => {
                tracing::warn!(path = %path.display(), %reason, id = %artifact.id, "storage temporarily unavailable; the artifact was refused with a temporary error, nothing was committed");
                Err(ProtocolError::storage_unavailable(
                    &reason,
                    format!(
                        "{}: storage temporarily unavailable: {reason}",
                        path.display()
                    ),
                ))
            }
            Err(AcceptError::Store(error)) => {
                tracing::error!(error = %error, "storing an artifact failed; nothing was committed");
                Err(storage_failure(error))
            }
        };
        self.run_after_hooks(Phase::AfterTrustVerification, request, &outcome)
            .await?;
        let accepted = outcome.map_err(Halt::at(ErrorStage::TrustVerification))?;
        self.run_hooks(Phase::AfterOnArtifact, request).await?;
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

fn transporter_label(kind: TransporterType) -> ArtifactLabel {
    match kind {
        TransporterType::TrustRequest => ArtifactLabel::TrustRequest,
        TransporterType::TrustResponse => ArtifactLabel::TrustResponse,
        TransporterType::Document => ArtifactLabel::Document,
    }
}

fn verifying_key(key: &crate::crypto::PublicKey, delegated_by: Option<String>) -> VerifyingKey {
    VerifyingKey {
        base64: key.to_base64(),
        fingerprint: key.fingerprint().to_owned(),
        delegated_by,
    }
}
