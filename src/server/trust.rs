//! The trust rules of the receiving server, as pure functions over trust records
//! (`spec/05-trust.md` §5–§8): the check per artifact type, and the record changes an
//! accepted TRUST_REQ, TRUST_RES or BTPS_DOC causes.
//!
//! The inbound store runs these inside the write transaction that also stores the
//! artifact, so the check and the change it leads to are atomic.

use std::time::Duration;

use crate::protocol::json::{Object, Value};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::store::{
    KeyHistoryEntry, NewTrustRecord, PrivacyType, Timestamp, TrustPatch, TrustRecord, TrustStatus,
};

/// The operator's trust policy (`spec/05-trust.md` §6.1, §8; open questions Q1, Q2).
#[derive(Clone, Debug, PartialEq)]
pub struct TrustPolicy {
    /// How long a new or renewed pending request blocks another request.
    pub cooling_off: Duration,
    /// The privacy type recorded when neither request nor response names one.
    pub default_privacy: PrivacyType,
    /// Whether a record with privacy type `encrypted` refuses unencrypted documents.
    pub enforce_privacy: bool,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        TrustPolicy {
            cooling_off: Duration::from_secs(24 * 60 * 60),
            default_privacy: PrivacyType::Mixed,
            enforce_privacy: true,
        }
    }
}

/// The key that verified an artifact, as trust records store it (`spec/05-trust.md` §7.2–§7.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyingKey {
    /// base64 SPKI DER.
    pub base64: String,
    /// base64(SHA-256(SPKI DER)).
    pub fingerprint: String,
    /// The delegator, when the artifact was delegated (its key is the one recorded).
    pub delegated_by: Option<String>,
}

/// A trust refusal: the shared wire message, the precise constant in `status.reason`
/// (`spec/05-trust.md` §5.5).
fn refusal(code: ErrorCode, detail: impl Into<std::borrow::Cow<'static, str>>) -> ProtocolError {
    ProtocolError::new(code, detail).with_reason(code.code())
}

fn future(timestamp: Option<&Timestamp>, now: &Timestamp) -> bool {
    timestamp.is_some_and(|at| at.millis() > now.millis())
}

/// The TRUST_REQ check (`spec/05-trust.md` §5.3): refused while the record is active,
/// blocked, or before its `retryAfterDate`; no record at all passes.
pub fn check_trust_request(
    record: Option<&TrustRecord>,
    now: &Timestamp,
) -> Result<(), ProtocolError> {
    let Some(record) = record else { return Ok(()) };
    if record.is_active_at(now.millis()) {
        return Err(refusal(
            ErrorCode::TrustAlreadyActive,
            "trust is already active",
        ));
    }
    if record.status == TrustStatus::Blocked {
        return Err(refusal(ErrorCode::TrustBlocked, "the sender is blocked"));
    }
    if future(record.retry_after_date.as_ref(), now) {
        return Err(refusal(
            ErrorCode::TrustNotAllowed,
            "a new request is not allowed before retryAfterDate",
        ));
    }
    Ok(())
}

/// The TRUST_RES check (`spec/05-trust.md` §5.3): the requesting-side record exists,
/// is pending, and names the responder as its receiver (ignoring case).
pub fn check_trust_response(
    record: Option<&TrustRecord>,
    responder: &str,
) -> Result<(), ProtocolError> {
    let Some(record) = record else {
        return Err(refusal(
            ErrorCode::TrustNotAllowed,
            "no trust request to answer",
        ));
    };
    if record.status != TrustStatus::Pending {
        return Err(refusal(
            ErrorCode::TrustNotAllowed,
            "the trust request is not pending",
        ));
    }
    if record.receiver_id.to_lowercase() != responder.to_lowercase() {
        return Err(refusal(
            ErrorCode::TrustNotAllowed,
            "only the asked party may respond",
        ));
    }
    Ok(())
}

/// The BTPS_DOC check (`spec/05-trust.md` §5.3, §8): active trust, and encryption when
/// the trust requires it.
pub fn check_document(
    record: Option<&TrustRecord>,
    now: &Timestamp,
    encrypted: bool,
    policy: &TrustPolicy,
) -> Result<(), ProtocolError> {
    let active = record.is_some_and(|record| record.is_active_at(now.millis()));
    if !active {
        return Err(refusal(
            ErrorCode::TrustNonExistent,
            "no active trust for this sender",
        ));
    }
    if policy.enforce_privacy
        && !encrypted
        && record.is_some_and(|record| record.privacy_type == PrivacyType::Encrypted)
    {
        return Err(
            ProtocolError::validation("the trust requires encrypted documents")
                .with_reason("encryption required by trust"),
        );
    }
    Ok(())
}

/// The fields of a trust request document the server can read (absent when the
/// document is encrypted: the server holds no private key of its users).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestTerms {
    /// The request document's `id`.
    pub document_id: Option<String>,
    /// The requested end of the trust.
    pub expires_at: Option<Timestamp>,
    /// The proposed privacy type.
    pub privacy_type: Option<PrivacyType>,
}

impl RequestTerms {
    /// Reads the terms of a plain (unencrypted) trust request document.
    pub fn from_document(document: &Value) -> Self {
        let Some(document) = document.as_object() else {
            return Self::default();
        };
        RequestTerms {
            document_id: document.str("id").map(str::to_owned),
            expires_at: document
                .str("expiresAt")
                .and_then(|text| Timestamp::parse(text).ok()),
            privacy_type: document.str("privacyType").map(PrivacyType::from_wire),
        }
    }
}

/// The decision of a plain trust response document.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The new status.
    pub status: TrustStatus,
    /// Who decided.
    pub decided_by: String,
    /// When.
    pub decided_at: Timestamp,
    /// Trust end, if any.
    pub expires_at: Option<Timestamp>,
    /// No new request before, if any.
    pub retry_after_date: Option<Timestamp>,
    /// The fixed privacy type, if any.
    pub privacy_type: Option<PrivacyType>,
}

impl Decision {
    /// Reads a plain trust response document (validation already checked its fields).
    pub fn from_document(document: &Value) -> Option<Self> {
        let document = document.as_object()?;
        let timestamp = |key: &str| {
            document
                .str(key)
                .and_then(|text| Timestamp::parse(text).ok())
        };
        Some(Decision {
            status: TrustStatus::from_wire(document.str("decision")?),
            decided_by: document.str("decidedBy")?.to_owned(),
            decided_at: timestamp("decidedAt")?,
            expires_at: timestamp("expiresAt"),
            retry_after_date: timestamp("retryAfterDate"),
            privacy_type: document.str("privacyType").map(PrivacyType::from_wire),
        })
    }

    /// The patch applying this decision to a record (`spec/05-trust.md` §6.2).
    pub fn patch(&self) -> TrustPatch {
        TrustPatch {
            status: Some(self.status.clone()),
            decided_by: Some(self.decided_by.clone()),
            decided_at: Some(self.decided_at.clone()),
            expires_at: Some(self.expires_at.clone()),
            retry_after_date: Some(self.retry_after_date.clone()),
            privacy_type: self.privacy_type.clone(),
            ..TrustPatch::default()
        }
    }
}

fn cooled_off(now: &Timestamp, policy: &TrustPolicy) -> Option<Timestamp> {
    let millis = i64::try_from(policy.cooling_off.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millis(now.millis().saturating_add(millis)).ok()
}

fn request_metadata(existing: Option<&Object>, artifact_id: &str, terms: &RequestTerms) -> Object {
    let mut metadata = existing.cloned().unwrap_or_default();
    let mut request = Object::new();
    request.insert("artifactId", artifact_id);
    if let Some(document_id) = &terms.document_id {
        request.insert("documentId", document_id.as_str());
    }
    metadata.insert("request", request);
    metadata
}

/// A new pending record for an inbound TRUST_REQ (`spec/05-trust.md` §6.1).
pub fn new_request_record(
    sender: &str,
    receiver: &str,
    artifact_id: &str,
    terms: &RequestTerms,
    key: &VerifyingKey,
    now: &Timestamp,
    policy: &TrustPolicy,
) -> NewTrustRecord {
    let mut metadata = request_metadata(None, artifact_id, terms);
    if let Some(delegator) = &key.delegated_by {
        metadata.insert("delegatedBy", delegator.as_str());
    }
    NewTrustRecord {
        sender_id: sender.to_owned(),
        receiver_id: receiver.to_owned(),
        status: TrustStatus::Pending,
        created_at: now.clone(),
        decided_by: "system".to_owned(),
        decided_at: now.clone(),
        expires_at: terms.expires_at.clone(),
        public_key_base64: key.base64.clone(),
        public_key_fingerprint: key.fingerprint.clone(),
        key_history: Vec::new(),
        privacy_type: terms
            .privacy_type
            .clone()
            .unwrap_or_else(|| policy.default_privacy.clone()),
        retry_after_date: cooled_off(now, policy),
        metadata: Some(metadata),
    }
}

/// The patch renewing an existing record for an inbound TRUST_REQ (`spec/05-trust.md` §6.1).
pub fn renew_request_patch(
    record: &TrustRecord,
    artifact_id: &str,
    terms: &RequestTerms,
    key: &VerifyingKey,
    now: &Timestamp,
    policy: &TrustPolicy,
) -> TrustPatch {
    let mut patch = key_patch(record, key, now);
    let mut metadata = request_metadata(
        patch
            .metadata
            .as_ref()
            .and_then(Option::as_ref)
            .or(record.metadata.as_ref()),
        artifact_id,
        terms,
    );
    if let Some(delegator) = &key.delegated_by {
        metadata.insert("delegatedBy", delegator.as_str());
    }
    patch.status = Some(TrustStatus::Pending);
    patch.decided_by = Some("system".to_owned());
    patch.decided_at = Some(now.clone());
    patch.expires_at = Some(terms.expires_at.clone());
    patch.privacy_type = Some(
        terms
            .privacy_type
            .clone()
            .unwrap_or_else(|| policy.default_privacy.clone()),
    );
    patch.retry_after_date = Some(cooled_off(now, policy));
    patch.metadata = Some(Some(metadata));
    patch
}

/// Key tracking (`spec/05-trust.md` §7.2): when the verifying key differs from the
/// stored one, the old fingerprint moves to the history; an empty stored key is
/// simply filled in. Never a reason to refuse.
pub fn key_patch(record: &TrustRecord, key: &VerifyingKey, now: &Timestamp) -> TrustPatch {
    let mut patch = TrustPatch::default();
    if record.public_key_fingerprint == key.fingerprint {
        return patch;
    }
    if !record.public_key_fingerprint.is_empty() {
        let first_seen = record
            .key_history
            .last()
            .map(|entry| entry.last_seen.clone())
            .unwrap_or_else(|| record.created_at.clone());
        let mut history = record.key_history.clone();
        history.push(KeyHistoryEntry {
            fingerprint: record.public_key_fingerprint.clone(),
            first_seen,
            last_seen: now.clone(),
        });
        patch.key_history = Some(history);
    }
    patch.public_key_base64 = Some(key.base64.clone());
    patch.public_key_fingerprint = Some(key.fingerprint.clone());
    if let Some(delegator) = &key.delegated_by {
        let mut metadata = record.metadata.clone().unwrap_or_default();
        metadata.insert("delegatedBy", delegator.as_str());
        patch.metadata = Some(Some(metadata));
    }
    patch
}

/// Whether a patch changes anything.
pub fn is_empty(patch: &TrustPatch) -> bool {
    *patch == TrustPatch::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    fn record(status: TrustStatus) -> TrustRecord {
        let key = VerifyingKey {
            base64: "AAAA".into(),
            fingerprint: "fp1".into(),
            delegated_by: None,
        };
        let new = new_request_record(
            "a$b.c",
            "d$e.f",
            "x",
            &RequestTerms::default(),
            &key,
            &at("2025-01-01T00:00:00.000Z"),
            &TrustPolicy::default(),
        );
        let mut record = TrustRecord::from_new("id".into(), new);
        record.status = status;
        record.retry_after_date = None;
        record
    }

    #[test]
    fn trust_request_rules() {
        let now = at("2025-06-01T00:00:00.000Z");
        assert!(check_trust_request(None, &now).is_ok());
        assert_eq!(
            check_trust_request(Some(&record(TrustStatus::Accepted)), &now)
                .unwrap_err()
                .code,
            ErrorCode::TrustAlreadyActive
        );
        assert_eq!(
            check_trust_request(Some(&record(TrustStatus::Blocked)), &now)
                .unwrap_err()
                .code,
            ErrorCode::TrustBlocked
        );
        let mut rejected = record(TrustStatus::Rejected);
        assert!(check_trust_request(Some(&rejected), &now).is_ok());
        rejected.retry_after_date = Some(at("2025-07-01T00:00:00.000Z"));
        assert_eq!(
            check_trust_request(Some(&rejected), &now).unwrap_err().code,
            ErrorCode::TrustNotAllowed
        );
        let mut expired = record(TrustStatus::Accepted);
        expired.expires_at = Some(at("2025-05-01T00:00:00.000Z"));
        assert!(check_trust_request(Some(&expired), &now).is_ok());
    }

    #[test]
    fn trust_response_rules() {
        assert!(check_trust_response(Some(&record(TrustStatus::Pending)), "D$E.F").is_ok());
        assert!(check_trust_response(Some(&record(TrustStatus::Pending)), "x$e.f").is_err());
        assert!(check_trust_response(Some(&record(TrustStatus::Accepted)), "d$e.f").is_err());
        assert!(check_trust_response(None, "d$e.f").is_err());
    }

    #[test]
    fn documents_need_active_trust_and_respect_privacy() {
        let now = at("2025-06-01T00:00:00.000Z");
        let policy = TrustPolicy::default();
        assert_eq!(
            check_document(None, &now, false, &policy).unwrap_err().code,
            ErrorCode::TrustNonExistent
        );
        let mut accepted = record(TrustStatus::Accepted);
        assert!(check_document(Some(&accepted), &now, false, &policy).is_ok());
        accepted.privacy_type = PrivacyType::Encrypted;
        let error = check_document(Some(&accepted), &now, false, &policy).unwrap_err();
        assert_eq!(
            (error.code, error.reason()),
            (ErrorCode::Validation, Some("encryption required by trust"))
        );
        assert!(check_document(Some(&accepted), &now, true, &policy).is_ok());
    }

    #[test]
    fn key_changes_go_to_the_history() {
        let record = record(TrustStatus::Accepted);
        let now = at("2025-06-01T00:00:00.000Z");
        let same = VerifyingKey {
            base64: "AAAA".into(),
            fingerprint: "fp1".into(),
            delegated_by: None,
        };
        assert!(is_empty(&key_patch(&record, &same, &now)));
        let new = VerifyingKey {
            base64: "BBBB".into(),
            fingerprint: "fp2".into(),
            delegated_by: None,
        };
        let patch = key_patch(&record, &new, &now);
        let history = patch.key_history.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].fingerprint, "fp1");
        assert_eq!(history[0].first_seen, record.created_at);
        assert_eq!(patch.public_key_fingerprint.as_deref(), Some("fp2"));
    }
}
