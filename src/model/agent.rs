//! Domain types of agents (`07-agents-auth.md` §6.7): the one-time enrollment tokens
//! an operator issues for a hosted identity, and the session each enrolled agent
//! keeps (its owner and the hash of its current refresh token).
//!
//! Neither secret is ever stored: a token is kept under the SHA-256 of its lookup key
//! ([`enrollment_token_key`]), a refresh token as its SHA-256 ([`refresh_token_hash`]).

use super::record::Timestamp;
use crate::protocol::json::Object;

/// How many retired refresh-token hashes a session keeps to detect reuse.
pub const RETIRED_REFRESH_TOKENS: usize = 8;

/// The store key of an enrollment token: SHA-256 of `lower(identity) + ":" +
/// upper(token)` (`07-agents-auth.md` §6.7). Tokens are upper-case by design, so the
/// comparison ignores their case; the identity is compared ignoring case as everywhere.
pub fn enrollment_token_key(identity: &str, token: &str) -> [u8; 32] {
    let text = format!("{}:{}", identity.to_lowercase(), token.to_uppercase());
    sha256(text.as_bytes())
}

/// The stored form of a refresh token: the SHA-256 of its exact bytes (compared
/// exactly, unlike the reference's case-insensitive comparison).
pub fn refresh_token_hash(token: &str) -> [u8; 32] {
    sha256(token.as_bytes())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A one-time enrollment token, as stored (the token itself is not).
#[derive(Clone, Debug, PartialEq)]
pub struct EnrollmentToken {
    /// The hosted identity the token enrolls an agent for, as issued.
    pub identity: String,
    /// When it was issued.
    pub created_at: Timestamp,
    /// After this instant it is refused (and swept).
    pub expires_at: Timestamp,
    /// The identity whose key the server decrypts agent documents with.
    pub decrypt_by: String,
    /// Who issued it (the operator, as the command line names it).
    pub issued_by: String,
    /// Free metadata (purpose, requester).
    pub metadata: Option<Object>,
}

impl EnrollmentToken {
    /// Whether the token may still be used at `now_millis`.
    pub fn is_valid_at(&self, now_millis: i64) -> bool {
        self.expires_at.millis() >= now_millis
    }
}

/// An enrolled agent's session (`07-agents-auth.md` §6.7), keyed by its agent id.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSession {
    /// `btps_ag_<uuid>`.
    pub agent_id: String,
    /// The hosted identity the agent acts for, as enrolled.
    pub owner: String,
    /// When the agent enrolled.
    pub created_at: Timestamp,
    /// SHA-256 of the current refresh token.
    pub refresh_hash: [u8; 32],
    /// When the current refresh token expires.
    pub refresh_expires_at: Timestamp,
    /// The identity whose key the server decrypts this agent's documents with.
    pub decrypt_by: String,
    /// What the agent said about itself at enrollment or its last refresh.
    pub agent_info: Option<Object>,
    /// When it last refreshed.
    pub last_refresh_at: Option<Timestamp>,
    /// Hashes of refresh tokens it used before, newest last, at most
    /// [`RETIRED_REFRESH_TOKENS`]: presenting one of them again is treated as theft.
    pub retired: Vec<[u8; 32]>,
}

impl AgentSession {
    /// Replaces the refresh token: the current hash is retired (keeping the newest
    /// [`RETIRED_REFRESH_TOKENS`]) and `hash` becomes current until `expires_at`.
    pub fn rotate(&mut self, hash: [u8; 32], expires_at: Timestamp, now: Timestamp) {
        self.retired.push(self.refresh_hash);
        if self.retired.len() > RETIRED_REFRESH_TOKENS {
            let excess = self.retired.len() - RETIRED_REFRESH_TOKENS;
            self.retired.drain(..excess);
        }
        self.refresh_hash = hash;
        self.refresh_expires_at = expires_at;
        self.last_refresh_at = Some(now);
    }

    /// Whether `hash` is a refresh token this session used before.
    pub fn is_retired(&self, hash: &[u8; 32]) -> bool {
        self.retired
            .iter()
            .any(|retired| constant_time_eq(retired, hash))
    }

    /// Whether `hash` is the current refresh token (compared in constant time).
    pub fn is_current(&self, hash: &[u8; 32]) -> bool {
        constant_time_eq(&self.refresh_hash, hash)
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

/// Whether `agent_id` has the form the server gives agents: `btps_ag_` and a UUID.
pub fn is_agent_id(agent_id: &str) -> bool {
    agent_id
        .strip_prefix(AGENT_ID_PREFIX)
        .is_some_and(|rest| uuid::Uuid::parse_str(rest).is_ok() && rest.len() == 36)
}

/// The prefix of every agent id.
pub const AGENT_ID_PREFIX: &str = "btps_ag_";

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> AgentSession {
        AgentSession {
            agent_id: String::from("btps_ag_11111111-2222-4333-8444-555555555555"),
            owner: String::from("a$b.test"),
            created_at: Timestamp::now(),
            refresh_hash: refresh_token_hash("first"),
            refresh_expires_at: Timestamp::now(),
            decrypt_by: String::from("admin$b.test"),
            agent_info: None,
            last_refresh_at: None,
            retired: Vec::new(),
        }
    }

    #[test]
    fn rotation_retires_the_current_token_and_keeps_a_bounded_history() {
        let mut session = session();
        session.rotate(
            refresh_token_hash("second"),
            Timestamp::now(),
            Timestamp::now(),
        );
        assert!(session.is_current(&refresh_token_hash("second")));
        assert!(session.is_retired(&refresh_token_hash("first")));
        assert!(!session.is_current(&refresh_token_hash("first")));
        for round in 0..20 {
            session.rotate(
                refresh_token_hash(&format!("t{round}")),
                Timestamp::now(),
                Timestamp::now(),
            );
        }
        assert_eq!(session.retired.len(), RETIRED_REFRESH_TOKENS);
        assert!(!session.is_retired(&refresh_token_hash("first")));
        assert!(session.is_retired(&refresh_token_hash("t18")));
    }

    #[test]
    fn token_keys_ignore_case_where_the_spec_says_so() {
        assert_eq!(
            enrollment_token_key("Alice$Saas.test", "abcd2345"),
            enrollment_token_key("alice$saas.test", "ABCD2345")
        );
        assert_ne!(
            enrollment_token_key("alice$saas.test", "ABCD2345"),
            enrollment_token_key("bob$saas.test", "ABCD2345")
        );
        // Refresh tokens are compared exactly.
        assert_ne!(refresh_token_hash("aB"), refresh_token_hash("Ab"));
    }

    #[test]
    fn agent_ids_have_the_server_form() {
        assert!(is_agent_id("btps_ag_11111111-2222-4333-8444-555555555555"));
        assert!(!is_agent_id("btps_ag_x"));
        assert!(!is_agent_id("temp"));
        assert!(!is_agent_id("billing$vendor.test"));
    }
}
