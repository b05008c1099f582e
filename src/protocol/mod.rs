//! Protocol core: wire types, line classification and validation, error codes, the
//! response envelope, and canonical JSON.
//!
//! Architecture invariant: this module performs no I/O. Everything here is a pure
//! function over bytes and values, tested without sockets.

pub mod artifact;
pub mod error;
pub mod formats;
pub mod json;
pub mod response;
pub mod validate;

pub use artifact::{
    AgentAction, AgentArtifact, Artifact, ArtifactKind, Attestation, ControlAction,
    ControlArtifact, Delegation, EncryptionObject, EncryptionType, IdentityLookupRequest,
    SignatureObject, TransporterArtifact, TransporterType,
};
pub use artifact::{DELIVERY_FAILURE_TYPE, DeliveryFailureArtifact};
pub use error::{ErrorCode, Failure, ProtocolError};
pub use validate::{classify, delivery_failure, parse_line, validate};
