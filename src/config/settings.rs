//! The list of every setting: its TOML key and environment variable. The loader,
//! `docs/configuration.md` and `systemd/btps.toml` are all checked against it.

/// Every setting: its TOML key and, when it has one, its environment variable. The
/// list `docs/configuration.md` and `systemd/btps.toml` are checked against.
pub const SETTINGS: &[(&str, Option<&str>)] = &[
    ("data_dir", Some("BTPS_DATA_DIR")),
    ("listen", Some("BTPS_LISTEN")),
    ("listen", Some("PORT")),
    ("server.identity", Some("SERVER_IDENTITY")),
    ("server.selector", Some("BTPS_SERVER_SELECTOR")),
    ("server.public_key_path", Some("SERVER_PUBLIC_KEY_PATH")),
    ("server.private_key_path", Some("SERVER_PRIVATE_KEY_PATH")),
    ("tls.cert_path", Some("BTPS_TLS_CERT")),
    ("tls.key_path", Some("BTPS_TLS_KEY")),
    ("tls.min_version", Some("BTPS_TLS_MIN_VERSION")),
    (
        "tls.handshake_timeout_ms",
        Some("BTPS_TLS_HANDSHAKE_TIMEOUT_MS"),
    ),
    ("storage.type", Some("STORAGE_TYPE")),
    ("storage.database_path", Some("BTPS_DATABASE")),
    ("storage.cache_size", Some("BTPS_CACHE_SIZE")),
    ("storage.verify_on_open", Some("BTPS_VERIFY_ON_OPEN")),
    ("storage.trust_file_path", Some("TRUST_FILE_PATH")),
    ("storage.identity_file_path", Some("IDENTITY_FILE_PATH")),
    ("storage.trust_entity_name", Some("TRUST_ENTITY_NAME")),
    (
        "storage.identity_entity_name",
        Some("BTPS_IDENTITY_ENTITY_NAME"),
    ),
    ("storage.postgres.uri", Some("POSTGRES_URI")),
    ("storage.postgres.trust_table", Some("POSTGRES_TABLE")),
    (
        "storage.postgres.identity_table",
        Some("POSTGRES_IDENTITY_TABLE"),
    ),
    (
        "storage.postgres.pool_size",
        Some("BTPS_POSTGRES_POOL_SIZE"),
    ),
    (
        "storage.postgres.connect_timeout_ms",
        Some("BTPS_POSTGRES_CONNECT_TIMEOUT_MS"),
    ),
    (
        "storage.postgres.statement_timeout_ms",
        Some("BTPS_POSTGRES_STATEMENT_TIMEOUT_MS"),
    ),
    ("storage.postgres.node_name", Some("BTPS_NODE_NAME")),
    ("dns.servers", Some("BTPS_DNS_SERVERS")),
    ("dns.timeout_ms", Some("BTPS_DNS_TIMEOUT_MS")),
    ("dns.attempts", Some("BTPS_DNS_ATTEMPTS")),
    ("dns.cache.min_ttl_ms", Some("BTPS_DNS_CACHE_MIN_TTL_MS")),
    ("dns.cache.max_ttl_ms", Some("BTPS_DNS_CACHE_MAX_TTL_MS")),
    (
        "dns.cache.negative_ttl_ms",
        Some("BTPS_DNS_CACHE_NEGATIVE_TTL_MS"),
    ),
    ("dns.cache.capacity", Some("BTPS_DNS_CACHE_CAPACITY")),
    ("limits.max_line_bytes", Some("BTPS_MAX_LINE_BYTES")),
    ("limits.max_connections", Some("BTPS_MAX_CONNECTIONS")),
    (
        "limits.max_connections_per_ip",
        Some("BTPS_MAX_CONNECTIONS_PER_IP"),
    ),
    ("limits.idle_timeout_ms", Some("CONNECTION_TIMEOUT")),
    ("limits.line_timeout_ms", Some("BTPS_LINE_TIMEOUT_MS")),
    ("limits.shutdown_grace_ms", Some("BTPS_SHUTDOWN_GRACE_MS")),
    ("limits.worker_threads", Some("BTPS_WORKER_THREADS")),
    ("limits.committer_nice", Some("BTPS_COMMITTER_NICE")),
    ("delivery.enabled", Some("BTPS_DELIVERY_ENABLED")),
    (
        "delivery.retry_schedule_ms",
        Some("BTPS_DELIVERY_RETRY_SCHEDULE_MS"),
    ),
    ("delivery.ca_file", Some("BTPS_DELIVERY_CA_FILE")),
    (
        "delivery.connections_per_host",
        Some("BTPS_DELIVERY_CONNECTIONS_PER_HOST"),
    ),
    (
        "delivery.max_in_flight",
        Some("BTPS_DELIVERY_MAX_IN_FLIGHT"),
    ),
    (
        "delivery.response_timeout_ms",
        Some("BTPS_DELIVERY_RESPONSE_TIMEOUT_MS"),
    ),
    (
        "delivery.connect_timeout_ms",
        Some("BTPS_DELIVERY_CONNECT_TIMEOUT_MS"),
    ),
    (
        "delivery.delay_notice_after_ms",
        Some("BTPS_DELIVERY_DELAY_NOTICE_AFTER_MS"),
    ),
    ("trust.cooling_off_ms", Some("BTPS_TRUST_COOLING_OFF_MS")),
    ("trust.default_privacy", Some("BTPS_TRUST_DEFAULT_PRIVACY")),
    ("trust.enforce_privacy", Some("BTPS_TRUST_ENFORCE_PRIVACY")),
    ("trust.max_future_skew_ms", Some("BTPS_MAX_FUTURE_SKEW_MS")),
    ("trust.max_age_ms", Some("BTPS_MAX_AGE_MS")),
    ("rate_limit.enabled", Some("BTPS_RATE_LIMIT")),
    (
        "rate_limit.per_ip.rate_per_second",
        Some("BTPS_RATE_LIMIT_IP_RATE"),
    ),
    ("rate_limit.per_ip.burst", Some("BTPS_RATE_LIMIT_IP_BURST")),
    (
        "rate_limit.per_sender.rate_per_second",
        Some("BTPS_RATE_LIMIT_SENDER_RATE"),
    ),
    (
        "rate_limit.per_sender.burst",
        Some("BTPS_RATE_LIMIT_SENDER_BURST"),
    ),
    ("ip_filter.allow", Some("BTPS_IP_ALLOW")),
    ("ip_filter.deny", Some("BTPS_IP_DENY")),
    ("domains[].name", Some("BTPS_HOSTED_DOMAINS")),
    ("domains[].signer", None),
    ("log.level", Some("BTPS_LOG_LEVEL")),
    ("log.format", Some("BTPS_LOG_FORMAT")),
    ("admin.enabled", Some("BTPS_ADMIN")),
    ("admin.socket", Some("BTPS_ADMIN_SOCKET")),
    ("admin.socket_mode", Some("BTPS_ADMIN_SOCKET_MODE")),
    ("http.listen", Some("BTPS_HTTP_LISTEN")),
    ("http.token", Some("BTPS_HTTP_TOKEN")),
    (
        "agents.enrollment_ttl_ms",
        Some("BTPS_AGENT_ENROLLMENT_TTL_MS"),
    ),
    ("agents.token_length", Some("BTPS_AGENT_TOKEN_LENGTH")),
    ("agents.refresh_ttl_ms", Some("BTPS_AGENT_REFRESH_TTL_MS")),
    ("agents.encrypt_answers", Some("BTPS_AGENT_ENCRYPT_ANSWERS")),
    (
        "agents.auth_failures_burst",
        Some("BTPS_AGENT_AUTH_FAILURES_BURST"),
    ),
    (
        "agents.auth_failures_per_minute",
        Some("BTPS_AGENT_AUTH_FAILURES_PER_MINUTE"),
    ),
    (
        "agents.require_outbound_trust",
        Some("BTPS_AGENT_REQUIRE_OUTBOUND_TRUST"),
    ),
    (
        "agents.sweep_interval_ms",
        Some("BTPS_AGENT_SWEEP_INTERVAL_MS"),
    ),
    (
        "agents.expired_record_grace_ms",
        Some("BTPS_AGENT_EXPIRED_RECORD_GRACE_MS"),
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::loader::Loader;

    /// The documented list of settings is exactly what the loader reads.
    #[test]
    fn settings_list_matches_the_loader() {
        let mut loader = Loader::new(&|_| None);
        loader.run(None);
        let consulted: BTreeSet<(String, Option<&str>)> = loader.consulted;
        let documented: BTreeSet<(String, Option<&str>)> = SETTINGS
            .iter()
            .map(|(key, env)| ((*key).to_owned(), *env))
            .collect();
        assert_eq!(consulted, documented);
    }
}
