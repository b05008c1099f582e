//! Typed artifacts: what a received line becomes once classified and validated.
//!
//! Every typed artifact keeps the parsed object it came from ([`Object`]) because
//! signatures cover every member, known or unknown, in received order; the typed fields
//! are validated views of that object, never a replacement for it.

use std::fmt;

use crate::identity::Identity;
use crate::protocol::json::Object;

/// The four kinds of line a server receives (`spec/01-wire.md` §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    /// Session control (`QUIT`, `PING`).
    Control,
    /// Server-to-server artifact (`TRUST_REQ`, `TRUST_RES`, `BTPS_DOC`).
    Transporter,
    /// Request for the public key of a hosted identity.
    IdentityLookup,
    /// An agent (device) acting for its own identity.
    Agent,
}

impl ArtifactKind {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Control => "control",
            ArtifactKind::Transporter => "transporter",
            ArtifactKind::IdentityLookup => "identity_lookup",
            ArtifactKind::Agent => "agent",
        }
    }
}

/// A validated artifact of any kind.
// Built once per line and moved a handful of times: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Artifact {
    /// `QUIT` or `PING`.
    Control(ControlArtifact),
    /// `TRUST_REQ`, `TRUST_RES` or `BTPS_DOC`.
    Transporter(TransporterArtifact),
    /// Identity lookup request.
    IdentityLookup(IdentityLookupRequest),
    /// Agent action.
    Agent(AgentArtifact),
}

impl Artifact {
    /// The kind of this artifact.
    pub fn kind(&self) -> ArtifactKind {
        match self {
            Artifact::Control(_) => ArtifactKind::Control,
            Artifact::Transporter(_) => ArtifactKind::Transporter,
            Artifact::IdentityLookup(_) => ArtifactKind::IdentityLookup,
            Artifact::Agent(_) => ArtifactKind::Agent,
        }
    }

    /// The artifact's `id`, echoed as `reqId`.
    pub fn id(&self) -> &str {
        match self {
            Artifact::Control(artifact) => &artifact.id,
            Artifact::Transporter(artifact) => &artifact.id,
            Artifact::IdentityLookup(artifact) => &artifact.id,
            Artifact::Agent(artifact) => &artifact.id,
        }
    }

    /// The parsed object, exactly as received.
    pub fn raw(&self) -> &Object {
        match self {
            Artifact::Control(artifact) => &artifact.raw,
            Artifact::Transporter(artifact) => &artifact.raw,
            Artifact::IdentityLookup(artifact) => &artifact.raw,
            Artifact::Agent(artifact) => &artifact.raw,
        }
    }
}

/// Declares a string enum with its exact wire spellings.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in the spec's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The exact wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the exact wire spelling (case-sensitive).
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// The `type` of a transporter artifact.
    TransporterType {
        /// A request to be trusted by the receiver.
        TrustRequest = "TRUST_REQ",
        /// The answer to a trust request.
        TrustResponse = "TRUST_RES",
        /// A billing document (invoice).
        Document = "BTPS_DOC",
    }
}

wire_enum! {
    /// The `action` of a control artifact.
    ControlAction {
        /// End the session.
        Quit = "QUIT",
        /// Liveness check.
        Ping = "PING",
    }
}

wire_enum! {
    /// `encryption.type`: a label only; all modes encrypt identically.
    EncryptionType {
        /// `none`.
        None = "none",
        /// `standardEncrypt`.
        Standard = "standardEncrypt",
        /// `2faEncrypt`.
        TwoFactor = "2faEncrypt",
    }
}

wire_enum! {
    /// Agent actions (`spec/02-artifacts.md` §4.2), including the documented
    /// `sentbox.*` actions that the reference's enum forgot.
    AgentAction {
        /// Device onboarding with a one-time token.
        AuthRequest = "auth.request",
        /// Session refresh (and agent key rotation).
        AuthRefresh = "auth.refresh",
        /// Health check.
        SystemPing = "system.ping",
        /// Send a trust request on the identity's behalf.
        TrustRequest = "trust.request",
        /// Answer a trust request.
        TrustRespond = "trust.respond",
        /// Change a trust record.
        TrustUpdate = "trust.update",
        /// Delete trust records.
        TrustDelete = "trust.delete",
        /// List trust records.
        TrustFetch = "trust.fetch",
        /// Query the inbox.
        InboxFetch = "inbox.fetch",
        /// Mark inbox entries seen.
        InboxSeen = "inbox.seen",
        /// Delete inbox entries.
        InboxDelete = "inbox.delete",
        /// Query the outbox.
        OutboxFetch = "outbox.fetch",
        /// Cancel queued sends.
        OutboxCancel = "outbox.cancel",
        /// Query drafts.
        DraftFetch = "draft.fetch",
        /// Create a draft.
        DraftCreate = "draft.create",
        /// Change a draft.
        DraftUpdate = "draft.update",
        /// Delete drafts.
        DraftDelete = "draft.delete",
        /// Query the trash.
        TrashFetch = "trash.fetch",
        /// Purge trash entries.
        TrashDelete = "trash.delete",
        /// Send a document.
        ArtifactSend = "artifact.send",
        /// Query sent artifacts.
        SentboxFetch = "sentbox.fetch",
        /// Delete sent artifacts.
        SentboxDelete = "sentbox.delete",
    }
}

impl AgentAction {
    /// Whether the action requires a `document`.
    pub fn requires_document(self) -> bool {
        use AgentAction::*;
        !matches!(
            self,
            SystemPing
                | TrustFetch
                | InboxFetch
                | OutboxFetch
                | DraftFetch
                | TrashFetch
                | SentboxFetch
        )
    }

    /// Whether the client waits for an application answer (`respondNow`).
    pub fn is_immediate(self) -> bool {
        !matches!(
            self,
            AgentAction::TrustRequest | AgentAction::TrustRespond | AgentAction::ArtifactSend
        )
    }
}

/// A signature object (`spec/02-artifacts.md` §1.1); `algorithmHash` is always `sha256`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureObject {
    /// Base64 RSASSA-PKCS1-v1_5/SHA-256 signature.
    pub value: String,
    /// Base64 SHA-256 of the signer's SPKI DER.
    pub fingerprint: String,
}

/// An encryption object (`spec/02-artifacts.md` §1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptionObject {
    /// Always `aes-256-gcm` once validated.
    pub algorithm: String,
    /// Base64 RSA-OAEP-wrapped AES key.
    pub encrypted_key: String,
    /// Base64 GCM nonce.
    pub iv: String,
    /// Base64 GCM tag.
    pub auth_tag: String,
    /// The informational mode label.
    pub kind: EncryptionType,
}

/// A delegation (`spec/02-artifacts.md` §1.3).
#[derive(Clone, Debug)]
pub struct Delegation {
    /// The delegated agent's id.
    pub agent_id: String,
    /// The agent's public key, SPKI PEM text.
    pub agent_public_key: String,
    /// The delegator.
    pub signed_by: Identity,
    /// The delegator's signature.
    pub signature: SignatureObject,
    /// When the delegation was made.
    pub issued_at: String,
    /// The delegator's key selector.
    pub selector: String,
    /// The attestation, when present.
    pub attestation: Option<Attestation>,
}

/// An attestation of a delegation (`spec/02-artifacts.md` §1.4).
#[derive(Clone, Debug)]
pub struct Attestation {
    /// The attestor.
    pub signed_by: Identity,
    /// When it was made.
    pub issued_at: String,
    /// The attestor's signature.
    pub signature: SignatureObject,
    /// The attestor's key selector.
    pub selector: String,
}

/// A transporter artifact (`spec/02-artifacts.md` §2).
#[derive(Clone, Debug)]
pub struct TransporterArtifact {
    /// The parsed object as received (what signatures cover).
    pub raw: Object,
    /// `version` (any string).
    pub version: String,
    /// `issuedAt`.
    pub issued_at: String,
    /// The sender-chosen artifact id.
    pub id: String,
    /// `type`.
    pub kind: TransporterType,
    /// The sender.
    pub from: Identity,
    /// The receiver.
    pub to: Identity,
    /// The selector of the sender's signing key.
    pub selector: String,
    /// The top-level signature (by `from`, or by the agent when delegated).
    pub signature: SignatureObject,
    /// `encryption`, `None` for `"encryption": null`.
    pub encryption: Option<EncryptionObject>,
    /// `delegation`, when present.
    pub delegation: Option<Delegation>,
    /// The text the sender's signature covers (`raw` in canonical form without
    /// `signature`), when the received line already was canonical and it could be cut
    /// from it; `None` means it is written out from `raw` when needed.
    pub signed_text: Option<String>,
}

impl TransporterArtifact {
    /// The `document` member (an object, or the base64 ciphertext when encrypted).
    pub fn document(&self) -> &crate::protocol::json::Value {
        // Validation guarantees presence; `NULL` keeps this total anyway.
        self.raw
            .get("document")
            .unwrap_or(&crate::protocol::json::NULL)
    }
}

/// An agent artifact (`spec/02-artifacts.md` §4).
#[derive(Clone, Debug)]
pub struct AgentArtifact {
    /// The parsed object as received.
    pub raw: Object,
    /// Request id.
    pub id: String,
    /// The action.
    pub action: AgentAction,
    /// The agent's id.
    pub agent_id: String,
    /// The identity the agent acts for.
    pub to: Identity,
    /// `issuedAt`.
    pub issued_at: String,
    /// The agent's signature.
    pub signature: SignatureObject,
    /// `encryption`, `None` for `"encryption": null`.
    pub encryption: Option<EncryptionObject>,
}

/// An identity lookup request (`spec/02-artifacts.md` §3).
#[derive(Clone, Debug)]
pub struct IdentityLookupRequest {
    /// The parsed object as received.
    pub raw: Object,
    /// `version`.
    pub version: String,
    /// Request id.
    pub id: String,
    /// `issuedAt`.
    pub issued_at: String,
    /// The identity whose key is wanted.
    pub identity: Identity,
    /// Who asks (informational).
    pub from: Identity,
    /// The selector of the answering server's key.
    pub host_selector: String,
    /// Which of the identity's keys; `None` for its current key.
    pub identity_selector: Option<String>,
}

/// A control artifact (`spec/02-artifacts.md` §5).
#[derive(Clone, Debug)]
pub struct ControlArtifact {
    /// The parsed object as received.
    pub raw: Object,
    /// `version`.
    pub version: String,
    /// Request id.
    pub id: String,
    /// `issuedAt`.
    pub issued_at: String,
    /// `QUIT` or `PING`.
    pub action: ControlAction,
}

/// The `type` of a delivery-failure artifact.
pub const DELIVERY_FAILURE_TYPE: &str = "BTP_DELIVERY_FAILURE";

/// A delivery-failure artifact (`spec/02-artifacts.md` §8): the bounce a server puts
/// in a sender's own mailbox when an outbound artifact could not be delivered. It is
/// never signed and never sent as a line, so it is validated on its own
/// ([`crate::protocol::validate::delivery_failure`]), not classified.
#[derive(Clone, Debug)]
pub struct DeliveryFailureArtifact {
    /// The object as built or stored.
    pub raw: Object,
    /// Its id.
    pub id: String,
    /// When it was made.
    pub issued_at: String,
    /// The server identity reporting the failure.
    pub from: Identity,
    /// The sender whose artifact failed (the mailbox owner).
    pub to: Identity,
    /// `document.reason`: the human-readable cause.
    pub reason: String,
    /// `document.failedAt`.
    pub failed_at: String,
    /// `document.recipient`: where the artifact was going.
    pub recipient: Identity,
    /// `document.transportArtifactId`: the id of the artifact that failed.
    pub transport_artifact_id: String,
    /// `document.retryCount`, when given.
    pub retry_count: Option<f64>,
}
