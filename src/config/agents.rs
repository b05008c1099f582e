//! `[agents]`: enrollment tokens, refresh tokens and the agent actions
//! (`07-agents-auth.md` §6.7, `docs/agents.md`).

use std::time::Duration;

use super::Config;
use super::loader::{Loader, Raw, Section, positive_ms};

/// The shortest and longest enrollment token (`07-agents-auth.md` §6.2).
pub const TOKEN_LENGTHS: std::ops::RangeInclusive<usize> = 8..=24;

/// How agents enroll, refresh and act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSettings {
    /// How long an enrollment token stays valid.
    pub enrollment_ttl: Duration,
    /// Characters of a generated enrollment token (8 to 24).
    pub token_length: usize,
    /// How long a refresh token, and the agent's trust record, stay valid; both
    /// are renewed at every refresh.
    pub refresh_ttl: Duration,
    /// Encrypt query results to the agent's key and sign the answer
    /// (`07-agents-auth.md` §6.8); off by default, like the reference.
    pub encrypt_answers: bool,
    /// Failed `auth.request` / `auth.refresh` attempts allowed per client address
    /// and per identity before further attempts are refused for a while.
    pub auth_failures_burst: u32,
    /// How many failed attempts the allowance regains per minute.
    pub auth_failures_per_minute: u32,
    /// `artifact.send` needs an accepted requesting-side trust record
    /// (`07-agents-auth.md` §10 Q6); off, the delivery attempt decides.
    pub require_outbound_trust: bool,
    /// How often expired tokens and sessions are removed.
    pub sweep_interval: Duration,
    /// How long an expired agent trust record is kept before the sweep removes it.
    pub expired_record_grace: Duration,
}

impl AgentSettings {
    /// 15-minute, 12-character enrollment tokens; 7-day refresh tokens.
    pub(super) fn defaults() -> Self {
        AgentSettings {
            enrollment_ttl: Duration::from_secs(15 * 60),
            token_length: 12,
            refresh_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            encrypt_answers: false,
            auth_failures_burst: 10,
            auth_failures_per_minute: 2,
            require_outbound_trust: true,
            sweep_interval: Duration::from_secs(5 * 60),
            expired_record_grace: Duration::from_secs(30 * 24 * 60 * 60),
        }
    }
}

fn token_length(raw: Raw) -> Result<usize, String> {
    let value = raw.unsigned()?;
    usize::try_from(value)
        .ok()
        .filter(|length| TOKEN_LENGTHS.contains(length))
        .ok_or_else(|| {
            format!(
                "expected {} to {} characters, found {value}",
                TOKEN_LENGTHS.start(),
                TOKEN_LENGTHS.end()
            )
        })
}

fn count(raw: Raw) -> Result<u32, String> {
    let value = raw.unsigned()?;
    u32::try_from(value).map_err(|_| format!("{value} is too large"))
}

impl Loader<'_> {
    pub(super) fn agents(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "agents");
        let agents = &mut config.agents;
        self.setting(
            &mut section,
            "enrollment_ttl_ms",
            Some("BTPS_AGENT_ENROLLMENT_TTL_MS"),
            positive_ms,
            &mut agents.enrollment_ttl,
        );
        self.setting(
            &mut section,
            "token_length",
            Some("BTPS_AGENT_TOKEN_LENGTH"),
            token_length,
            &mut agents.token_length,
        );
        self.setting(
            &mut section,
            "refresh_ttl_ms",
            Some("BTPS_AGENT_REFRESH_TTL_MS"),
            positive_ms,
            &mut agents.refresh_ttl,
        );
        self.setting(
            &mut section,
            "encrypt_answers",
            Some("BTPS_AGENT_ENCRYPT_ANSWERS"),
            Raw::boolean,
            &mut agents.encrypt_answers,
        );
        self.setting(
            &mut section,
            "auth_failures_burst",
            Some("BTPS_AGENT_AUTH_FAILURES_BURST"),
            count,
            &mut agents.auth_failures_burst,
        );
        self.setting(
            &mut section,
            "auth_failures_per_minute",
            Some("BTPS_AGENT_AUTH_FAILURES_PER_MINUTE"),
            count,
            &mut agents.auth_failures_per_minute,
        );
        self.setting(
            &mut section,
            "require_outbound_trust",
            Some("BTPS_AGENT_REQUIRE_OUTBOUND_TRUST"),
            Raw::boolean,
            &mut agents.require_outbound_trust,
        );
        self.setting(
            &mut section,
            "sweep_interval_ms",
            Some("BTPS_AGENT_SWEEP_INTERVAL_MS"),
            positive_ms,
            &mut agents.sweep_interval,
        );
        self.setting(
            &mut section,
            "expired_record_grace_ms",
            Some("BTPS_AGENT_EXPIRED_RECORD_GRACE_MS"),
            |raw| raw.unsigned().map(Duration::from_millis),
            &mut agents.expired_record_grace,
        );
        self.finish(section);
    }
}
