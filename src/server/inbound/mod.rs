//! Accepting a verified transporter artifact: the duplicate check, the trust check and
//! the record changes it leads to, and the inbox entry — all in one transaction of the
//! storage backend ([`crate::store::Storage::commit_inbound`]), committed before the
//! server answers (README decision 2).
//!
//! The checks run inside the transaction, so that two connections racing on the same
//! record see a consistent order. [`rules`] holds the checks and changes, written
//! against [`crate::store::InboundTransaction`] so that every backend runs the same
//! rules; the [`Committer`] gathers artifacts from all connections into groups.

mod committer;
pub mod rules;

use crate::identity::{Identity, compute_trust_id};
use crate::protocol::json::Value;
use crate::protocol::{ProtocolError, TransporterType};
use crate::server::trust::{Decision, RequestTerms, VerifyingKey};
use crate::store::{Perspective, PreparedInboxEntry, StoreError};

pub use committer::Committer;

/// A transporter artifact whose signature has verified, ready to be accepted.
#[derive(Clone, Debug)]
pub struct VerifiedArtifact {
    /// `type`.
    pub kind: TransporterType,
    /// The sender's artifact id.
    pub id: String,
    /// The sender.
    pub from: Identity,
    /// The receiver (hosted here).
    pub to: Identity,
    /// What the server reads from the document (nothing when it is encrypted).
    pub content: Content,
    /// Whether the document is encrypted.
    pub encrypted: bool,
    /// The key that verified it.
    pub key: VerifyingKey,
    /// Its inbox entry (the exact bytes of the line, the time it was received, the
    /// peer's address), encoded on the connection's thread.
    pub entry: PreparedInboxEntry,
    /// The id of the trust record the trust check reads (see
    /// [`VerifiedArtifact::checked_trust_id`]), computed on the connection's thread.
    pub trust_id: String,
}

impl VerifiedArtifact {
    /// The id of the trust record the trust check reads: the receiving-side record
    /// for TRUST_REQ and BTPS_DOC, the requesting-side record of the original request
    /// (the flipped id) for TRUST_RES (`spec/05-trust.md` §5.3, §6.6).
    pub fn checked_trust_id(kind: TransporterType, from: &Identity, to: &Identity) -> String {
        match kind {
            TransporterType::TrustResponse => compute_trust_id(to.as_str(), from.as_str()),
            _ => compute_trust_id(from.as_str(), to.as_str()),
        }
    }

    /// The perspective of the record named by `trust_id`: outbound (the requesting
    /// side) for TRUST_RES, inbound otherwise.
    pub fn checked_perspective(&self) -> Perspective {
        match self.kind {
            TransporterType::TrustResponse => Perspective::Outbound,
            _ => Perspective::Inbound,
        }
    }
}

/// The parts of a plain document that accepting an artifact reads, taken out on the
/// connection's thread so that the document itself never travels to the committer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Content {
    /// The inbox entry's searchable title.
    pub title: Option<String>,
    /// The terms of a plain trust request.
    pub terms: Option<RequestTerms>,
    /// The decision of a plain trust response.
    pub decision: Option<Decision>,
}

impl Content {
    /// Reads what matters of the document of an artifact of type `kind` (`None`:
    /// the document is encrypted).
    pub fn read(kind: TransporterType, plain_document: Option<&Value>) -> Self {
        let Some(document) = plain_document else {
            return Content::default();
        };
        let text = |key: &str| document.as_object().and_then(|object| object.str(key));
        match kind {
            TransporterType::Document => Content {
                title: text("title").map(str::to_owned),
                ..Content::default()
            },
            TransporterType::TrustRequest => Content {
                title: text("name").map(|name| format!("Trust request from {name}")),
                terms: Some(RequestTerms::from_document(document)),
                decision: None,
            },
            TransporterType::TrustResponse => Content {
                title: text("decision").map(|decision| format!("Trust {decision}")),
                terms: None,
                decision: Decision::from_document(document),
            },
        }
    }
}

/// What happened to an accepted artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Stored as a new inbox entry.
    Stored {
        /// The new entry.
        entry_id: u64,
    },
    /// The same (receiver, sender, id) was stored before: acknowledged again, not stored.
    Duplicate {
        /// The earlier entry.
        entry_id: u64,
    },
}

/// Why an artifact was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Refused by the trust rules (answered with the protocol error).
    #[error("{0}")]
    Refused(ProtocolError),
    /// The database failed; nothing was committed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
