//! `[dns]`: the name servers, timeouts and cache of DNS TXT lookups.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::Config;
use super::loader::{Loader, Section, positive_ms, positive_usize};
use crate::identity::dns::{CacheConfig, ResolverOptions};

/// DNS TXT lookups: name servers, timeouts and the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// Name servers to ask; empty means the system configuration (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// How long to wait for one answer.
    pub timeout: Duration,
    /// How many times a query is sent before the lookup fails.
    pub attempts: usize,
    /// TTL bounds, negative caching and size of the cache.
    pub cache: CacheConfig,
}

impl DnsSettings {
    /// The system's name servers, the resolver's timeouts, the default cache.
    pub(super) fn defaults() -> Self {
        DnsSettings {
            servers: Vec::new(),
            timeout: ResolverOptions::default().timeout,
            attempts: ResolverOptions::default().attempts,
            cache: CacheConfig::default(),
        }
    }
}

/// A socket address; a bare IP address means DNS port 53.
fn name_server(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{text:?} is not an IP address or IP:PORT"))
}

impl Loader<'_> {
    pub(super) fn dns(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "dns");
        let dns = &mut config.dns;
        self.setting(
            &mut section,
            "servers",
            Some("BTPS_DNS_SERVERS"),
            |raw| raw.list()?.iter().map(|text| name_server(text)).collect(),
            &mut dns.servers,
        );
        self.setting(
            &mut section,
            "timeout_ms",
            Some("BTPS_DNS_TIMEOUT_MS"),
            positive_ms,
            &mut dns.timeout,
        );
        self.setting(
            &mut section,
            "attempts",
            Some("BTPS_DNS_ATTEMPTS"),
            positive_usize,
            &mut dns.attempts,
        );
        let mut cache = self.table(&mut section, "cache");
        self.setting(
            &mut cache,
            "min_ttl_ms",
            Some("BTPS_DNS_CACHE_MIN_TTL_MS"),
            |raw| raw.unsigned().map(Duration::from_millis),
            &mut dns.cache.min_ttl,
        );
        self.setting(
            &mut cache,
            "max_ttl_ms",
            Some("BTPS_DNS_CACHE_MAX_TTL_MS"),
            positive_ms,
            &mut dns.cache.max_ttl,
        );
        self.setting(
            &mut cache,
            "negative_ttl_ms",
            Some("BTPS_DNS_CACHE_NEGATIVE_TTL_MS"),
            |raw| raw.unsigned().map(Duration::from_millis),
            &mut dns.cache.negative_ttl,
        );
        self.setting(
            &mut cache,
            "capacity",
            Some("BTPS_DNS_CACHE_CAPACITY"),
            positive_usize,
            &mut dns.cache.capacity,
        );
        if dns.cache.min_ttl > dns.cache.max_ttl {
            let (min, max) = (dns.cache.min_ttl, dns.cache.max_ttl);
            self.error(
                cache.key("min_ttl_ms"),
                format!(
                    "{} ms is above dns.cache.max_ttl_ms ({} ms)",
                    min.as_millis(),
                    max.as_millis()
                ),
            );
        }
        self.finish(cache);
        self.finish(section);
    }
}
