//! Configuration (defaults < TOML file < environment, all errors at once), the
//! documentation and example of every setting, `btps check-config`, and the data
//! directory bootstrap (keys, self-signed certificate, file modes, never
//! overwriting).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use btps::config::{Config, ConfigErrors, LogFormat, SETTINGS, StorageKind, TlsVersion};
use btps::identity::Identity;
use btps::identity::dns::KeyDirectory;
use btps::identity::responder::DnsResponder;
use btps::server::bootstrap::{self, BootstrapError};
use btps::store::PrivacyType;

use crate::util::vectors_dir;

/// Loads with an optional TOML text and a fixed environment.
fn load(toml: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let file = toml.map(|text| {
        let path = dir.path().join("btps.toml");
        std::fs::write(&path, text).unwrap();
        path
    });
    let env: HashMap<String, String> = env
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    Config::load(file.as_deref(), &|name| env.get(name).cloned())
}

fn errors(toml: Option<&str>, env: &[(&str, &str)]) -> Vec<(String, String)> {
    match load(toml, env) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors
            .0
            .into_iter()
            .map(|error| (error.setting, error.message))
            .collect(),
    }
}

fn settings(errors: &[(String, String)]) -> Vec<&str> {
    errors.iter().map(|(setting, _)| setting.as_str()).collect()
}

#[test]
fn no_file_and_no_environment_give_the_development_defaults() {
    let config = load(None, &[]).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.data_dir, PathBuf::from("./btps-data"));
    assert_eq!(config.listen, btps::config::DEFAULT_LISTEN);
    assert_eq!(config.server.selector, "btps1");
    assert_eq!(config.server.identity, None);
    assert_eq!(
        config.server.private_key_path,
        Path::new("./btps-data/keys/server.key.pem")
    );
    assert_eq!(config.tls.cert_path, Path::new("./btps-data/tls/cert.pem"));
    assert_eq!(config.tls.min_version, TlsVersion::Tls13);
    assert_eq!(config.tls.handshake_timeout, Duration::from_secs(10));
    assert_eq!(config.storage.kind, StorageKind::Redb);
    assert_eq!(
        config.storage.database_path,
        Path::new("./btps-data/btps.redb")
    );
    assert_eq!(config.storage.cache_size_bytes, 32 << 20);
    assert_eq!(config.limits.max_line_bytes, 4 << 20);
    assert_eq!(config.limits.max_connections, 4096);
    assert_eq!(config.limits.max_connections_per_ip, 64);
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(30));
    assert_eq!(config.limits.line_timeout, Duration::from_secs(20));
    assert_eq!(config.trust.cooling_off, Duration::from_secs(86_400));
    assert_eq!(config.trust.default_privacy, PrivacyType::Mixed);
    assert_eq!(
        config.trust.max_future_skew,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(config.trust.max_age, None);
    assert!(!config.rate_limit.enabled);
    assert_eq!(config.rate_limit.per_ip.burst, 50);
    assert_eq!(config.rate_limit.per_sender.rate_per_second, 30.0);
    assert!(config.dns.servers.is_empty());
    assert_eq!(config.dns.attempts, 2);
    assert!(config.domains.is_empty());
    assert_eq!(config.log.format, LogFormat::Auto);
    assert_eq!(config.redb_options().cache_size, 32 << 20);
}

#[test]
fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
    let toml = r#"
        listen = "0.0.0.0:4000"
        [limits]
        idle_timeout_ms = 1000
        max_connections = 7
        [storage]
        cache_size = "8MiB"
    "#;
    let from_file = load(Some(toml), &[]).unwrap();
    assert_eq!(
        from_file.listen,
        "0.0.0.0:4000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(from_file.limits.idle_timeout, Duration::from_millis(1000));
    assert_eq!(from_file.limits.max_connections, 7);
    assert_eq!(from_file.storage.cache_size_bytes, 8 << 20);
    // Untouched by the file: still the default.
    assert_eq!(from_file.limits.max_line_bytes, 4 << 20);

    let with_env = load(
        Some(toml),
        &[("CONNECTION_TIMEOUT", "2500"), ("PORT", "5000")],
    )
    .unwrap();
    assert_eq!(with_env.limits.idle_timeout, Duration::from_millis(2500));
    // PORT replaces only the port of the file's address.
    assert_eq!(
        with_env.listen,
        "0.0.0.0:5000".parse::<SocketAddr>().unwrap()
    );
    // What the environment does not name stays as the file says.
    assert_eq!(with_env.limits.max_connections, 7);
    assert_eq!(with_env.storage.cache_size_bytes, 8 << 20);
}

#[test]
fn port_applies_after_btps_listen() {
    let config = load(None, &[("BTPS_LISTEN", "[::1]:1234"), ("PORT", "4321")]).unwrap();
    assert_eq!(config.listen, "[::1]:4321".parse::<SocketAddr>().unwrap());
}

#[test]
fn defaults_under_the_data_dir_follow_it_and_explicit_paths_do_not() {
    let toml = r#"
        data_dir = "/srv/btps"
        [tls]
        key_path = "relative/key.pem"
    "#;
    let config = load(Some(toml), &[]).unwrap();
    assert_eq!(
        config.server.public_key_path,
        Path::new("/srv/btps/keys/server.pub.pem")
    );
    assert_eq!(config.tls.cert_path, Path::new("/srv/btps/tls/cert.pem"));
    assert_eq!(config.tls.key_path, Path::new("relative/key.pem"));
    assert_eq!(
        config.storage.trust_file_path,
        Path::new("/srv/btps/trust.json")
    );
    // A data_dir from the environment moves the defaults too, even with a file.
    let config = load(Some(toml), &[("BTPS_DATA_DIR", "/var/lib/other")]).unwrap();
    assert_eq!(
        config.storage.database_path,
        Path::new("/var/lib/other/btps.redb")
    );
    assert_eq!(config.tls.key_path, Path::new("relative/key.pem"));
}

/// Every environment name of the issue and of the appliance, each with a value and
/// the effect it must have.
#[test]
fn every_environment_name_is_read() {
    type Check = fn(&Config) -> bool;
    let cases: &[(&str, &str, Check)] = &[
        ("BTPS_DATA_DIR", "/d", |c| c.data_dir == Path::new("/d")),
        ("BTPS_LISTEN", "10.1.2.3:99", |c| {
            c.listen.to_string() == "10.1.2.3:99"
        }),
        ("PORT", "8443", |c| c.listen.port() == 8443),
        ("SERVER_IDENTITY", "admin$ebill.example", |c| {
            c.server.identity.as_ref().map(Identity::as_str) == Some("admin$ebill.example")
        }),
        ("BTPS_SERVER_SELECTOR", "btps7", |c| {
            c.server.selector == "btps7"
        }),
        ("SERVER_PUBLIC_KEY_PATH", "/k/pub.pem", |c| {
            c.server.public_key_path == Path::new("/k/pub.pem")
        }),
        ("SERVER_PRIVATE_KEY_PATH", "/k/key.pem", |c| {
            c.server.private_key_path == Path::new("/k/key.pem")
        }),
        ("BTPS_TLS_CERT", "/t/c.pem", |c| {
            c.tls.cert_path == Path::new("/t/c.pem")
        }),
        ("BTPS_TLS_KEY", "/t/k.pem", |c| {
            c.tls.key_path == Path::new("/t/k.pem")
        }),
        ("BTPS_TLS_MIN_VERSION", "1.2", |c| {
            c.tls.min_version == TlsVersion::Tls12
        }),
        ("BTPS_TLS_HANDSHAKE_TIMEOUT_MS", "1500", |c| {
            c.tls.handshake_timeout == Duration::from_millis(1500)
        }),
        ("STORAGE_TYPE", "json", |c| {
            c.storage.kind == StorageKind::Json
        }),
        ("BTPS_DATABASE", "/db/x.redb", |c| {
            c.storage.database_path == Path::new("/db/x.redb")
        }),
        ("BTPS_CACHE_SIZE", "2MiB", |c| {
            c.storage.cache_size_bytes == 2 << 20
        }),
        ("BTPS_VERIFY_ON_OPEN", "yes", |c| c.storage.verify_on_open),
        ("TRUST_FILE_PATH", "/j/t.json", |c| {
            c.storage.trust_file_path == Path::new("/j/t.json")
        }),
        ("IDENTITY_FILE_PATH", "/j/i.json", |c| {
            c.storage.identity_file_path == Path::new("/j/i.json")
        }),
        ("TRUST_ENTITY_NAME", "trusted_senders", |c| {
            c.storage.trust_entity_name.as_deref() == Some("trusted_senders")
        }),
        ("BTPS_IDENTITY_ENTITY_NAME", "identity_records", |c| {
            c.storage.identity_entity_name.as_deref() == Some("identity_records")
        }),
        ("BTPS_DNS_SERVERS", "127.0.0.1:5353, 9.9.9.9", |c| {
            c.dns.servers
                == vec![
                    "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
                    "9.9.9.9:53".parse().unwrap(),
                ]
        }),
        ("BTPS_DNS_TIMEOUT_MS", "700", |c| {
            c.dns.timeout == Duration::from_millis(700)
        }),
        ("BTPS_DNS_ATTEMPTS", "4", |c| c.dns.attempts == 4),
        ("BTPS_DNS_CACHE_MIN_TTL_MS", "0", |c| {
            c.dns.cache.min_ttl == Duration::ZERO
        }),
        ("BTPS_DNS_CACHE_MAX_TTL_MS", "60000", |c| {
            c.dns.cache.max_ttl == Duration::from_secs(60)
        }),
        ("BTPS_DNS_CACHE_NEGATIVE_TTL_MS", "1000", |c| {
            c.dns.cache.negative_ttl == Duration::from_secs(1)
        }),
        ("BTPS_DNS_CACHE_CAPACITY", "10", |c| {
            c.dns.cache.capacity == 10
        }),
        ("BTPS_MAX_LINE_BYTES", "65536", |c| {
            c.limits.max_line_bytes == 65536
        }),
        ("BTPS_MAX_CONNECTIONS", "3", |c| {
            c.limits.max_connections == 3
        }),
        ("BTPS_MAX_CONNECTIONS_PER_IP", "7", |c| {
            c.limits.max_connections_per_ip == 7
        }),
        ("BTPS_LINE_TIMEOUT_MS", "1500", |c| {
            c.limits.line_timeout == Duration::from_millis(1500)
        }),
        ("CONNECTION_TIMEOUT", "45000", |c| {
            c.limits.idle_timeout == Duration::from_secs(45)
        }),
        ("BTPS_SHUTDOWN_GRACE_MS", "0", |c| {
            c.limits.shutdown_grace == Duration::ZERO
        }),
        ("BTPS_WORKER_THREADS", "3", |c| {
            c.limits.worker_threads == Some(3) && c.limits.effective_worker_threads() == 3
        }),
        ("BTPS_COMMITTER_NICE", "0", |c| c.limits.committer_nice == 0),
        ("BTPS_DELIVERY_ENABLED", "false", |c| !c.delivery.enabled),
        ("BTPS_DELIVERY_RETRY_SCHEDULE_MS", "10, 20,30", |c| {
            c.delivery.retry_schedule == [10, 20, 30].map(Duration::from_millis).to_vec()
        }),
        ("BTPS_DELIVERY_CA_FILE", "/etc/btps/ca.pem", |c| {
            c.delivery.ca_file.as_deref() == Some(std::path::Path::new("/etc/btps/ca.pem"))
        }),
        ("BTPS_DELIVERY_CONNECTIONS_PER_HOST", "5", |c| {
            c.delivery.connections_per_host == 5
        }),
        ("BTPS_DELIVERY_MAX_IN_FLIGHT", "7", |c| {
            c.delivery.max_in_flight == 7
        }),
        ("BTPS_DELIVERY_RESPONSE_TIMEOUT_MS", "1500", |c| {
            c.delivery.response_timeout == Duration::from_millis(1500)
        }),
        ("BTPS_DELIVERY_CONNECT_TIMEOUT_MS", "2500", |c| {
            c.delivery.connect_timeout == Duration::from_millis(2500)
        }),
        ("BTPS_DELIVERY_DELAY_NOTICE_AFTER_MS", "0", |c| {
            c.delivery.delay_notice_after.is_none()
        }),
        ("BTPS_TRUST_COOLING_OFF_MS", "60000", |c| {
            c.trust.cooling_off == Duration::from_secs(60)
        }),
        ("BTPS_TRUST_DEFAULT_PRIVACY", "encrypted", |c| {
            c.trust.default_privacy == PrivacyType::Encrypted
        }),
        ("BTPS_TRUST_ENFORCE_PRIVACY", "false", |c| {
            !c.trust.enforce_privacy
        }),
        ("BTPS_MAX_FUTURE_SKEW_MS", "0", |c| {
            c.trust.max_future_skew.is_none()
        }),
        ("BTPS_MAX_AGE_MS", "604800000", |c| {
            c.trust.max_age == Some(Duration::from_secs(7 * 86_400))
        }),
        ("BTPS_RATE_LIMIT", "1", |c| c.rate_limit.enabled),
        ("BTPS_RATE_LIMIT_IP_RATE", "2.5", |c| {
            c.rate_limit.per_ip.rate_per_second == 2.5
        }),
        ("BTPS_RATE_LIMIT_IP_BURST", "9", |c| {
            c.rate_limit.per_ip.burst == 9
        }),
        ("BTPS_RATE_LIMIT_SENDER_RATE", "4", |c| {
            c.rate_limit.per_sender.rate_per_second == 4.0
        }),
        ("BTPS_RATE_LIMIT_SENDER_BURST", "8", |c| {
            c.rate_limit.per_sender.burst == 8
        }),
        ("BTPS_IP_ALLOW", "10.0.0.0/8,192.0.2.7", |c| {
            c.ip_filter.allow.len() == 2 && c.ip_filter.allow[1].to_string() == "192.0.2.7/32"
        }),
        ("BTPS_IP_DENY", "2001:db8::/32", |c| {
            c.ip_filter.deny.len() == 1
        }),
        ("BTPS_HOSTED_DOMAINS", "a.example,b.example", |c| {
            c.domains.len() == 2 && c.domains[1].signer.as_str() == "admin$b.example"
        }),
        ("BTPS_LOG_LEVEL", "btps=debug,warn", |c| {
            c.log.level == "btps=debug,warn"
        }),
        ("BTPS_LOG_FORMAT", "json", |c| {
            c.log.format == LogFormat::Json
        }),
        ("BTPS_ADMIN", "off", |c| !c.admin.enabled),
        ("BTPS_ADMIN_SOCKET", "/run/btps/admin.sock", |c| {
            c.admin.socket == Path::new("/run/btps/admin.sock")
        }),
        ("BTPS_ADMIN_SOCKET_MODE", "0660", |c| {
            c.admin.socket_mode == 0o660
        }),
        ("BTPS_HTTP_LISTEN", "127.0.0.1:9480", |c| {
            c.http.listen.map(|a| a.port()) == Some(9480)
        }),
        ("POSTGRES_URI", "postgres://btps:secret@db/btps", |c| {
            c.storage.postgres.uri.as_ref().map(|uri| uri.expose())
                == Some("postgres://btps:secret@db/btps")
        }),
        ("POSTGRES_TABLE", "trust_records", |c| {
            c.storage.postgres.trust_table == "trust_records"
        }),
        ("POSTGRES_IDENTITY_TABLE", "identity_records", |c| {
            c.storage.postgres.identity_table == "identity_records"
        }),
        ("BTPS_POSTGRES_POOL_SIZE", "3", |c| {
            c.storage.postgres.pool_size == 3
        }),
        ("BTPS_POSTGRES_CONNECT_TIMEOUT_MS", "750", |c| {
            c.storage.postgres.connect_timeout == Duration::from_millis(750)
        }),
        ("BTPS_POSTGRES_STATEMENT_TIMEOUT_MS", "1500", |c| {
            c.storage.postgres.statement_timeout == Duration::from_millis(1500)
        }),
        ("BTPS_NODE_NAME", "node-7", |c| {
            c.storage.postgres.node_name.as_deref() == Some("node-7")
        }),
        ("BTPS_HTTP_TOKEN", "a-token-of-sufficient-length", |c| {
            c.http.token.as_ref().map(|t| t.expose()) == Some("a-token-of-sufficient-length")
        }),
        ("BTPS_AGENT_ENROLLMENT_TTL_MS", "600000", |c| {
            c.agents.enrollment_ttl == Duration::from_secs(600)
        }),
        ("BTPS_AGENT_TOKEN_LENGTH", "16", |c| {
            c.agents.token_length == 16
        }),
        ("BTPS_AGENT_REFRESH_TTL_MS", "86400000", |c| {
            c.agents.refresh_ttl == Duration::from_secs(86_400)
        }),
        ("BTPS_AGENT_ENCRYPT_ANSWERS", "true", |c| {
            c.agents.encrypt_answers
        }),
        ("BTPS_AGENT_AUTH_FAILURES_BURST", "3", |c| {
            c.agents.auth_failures_burst == 3
        }),
        ("BTPS_AGENT_AUTH_FAILURES_PER_MINUTE", "7", |c| {
            c.agents.auth_failures_per_minute == 7
        }),
        ("BTPS_AGENT_REQUIRE_OUTBOUND_TRUST", "false", |c| {
            !c.agents.require_outbound_trust
        }),
        ("BTPS_AGENT_SWEEP_INTERVAL_MS", "1000", |c| {
            c.agents.sweep_interval == Duration::from_secs(1)
        }),
        ("BTPS_AGENT_EXPIRED_RECORD_GRACE_MS", "0", |c| {
            c.agents.expired_record_grace == Duration::ZERO
        }),
    ];
    // The table covers every environment name there is.
    let documented: std::collections::BTreeSet<&str> =
        SETTINGS.iter().filter_map(|(_, env)| *env).collect();
    let tested: std::collections::BTreeSet<&str> = cases.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(documented, tested);
    let defaults = Config::default();
    for (name, value, check) in cases {
        let config = load(None, &[(name, value)]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(check(&config), "{name}={value} had no effect");
        assert!(
            !check(&defaults),
            "{name}: the check passes on the defaults"
        );
    }
}

#[test]
fn an_empty_environment_variable_counts_as_unset() {
    let config = load(None, &[("PORT", ""), ("SERVER_IDENTITY", " ")]).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn every_invalid_setting_is_reported_at_once() {
    let toml = r#"
        listen = "localhost"
        [tls]
        min_version = "1.1"
        [limits]
        max_connections = 0
    "#;
    let found = errors(Some(toml), &[]);
    assert_eq!(
        settings(&found),
        ["listen", "tls.min_version", "limits.max_connections"],
        "{found:?}"
    );
    // Environment problems are added to the file's and name the variable.
    let found = errors(Some(toml), &[("PORT", "http"), ("STORAGE_TYPE", "mongodb")]);
    assert_eq!(found.len(), 5, "{found:?}");
    assert!(settings(&found).contains(&"PORT"));
    assert!(settings(&found).contains(&"STORAGE_TYPE"));
    let text = ConfigErrors(
        found
            .iter()
            .map(|(setting, message)| btps::config::ConfigError {
                setting: setting.clone(),
                message: message.clone(),
            })
            .collect(),
    )
    .to_string();
    assert_eq!(text.lines().count(), 5);
    assert!(text.lines().any(|line| line.starts_with("STORAGE_TYPE: ")));
}

#[test]
fn unknown_keys_are_errors_with_a_suggestion() {
    let found = errors(
        Some(
            r#"
            colour = "blue"
            [limits]
            idle_timout_ms = 5
            [rate_limit.per_ip]
            brust = 3
            [nonsense]
            x = 1
        "#,
        ),
        &[],
    );
    let names = settings(&found);
    assert!(names.contains(&"colour"), "{found:?}");
    assert!(names.contains(&"limits.idle_timout_ms"));
    assert!(names.contains(&"rate_limit.per_ip.brust"));
    assert!(names.contains(&"nonsense"));
    let typo = &found
        .iter()
        .find(|(setting, _)| setting == "limits.idle_timout_ms")
        .unwrap()
        .1;
    assert!(
        typo.contains("did you mean 'limits.idle_timeout_ms'"),
        "{typo}"
    );
}

#[test]
fn durations_are_positive_integer_milliseconds() {
    let ok = load(Some("[tls]\nhandshake_timeout_ms = 2_500"), &[]).unwrap();
    assert_eq!(ok.tls.handshake_timeout, Duration::from_millis(2500));
    for bad in [
        "idle_timeout_ms = 0",
        "idle_timeout_ms = -5",
        "idle_timeout_ms = \"30s\"",
        "idle_timeout_ms = 1.5",
    ] {
        let found = errors(Some(&format!("[limits]\n{bad}")), &[]);
        assert_eq!(
            settings(&found),
            ["limits.idle_timeout_ms"],
            "{bad}: {found:?}"
        );
    }
    let found = errors(None, &[("CONNECTION_TIMEOUT", "30s")]);
    assert_eq!(settings(&found), ["CONNECTION_TIMEOUT"]);
    let found = errors(
        Some("[dns.cache]\nmin_ttl_ms = 10_000\nmax_ttl_ms = 5_000"),
        &[],
    );
    assert_eq!(settings(&found), ["dns.cache.min_ttl_ms"]);
}

#[test]
fn bad_toml_and_a_missing_file_are_reported_with_the_file_name() {
    let found = errors(Some("listen = ["), &[]);
    assert_eq!(found.len(), 1);
    assert!(found[0].0.contains("btps.toml"), "{found:?}");
    assert!(found[0].1.contains("TOML"), "{found:?}");
    let missing = Config::load(Some(Path::new("/nonexistent/btps.toml")), &|_| None).unwrap_err();
    assert!(missing.0[0].setting.contains("/nonexistent/btps.toml"));
}

#[test]
fn hosted_domains_and_the_lookup_signer() {
    let toml = r#"
        [server]
        identity = "server$host.example"
        [[domains]]
        name = "ebill.example"
        signer = "keys$ebill.example"
        [[domains]]
        name = "Shop.Example"
    "#;
    let config = load(Some(toml), &[]).unwrap();
    assert_eq!(
        config.lookup_signer("ebill.example").as_str(),
        "keys$ebill.example"
    );
    assert_eq!(
        config.lookup_signer("EBILL.example").as_str(),
        "keys$ebill.example"
    );
    assert_eq!(
        config.lookup_signer("shop.example").as_str(),
        "admin$Shop.Example"
    );
    // Not hosted: the server identity.
    assert_eq!(
        config.lookup_signer("other.example").as_str(),
        "server$host.example"
    );
    // Without a server identity: admin$<domain>.
    let bare = load(None, &[]).unwrap();
    assert_eq!(
        bare.lookup_signer("other.example").as_str(),
        "admin$other.example"
    );

    // The environment replaces the names and keeps the file's signer for kept names.
    let config = load(
        Some(toml),
        &[("BTPS_HOSTED_DOMAINS", "ebill.example, new.example")],
    )
    .unwrap();
    let names: Vec<&str> = config.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["ebill.example", "new.example"]);
    assert_eq!(config.domains[0].signer.as_str(), "keys$ebill.example");

    let found = errors(
        Some(
            r#"
            [[domains]]
            name = "a.example"
            signer = "admin$b.example"
            [[domains]]
            name = "a.example"
            [[domains]]
            signer = "x$y.example"
            [[domains]]
            name = "nodot"
            [[domains]]
            name = "c.example"
            signer = "admin$d.example"
        "#,
        ),
        &[],
    );
    assert_eq!(
        settings(&found),
        [
            "domains[2].name",
            "domains[3].name",
            "domains[0].signer",
            "domains[1]",
            "domains[4].signer"
        ],
        "{found:?}"
    );
}

#[test]
fn ip_filter_deny_wins_and_empty_allow_allows_all() {
    let config = load(
        Some(
            r#"
            [ip_filter]
            allow = ["10.0.0.0/8", "2001:db8::/32"]
            deny = ["10.66.0.0/16"]
        "#,
        ),
        &[],
    )
    .unwrap();
    let allows = |ip: &str| config.ip_filter.allows(ip.parse().unwrap());
    assert!(allows("10.1.2.3"));
    assert!(!allows("10.66.1.1"));
    assert!(!allows("192.0.2.1"));
    assert!(allows("2001:db8::1"));
    // An IPv4 client seen through a dual-stack socket.
    assert!(allows("::ffff:10.1.2.3"));
    assert!(!allows("::ffff:10.66.0.1"));
    assert!(
        Config::default()
            .ip_filter
            .allows("203.0.113.9".parse().unwrap())
    );
    let found = errors(Some("[ip_filter]\ndeny = [\"10.0.0.0/33\", 5]"), &[]);
    assert_eq!(settings(&found), ["ip_filter.deny"]);
}

/// Every setting appears in docs/configuration.md and in the example file, and the
/// example, with every setting uncommented, is a valid configuration.
#[test]
fn documentation_and_example_cover_every_setting() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let example = std::fs::read_to_string(root.join("systemd/btps.toml")).unwrap();
    for (key, env) in SETTINGS {
        if *key != "listen" || env == &Some("BTPS_LISTEN") {
            assert!(
                docs.contains(&format!("`{key}`")),
                "{key} is not documented"
            );
        }
        if let Some(env) = env {
            assert!(
                docs.contains(&format!("`{env}`")),
                "{env} is not documented"
            );
            assert!(example.contains(env), "{env} is not in systemd/btps.toml");
        }
        let leaf = key.rsplit(['.', ']']).next().unwrap();
        assert!(
            example.contains(&format!("# {leaf} = ")) || example.contains(&format!("\n{leaf} = ")),
            "{key} is not in systemd/btps.toml"
        );
    }
    // The example as shipped (everything commented but data_dir, which the operator
    // commands read) is the defaults under the package's data directory.
    let dir = tempfile::tempdir().unwrap();
    let shipped = root.join("systemd/btps.toml");
    assert_eq!(
        Config::load(Some(&shipped), &|_| None).unwrap(),
        Config::defaults_under(Path::new("/var/lib/btps"))
    );
    // Uncommented, it is valid and changes what it says.
    let uncommented: String = example
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(key, _)| {
                        key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.path().join("full.toml");
    std::fs::write(&path, &uncommented).unwrap();
    let config = Config::load(Some(&path), &|_| None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.data_dir, Path::new("/var/lib/btps"));
    assert_eq!(config.domains.len(), 1);
    assert_eq!(
        config.storage.trust_entity_name.as_deref(),
        Some("trusted_senders")
    );
}

#[test]
fn connection_threads_leave_a_core_to_the_committer_by_default() {
    let config = Config::load(None, &|_| None).unwrap();
    assert_eq!(config.limits.worker_threads, None);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    assert_eq!(
        config.limits.effective_worker_threads(),
        cores.saturating_sub(1).max(1)
    );
    let zero = Config::load(None, &|name| {
        (name == "BTPS_WORKER_THREADS").then(|| "0".to_owned())
    })
    .unwrap_err();
    assert!(
        zero.to_string()
            .contains("BTPS_WORKER_THREADS: must be at least 1"),
        "{zero}"
    );
}

#[test]
fn the_committer_is_niced_by_ten_by_default_and_at_most_by_nineteen() {
    let config = Config::load(None, &|_| None).unwrap();
    assert_eq!(config.limits.committer_nice, 10);
    let nineteen = Config::load(None, &|name| {
        (name == "BTPS_COMMITTER_NICE").then(|| "19".to_owned())
    })
    .unwrap();
    assert_eq!(nineteen.limits.committer_nice, 19);
    for bad in ["20", "-1", "x"] {
        let error = Config::load(None, &|name| {
            (name == "BTPS_COMMITTER_NICE").then(|| bad.to_owned())
        })
        .unwrap_err();
        assert!(
            error.to_string().contains("BTPS_COMMITTER_NICE"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn check_config_lists_every_problem_or_says_ok() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"x\"\n[limits]\nmax_line_bytes = 10\n[log]\nformat = \"xml\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .env_remove("PORT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("3 problems"), "{stdout}");
    for key in ["listen:", "limits.max_line_bytes:", "log.format:"] {
        assert!(stdout.contains(key), "{key} missing in {stdout}");
    }

    let good = dir.path().join("good.toml");
    std::fs::write(&good, format!("data_dir = {:?}\n", dir.path().join("data"))).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(["check-config", "--config"])
        .arg(&good)
        .env("PORT", "4443")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("configuration OK"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:4443"), "{stdout}");
    assert!(stdout.contains("will be created"), "{stdout}");
}

/// The configured resolver talks to the configured name server and caches.
#[tokio::test]
async fn dns_resolver_uses_the_configured_servers() {
    let responder = DnsResponder::start("127.0.0.1:0".parse().unwrap()).unwrap();
    responder.publish_host("client.test", "btps.client.test:4443", "btps2");
    let address = responder.local_addr().to_string();
    let config = load(
        None,
        &[
            ("BTPS_DNS_SERVERS", &address),
            ("BTPS_DNS_TIMEOUT_MS", "500"),
        ],
    )
    .unwrap();
    let directory = KeyDirectory::new(config.dns_resolver().unwrap());
    let host = directory.host("client.test").await.unwrap();
    assert_eq!(
        (host.host.as_str(), host.port, host.selector.as_str()),
        ("btps.client.test", 4443, "btps2")
    );
    directory.host("client.test").await.unwrap();
    assert_eq!(
        responder.query_count_for("_btps.host.client.test"),
        1,
        "second lookup cached"
    );
}

// ---------------------------------------------------------------------------------
// Bootstrap.
// ---------------------------------------------------------------------------------

fn config_in(dir: &Path) -> Config {
    let mut config = Config::defaults_under(&dir.join("btps-data"));
    config.domains.push(btps::config::DomainSettings {
        name: "ebill.example".to_owned(),
        signer: Identity::parse("admin$ebill.example").unwrap(),
    });
    config
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn bootstrap_creates_keys_and_certificate_with_private_modes() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let prepared = bootstrap::prepare(&config).unwrap();

    for path in [
        &config.server.private_key_path,
        &config.server.public_key_path,
        &config.tls.cert_path,
        &config.tls.key_path,
    ] {
        assert!(path.is_file(), "{} missing", path.display());
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&config.data_dir), 0o700);
        assert_eq!(mode(&config.server.private_key_path), 0o600);
        assert_eq!(mode(&config.tls.key_path), 0o600);
        assert_eq!(mode(&config.server.public_key_path), 0o644);
        assert_eq!(mode(&config.tls.cert_path), 0o644);
    }
    // No temporary files left behind.
    let leftovers: Vec<_> = walk(&config.data_dir)
        .into_iter()
        .filter(|path| path.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let fingerprint = prepared.server_key.public_key().fingerprint().to_owned();
    assert_eq!(prepared.server_key.public_key().bits(), 2048);
    let actions = prepared.actions.join("\n");
    assert!(actions.contains(&fingerprint), "{actions}");
    assert!(actions.contains("RSA-2048"), "{actions}");
    assert!(actions.contains("ECDSA P-256"), "{actions}");
    assert!(actions.contains("ebill.example"), "{actions}");
    assert!(actions.contains("IN TXT \"v=1.0.0; k=rsa; p="), "{actions}");

    // The public key file is the private key's public half.
    let public = std::fs::read_to_string(&config.server.public_key_path).unwrap();
    assert_eq!(btps::crypto::fingerprint_pem(&public).unwrap(), fingerprint);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_second_prepare_loads_the_same_key_and_certificate_and_overwrites_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let first = bootstrap::prepare(&config).unwrap();
    let files = [
        &config.server.private_key_path,
        &config.server.public_key_path,
        &config.tls.cert_path,
        &config.tls.key_path,
    ];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect();

    let second = bootstrap::prepare(&config).unwrap();
    assert!(second.actions.is_empty(), "{:?}", second.actions);
    assert_eq!(
        second.server_key.public_key().fingerprint(),
        first.server_key.public_key().fingerprint()
    );
    let after: Vec<Vec<u8>> = files
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn the_generated_certificate_is_ecdsa_p256() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    bootstrap::prepare(&config).unwrap();
    let key_pem = std::fs::read_to_string(&config.tls.key_path).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    assert!(key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256));
    let certificates = btps::server::tls::load_certificates(&config.tls.cert_path).unwrap();
    assert_eq!(certificates.len(), 1);
    let der = certificates[0].as_ref();
    // id-ecPublicKey (1.2.840.10045.2.1) with the prime256v1 curve (1.2.840.10045.3.1.7).
    let ec_public_key = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let prime256v1 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    assert!(der.windows(ec_public_key.len()).any(|w| w == ec_public_key));
    assert!(der.windows(prime256v1.len()).any(|w| w == prime256v1));
    // The key in the file is the certificate's key.
    assert!(
        der.windows(key.public_key_raw().len())
            .any(|w| w == key.public_key_raw())
    );
    // rustls accepts the pair, with either minimum version.
    for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
        btps::server::tls::server_config(&config.tls.cert_path, &config.tls.key_path, version)
            .unwrap();
    }
}

#[test]
fn an_existing_server_key_is_used_and_its_public_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.server.private_key_path = vectors_dir().join("keys/server.key.pem");
    let prepared = bootstrap::prepare(&config).unwrap();
    let expected = btps::crypto::fingerprint_pem(
        &std::fs::read_to_string(vectors_dir().join("keys/server.pub.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(prepared.server_key.public_key().fingerprint(), expected);
    let written = std::fs::read_to_string(&config.server.public_key_path).unwrap();
    assert_eq!(btps::crypto::fingerprint_pem(&written).unwrap(), expected);
    assert!(
        !prepared
            .actions
            .iter()
            .any(|line| line.contains("server key,"))
    );
}

#[test]
fn bootstrap_refuses_inconsistent_files_and_names_them() {
    // A public key without its private key.
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    std::fs::create_dir_all(config.server.public_key_path.parent().unwrap()).unwrap();
    std::fs::copy(
        vectors_dir().join("keys/server.pub.pem"),
        &config.server.public_key_path,
    )
    .unwrap();
    let error = bootstrap::prepare(&config).unwrap_err();
    assert!(
        matches!(error, BootstrapError::PrivateKeyMissing { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("server.key.pem"), "{error}");
    assert!(!config.server.private_key_path.exists());

    // A public key of another private key.
    std::fs::copy(
        vectors_dir().join("keys/billing.key.pem"),
        &config.server.private_key_path,
    )
    .unwrap();
    let error = bootstrap::prepare(&config).unwrap_err();
    assert!(
        matches!(error, BootstrapError::KeyMismatch { .. }),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&config.server.public_key_path).unwrap(),
        std::fs::read(vectors_dir().join("keys/server.pub.pem")).unwrap(),
        "the mismatched public key was not replaced"
    );

    // A private key file that is not a key.
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    std::fs::create_dir_all(config.server.private_key_path.parent().unwrap()).unwrap();
    std::fs::write(&config.server.private_key_path, "not a key").unwrap();
    let error = bootstrap::prepare(&config).unwrap_err();
    assert!(matches!(error, BootstrapError::ServerKey { .. }), "{error}");
    assert!(error.to_string().contains("server.key.pem"), "{error}");

    // A certificate without its key.
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    std::fs::create_dir_all(config.tls.cert_path.parent().unwrap()).unwrap();
    std::fs::write(&config.tls.cert_path, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let error = bootstrap::prepare(&config).unwrap_err();
    assert!(
        matches!(error, BootstrapError::TlsPairIncomplete { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("key.pem"), "{error}");
    assert!(!config.tls.key_path.exists());

    // A certificate file that is not PEM.
    std::fs::write(&config.tls.key_path, "garbage").unwrap();
    let error = bootstrap::prepare(&config).unwrap_err();
    assert!(matches!(error, BootstrapError::Tls(_)), "{error}");
    assert!(error.to_string().contains("cert.pem"), "{error}");
}

#[test]
fn agent_settings_are_checked() {
    let found = errors(
        Some("[agents]\ntoken_length = 7\nrefresh_ttl_ms = 0\nenrollment_ttl_ms = \"x\""),
        &[],
    );
    assert_eq!(
        settings(&found),
        [
            "agents.enrollment_ttl_ms",
            "agents.token_length",
            "agents.refresh_ttl_ms"
        ]
    );
    let found = errors(None, &[("BTPS_AGENT_TOKEN_LENGTH", "25")]);
    assert_eq!(settings(&found), ["BTPS_AGENT_TOKEN_LENGTH"]);
}
