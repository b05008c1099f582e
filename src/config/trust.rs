//! `[trust]`: trust policy defaults: the cooling-off period of a pending trust
//! record, its default privacy type, and whether that privacy is enforced.

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
}

impl TrustSettings {
    /// A day of cooling off, `mixed` privacy, enforced.
    pub(super) fn defaults() -> Self {
        TrustSettings {
            cooling_off: Duration::from_secs(24 * 60 * 60),
            default_privacy: PrivacyType::Mixed,
            enforce_privacy: true,
        }
    }
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
        self.finish(section);
    }
}
