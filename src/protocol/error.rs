//! Protocol errors: every error constant of the reference, and the one table that maps
//! each to its wire message (`spec/01-wire.md` §8).
//!
//! The reference collapses many distinct failures into a few wire messages (every
//! signature problem is `" Signature verification failed"`, every trust problem the
//! same "not allowed" sentence). A [`ProtocolError`] keeps both: the code whose
//! message is written on the wire, and the precise cause, which goes into the
//! appliance-only `status.reason` field and the logs (README decision 6).

use std::borrow::Cow;
use std::fmt;

/// The error constants of the reference implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The line is not JSON.
    InvalidJson,
    /// No artifact kind matched, or the artifact broke its schema.
    Validation,
    /// A control or agent action the server does not perform.
    InvalidAction,
    /// Any signature, delegation or attestation failure (as seen on the wire).
    SigVerification,
    /// Any trust failure (as seen on the wire).
    TrustNotAllowed,
    /// The identity is not known here.
    IdentityNotFound,
    /// The connection was idle too long.
    SocketTimeout,
    /// An internal failure.
    Unknown,
    /// TRUST_REQ while trust is already active.
    TrustAlreadyActive,
    /// TRUST_REQ while the sender is blocked.
    TrustBlocked,
    /// Defined by the reference, never used.
    TrustNonExistent,
    /// The signature's fingerprint is not the fingerprint of the resolved key.
    SigMismatch,
    /// No public key could be found for the signer.
    ResolvePubkey,
    /// Delegation not allowed for this sender, or attestation required but missing.
    DelegationInvalid,
    /// The delegator's or the agent's signature on a delegated artifact is invalid.
    DelegationSigVerification,
    /// The attestation signature is invalid.
    AttestationVerification,
    /// Defined by the reference, never used (its rate limiter sends 429 instead).
    RateLimiter,
    /// Malformed identity.
    Identity,
    /// The receiver's host record is missing or unusable.
    ResolveDns,
    /// Encryption algorithm other than `aes-256-gcm`.
    UnsupportedEncrypt,
    /// The wrapped key cannot be unwrapped with this private key.
    DecryptionUnintended,
    /// Authentication failed.
    AuthenticationInvalid,
    /// Client: no response within the timeout.
    Timeout,
    /// Client: the socket closed.
    ConnectionClosed,
    /// Client: the server ended the connection.
    ConnectionEnded,
    /// Defined by the reference, never used.
    SocketClosed,
    /// Defined by the reference, never used.
    ActionType,
}

impl ErrorCode {
    /// The internal code string of the reference (e.g. `BTP_ERROR_SIG_MISMATCH`).
    pub fn code(self) -> &'static str {
        self.entry().0
    }

    /// The message text, byte for byte as the reference writes it.
    pub fn message(self) -> &'static str {
        self.entry().1
    }

    /// The code whose message the reference server puts on the wire for this failure.
    pub fn on_the_wire(self) -> ErrorCode {
        use ErrorCode::*;
        match self {
            SigMismatch
            | ResolvePubkey
            | DelegationInvalid
            | DelegationSigVerification
            | AttestationVerification => SigVerification,
            TrustAlreadyActive | TrustBlocked | TrustNonExistent => TrustNotAllowed,
            other => other,
        }
    }

    /// The one table: (code, message) of every constant (`spec/01-wire.md` §8).
    fn entry(self) -> (&'static str, &'static str) {
        use ErrorCode::*;
        match self {
            InvalidJson => ("BTP_ERROR_INVALID_JSON", "Invalid JSON format"),
            Validation => ("BTP_ERROR_VALIDATION", "BTPS artifact validation failed"),
            InvalidAction => ("BTP_ERROR_INVALID_ACTION", "Invalid action"),
            SigVerification => (
                "BTP_ERROR_SIG_VERIFICATION",
                " Signature verification failed",
            ),
            TrustNotAllowed => (
                "BTP_ERROR_TRUST_NOT_ALLOWED",
                "BTPS trust request is not allowed at this time. Contact receiver",
            ),
            IdentityNotFound => ("BTP_ERROR_IDENTITY_NOT_FOUND", "Identity not found"),
            SocketTimeout => (
                "BTP_ERROR_SOCKET_TIMEOUT",
                "Socket timeout. Connection closed",
            ),
            Unknown => ("BTP_UNKNOWN_ERROR", "Unknown error"),
            TrustAlreadyActive => (
                "BTP_ERROR_TRUST_ALREADY_ACTIVE",
                "BTPS trust record already exist. Request invalid",
            ),
            TrustBlocked => (
                "BTP_ERROR_TRUST_BLOCKED",
                "BTPS trust request is not allowed. Contact receiver",
            ),
            TrustNonExistent => (
                "BTP_ERROR_TRUST_NON_EXISTENT",
                "BTPS trust record does not exist or has been expired",
            ),
            SigMismatch => ("BTP_ERROR_SIG_MISMATCH", "fingerprint mis-match"),
            ResolvePubkey => ("BTP_ERROR_RESOLVE_PUBKEY", "No valid public-key found"),
            DelegationInvalid => ("BTP_ERROR_DELEGATION_INVALID", "Delegation is invalid"),
            DelegationSigVerification => (
                "BTP_ERROR_DELEGATION_SIG_VERIFICATION",
                "Delegation signature verification failed",
            ),
            AttestationVerification => (
                "BTP_ERROR_ATTESTATION_VERIFICATION",
                "Attestation verification failed",
            ),
            RateLimiter => (
                "BTP_ERROR_RATE_LIMITER",
                "Too many request than its allowed",
            ),
            Identity => (
                "BTP_ERROR_IDENTITY",
                "BTPS identity is expected in the format username$domain.",
            ),
            ResolveDns => ("BTP_ERROR_RESOLVE_DNS", "No valid DNS record found"),
            UnsupportedEncrypt => (
                "BTP_ERROR_UNSUPPORTED_ENCRYPT",
                "Unsupported encryption algorithm",
            ),
            DecryptionUnintended => (
                "BTP_ERROR_DECRYPTION_UNINTENDED",
                "Decryption failed: Message was not intended for this receiver.",
            ),
            AuthenticationInvalid => ("BTP_ERROR_AUTHENTICATION_INVALID", "Authentication failed"),
            Timeout => ("BTP_ERROR_TIMEOUT", "Timeout"),
            ConnectionClosed => ("BTP_ERROR_CONNECTION_CLOSED", "Connection closed"),
            ConnectionEnded => ("BTP_ERROR_CONNECTION_ENDED", "Connection ended"),
            SocketClosed => ("BTP_ERROR_SOCKET_CLOSED", "Socket already closed"),
            ActionType => ("BTPS_ERROR_ACTION_TYPE", "BTPS action type is not valid"),
        }
    }

    /// Every constant, for tests and documentation.
    pub const ALL: [ErrorCode; 27] = {
        use ErrorCode::*;
        [
            InvalidJson,
            Validation,
            InvalidAction,
            SigVerification,
            TrustNotAllowed,
            IdentityNotFound,
            SocketTimeout,
            Unknown,
            TrustAlreadyActive,
            TrustBlocked,
            TrustNonExistent,
            SigMismatch,
            ResolvePubkey,
            DelegationInvalid,
            DelegationSigVerification,
            AttestationVerification,
            RateLimiter,
            Identity,
            ResolveDns,
            UnsupportedEncrypt,
            DecryptionUnintended,
            AuthenticationInvalid,
            Timeout,
            ConnectionClosed,
            ConnectionEnded,
            SocketClosed,
            ActionType,
        ]
    };
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A failure of the server's own means rather than of the artifact: what an
/// `Unknown error` answer stood for, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// A DNS lookup failed for a reason that may pass (timeout, SERVFAIL).
    Dns,
    /// The storage failed (a read or a commit).
    Storage,
}

/// A refusal of an artifact: what the wire says, and precisely why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    /// The precise error constant (e.g. [`ErrorCode::SigMismatch`]).
    pub code: ErrorCode,
    /// Human-readable detail for logs and the CLI (never sent on the wire).
    pub detail: Cow<'static, str>,
    /// A message that replaces the constant's message on the wire (only for the
    /// temporary DNS failure, whose text names the DNS name).
    pub message_override: Option<String>,
    /// A short phrase for `status.reason` when the cause has no constant of its own.
    pub reason_phrase: Option<Cow<'static, str>>,
    /// Set when the server's own means failed (DNS, storage), not the artifact.
    pub failure: Option<Failure>,
}

impl ProtocolError {
    /// An error with the given precise code and detail.
    pub fn new(code: ErrorCode, detail: impl Into<Cow<'static, str>>) -> Self {
        ProtocolError {
            code,
            detail: detail.into(),
            message_override: None,
            reason_phrase: None,
            failure: None,
        }
    }

    /// A validation failure (`"BTPS artifact validation failed"`).
    pub fn validation(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Validation, detail)
    }

    /// A temporary DNS failure: `Temporary DNS failure while resolving <name>, retry later`
    /// (`spec/01-wire.md` §5.3). Senders recognise the prefix and retry.
    pub fn temporary_dns(name: &str, detail: impl Into<Cow<'static, str>>) -> Self {
        let mut error = Self::new(ErrorCode::Unknown, detail);
        error.message_override = Some(format!(
            "Temporary DNS failure while resolving {name}, retry later"
        ));
        error.reason_phrase = Some(Cow::Borrowed("temporary dns failure"));
        error.failure = Some(Failure::Dns);
        error
    }

    /// A failure of the storage (`Unknown error`, reason `storage failure`).
    pub fn storage(detail: impl Into<Cow<'static, str>>) -> Self {
        let mut error = Self::new(ErrorCode::Unknown, detail).with_reason("storage failure");
        error.failure = Some(Failure::Storage);
        error
    }

    /// The storage cannot write now (a full disk): nothing was stored. Answered
    /// `"Unknown error"` (500), which senders treat as transient and retry
    /// (`spec/01-wire.md` §5.3, `08-delivery.md` §5.4); `status.reason` is
    /// `storage temporarily unavailable: <reason>`.
    pub fn storage_unavailable(reason: &str, detail: impl Into<Cow<'static, str>>) -> Self {
        let mut error = Self::new(ErrorCode::Unknown, detail)
            .with_reason(format!("storage temporarily unavailable: {reason}"));
        error.failure = Some(Failure::Storage);
        error
    }

    /// Sets the `status.reason` phrase.
    pub fn with_reason(mut self, phrase: impl Into<Cow<'static, str>>) -> Self {
        self.reason_phrase = Some(phrase.into());
        self
    }

    /// The message written in `status.message`.
    pub fn wire_message(&self) -> &str {
        match &self.message_override {
            Some(message) => message,
            None => self.code.on_the_wire().message(),
        }
    }

    /// The `status.reason` value: the precise constant's code when the wire message
    /// is shared with other causes, or the phrase given for this refusal.
    pub fn reason(&self) -> Option<&str> {
        if let Some(phrase) = &self.reason_phrase {
            return Some(phrase);
        }
        (self.code.on_the_wire() != self.code).then(|| self.code.code())
    }

    /// The numeric `status.code`: always 500 (the reference's constants have string
    /// codes, so every error it sends is 500; 429 comes only from rate limiting).
    pub fn status_code(&self) -> u16 {
        if self.code == ErrorCode::RateLimiter {
            429
        } else {
            500
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.code.code(),
            self.wire_message().trim_start()
        )?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for ProtocolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_failures_share_the_wire_message() {
        let error = ProtocolError::new(ErrorCode::SigMismatch, "fingerprint differs");
        assert_eq!(error.wire_message(), " Signature verification failed");
        assert_eq!(error.reason(), Some("BTP_ERROR_SIG_MISMATCH"));
        assert_eq!(error.status_code(), 500);
    }

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<_> = ErrorCode::ALL.iter().map(|code| code.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn temporary_dns_message() {
        let error = ProtocolError::temporary_dns("btps1._btps.identity.a.b.c", "timeout");
        assert_eq!(
            error.wire_message(),
            "Temporary DNS failure while resolving btps1._btps.identity.a.b.c, retry later"
        );
    }
}
