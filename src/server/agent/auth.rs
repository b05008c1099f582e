//! `auth.request` and `auth.refresh` (`spec/07-agents-auth.md` §6.3–§6.7), and the
//! limit on failed attempts.
//!
//! Enrollment consumes the one-time token, creates the agent's trust record and its
//! session in one transaction. A refresh checks the session's current refresh
//! token (hashed, compared exactly and in constant time), rotates the agent key when
//! the document carries a new one, extends the record and swaps the token, in one
//! transaction, so two refreshes racing with one token cannot both pass. A refresh
//! token the session already retired is taken for a stolen one: the session is
//! deleted and the agent's record revoked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::identity::compute_trust_id;
use crate::model::{AGENT_ID_PREFIX, enrollment_token_key, refresh_token_hash};
use crate::protocol::json::{Object, Value};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::server::middleware::too_many_requests;
use crate::server::pipeline::{Pipeline, Reply, internal};
use crate::server::trust::{VerifyingKey, key_patch};
use crate::store::{
    AgentSession, NewTrustRecord, Perspective, PrivacyType, Timestamp, TrustPatch, TrustRecord,
    TrustStatus,
};

use super::answer::Content;
use super::{Verified, documents, transact};

/// The alphabet of enrollment tokens: 32 characters without `I`, `O`, `0`, `1`.
pub const TOKEN_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// The smallest agent key accepted, in bits.
const MIN_AGENT_KEY_BITS: usize = 2048;

/// A new enrollment token of `length` characters, each drawn independently from
/// the system's CSPRNG (unbiased: 32 divides 256).
pub fn new_enrollment_token(length: usize) -> Result<String, ProtocolError> {
    let mut bytes = vec![0u8; length];
    fill_random(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|byte| char::from(TOKEN_ALPHABET[usize::from(byte % 32)]))
        .collect())
}

/// A new refresh token: 32 random bytes, base64url without padding.
pub fn new_refresh_token() -> Result<String, ProtocolError> {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn fill_random(bytes: &mut [u8]) -> Result<(), ProtocolError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(bytes)
        .map_err(|_| internal("the system's random generator failed"))
}

/// The refusal of a failed authentication: "Authentication failed", the precise
/// cause in `status.reason`.
fn failed(reason: &'static str) -> ProtocolError {
    ProtocolError::new(ErrorCode::AuthenticationInvalid, reason).with_reason(reason)
}

fn later(now: &Timestamp, by: Duration) -> Result<Timestamp, ProtocolError> {
    let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millis(now.millis().saturating_add(millis)).map_err(internal)
}

/// The `agentInfo` metadata: the document's, else the record's, else `{}`; other
/// metadata keys are kept (the reference drops them).
fn metadata_with(existing: Option<&Object>, info: Option<&Object>) -> Object {
    let mut metadata = existing.cloned().unwrap_or_default();
    let info = info
        .cloned()
        .or_else(|| {
            metadata
                .get("agentInfo")
                .and_then(Value::as_object)
                .cloned()
        })
        .unwrap_or_default();
    metadata.insert("agentInfo", info);
    metadata
}

/// The auth response document (§6.4).
fn auth_response(agent_id: &str, refresh: &str, record: &TrustRecord, decrypt_by: &str) -> Value {
    let mut document = Object::new();
    document.insert("agentId", agent_id);
    document.insert("refreshToken", refresh);
    document.insert(
        "expiresAt",
        record
            .expires_at
            .as_ref()
            .map_or_else(String::new, |at| at.as_str().to_owned()),
    );
    document.insert("decryptBy", decrypt_by);
    Value::Object(document)
}

impl Pipeline {
    /// `auth.request`: enrollment with a one-time token (§6.3, §6.7).
    pub(super) async fn auth_request(
        &self,
        verified: &Verified<'_>,
    ) -> Result<Reply, ProtocolError> {
        let document = documents::auth(verified.document())?;
        let owner = verified.owner.clone();
        if !document.identity.eq_ignore_case(&owner) {
            // The reference enrolls document.identity with a token of `to`.
            return Err(failed("document.identity is not the artifact's to"));
        }
        if verified.key.bits() < MIN_AGENT_KEY_BITS {
            return Err(ProtocolError::validation(format!(
                "the agent key has {} bits, at least {MIN_AGENT_KEY_BITS} are required",
                verified.key.bits()
            ))
            .with_reason("agent key too short"));
        }
        let now = Timestamp::now();
        let expires_at = later(&now, self.agents.policy.refresh_ttl)?;
        let token_key = enrollment_token_key(owner.as_str(), &document.token);
        let agent_id = format!("{AGENT_ID_PREFIX}{}", uuid::Uuid::new_v4());
        let refresh = new_refresh_token()?;
        let record = NewTrustRecord {
            sender_id: agent_id.clone(),
            receiver_id: owner.as_str().to_owned(),
            status: TrustStatus::Accepted,
            created_at: now.clone(),
            decided_by: String::new(),
            decided_at: now.clone(),
            expires_at: Some(expires_at.clone()),
            public_key_base64: verified.key.to_base64(),
            public_key_fingerprint: verified.key.fingerprint().to_owned(),
            key_history: Vec::new(),
            privacy_type: PrivacyType::Encrypted,
            retry_after_date: None,
            metadata: Some(metadata_with(None, document.agent_info.as_ref())),
        };
        let session = AgentSession {
            agent_id: agent_id.clone(),
            owner: owner.as_str().to_owned(),
            created_at: now.clone(),
            refresh_hash: refresh_token_hash(&refresh),
            refresh_expires_at: expires_at,
            decrypt_by: String::new(),
            agent_info: document.agent_info.clone(),
            last_refresh_at: None,
            retired: Vec::new(),
        };
        let scope = owner.as_str().to_owned();
        let (record, decrypt_by) = transact(&self.storage, &scope, move |transaction| {
            let Some(token) = transaction.enrollment_token(&token_key)? else {
                return Ok(Err(failed("unknown enrollment token")));
            };
            if token.identity.to_lowercase() != owner.as_str().to_lowercase() {
                return Ok(Err(failed("enrollment token of another identity")));
            }
            // Single use: spent whatever follows (an expired one is the sweep's
            // work done early).
            transaction.delete_enrollment_token(&token_key)?;
            if !token.is_valid_at(now.millis()) {
                return Ok(Err(failed("enrollment token expired")));
            }
            let mut record = record.clone();
            record.decided_by = token.decrypt_by.clone();
            let created = transaction.create_trust(Perspective::Inbound, record)?;
            let mut session = session.clone();
            session.decrypt_by = token.decrypt_by.clone();
            transaction.put_session(&session)?;
            Ok(Ok((created, token.decrypt_by)))
        })
        .await?;
        tracing::info!(agent = %agent_id, owner = %verified.owner, "agent enrolled");
        let document = auth_response(&agent_id, &refresh, &record, &decrypt_by);
        self.agent_answer(
            verified,
            "Authentication successful",
            document,
            Content::Plain,
        )
    }

    /// `auth.refresh`: a new refresh token, a longer life, maybe a new key (§6.5).
    pub(super) async fn auth_refresh(
        &self,
        verified: &Verified<'_>,
    ) -> Result<Reply, ProtocolError> {
        let document = documents::auth(verified.document())?;
        let owner = verified.owner.clone();
        if !document.identity.eq_ignore_case(&owner) {
            return Err(failed("document.identity is not the artifact's to"));
        }
        let agent_id = verified.artifact.agent_id.clone();
        let presented = refresh_token_hash(&document.token);
        let now = Timestamp::now();
        let expires_at = later(&now, self.agents.policy.refresh_ttl)?;
        let refresh = new_refresh_token()?;
        let key = VerifyingKey {
            base64: verified.key.to_base64(),
            fingerprint: verified.key.fingerprint().to_owned(),
            delegated_by: None,
        };
        let info = document.agent_info.clone();
        let trust_id = compute_trust_id(&agent_id, owner.as_str());
        let new_hash = refresh_token_hash(&refresh);
        let scope = owner.as_str().to_owned();
        let outcome = transact(&self.storage, &scope, move |transaction| {
            let Some(mut session) = transaction.session(&agent_id)? else {
                return Ok(Err(failed("no session for this agent")));
            };
            if session.owner.to_lowercase() != owner.as_str().to_lowercase() {
                return Ok(Err(failed("the session belongs to another identity")));
            }
            if !session.is_current(&presented) {
                if !session.is_retired(&presented) {
                    return Ok(Err(failed("unknown refresh token")));
                }
                // A retired token again: someone else holds the session.
                transaction.delete_session(&agent_id)?;
                if transaction
                    .trust(Perspective::Inbound, &trust_id)?
                    .is_some()
                {
                    transaction.update_trust(
                        Perspective::Inbound,
                        &trust_id,
                        TrustPatch {
                            status: Some(TrustStatus::Revoked),
                            decided_by: Some(String::from("system")),
                            decided_at: Some(now.clone()),
                            ..TrustPatch::default()
                        },
                    )?;
                }
                return Ok(Err(failed("refresh token reused: the session is revoked")));
            }
            if session.refresh_expires_at.millis() < now.millis() {
                return Ok(Err(failed("refresh token expired")));
            }
            let Some(record) = transaction.trust(Perspective::Inbound, &trust_id)? else {
                return Ok(Err(failed("the agent has no trust record")));
            };
            if record.status != TrustStatus::Accepted || !record.is_active_at(now.millis()) {
                // The reference would re-accept a revoked agent here.
                return Ok(Err(failed("the agent is not active")));
            }
            let mut patch = key_patch(&record, &key, &now);
            patch.status = Some(TrustStatus::Accepted);
            patch.decided_by = Some(session.decrypt_by.clone());
            patch.decided_at = Some(now.clone());
            patch.expires_at = Some(Some(expires_at.clone()));
            patch.metadata = Some(Some(metadata_with(record.metadata.as_ref(), info.as_ref())));
            let updated = transaction.update_trust(Perspective::Inbound, &trust_id, patch)?;
            session.rotate(new_hash, expires_at.clone(), now.clone());
            if info.is_some() {
                session.agent_info.clone_from(&info);
            }
            transaction.put_session(&session)?;
            Ok(Ok((updated, session.decrypt_by)))
        })
        .await;
        let (record, decrypt_by) = outcome?;
        let document = auth_response(&verified.artifact.agent_id, &refresh, &record, &decrypt_by);
        self.agent_answer(
            verified,
            "Refresh Auth Session Successful",
            document,
            Content::Plain,
        )
    }
}

/// Failed authentication attempts per client address and per identity: each failure
/// takes one from an allowance of `burst` that refills at `per_minute`; with none
/// left, attempts are refused (429) before anything is checked.
pub(super) struct AuthFailures {
    burst: f64,
    per_second: f64,
    allowances: Mutex<HashMap<String, (f64, Instant)>>,
}

/// How many keys are tracked before refilled ones are forgotten.
const MAX_TRACKED: usize = 100_000;

impl AuthFailures {
    pub(super) fn new(burst: u32, per_minute: u32) -> Self {
        AuthFailures {
            burst: f64::from(burst),
            per_second: f64::from(per_minute) / 60.0,
            allowances: Mutex::new(HashMap::new()),
        }
    }

    fn keys(ip: IpAddr, identity: &str) -> [String; 2] {
        [
            format!("ip {ip}"),
            format!("identity {}", identity.to_lowercase()),
        ]
    }

    /// What is left of `allowance` at `now`.
    fn refilled(&self, (left, at): (f64, Instant), now: Instant) -> f64 {
        (left + now.duration_since(at).as_secs_f64() * self.per_second).min(self.burst)
    }

    /// Refuses when the address or the identity has no failed attempt left.
    pub(super) fn check(&self, ip: IpAddr, identity: &str) -> Result<(), ProtocolError> {
        if self.burst <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let allowances = self
            .allowances
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in Self::keys(ip, identity) {
            if let Some(&allowance) = allowances.get(&key)
                && self.refilled(allowance, now) < 1.0
            {
                return Err(too_many_requests(format!(
                    "too many failed authentication attempts ({key})"
                )));
            }
        }
        Ok(())
    }

    /// Counts one failed attempt against the address and the identity.
    pub(super) fn failed(&self, ip: IpAddr, identity: &str) {
        if self.burst <= 0.0 {
            return;
        }
        let now = Instant::now();
        let mut allowances = self
            .allowances
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if allowances.len() >= MAX_TRACKED {
            let burst = self.burst;
            allowances.retain(|_, allowance| self.refilled(*allowance, now) < burst);
            if allowances.len() >= MAX_TRACKED {
                allowances.clear();
            }
        }
        for key in Self::keys(ip, identity) {
            let left = allowances
                .get(&key)
                .map_or(self.burst, |&allowance| self.refilled(allowance, now));
            allowances.insert(key, ((left - 1.0).max(0.0), now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_use_the_alphabet_and_the_length_asked() {
        for length in [8, 12, 24] {
            let token = new_enrollment_token(length).unwrap();
            assert_eq!(token.len(), length);
            assert!(token.bytes().all(|byte| TOKEN_ALPHABET.contains(&byte)));
        }
        let refresh = new_refresh_token().unwrap();
        assert_eq!(refresh.len(), 43);
        assert_ne!(refresh, new_refresh_token().unwrap());
    }

    #[test]
    fn failures_are_limited_per_address_and_identity() {
        let failures = AuthFailures::new(3, 0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            failures.check(ip, "a$b.c").unwrap();
            failures.failed(ip, "a$b.c");
        }
        assert!(failures.check(ip, "a$b.c").is_err());
        // Another address for the same identity is refused too; another identity
        // from another address is not.
        assert!(
            failures
                .check("192.0.2.2".parse().unwrap(), "A$B.c")
                .is_err()
        );
        failures
            .check("192.0.2.2".parse().unwrap(), "x$b.c")
            .unwrap();
        // Burst 0: no limit.
        let off = AuthFailures::new(0, 0);
        off.failed(ip, "a$b.c");
        off.check(ip, "a$b.c").unwrap();
    }
}
