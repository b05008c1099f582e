//! Clock sanity: an artifact's `issuedAt` compared with the server's clock.
//!
//! The reference compares no `issuedAt` with the clock (`spec/01-wire.md` §4). The
//! appliance refuses what no honest sender produces: a date more than
//! [`ClockPolicy::max_future_skew`] ahead of its clock (one hour by default: clocks
//! drift, years do not), and a date before [`EARLIEST_ISSUED_AT`] (2000-01-01, long
//! before BTPS existed: a zeroed clock or a forged artifact). A maximum age is
//! available but off by default, because a queued delivery legitimately resends the
//! same signed bytes days later. The artifact's own `issuedAt` is checked (a
//! delegation is long-lived and keeps its own date); the refusal is
//! `BTPS artifact validation failed` with a precise `status.reason`.
//!
//! The check runs in the server, after parsing; the protocol module stays pure.

use std::time::Duration;

use crate::protocol::formats::datetime_millis;
use crate::protocol::{Artifact, ProtocolError};

/// The earliest `issuedAt` accepted: 2000-01-01T00:00:00Z.
pub const EARLIEST_ISSUED_AT: &str = "2000-01-01T00:00:00.000Z";
/// [`EARLIEST_ISSUED_AT`] in milliseconds since the Unix epoch.
const EARLIEST_MILLIS: i64 = 946_684_800_000;

/// How far an artifact's `issuedAt` may be from the server's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockPolicy {
    /// How far in the future `issuedAt` may lie; `None` accepts any future date.
    pub max_future_skew: Option<Duration>,
    /// How far in the past `issuedAt` may lie; `None` (the default) accepts any
    /// date from [`EARLIEST_ISSUED_AT`] on.
    pub max_age: Option<Duration>,
}

impl Default for ClockPolicy {
    /// One hour of future skew, no maximum age.
    fn default() -> Self {
        ClockPolicy {
            max_future_skew: Some(Duration::from_secs(60 * 60)),
            max_age: None,
        }
    }
}

impl ClockPolicy {
    /// Checks the `issuedAt` of `artifact` against `now` (milliseconds since the
    /// epoch).
    pub fn check(&self, artifact: &Artifact, now: i64) -> Result<(), ProtocolError> {
        self.check_issued_at(issued_at(artifact), now)
    }

    /// Checks one `issuedAt` text (already validated as a datetime) against `now`.
    pub fn check_issued_at(&self, issued_at: &str, now: i64) -> Result<(), ProtocolError> {
        let refused = |reason: &'static str, detail: String| {
            Err(ProtocolError::validation(detail).with_reason(reason))
        };
        let Some(issued) = datetime_millis(issued_at) else {
            return refused(
                "issuedAt is not a datetime",
                format!("issuedAt {issued_at:?} is not a datetime"),
            );
        };
        if issued < EARLIEST_MILLIS {
            return refused(
                "issuedAt before 2000",
                format!("issuedAt {issued_at} is before {EARLIEST_ISSUED_AT}"),
            );
        }
        if let Some(skew) = self.max_future_skew
            && issued > now.saturating_add(millis(skew))
        {
            return refused(
                "issuedAt in the future",
                format!(
                    "issuedAt {issued_at} is {} ms ahead of the server's clock (at most {} ms allowed)",
                    issued - now,
                    skew.as_millis()
                ),
            );
        }
        if let Some(age) = self.max_age
            && issued < now.saturating_sub(millis(age))
        {
            return refused(
                "issuedAt too old",
                format!(
                    "issuedAt {issued_at} is {} ms old (at most {} ms allowed)",
                    now - issued,
                    age.as_millis()
                ),
            );
        }
        Ok(())
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The artifact's own `issuedAt`.
fn issued_at(artifact: &Artifact) -> &str {
    match artifact {
        Artifact::Transporter(transporter) => &transporter.issued_at,
        Artifact::Agent(agent) => &agent.issued_at,
        Artifact::IdentityLookup(lookup) => &lookup.issued_at,
        Artifact::Control(control) => &control.issued_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-06-01T12:00:00.000Z";

    fn check(policy: ClockPolicy, issued_at: &str) -> Result<(), Option<String>> {
        let now = datetime_millis(NOW).unwrap_or_default();
        policy
            .check_issued_at(issued_at, now)
            .map_err(|error| error.reason().map(str::to_owned))
    }

    #[test]
    fn the_default_refuses_the_far_future_and_the_last_century() {
        let policy = ClockPolicy::default();
        assert_eq!(check(policy, NOW), Ok(()));
        assert_eq!(check(policy, "2026-06-01T12:59:59.999Z"), Ok(()));
        assert_eq!(check(policy, "2000-01-01T00:00Z"), Ok(()));
        let future = Err(Some("issuedAt in the future".to_owned()));
        assert_eq!(check(policy, "2026-06-01T13:00:00.001Z"), future);
        assert_eq!(check(policy, "9999-12-31T23:59:59.999Z"), future);
        let early = Err(Some("issuedAt before 2000".to_owned()));
        assert_eq!(check(policy, "1970-01-01T00:00:00.000Z"), early);
        assert_eq!(check(policy, "1999-12-31T23:59:59.999Z"), early);
    }

    #[test]
    fn a_maximum_age_and_no_skew_limit() {
        let policy = ClockPolicy {
            max_future_skew: None,
            max_age: Some(Duration::from_secs(24 * 60 * 60)),
        };
        assert_eq!(check(policy, "9999-12-31T23:59:59.999Z"), Ok(()));
        assert_eq!(check(policy, "2026-05-31T12:00:00.000Z"), Ok(()));
        assert_eq!(
            check(policy, "2026-05-31T11:59:59.999Z"),
            Err(Some("issuedAt too old".to_owned()))
        );
        let error = policy
            .check_issued_at("2026-05-30T12:00:00Z", datetime_millis(NOW).unwrap_or(0))
            .unwrap_err();
        assert_eq!(error.code, crate::protocol::ErrorCode::Validation);
        assert_eq!(error.wire_message(), "BTPS artifact validation failed");
    }
}
