//! `[trust]`: trust policy defaults: the cooling-off period of a pending trust
//! record, its default privacy type, whether that privacy is enforced, and how far
//! an artifact's `issuedAt` may be from the clock.

use std::time::Duration;

use super::Config;
use super::loader::{Loader, Raw, Section};
use crate::store::PrivacyType;

/// Trust policy defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustSettings {
    /// `retryAfterDate` of a new pending trust record is now plus this.
    pub cooling_off: Duration,
    /// `privacyType` of a trust record when neither request nor response names one.
    pub default_privacy: PrivacyType,
    /// Whether a document under an `encrypted` trust must arrive encrypted.
    pub enforce_privacy: bool,
    /// How far in the future `issuedAt` may lie; `None` (0 in the file): no limit.
    pub max_future_skew: Option<Duration>,
    /// How far in the past `issuedAt` may lie; `None` (0 in the file, the default):
    /// no limit.
    pub max_age: Option<Duration>,
}

impl TrustSettings {
    /// A day of cooling off, `mixed` privacy, enforced.
    pub(super) fn defaults() -> Self {
        TrustSettings {
            cooling_off: Duration::from_secs(24 * 60 * 60),
            default_privacy: PrivacyType::Mixed,
            enforce_privacy: true,
            max_future_skew: Some(Duration::from_secs(60 * 60)),
            max_age: None,
        }
    }
}

/// Milliseconds, `0` meaning "no limit".
fn limit_ms(raw: Raw) -> Result<Option<Duration>, String> {
    let millis = raw.unsigned()?;
    Ok((millis > 0).then(|| Duration::from_millis(millis)))
}

impl Loader<'_> {
    pub(super) fn trust(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "trust");
        let trust = &mut config.trust;
        self.setting(
            &mut section,
            "cooling_off_ms",
            Some("BTPS_TRUST_COOLING_OFF_MS"),
            |raw| raw.unsigned().map(Duration::from_millis),
            &mut trust.cooling_off,
        );
        self.setting(
            &mut section,
            "default_privacy",
            Some("BTPS_TRUST_DEFAULT_PRIVACY"),
            |raw| match raw.text()?.as_str() {
                "unencrypted" => Ok(PrivacyType::Unencrypted),
                "encrypted" => Ok(PrivacyType::Encrypted),
                "mixed" => Ok(PrivacyType::Mixed),
                other => Err(format!(
                    "expected \"unencrypted\", \"encrypted\" or \"mixed\", found {other:?}"
                )),
            },
            &mut trust.default_privacy,
        );
        self.setting(
            &mut section,
            "enforce_privacy",
            Some("BTPS_TRUST_ENFORCE_PRIVACY"),
            Raw::boolean,
            &mut trust.enforce_privacy,
        );
        self.setting(
            &mut section,
            "max_future_skew_ms",
            Some("BTPS_MAX_FUTURE_SKEW_MS"),
            limit_ms,
            &mut trust.max_future_skew,
        );
        self.setting(
            &mut section,
            "max_age_ms",
            Some("BTPS_MAX_AGE_MS"),
            limit_ms,
            &mut trust.max_age,
        );
        self.finish(section);
    }
}
