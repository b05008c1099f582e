//! `[rate_limit]`: the built-in token-bucket rate limiter, one bucket per client IP
//! and one per sender.

use super::Config;
use super::loader::{Loader, Raw, Section};

/// One token bucket: a steady refill rate and a burst size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Tokens added per second.
    pub rate_per_second: f64,
    /// Most tokens held (the largest burst allowed after a quiet period).
    pub burst: u32,
}

/// The built-in rate limiter: one bucket per client IP and one per sender identity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimitSettings {
    /// Off by default, like the reference's optional middleware.
    pub enabled: bool,
    /// Before parsing, keyed by the client's IP address.
    pub per_ip: Bucket,
    /// After parsing, keyed by the sender (transporter `from`, agent id, lookup `from`).
    pub per_sender: Bucket,
}

impl RateLimitSettings {
    /// Off; 50 per second per IP and 30 per second per sender, bursts of as many.
    pub(super) fn defaults() -> Self {
        RateLimitSettings {
            enabled: false,
            per_ip: Bucket {
                rate_per_second: 50.0,
                burst: 50,
            },
            per_sender: Bucket {
                rate_per_second: 30.0,
                burst: 30,
            },
        }
    }
}

fn rate(raw: Raw) -> Result<f64, String> {
    let value = raw.float()?;
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("must be a number greater than 0, found {value}"))
    }
}

fn burst(raw: Raw) -> Result<u32, String> {
    let value = raw.unsigned()?;
    match u32::try_from(value) {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(burst) => Ok(burst),
        Err(_) => Err(format!("{value} is too large")),
    }
}

impl Loader<'_> {
    pub(super) fn rate_limit(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "rate_limit");
        let limits = &mut config.rate_limit;
        self.setting(
            &mut section,
            "enabled",
            Some("BTPS_RATE_LIMIT"),
            Raw::boolean,
            &mut limits.enabled,
        );
        let buckets = [
            (
                "per_ip",
                "BTPS_RATE_LIMIT_IP_RATE",
                "BTPS_RATE_LIMIT_IP_BURST",
                &mut limits.per_ip,
            ),
            (
                "per_sender",
                "BTPS_RATE_LIMIT_SENDER_RATE",
                "BTPS_RATE_LIMIT_SENDER_BURST",
                &mut limits.per_sender,
            ),
        ];
        for (key, rate_env, burst_env, bucket) in buckets {
            let mut table = self.table(&mut section, key);
            self.setting(
                &mut table,
                "rate_per_second",
                Some(rate_env),
                rate,
                &mut bucket.rate_per_second,
            );
            self.setting(
                &mut table,
                "burst",
                Some(burst_env),
                burst,
                &mut bucket.burst,
            );
            self.finish(table);
        }
        self.finish(section);
    }
}
