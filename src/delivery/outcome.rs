//! What one delivery attempt came to, in the classes of `08-delivery.md` §5.4, and
//! the reason texts that go into the owner's delivery-failure notice (§6).
//!
//! Classification is by the answer's `type` and message, not by its code alone:
//! the reference answers every refusal with code 500.

use crate::protocol::ErrorCode;
use crate::protocol::response::{ResponseType, ServerResponse};

/// The class of an attempt's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The receiving server accepted the artifact (`btps_response`, `status.ok`).
    Delivered {
        /// The `id` of the receiver's answer, when it had one.
        response_id: Option<String>,
    },
    /// Worth another attempt later: the receiver or the way to it failed for now,
    /// or the answer never came (the receiver may have stored it; it de-duplicates).
    Transient(Failure),
    /// The receiver refused the artifact for good.
    Permanent(Failure),
}

/// Why an attempt did not deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The error name for `errorLog.code` (`BTP_ERROR_…`, or the kind of failure).
    pub code: String,
    /// What happened, for `errorLog.message` and the entry's `lastError`.
    pub message: String,
    /// The short reason of the failure notice (`08-delivery.md` §6.1's list where
    /// one fits).
    pub reason: String,
}

impl Failure {
    /// A failure with these texts.
    pub fn new(code: &str, reason: &str, message: impl Into<String>) -> Self {
        Failure {
            code: code.to_owned(),
            message: message.into(),
            reason: reason.to_owned(),
        }
    }

    /// The DNS could not tell where the receiver's server is (no host record, a
    /// timeout, a server failure).
    pub fn dns(message: impl Into<String>) -> Self {
        Failure::new("BTP_ERROR_DNS", "DNS resolution failed", message)
    }

    /// No TCP connection could be opened.
    pub fn connect(message: impl Into<String>) -> Self {
        Failure::new(
            "BTP_ERROR_CONNECTION_REFUSED",
            "Server not available",
            message,
        )
    }

    /// The TLS handshake failed.
    pub fn tls(message: impl Into<String>) -> Self {
        Failure::new("BTP_ERROR_TLS", "TLS handshake failed", message)
    }

    /// No answer in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Failure::new("BTP_ERROR_TIMEOUT", "Connection timeout", message)
    }

    /// The connection ended before the answer.
    pub fn closed(message: impl Into<String>) -> Self {
        Failure::new(
            "BTP_ERROR_CONNECTION_CLOSED",
            "Server not available",
            message,
        )
    }

    /// The answer line could not be read as a response.
    pub fn unreadable(message: impl Into<String>) -> Self {
        Failure::new(
            "BTP_ERROR_INVALID_RESPONSE",
            "Invalid message format",
            message,
        )
    }
}

/// Messages of `btps_error` answers that mean "try again later" (§5.4).
const TRANSIENT_MESSAGES: [&str; 3] = [
    "Too many requests",
    "Socket timeout. Connection closed",
    "Unknown error",
];

/// Classifies the receiver's answer to the artifact in flight.
pub fn classify(response: &ServerResponse) -> Outcome {
    if response.kind == ResponseType::Response && response.ok {
        return Outcome::Delivered {
            response_id: response.raw.str("id").map(str::to_owned),
        };
    }
    let message = response.message.clone().unwrap_or_default();
    let trimmed = message.trim();
    let code = code_of(trimmed);
    let http_code = response.code;
    let transient = http_code == 429.0
        || http_code == 503.0
        || TRANSIENT_MESSAGES.contains(&trimmed)
        || trimmed.starts_with("Temporary DNS failure")
        || trimmed.starts_with("queryTxt ");
    let mut detail = trimmed.to_owned();
    if let Some(reason) = &response.reason {
        detail = format!("{trimmed} ({reason})");
    }
    let failure = Failure {
        code,
        message: detail,
        reason: if trimmed.is_empty() {
            String::from("Refused by the receiver")
        } else {
            trimmed.to_owned()
        },
    };
    if transient {
        Outcome::Transient(failure)
    } else {
        Outcome::Permanent(failure)
    }
}

/// The error name of a reference message, or a generic one.
fn code_of(message: &str) -> String {
    ErrorCode::ALL
        .iter()
        .find(|code| code.message().trim() == message)
        .map_or("BTP_ERROR_REFUSED", |code| code.code())
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::response::parse_response;

    fn answer(line: &str) -> Outcome {
        classify(&parse_response(line).unwrap())
    }

    fn error_line(code: u16, message: &str, req_id: Option<&str>) -> String {
        let req = req_id.map_or(String::new(), |id| format!(r#","reqId":"{id}""#));
        format!(
            r#"{{"version":"1.0.0","status":{{"ok":false,"code":{code},"message":"{message}"}},"id":"r1","issuedAt":"2025-01-01T00:00:00.000Z","type":"btps_error"{req}}}"#
        )
    }

    #[test]
    fn success_is_delivered_with_the_answer_id() {
        let line = r#"{"version":"1.0.0","status":{"ok":true,"code":200,"message":"Success"},"id":"ans-1","issuedAt":"2025-01-01T00:00:00.000Z","type":"btps_response","reqId":"a1"}"#;
        assert_eq!(
            answer(line),
            Outcome::Delivered {
                response_id: Some("ans-1".to_owned())
            }
        );
    }

    #[test]
    fn the_reference_s_500_refusals_are_told_apart_by_message() {
        for message in [
            "Too many requests",
            "Unknown error",
            "Socket timeout. Connection closed",
            "Temporary DNS failure while resolving the sender's key",
            "queryTxt ETIMEOUT btps1._btps.identity.billing.vendor.test",
        ] {
            assert!(
                matches!(
                    answer(&error_line(500, message, Some("a1"))),
                    Outcome::Transient(_)
                ),
                "{message}"
            );
        }
        for (message, code) in [
            ("BTPS artifact validation failed", "BTP_ERROR_VALIDATION"),
            ("Invalid JSON format", "BTP_ERROR_INVALID_JSON"),
            (
                " Signature verification failed",
                "BTP_ERROR_SIG_VERIFICATION",
            ),
            (
                "BTPS trust request is not allowed at this time. Contact receiver",
                "BTP_ERROR_TRUST_NOT_ALLOWED",
            ),
            ("Identity not found", "BTP_ERROR_IDENTITY_NOT_FOUND"),
            ("Delegation is invalid", "BTP_ERROR_DELEGATION_INVALID"),
        ] {
            match answer(&error_line(500, message, None)) {
                Outcome::Permanent(failure) => {
                    assert_eq!(failure.code, code, "{message}");
                    assert_eq!(failure.reason, message.trim());
                }
                other => panic!("{message}: {other:?}"),
            }
        }
    }

    #[test]
    fn codes_429_and_503_are_transient_whatever_the_message() {
        assert!(matches!(
            answer(&error_line(429, "Slow down", Some("a1"))),
            Outcome::Transient(_)
        ));
        assert!(matches!(
            answer(&error_line(503, "Storage unavailable", Some("a1"))),
            Outcome::Transient(_)
        ));
        assert!(matches!(
            answer(&error_line(403, "Forbidden", Some("a1"))),
            Outcome::Permanent(_)
        ));
    }
}
