//! `[delivery]`: the outbound delivery worker (`08-delivery.md` §2.2, §5): whether it
//! runs, its retry schedule, the extra CA it trusts, its connection limits and
//! timeouts.

use std::path::PathBuf;
use std::time::Duration;

use super::Config;
use super::loader::{Loader, Raw, Section, path, positive_ms, positive_usize};

/// The outbound delivery worker's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Whether `btps serve` delivers its outbox (queueing works either way).
    pub enabled: bool,
    /// Delay before each retry after a transient failure (the n-th retry waits the
    /// n-th delay, ±10 % jitter); when it is used up the entry fails.
    pub retry_schedule: Vec<Duration>,
    /// PEM bundle of CAs trusted beside the system roots (private deployments).
    pub ca_file: Option<PathBuf>,
    /// Connections per receiving host.
    pub connections_per_host: usize,
    /// Delivery attempts in flight at once, over all hosts.
    pub max_in_flight: usize,
    /// How long to wait for the receiver's answer line.
    pub response_timeout: Duration,
    /// How long to wait for TCP connect and TLS handshake.
    pub connect_timeout: Duration,
    /// After how long in the outbox an entry gets a delay notice in its owner's
    /// inbox (once); `None`: never.
    pub delay_notice_after: Option<Duration>,
}

impl DeliverySettings {
    /// On; 1, 2, 4, 8 and 16 minutes; 2 connections per host, 64 in flight, 30 s
    /// for an answer, 10 s to connect, a delay notice after 4 hours.
    pub(super) fn defaults() -> Self {
        DeliverySettings {
            enabled: true,
            retry_schedule: [1, 2, 4, 8, 16]
                .into_iter()
                .map(|minutes| Duration::from_secs(minutes * 60))
                .collect(),
            ca_file: None,
            connections_per_host: 2,
            max_in_flight: 64,
            response_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            delay_notice_after: Some(Duration::from_secs(4 * 60 * 60)),
        }
    }
}

/// A list of millisecond delays: a TOML array of integers, or comma-separated in
/// the environment. An empty list means: no retry.
fn schedule(raw: Raw) -> Result<Vec<Duration>, String> {
    let items: Vec<String> = match raw {
        Raw::Toml(toml::Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                toml::Value::Integer(value) if value >= 0 => Ok(value.to_string()),
                toml::Value::Integer(value) => Err(format!(
                    "expected a list of non-negative integers (milliseconds), found {value}"
                )),
                other => Err(format!(
                    "expected a list of integers (milliseconds), found an element of type {}",
                    other.type_str()
                )),
            })
            .collect::<Result<_, _>>()?,
        other => other.list()?,
    };
    items
        .iter()
        .map(|item| {
            item.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{item:?} is not a number of milliseconds"))
        })
        .collect()
}

impl Loader<'_> {
    pub(super) fn delivery(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "delivery");
        let delivery = &mut config.delivery;
        self.setting(
            &mut section,
            "enabled",
            Some("BTPS_DELIVERY_ENABLED"),
            Raw::boolean,
            &mut delivery.enabled,
        );
        self.setting(
            &mut section,
            "retry_schedule_ms",
            Some("BTPS_DELIVERY_RETRY_SCHEDULE_MS"),
            schedule,
            &mut delivery.retry_schedule,
        );
        self.optional(
            &mut section,
            "ca_file",
            Some("BTPS_DELIVERY_CA_FILE"),
            path,
            &mut delivery.ca_file,
        );
        self.setting(
            &mut section,
            "connections_per_host",
            Some("BTPS_DELIVERY_CONNECTIONS_PER_HOST"),
            positive_usize,
            &mut delivery.connections_per_host,
        );
        self.setting(
            &mut section,
            "max_in_flight",
            Some("BTPS_DELIVERY_MAX_IN_FLIGHT"),
            positive_usize,
            &mut delivery.max_in_flight,
        );
        self.setting(
            &mut section,
            "response_timeout_ms",
            Some("BTPS_DELIVERY_RESPONSE_TIMEOUT_MS"),
            positive_ms,
            &mut delivery.response_timeout,
        );
        self.setting(
            &mut section,
            "connect_timeout_ms",
            Some("BTPS_DELIVERY_CONNECT_TIMEOUT_MS"),
            positive_ms,
            &mut delivery.connect_timeout,
        );
        self.setting(
            &mut section,
            "delay_notice_after_ms",
            Some("BTPS_DELIVERY_DELAY_NOTICE_AFTER_MS"),
            |raw| {
                let millis = raw.unsigned()?;
                Ok((millis > 0).then(|| Duration::from_millis(millis)))
            },
            &mut delivery.delay_notice_after,
        );
        self.finish(section);
    }
}
