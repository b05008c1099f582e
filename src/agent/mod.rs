//! A BTPS agent: a device or program acting for a hosted identity with its own key
//! (`spec/07-agents-auth.md`), talking to the server of that identity.
//!
//! [`Agent::enroll`] generates nothing itself: give it a key pair (see
//! [`PrivateKey::generate`]) and the one-time token the operator issued
//! (`btps agent token issue`); it answers with the connected [`Agent`] and the
//! [`Session`] to keep (agent id and refresh token — [`AgentState`] keeps them in a
//! private file). Later runs [`Agent::connect`] with the agent id and key and
//! [`Agent::refresh`] before the session expires.
//!
//! Every request is an agent artifact signed with the agent's key, members in the
//! order the reference's agent writes them (`action, agentId, to, document,
//! encryption, id, issuedAt, version, signature`), so reference servers accept it
//! too. Outbound documents ([`Agent::send_document`], [`Agent::trust_request`],
//! [`Agent::trust_respond`]) travel as transporter artifacts signed by the agent's
//! key; the server delegates them before delivery (§8.3).
//!
//! ```no_run
//! use btps::agent::{Agent, Query};
//! use btps::client::ClientOptions;
//! use btps::crypto::PrivateKey;
//! use btps::identity::Identity;
//! use btps::store::Mailbox;
//!
//! # async fn run() -> Result<(), btps::agent::AgentError> {
//! let identity = Identity::parse("pay$client.example").expect("an identity");
//! let key = PrivateKey::generate(2048)?;
//! let options = ClientOptions::default();
//! let (mut agent, session) =
//!     Agent::enroll("btps.client.example", 3443, &options, identity, "K7Q2M9XW4RTB", key, None)
//!         .await?;
//! let page = agent.fetch(Mailbox::Inbox, &Query::new().limit(20)).await?;
//! println!("{} of {} entries; refresh with {}", page.results.len(), page.total.unwrap_or(0), session.refresh_token);
//! # Ok(())
//! # }
//! ```

mod query;
mod state;

use crate::client::{BtpsClient, ClientError, ClientOptions};
use crate::crypto::{EncryptionMode, KeyError, PrivateKey, PublicKey};
use crate::identity::Identity;
use crate::protocol::json::{Object, Value};
use crate::protocol::response::{ResponseType, ServerResponse, new_id, now_iso};
use crate::protocol::{AgentAction, ProtocolError, TransporterType};
use crate::signing::{self, KeySource};
use crate::store::Mailbox;

pub use query::{Acknowledgement, Query, QueryResult, Queued};
pub use state::{AgentState, StateError};

/// The version every agent artifact carries (as the reference's agent writes it).
const VERSION: &str = "1.0.0";

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The connection failed (connect, TLS, timeout, closed).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server answered with an error.
    #[error("the server refused {action}: {message}{}", reason.as_ref().map(|reason| format!(" ({reason})")).unwrap_or_default())]
    Refused {
        /// The action refused.
        action: AgentAction,
        /// `status.message`.
        message: String,
        /// `status.reason`, when the server gave one.
        reason: Option<String>,
        /// The whole answer.
        response: Box<ServerResponse>,
    },
    /// The server's answer is not what the action answers.
    #[error("unexpected answer to {action}: {detail}")]
    UnexpectedAnswer {
        /// The action.
        action: AgentAction,
        /// What is wrong.
        detail: String,
    },
    /// Building, verifying or decrypting a document failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A key could not be used or made.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl AgentError {
    /// `status.reason` of a refusal, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            AgentError::Refused { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// `status.message` of a refusal, if any.
    pub fn message(&self) -> Option<&str> {
        match self {
            AgentError::Refused { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// What the server answered to an enrollment or refresh (§6.4).
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The agent's id (`btps_ag_<uuid>`).
    pub agent_id: String,
    /// The token for the next [`Agent::refresh`]; secret.
    pub refresh_token: String,
    /// Refresh before this instant (the agent's trust record expires then).
    pub expires_at: String,
    /// The identity whose DNS key the agent encrypts documents to the server with.
    pub decrypt_by: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("agent_id", &self.agent_id)
            .field("refresh_token", &"<secret>")
            .field("expires_at", &self.expires_at)
            .field("decrypt_by", &self.decrypt_by)
            .finish()
    }
}

/// One connection of an agent to the server of its identity.
pub struct Agent {
    connection: BtpsClient,
    identity: Identity,
    agent_id: String,
    key: PrivateKey,
    selector: String,
    answer_keys: Option<std::sync::Arc<dyn KeySource>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("identity", &self.identity)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Connects as the enrolled agent `agent_id` of `identity`, signing with `key`.
    pub async fn connect(
        host: &str,
        port: u16,
        options: &ClientOptions,
        identity: Identity,
        agent_id: impl Into<String>,
        key: PrivateKey,
    ) -> Result<Agent, AgentError> {
        let connection = BtpsClient::connect(host, port, options).await?;
        Ok(Agent {
            connection,
            identity,
            agent_id: agent_id.into(),
            key,
            selector: String::from("btps1"),
            answer_keys: None,
        })
    }

    /// Enrolls a new agent of `identity` with the one-time `token` and the agent's
    /// own `key` (its public half goes to the server, the private half never
    /// leaves), and answers with the connected agent and its session.
    pub async fn enroll(
        host: &str,
        port: u16,
        options: &ClientOptions,
        identity: Identity,
        token: &str,
        key: PrivateKey,
        agent_info: Option<Object>,
    ) -> Result<(Agent, Session), AgentError> {
        let mut agent = Agent::connect(host, port, options, identity, "temp", key).await?;
        let document = agent.auth_document(token, None, agent_info);
        let response = agent
            .command(AgentAction::AuthRequest, Some(document))
            .await?;
        let session = session_of(AgentAction::AuthRequest, &response)?;
        agent.agent_id.clone_from(&session.agent_id);
        Ok((agent, session))
    }

    /// The identity the agent acts for.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The agent's id.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The agent's public key.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// The selector written into the transporter artifacts the agent builds
    /// (`btps1` by default). Receivers use the delegation's selector for artifacts
    /// the server delegated, so it matters only for undelegated ones.
    pub fn set_selector(&mut self, selector: impl Into<String>) {
        self.selector = selector.into();
    }

    /// Verify signed answers with keys from `keys` (normally DNS); unsigned
    /// answers are accepted as they are, as the reference's agent does.
    pub fn verify_answers_with(&mut self, keys: std::sync::Arc<dyn KeySource>) {
        self.answer_keys = Some(keys);
    }

    fn auth_document(
        &self,
        token: &str,
        key: Option<&PublicKey>,
        agent_info: Option<Object>,
    ) -> Value {
        let mut document = Object::new();
        document.insert("identity", self.identity.as_str());
        document.insert("authToken", token);
        let key = key.unwrap_or_else(|| self.key.public_key());
        document.insert("publicKey", format!("{}\n", key.to_pem().trim_end()));
        if let Some(info) = agent_info {
            document.insert("agentInfo", info);
        }
        Value::Object(document)
    }

    /// A signed agent artifact for `action` with `document`, to the agent's own
    /// identity.
    pub fn artifact(&self, action: AgentAction, document: Option<Value>) -> Object {
        self.artifact_to(action, self.identity.as_str(), document)
    }

    /// A signed agent artifact whose `to` is `to` (outbound actions name the
    /// recipient there, as the reference's agent does).
    pub fn artifact_to(&self, action: AgentAction, to: &str, document: Option<Value>) -> Object {
        let mut artifact = Object::new();
        artifact.insert("action", action.as_str());
        artifact.insert("agentId", self.agent_id.as_str());
        artifact.insert("to", to);
        if let Some(document) = document {
            artifact.insert("document", document);
        }
        artifact.insert("encryption", Value::Null);
        artifact.insert("id", new_id());
        artifact.insert("issuedAt", now_iso());
        artifact.insert("version", VERSION);
        signing::sign_object(&mut artifact, &self.key);
        artifact
    }

    /// A signed agent artifact whose document is encrypted to `server_key` — the
    /// DNS key of the session's `decryptBy` identity — an appliance extension
    /// (`07-agents-auth.md` §2.4): the server takes the owner from the agent's
    /// session and decrypts the document once the signature verified.
    pub fn encrypted_artifact(
        &self,
        action: AgentAction,
        document: &Value,
        server_key: &PublicKey,
    ) -> Result<Object, AgentError> {
        let (ciphertext, encryption) =
            signing::encrypt_document(document, server_key, EncryptionMode::Standard)?;
        let mut artifact = Object::new();
        artifact.insert("action", action.as_str());
        artifact.insert("agentId", self.agent_id.as_str());
        artifact.insert("to", self.identity.as_str());
        artifact.insert("document", ciphertext);
        artifact.insert("encryption", encryption);
        artifact.insert("id", new_id());
        artifact.insert("issuedAt", now_iso());
        artifact.insert("version", VERSION);
        signing::sign_object(&mut artifact, &self.key);
        Ok(artifact)
    }

    /// Sends `artifact` (built by [`artifact`](Self::artifact)) and reads its answer;
    /// an error answer is [`AgentError::Refused`].
    pub async fn request(&mut self, artifact: &Object) -> Result<ServerResponse, AgentError> {
        let action = artifact
            .str("action")
            .and_then(AgentAction::parse)
            .unwrap_or(AgentAction::SystemPing);
        let response = self.connection.request(&artifact.to_canonical()).await?;
        let id = artifact.str("id").unwrap_or_default();
        // A line refused before it was parsed (a document that fails validation)
        // is answered without reqId, as the reference answers it.
        let unparsed_refusal = response.req_id.is_none() && response.kind == ResponseType::Error;
        if response.req_id.as_deref() != Some(id) && !unparsed_refusal {
            return Err(AgentError::UnexpectedAnswer {
                action,
                detail: format!("the answer is for {:?}, not {id:?}", response.req_id),
            });
        }
        if response.kind == ResponseType::Error || !response.ok {
            return Err(AgentError::Refused {
                action,
                message: response.message.clone().unwrap_or_default(),
                reason: response.reason.clone(),
                response: Box::new(response),
            });
        }
        if let Some(keys) = &self.answer_keys
            && response.signer.is_some()
        {
            signing::verify_response(&response, keys.as_ref()).await?;
        }
        Ok(response)
    }

    /// Sends `action` with `document` to the agent's own identity.
    pub async fn command(
        &mut self,
        action: AgentAction,
        document: Option<Value>,
    ) -> Result<ServerResponse, AgentError> {
        let artifact = self.artifact(action, document);
        self.request(&artifact).await
    }

    /// The answer's document, decrypted with the agent's key when the server
    /// encrypted it.
    pub fn answer_document(&self, response: &ServerResponse) -> Result<Option<Value>, AgentError> {
        let Some(document) = response.raw.get("document") else {
            return Ok(None);
        };
        match (&response.encryption, document.as_str()) {
            (Some(encryption), Some(ciphertext)) => Ok(Some(signing::decrypt_document(
                ciphertext, encryption, &self.key,
            )?)),
            _ => Ok(Some(document.clone())),
        }
    }

    fn answer_object(
        &self,
        action: AgentAction,
        response: &ServerResponse,
    ) -> Result<Object, AgentError> {
        match self.answer_document(response)? {
            Some(Value::Object(object)) => Ok(object),
            _ => Err(AgentError::UnexpectedAnswer {
                action,
                detail: String::from("no document object"),
            }),
        }
    }

    /// Renews the session with its `refresh_token`; with `new_key`, the agent's key
    /// is rotated to it (the request is signed with the new key, which the server
    /// accepts because the refresh token authenticates it).
    pub async fn refresh(
        &mut self,
        refresh_token: &str,
        new_key: Option<PrivateKey>,
        agent_info: Option<Object>,
    ) -> Result<Session, AgentError> {
        if let Some(key) = new_key {
            self.key = key;
        }
        let document = self.auth_document(refresh_token, None, agent_info);
        let response = self
            .command(AgentAction::AuthRefresh, Some(document))
            .await?;
        session_of(AgentAction::AuthRefresh, &response)
    }

    /// `system.ping`: whether the server and its storage answer.
    pub async fn ping(&mut self) -> Result<(), AgentError> {
        self.command(AgentAction::SystemPing, None).await.map(drop)
    }

    /// One page of `mailbox`.
    pub async fn fetch(
        &mut self,
        mailbox: Mailbox,
        query: &Query,
    ) -> Result<QueryResult, AgentError> {
        let action = match mailbox {
            Mailbox::Inbox => AgentAction::InboxFetch,
            Mailbox::Outbox => AgentAction::OutboxFetch,
            Mailbox::Sentbox => AgentAction::SentboxFetch,
            Mailbox::Draft => AgentAction::DraftFetch,
            Mailbox::Trash => AgentAction::TrashFetch,
        };
        self.query(action, query).await
    }

    /// The owner's trust records (`trust.fetch`).
    pub async fn trust_list(&mut self, query: &Query) -> Result<QueryResult, AgentError> {
        self.query(AgentAction::TrustFetch, query).await
    }

    async fn query(
        &mut self,
        action: AgentAction,
        query: &Query,
    ) -> Result<QueryResult, AgentError> {
        let response = self.command(action, query.document()).await?;
        let object = self.answer_object(action, &response)?;
        QueryResult::from_answer(action, &object)
    }

    /// Marks inbox entries seen (`inbox.seen`).
    pub async fn mark_seen(&mut self, ids: &[&str]) -> Result<Acknowledgement, AgentError> {
        self.ids_action(AgentAction::InboxSeen, ids).await
    }

    /// Moves entries of `mailbox` to the trash (`inbox.delete`, `sentbox.delete`,
    /// `draft.delete`), purges trash entries (`trash.delete`) or cancels outbox
    /// entries (`outbox.cancel`).
    pub async fn delete(
        &mut self,
        mailbox: Mailbox,
        ids: &[&str],
    ) -> Result<Acknowledgement, AgentError> {
        let action = match mailbox {
            Mailbox::Inbox => AgentAction::InboxDelete,
            Mailbox::Outbox => AgentAction::OutboxCancel,
            Mailbox::Sentbox => AgentAction::SentboxDelete,
            Mailbox::Draft => AgentAction::DraftDelete,
            Mailbox::Trash => AgentAction::TrashDelete,
        };
        self.ids_action(action, ids).await
    }

    /// Deletes trust records of the owner (`trust.delete`).
    pub async fn trust_delete(&mut self, ids: &[&str]) -> Result<Acknowledgement, AgentError> {
        self.ids_action(AgentAction::TrustDelete, ids).await
    }

    async fn ids_action(
        &mut self,
        action: AgentAction,
        ids: &[&str],
    ) -> Result<Acknowledgement, AgentError> {
        let mut document = Object::new();
        document.insert(
            "ids",
            Value::Array(ids.iter().map(|id| Value::from(*id)).collect()),
        );
        let response = self.command(action, Some(Value::Object(document))).await?;
        let object = self.answer_object(action, &response)?;
        Acknowledgement::from_answer(action, &object)
    }

    /// Applies a trust-response document (`decision`, `decidedBy`, `decidedAt`, …)
    /// to one of the owner's trust records, locally (`trust.update`); answers the
    /// updated record(s).
    pub async fn trust_update(
        &mut self,
        record_id: &str,
        decision: Value,
    ) -> Result<Vec<Value>, AgentError> {
        let mut document = Object::new();
        document.insert("id", record_id);
        document.insert("document", decision);
        let response = self
            .command(AgentAction::TrustUpdate, Some(Value::Object(document)))
            .await?;
        let object = self.answer_object(AgentAction::TrustUpdate, &response)?;
        Ok(object
            .get("results")
            .and_then(Value::as_array)
            .map(<[Value]>::to_vec)
            .unwrap_or_default())
    }

    /// A transporter artifact from the agent's identity to `to`, signed with the
    /// agent's key (members in the reference agent's order: `id, issuedAt,
    /// version, type, document, from, to, selector, encryption, signature`); the
    /// document encrypted to `encrypt_to` when given.
    pub fn transporter(
        &self,
        kind: TransporterType,
        to: &Identity,
        document: Value,
        encrypt_to: Option<&PublicKey>,
    ) -> Result<Object, AgentError> {
        let mut artifact = Object::new();
        artifact.insert("id", new_id());
        artifact.insert("issuedAt", now_iso());
        artifact.insert("version", VERSION);
        artifact.insert("type", kind.as_str());
        let encryption = match encrypt_to {
            None => {
                artifact.insert("document", document);
                Value::Null
            }
            Some(receiver) => {
                let (ciphertext, encryption) =
                    signing::encrypt_document(&document, receiver, EncryptionMode::Standard)?;
                artifact.insert("document", ciphertext);
                Value::Object(encryption)
            }
        };
        artifact.insert("from", self.identity.as_str());
        artifact.insert("to", to.as_str());
        artifact.insert("selector", self.selector.as_str());
        artifact.insert("encryption", encryption);
        signing::sign_object(&mut artifact, &self.key);
        Ok(artifact)
    }

    async fn outbound(
        &mut self,
        action: AgentAction,
        kind: TransporterType,
        to: &Identity,
        document: Value,
        encrypt_to: Option<&PublicKey>,
    ) -> Result<Queued, AgentError> {
        let nested = self.transporter(kind, to, document, encrypt_to)?;
        let artifact = self.artifact_to(action, to.as_str(), Some(Value::Object(nested)));
        let response = self.request(&artifact).await?;
        let object = self.answer_object(action, &response)?;
        Queued::from_answer(action, &object)
    }

    /// Sends a document (invoice) to `to` through the server (`artifact.send`);
    /// encrypted to `encrypt_to` (the recipient's key) when given.
    pub async fn send_document(
        &mut self,
        to: &Identity,
        document: Value,
        encrypt_to: Option<&PublicKey>,
    ) -> Result<Queued, AgentError> {
        self.outbound(
            AgentAction::ArtifactSend,
            TransporterType::Document,
            to,
            document,
            encrypt_to,
        )
        .await
    }

    /// Asks `to` for trust (`trust.request`) with a trust request document.
    pub async fn trust_request(
        &mut self,
        to: &Identity,
        document: Value,
    ) -> Result<Queued, AgentError> {
        self.outbound(
            AgentAction::TrustRequest,
            TransporterType::TrustRequest,
            to,
            document,
            None,
        )
        .await
    }

    /// Answers the trust request of `to` (`trust.respond`) with a trust response
    /// document.
    pub async fn trust_respond(
        &mut self,
        to: &Identity,
        document: Value,
    ) -> Result<Queued, AgentError> {
        self.outbound(
            AgentAction::TrustRespond,
            TransporterType::TrustResponse,
            to,
            document,
            None,
        )
        .await
    }

    /// Closes the connection.
    pub async fn close(self) -> Result<(), AgentError> {
        self.connection.close().await.map_err(AgentError::from)
    }
}

/// The session in an auth answer (§6.4).
fn session_of(action: AgentAction, response: &ServerResponse) -> Result<Session, AgentError> {
    let document = response
        .raw
        .get("document")
        .and_then(Value::as_object)
        .ok_or_else(|| AgentError::UnexpectedAnswer {
            action,
            detail: String::from("no auth response document"),
        })?;
    let field = |key: &str| {
        document
            .str(key)
            .map(str::to_owned)
            .ok_or_else(|| AgentError::UnexpectedAnswer {
                action,
                detail: format!("the auth response has no {key}"),
            })
    };
    Ok(Session {
        agent_id: field("agentId")?,
        refresh_token: field("refreshToken")?,
        expires_at: field("expiresAt")?,
        decrypt_by: field("decryptBy")?,
    })
}
