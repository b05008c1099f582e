//! Configuration: defaults < TOML file < environment, every problem reported at once.
//!
//! [`Config::load`] starts from the built-in defaults (a development instance under
//! `./btps-data`, listening on loopback), applies the TOML file given with `--config`,
//! then the environment. It does not stop at the first bad setting: every invalid
//! value and every unknown key is collected into [`ConfigErrors`], each naming the
//! TOML key (`limits.idle_timeout_ms`) or environment variable (`CONNECTION_TIMEOUT`)
//! it came from, so that an operator fixes a file in one round.
//!
//! Conventions of the file (documented for operators in `docs/configuration.md`):
//! durations are integer milliseconds in keys ending in `_ms` (the reference's
//! `connectionTimeoutMs` is milliseconds too, and an integer cannot be misread);
//! byte sizes are integers or strings with a binary unit (`"64MiB"`); unknown keys
//! are errors, because a misspelt key silently falling back to a default is the
//! worst kind of configuration bug. Relative paths are relative to the working
//! directory; paths left at their defaults live under `data_dir` and follow it.
//!
//! This module performs no I/O beyond reading the configuration file; creating the
//! data directory and keys is `server::bootstrap`'s job.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::identity::Identity;
use crate::identity::dns::{
    CacheConfig, CachingResolver, HickoryTxtResolver, ResolverOptions, TxtResolver,
};
use crate::store::{PrivacyType, RedbOptions};

/// The default data directory of a development instance.
pub const DEFAULT_DATA_DIR: &str = "./btps-data";
/// The default listening address: loopback only, the protocol's port.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    crate::identity::dns::DEFAULT_BTPS_PORT,
);
/// The default address of the local HTTP endpoint (health, metrics, backup).
pub const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3480);
/// The shortest bearer token accepted for the HTTP endpoint.
pub const MIN_HTTP_TOKEN_LEN: usize = 16;
/// The selector used when none is configured (the reference's `hostSelector` default).
pub const DEFAULT_SELECTOR: &str = "btps1";

/// The whole configuration of a `btps serve` process.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where keys, the certificate and the database live by default.
    pub data_dir: PathBuf,
    /// The TLS listening address.
    pub listen: SocketAddr,
    /// The server's own BTPS identity and key pair.
    pub server: ServerIdentitySettings,
    /// The listener's TLS certificate and protocol versions.
    pub tls: TlsSettings,
    /// Which store, and where.
    pub storage: StorageSettings,
    /// DNS TXT lookups.
    pub dns: DnsSettings,
    /// Connection limits and timeouts.
    pub limits: Limits,
    /// Trust policy defaults.
    pub trust: TrustSettings,
    /// The built-in token-bucket rate limiter.
    pub rate_limit: RateLimitSettings,
    /// The built-in IP allow/deny lists.
    pub ip_filter: IpFilterSettings,
    /// Domains whose identities this server hosts.
    pub domains: Vec<DomainSettings>,
    /// Logging.
    pub log: LogSettings,
    /// The local admin socket of a running server.
    pub admin: AdminSettings,
    /// The local HTTP endpoint.
    pub http: HttpSettings,
}

/// A secret setting: compared and cloned like a string, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The local HTTP endpoint: `/healthz`, `/readyz`, `/metrics`, `/backup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Where it listens; `None` turns it off.
    pub listen: Option<SocketAddr>,
    /// The bearer token every request must carry; required unless `listen` is a
    /// loopback address.
    pub token: Option<Secret>,
}

impl HttpSettings {
    /// Checks the rule that ties the two settings together: an endpoint reachable from
    /// other machines (it serves the whole database at `/backup`) needs a token.
    /// Run again after a command-line flag changes `listen`.
    pub fn check(&self) -> Result<(), ConfigError> {
        match (self.listen, &self.token) {
            (Some(address), None) if !address.ip().to_canonical().is_loopback() => {
                Err(ConfigError::new(
                    "http.token",
                    format!(
                        "required because http.listen ({address}) is not a loopback address: \
                         the endpoint serves the whole database at /backup; set http.token or \
                         BTPS_HTTP_TOKEN (at least {MIN_HTTP_TOKEN_LEN} characters), or listen \
                         on 127.0.0.1"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The server's BTPS identity and the files of its RSA key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerIdentitySettings {
    /// The identity the server signs as when no hosted domain has its own signer.
    pub identity: Option<Identity>,
    /// The DNS selector under which the server key is published.
    pub selector: String,
    /// SPKI PEM of the server key.
    pub public_key_path: PathBuf,
    /// PKCS#8 PEM of the server key (mode 0600).
    pub private_key_path: PathBuf,
}

/// The lowest TLS version the listener accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (what a stock Node.js client may negotiate).
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsVersion {
    /// `"1.2"` or `"1.3"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

/// The listener's certificate and TLS policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key of the certificate (PKCS#8, SEC1 or PKCS#1).
    pub key_path: PathBuf,
    /// Lowest accepted protocol version.
    pub min_version: TlsVersion,
    /// How long a client may take to complete the handshake.
    pub handshake_timeout: Duration,
}

/// Which store backs the trust and identity records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    /// One embedded redb file (the appliance's default).
    Redb,
    /// The reference's JSON files (development, migration).
    Json,
}

impl StorageKind {
    /// `"redb"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageKind::Redb => "redb",
            StorageKind::Json => "json",
        }
    }
}

/// Storage settings for both kinds of store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageSettings {
    /// `redb` or `json`.
    pub kind: StorageKind,
    /// The redb file.
    pub database_path: PathBuf,
    /// redb's page cache, in bytes.
    pub cache_size_bytes: u64,
    /// Whether redb checks every page checksum when opening the file.
    pub verify_on_open: bool,
    /// The JSON trust file (`json` storage, import and export).
    pub trust_file_path: PathBuf,
    /// The JSON identity file (`json` storage, import and export).
    pub identity_file_path: PathBuf,
    /// The top-level key of the trust file; `None` accepts either file shape.
    pub trust_entity_name: Option<String>,
    /// The top-level key of the identity file; `None` accepts either file shape.
    pub identity_entity_name: Option<String>,
}

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

/// Connection limits and timeouts of the listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted request line, in bytes, without its LF.
    pub max_line_bytes: usize,
    /// Most connections served at once; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// A connection on which nothing was read or written for this long is closed
    /// (the reference's `connectionTimeoutMs`).
    pub idle_timeout: Duration,
    /// How long in-flight work may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Threads running connections (TLS, parsing, signature checks); `None`: one per
    /// core but one, which is left to the group-commit thread (at least one).
    pub worker_threads: Option<usize>,
    /// How much lower than the connection threads the group-commit thread is
    /// scheduled (a `nice` increment, 0–19). When every core is busy the connection
    /// threads run first and the commit groups grow, which costs less CPU per
    /// artifact; when cores are free it changes nothing.
    pub committer_nice: u8,
}

impl Limits {
    /// The number of connection threads to start: the setting, or the automatic
    /// choice (see [`Limits::worker_threads`]).
    pub fn effective_worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            cores.saturating_sub(1).max(1)
        })
    }
}

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

/// The built-in IP filter. A deny entry wins over an allow entry; an empty allow list
/// allows every address that is not denied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpFilterSettings {
    /// Networks allowed to connect (empty: all).
    pub allow: Vec<IpNet>,
    /// Networks refused even if allowed.
    pub deny: Vec<IpNet>,
}

impl IpFilterSettings {
    /// Whether a client at `address` may connect.
    pub fn allows(&self, address: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket appears as ::ffff:a.b.c.d; the lists
        // are written with plain IPv4 networks.
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            IpAddr::V4(_) => address,
        };
        if self.deny.iter().any(|net| net.contains(&address)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&address))
    }
}

/// A domain whose identities this server hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSettings {
    /// The domain, e.g. `ebill.example`.
    pub name: String,
    /// The identity that signs identity-lookup answers (and delegations) for
    /// identities of this domain (`04-identity-dns.md` §6.2); `admin$<name>` unless
    /// configured.
    pub signer: Identity,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON when standard error is not a terminal (journald, containers), text otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `"auto"`, `"text"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Logging settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// A `tracing` filter such as `info` or `btps=debug,info`; `RUST_LOG` wins at run time.
    pub level: String,
    /// Text, JSON, or chosen by whether standard error is a terminal.
    pub format: LogFormat,
}

/// The local admin socket: how the operator commands reach a running server.
///
/// redb lets one process hold the database, so while `btps serve` runs, `btps
/// identity`, `btps trust`, `btps backup` and the others send their requests over
/// this Unix socket instead. Access control is the socket file's permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// Whether `btps serve` opens the socket.
    pub enabled: bool,
    /// The socket file; `<data_dir>/admin.sock` unless configured.
    pub socket: PathBuf,
    /// Permission bits of the socket file: `0o600` (owner only) by default; `0o660`
    /// lets the file's group administer the server too. Never any bits for others.
    pub socket_mode: u32,
}

/// The socket file name inside the data directory.
pub const ADMIN_SOCKET_FILE_NAME: &str = "admin.sock";

/// One invalid setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    /// The TOML key (`limits.idle_timeout_ms`), environment variable (`PORT`) or file
    /// the problem is in.
    pub setting: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl ConfigError {
    fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

/// Every invalid setting found by one [`Config::load`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

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
    ("limits.idle_timeout_ms", Some("CONNECTION_TIMEOUT")),
    ("limits.shutdown_grace_ms", Some("BTPS_SHUTDOWN_GRACE_MS")),
    ("limits.worker_threads", Some("BTPS_WORKER_THREADS")),
    ("limits.committer_nice", Some("BTPS_COMMITTER_NICE")),
    ("trust.cooling_off_ms", Some("BTPS_TRUST_COOLING_OFF_MS")),
    ("trust.default_privacy", Some("BTPS_TRUST_DEFAULT_PRIVACY")),
    ("trust.enforce_privacy", Some("BTPS_TRUST_ENFORCE_PRIVACY")),
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
];

/// Reads a variable of this process's environment (for [`Config::load`]).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Default for Config {
    /// The development instance: `./btps-data`, `127.0.0.1:3443`, redb.
    fn default() -> Self {
        Config::defaults_under(Path::new(DEFAULT_DATA_DIR))
    }
}

impl Config {
    /// Defaults < TOML `file` < environment (`env` looks a variable up; pass
    /// [`process_env`] for the real one). Every invalid setting is reported, not just
    /// the first, each naming its TOML key or environment variable. Environment
    /// variables set to an empty string count as unset.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut loader = Loader::new(env);
        let config = loader.run(file);
        if loader.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(loader.errors))
        }
    }

    /// The built-in defaults, with every file under `data_dir`.
    pub fn defaults_under(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_owned(),
            listen: DEFAULT_LISTEN,
            server: ServerIdentitySettings {
                identity: None,
                selector: DEFAULT_SELECTOR.to_owned(),
                public_key_path: data_dir.join("keys/server.pub.pem"),
                private_key_path: data_dir.join("keys/server.key.pem"),
            },
            tls: TlsSettings {
                cert_path: data_dir.join("tls/cert.pem"),
                key_path: data_dir.join("tls/key.pem"),
                min_version: TlsVersion::Tls13,
                handshake_timeout: Duration::from_secs(10),
            },
            storage: StorageSettings {
                kind: StorageKind::Redb,
                database_path: data_dir.join(crate::store::DATABASE_FILE_NAME),
                cache_size_bytes: RedbOptions::default().cache_size,
                // Off: reading every page of a 1 GB file takes 1.3 s warm and 4.5 s
                // cold, against 5–20 ms without (docs/benchmark.md). redb still repairs
                // and checks the file after an unclean shutdown, and `btps check`
                // verifies every page of a running server's database through a copy.
                verify_on_open: false,
                trust_file_path: data_dir.join("trust.json"),
                identity_file_path: data_dir.join("identities.json"),
                trust_entity_name: None,
                identity_entity_name: None,
            },
            dns: DnsSettings {
                servers: Vec::new(),
                timeout: ResolverOptions::default().timeout,
                attempts: ResolverOptions::default().attempts,
                cache: CacheConfig::default(),
            },
            limits: Limits {
                max_line_bytes: 4 * 1024 * 1024,
                max_connections: 1024,
                idle_timeout: Duration::from_secs(30),
                shutdown_grace: Duration::from_secs(10),
                worker_threads: None,
                committer_nice: 10,
            },
            trust: TrustSettings {
                cooling_off: Duration::from_secs(24 * 60 * 60),
                default_privacy: PrivacyType::Mixed,
                enforce_privacy: true,
            },
            rate_limit: RateLimitSettings {
                enabled: false,
                per_ip: Bucket {
                    rate_per_second: 50.0,
                    burst: 50,
                },
                per_sender: Bucket {
                    rate_per_second: 30.0,
                    burst: 30,
                },
            },
            ip_filter: IpFilterSettings::default(),
            domains: Vec::new(),
            log: LogSettings {
                level: "info".to_owned(),
                format: LogFormat::Auto,
            },
            admin: AdminSettings {
                enabled: true,
                socket: data_dir.join(ADMIN_SOCKET_FILE_NAME),
                socket_mode: 0o600,
            },
            http: HttpSettings {
                listen: Some(DEFAULT_HTTP_LISTEN),
                token: None,
            },
        }
    }

    /// The identity that signs identity-lookup answers for `domain` (the domain part
    /// of a parsed identity): the configured domain signer, else `SERVER_IDENTITY`,
    /// else `admin$<domain>`.
    pub fn lookup_signer(&self, domain: &str) -> Identity {
        if let Some(hosted) = self.hosted_domain(domain) {
            return hosted.signer.clone();
        }
        if let Some(identity) = &self.server.identity {
            return identity.clone();
        }
        // The domain part of a parsed identity always forms a valid `admin$<domain>`;
        // for any other text the fallback is a name no key is published for, so a
        // client's verification fails instead of the server.
        Identity::parse(&format!("admin${domain}")).unwrap_or_else(|_| unverifiable_signer())
    }

    /// The hosted domain `domain` (compared ignoring ASCII case), if it is one.
    pub fn hosted_domain(&self, domain: &str) -> Option<&DomainSettings> {
        self.domains
            .iter()
            .find(|hosted| hosted.name.eq_ignore_ascii_case(domain))
    }

    /// How the redb store is opened.
    pub fn redb_options(&self) -> RedbOptions {
        RedbOptions {
            cache_size: self.storage.cache_size_bytes,
            check_integrity_on_open: self.storage.verify_on_open,
        }
    }

    /// The resolver timeouts of [`DnsSettings`].
    pub fn resolver_options(&self) -> ResolverOptions {
        ResolverOptions {
            timeout: self.dns.timeout,
            attempts: self.dns.attempts,
        }
    }

    /// The TXT resolver of the configuration: hickory with the configured name servers
    /// (or the system's) and timeouts, wrapped in the TTL-respecting cache. Call it
    /// inside a Tokio runtime.
    pub fn dns_resolver(&self) -> Result<Arc<dyn TxtResolver>, ConfigError> {
        let options = self.resolver_options();
        let resolver = if self.dns.servers.is_empty() {
            HickoryTxtResolver::from_system_config(options).map_err(|error| {
                ConfigError::new(
                    "dns.servers",
                    format!(
                        "none configured and the system DNS configuration is unusable ({error}); set dns.servers or BTPS_DNS_SERVERS"
                    ),
                )
            })?
        } else {
            HickoryTxtResolver::with_name_servers(&self.dns.servers, options)
        };
        Ok(Arc::new(CachingResolver::new(resolver, self.dns.cache)))
    }
}

/// A syntactically valid identity that no DNS publishes a key for (`.invalid` is
/// reserved, RFC 2606).
fn unverifiable_signer() -> Identity {
    // A fixed literal that satisfies the identity grammar.
    #[allow(clippy::expect_used)]
    Identity::parse("admin$unknown.invalid").expect("literal identity is valid")
}

// ---------------------------------------------------------------------------------
// Loading.
// ---------------------------------------------------------------------------------

/// A value before it is interpreted: from the TOML file or the environment.
enum Raw {
    Toml(toml::Value),
    Env(String),
}

impl Raw {
    /// The value as text: a TOML string, or the environment value.
    fn text(self) -> Result<String, String> {
        match self {
            Raw::Env(text) => Ok(text),
            Raw::Toml(toml::Value::String(text)) => Ok(text),
            Raw::Toml(other) => Err(format!("expected a string, found {}", other.type_str())),
        }
    }

    /// A non-negative integer (TOML integer, or decimal digits in the environment).
    fn unsigned(self) -> Result<u64, String> {
        match self {
            Raw::Env(text) => text
                .parse::<u64>()
                .map_err(|_| format!("expected a non-negative integer, found {text:?}")),
            Raw::Toml(toml::Value::Integer(value)) => u64::try_from(value)
                .map_err(|_| format!("expected a non-negative integer, found {value}")),
            Raw::Toml(other) => Err(format!("expected an integer, found {}", other.type_str())),
        }
    }

    fn boolean(self) -> Result<bool, String> {
        match self {
            Raw::Env(text) => match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("expected true or false, found {text:?}")),
            },
            Raw::Toml(toml::Value::Boolean(value)) => Ok(value),
            Raw::Toml(other) => Err(format!(
                "expected true or false, found {}",
                other.type_str()
            )),
        }
    }

    fn float(self) -> Result<f64, String> {
        match self {
            Raw::Env(text) => text
                .parse::<f64>()
                .map_err(|_| format!("expected a number, found {text:?}")),
            Raw::Toml(toml::Value::Float(value)) => Ok(value),
            // Rates are small; every i64 a person writes here is exact as f64.
            #[allow(clippy::cast_precision_loss)]
            Raw::Toml(toml::Value::Integer(value)) => Ok(value as f64),
            Raw::Toml(other) => Err(format!("expected a number, found {}", other.type_str())),
        }
    }

    /// A list of strings: a TOML array, or comma-separated in the environment.
    fn list(self) -> Result<Vec<String>, String> {
        match self {
            Raw::Env(text) => Ok(text
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()),
            Raw::Toml(toml::Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(text) => Ok(text),
                    other => Err(format!(
                        "expected a list of strings, found an element of type {}",
                        other.type_str()
                    )),
                })
                .collect(),
            Raw::Toml(other) => Err(format!(
                "expected a list of strings, found {}",
                other.type_str()
            )),
        }
    }

    /// A byte size: an integer, or a string with an optional binary unit.
    fn size(self) -> Result<u64, String> {
        match self {
            Raw::Toml(toml::Value::Integer(_)) => self.unsigned(),
            other => parse_size(&other.text()?),
        }
    }
}

/// Parses `1048576`, `"512KiB"`, `"64 MiB"`, `"1GiB"` (binary units only, so a size
/// is never off by the 1000-vs-1024 confusion).
fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("expected a size such as 33554432 or \"32MiB\", found {text:?}"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit in {text:?}; use bytes or KiB, MiB, GiB"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A duration in milliseconds that must be positive.
fn positive_ms(raw: Raw) -> Result<Duration, String> {
    match raw.unsigned()? {
        0 => Err("must be greater than 0".to_owned()),
        ms => Ok(Duration::from_millis(ms)),
    }
}

fn positive_usize(raw: Raw) -> Result<usize, String> {
    let value = raw.unsigned()?;
    if value == 0 {
        return Err("must be at least 1".to_owned());
    }
    usize::try_from(value).map_err(|_| format!("{value} is too large for this machine"))
}

fn nice_increment(raw: Raw) -> Result<u8, String> {
    let value = raw.unsigned()?;
    u8::try_from(value)
        .ok()
        .filter(|&value| value <= 19)
        .ok_or_else(|| format!("must be 0–19, found {value}"))
}

fn path(raw: Raw) -> Result<PathBuf, String> {
    let text = raw.text()?;
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(PathBuf::from(text))
}

fn identity(raw: Raw) -> Result<Identity, String> {
    let text = raw.text()?;
    Identity::parse(&text).map_err(|error| format!("{text:?}: {error}"))
}

/// A key selector: it becomes a DNS label, so letters, digits, `-` and `_`, 1 to 63
/// bytes.
fn selector(raw: Raw) -> Result<String, String> {
    let text = raw.text()?;
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(text)
    } else {
        Err(format!(
            "{text:?} is not a selector (1 to 63 letters, digits, '-' or '_')"
        ))
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

/// A network in CIDR notation; a bare address is a network of that one address.
fn network(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not an IP network (e.g. 10.0.0.0/8) or address"))
}

fn networks(raw: Raw) -> Result<Vec<IpNet>, String> {
    raw.list()?.iter().map(|text| network(text)).collect()
}

/// A domain name that can form identities (`admin$<domain>` must be valid).
fn domain_name(text: &str) -> Result<String, String> {
    let text = text.trim_end_matches('.');
    match Identity::parse(&format!("admin${text}")) {
        Ok(_) => Ok(text.to_owned()),
        Err(_) => Err(format!(
            "{text:?} is not a domain name usable in identities (e.g. ebill.example)"
        )),
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

/// A table of the file being read, with the keys not yet consumed: whatever is left
/// when the section is finished is an unknown key.
struct Section {
    /// The dotted path of the table (`""` for the top level, `rate_limit.per_ip`).
    path: String,
    table: toml::Table,
    /// Keys asked for, to suggest a correction for a misspelt one.
    known: Vec<&'static str>,
}

impl Section {
    fn new(path: String, table: toml::Table) -> Self {
        Section {
            path,
            table,
            known: Vec::new(),
        }
    }

    fn empty(path: &str) -> Self {
        Section::new(path.to_owned(), toml::Table::new())
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn take(&mut self, key: &'static str) -> Option<toml::Value> {
        self.known.push(key);
        self.table.remove(key)
    }
}

/// The state of one [`Config::load`]: the errors so far and the environment.
struct Loader<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    /// Every TOML key and environment variable consulted (checked against
    /// [`SETTINGS`] by a test).
    consulted: BTreeSet<(String, Option<&'static str>)>,
}

impl<'a> Loader<'a> {
    fn new(env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Loader {
            env,
            errors: Vec::new(),
            consulted: BTreeSet::new(),
        }
    }

    fn error(&mut self, setting: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(setting, message));
    }

    fn env(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|value| !value.trim().is_empty())
    }

    /// Applies one setting: the TOML value of `key` in `section`, then the
    /// environment variable `env`, each parsed with `parse`; a bad value is recorded
    /// and leaves `target` unchanged.
    fn setting<T>(
        &mut self,
        section: &mut Section,
        key: &'static str,
        env: Option<&'static str>,
        parse: impl Fn(Raw) -> Result<T, String>,
        target: &mut T,
    ) {
        let full_key = section.key(key);
        self.consulted.insert((full_key.clone(), env));
        if let Some(value) = section.take(key) {
            match parse(Raw::Toml(value)) {
                Ok(value) => *target = value,
                Err(message) => self.error(full_key, message),
            }
        }
        if let Some(name) = env
            && let Some(value) = self.env(name)
        {
            match parse(Raw::Env(value)) {
                Ok(value) => *target = value,
                Err(message) => self.error(name, message),
            }
        }
    }

    /// Like [`Loader::setting`] for a value that has no default of its own.
    fn optional<T>(
        &mut self,
        section: &mut Section,
        key: &'static str,
        env: Option<&'static str>,
        parse: impl Fn(Raw) -> Result<T, String>,
        target: &mut Option<T>,
    ) {
        self.setting(section, key, env, |raw| parse(raw).map(Some), target);
    }

    /// The sub-table `key` of `section` (empty when absent or not a table).
    fn table(&mut self, section: &mut Section, key: &'static str) -> Section {
        let path = section.key(key);
        match section.take(key) {
            None => Section::empty(&path),
            Some(toml::Value::Table(table)) => Section::new(path, table),
            Some(other) => {
                self.error(
                    path.clone(),
                    format!("expected a table, found {}", other.type_str()),
                );
                Section::empty(&path)
            }
        }
    }

    /// Reports the keys nobody asked for. Takes the section so that nothing can be
    /// read from it afterwards.
    fn finish(&mut self, mut section: Section) {
        let leftover = std::mem::take(&mut section.table);
        for key in leftover.keys() {
            let suggestion = section
                .known
                .iter()
                .map(|known| (edit_distance(key, known), *known))
                .filter(|(distance, _)| *distance <= 3)
                .min()
                .map(|(_, known)| format!("; did you mean '{}'?", section.key(known)))
                .unwrap_or_default();
            self.error(section.key(key), format!("unknown setting{suggestion}"));
        }
    }

    /// The TOML file as a table (empty, with an error recorded, if unreadable).
    fn read_file(&mut self, file: &Path) -> toml::Table {
        let setting = format!("config file {}", file.display());
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) => {
                self.error(setting, format!("cannot be read: {error}"));
                return toml::Table::new();
            }
        };
        match text.parse::<toml::Table>() {
            Ok(table) => table,
            Err(error) => {
                self.error(
                    setting,
                    format!("is not valid TOML: {}", error.to_string().trim_end()),
                );
                toml::Table::new()
            }
        }
    }

    fn run(&mut self, file: Option<&Path>) -> Config {
        let table = match file {
            Some(file) => self.read_file(file),
            None => toml::Table::new(),
        };
        let mut top = Section::new(String::new(), table);

        // data_dir first: the defaults of every path below follow it.
        let mut data_dir = PathBuf::from(DEFAULT_DATA_DIR);
        self.setting(
            &mut top,
            "data_dir",
            Some("BTPS_DATA_DIR"),
            path,
            &mut data_dir,
        );
        let mut config = Config::defaults_under(&data_dir);

        self.setting(
            &mut top,
            "listen",
            Some("BTPS_LISTEN"),
            |raw| {
                let text = raw.text()?;
                text.parse::<SocketAddr>()
                    .map_err(|_| format!("{text:?} is not an IP:PORT address (e.g. 0.0.0.0:3443)"))
            },
            &mut config.listen,
        );
        // PORT (the reference's name) changes only the port of `listen`.
        let mut port = config.listen.port();
        self.consulted.insert(("listen".to_owned(), Some("PORT")));
        if let Some(text) = self.env("PORT") {
            match text.parse::<u16>() {
                Ok(value) => port = value,
                Err(_) => self.error("PORT", format!("{text:?} is not a port number (0-65535)")),
            }
        }
        config.listen.set_port(port);

        self.server(&mut top, &mut config);
        self.tls(&mut top, &mut config);
        self.storage(&mut top, &mut config);
        self.dns(&mut top, &mut config);
        self.limits(&mut top, &mut config);
        self.trust(&mut top, &mut config);
        self.rate_limit(&mut top, &mut config);
        self.ip_filter(&mut top, &mut config);
        self.domains(&mut top, &mut config);
        self.log(&mut top, &mut config);
        self.admin(&mut top, &mut config);
        self.http(&mut top, &mut config);
        self.finish(top);
        config
    }

    fn server(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "server");
        let server = &mut config.server;
        self.optional(
            &mut section,
            "identity",
            Some("SERVER_IDENTITY"),
            identity,
            &mut server.identity,
        );
        self.setting(
            &mut section,
            "selector",
            Some("BTPS_SERVER_SELECTOR"),
            selector,
            &mut server.selector,
        );
        self.setting(
            &mut section,
            "public_key_path",
            Some("SERVER_PUBLIC_KEY_PATH"),
            path,
            &mut server.public_key_path,
        );
        self.setting(
            &mut section,
            "private_key_path",
            Some("SERVER_PRIVATE_KEY_PATH"),
            path,
            &mut server.private_key_path,
        );
        self.finish(section);
    }

    fn tls(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "tls");
        let tls = &mut config.tls;
        self.setting(
            &mut section,
            "cert_path",
            Some("BTPS_TLS_CERT"),
            path,
            &mut tls.cert_path,
        );
        self.setting(
            &mut section,
            "key_path",
            Some("BTPS_TLS_KEY"),
            path,
            &mut tls.key_path,
        );
        self.setting(
            &mut section,
            "min_version",
            Some("BTPS_TLS_MIN_VERSION"),
            |raw| match raw.text()?.as_str() {
                "1.2" => Ok(TlsVersion::Tls12),
                "1.3" => Ok(TlsVersion::Tls13),
                other => Err(format!("expected \"1.2\" or \"1.3\", found {other:?}")),
            },
            &mut tls.min_version,
        );
        self.setting(
            &mut section,
            "handshake_timeout_ms",
            Some("BTPS_TLS_HANDSHAKE_TIMEOUT_MS"),
            positive_ms,
            &mut tls.handshake_timeout,
        );
        self.finish(section);
    }

    fn storage(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "storage");
        let storage = &mut config.storage;
        self.setting(
            &mut section,
            "type",
            Some("STORAGE_TYPE"),
            |raw| match raw.text()?.to_ascii_lowercase().as_str() {
                "redb" => Ok(StorageKind::Redb),
                "json" => Ok(StorageKind::Json),
                other => Err(format!("expected \"redb\" or \"json\", found {other:?}")),
            },
            &mut storage.kind,
        );
        self.setting(
            &mut section,
            "database_path",
            Some("BTPS_DATABASE"),
            path,
            &mut storage.database_path,
        );
        self.setting(
            &mut section,
            "cache_size",
            Some("BTPS_CACHE_SIZE"),
            |raw| match raw.size()? {
                size if size < 1 << 20 => Err(format!("{size} bytes is too small; at least 1MiB")),
                size => Ok(size),
            },
            &mut storage.cache_size_bytes,
        );
        self.setting(
            &mut section,
            "verify_on_open",
            Some("BTPS_VERIFY_ON_OPEN"),
            Raw::boolean,
            &mut storage.verify_on_open,
        );
        self.setting(
            &mut section,
            "trust_file_path",
            Some("TRUST_FILE_PATH"),
            path,
            &mut storage.trust_file_path,
        );
        self.setting(
            &mut section,
            "identity_file_path",
            Some("IDENTITY_FILE_PATH"),
            path,
            &mut storage.identity_file_path,
        );
        self.optional(
            &mut section,
            "trust_entity_name",
            Some("TRUST_ENTITY_NAME"),
            Raw::text,
            &mut storage.trust_entity_name,
        );
        self.optional(
            &mut section,
            "identity_entity_name",
            Some("BTPS_IDENTITY_ENTITY_NAME"),
            Raw::text,
            &mut storage.identity_entity_name,
        );
        self.finish(section);
    }

    fn dns(&mut self, top: &mut Section, config: &mut Config) {
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

    fn limits(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "limits");
        let limits = &mut config.limits;
        self.setting(
            &mut section,
            "max_line_bytes",
            Some("BTPS_MAX_LINE_BYTES"),
            |raw| {
                let size = raw.size()?;
                if size < 1024 {
                    return Err(format!(
                        "{size} bytes cannot hold an artifact; at least 1024"
                    ));
                }
                usize::try_from(size).map_err(|_| format!("{size} is too large for this machine"))
            },
            &mut limits.max_line_bytes,
        );
        self.setting(
            &mut section,
            "max_connections",
            Some("BTPS_MAX_CONNECTIONS"),
            positive_usize,
            &mut limits.max_connections,
        );
        self.setting(
            &mut section,
            "idle_timeout_ms",
            Some("CONNECTION_TIMEOUT"),
            positive_ms,
            &mut limits.idle_timeout,
        );
        self.setting(
            &mut section,
            "shutdown_grace_ms",
            Some("BTPS_SHUTDOWN_GRACE_MS"),
            |raw| raw.unsigned().map(Duration::from_millis),
            &mut limits.shutdown_grace,
        );
        self.setting(
            &mut section,
            "worker_threads",
            Some("BTPS_WORKER_THREADS"),
            |raw| positive_usize(raw).map(Some),
            &mut limits.worker_threads,
        );
        self.setting(
            &mut section,
            "committer_nice",
            Some("BTPS_COMMITTER_NICE"),
            nice_increment,
            &mut limits.committer_nice,
        );
        self.finish(section);
    }

    fn trust(&mut self, top: &mut Section, config: &mut Config) {
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

    fn rate_limit(&mut self, top: &mut Section, config: &mut Config) {
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

    fn ip_filter(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "ip_filter");
        let filter = &mut config.ip_filter;
        self.setting(
            &mut section,
            "allow",
            Some("BTPS_IP_ALLOW"),
            networks,
            &mut filter.allow,
        );
        self.setting(
            &mut section,
            "deny",
            Some("BTPS_IP_DENY"),
            networks,
            &mut filter.deny,
        );
        self.finish(section);
    }

    /// `[[domains]]` from the file; `BTPS_HOSTED_DOMAINS` replaces the list of names,
    /// keeping the signers the file gives for the names it keeps.
    fn domains(&mut self, top: &mut Section, config: &mut Config) {
        self.consulted
            .insert(("domains[].name".to_owned(), Some("BTPS_HOSTED_DOMAINS")));
        self.consulted.insert(("domains[].signer".to_owned(), None));
        // (name, signer, where it was configured)
        let mut names: Vec<(String, Option<Identity>, String)> = Vec::new();
        match top.take("domains") {
            None => {}
            Some(toml::Value::Array(entries)) => {
                for (index, entry) in entries.into_iter().enumerate() {
                    let path = format!("domains[{index}]");
                    let toml::Value::Table(table) = entry else {
                        self.error(path, "expected a table with 'name' and optionally 'signer'");
                        continue;
                    };
                    let mut section = Section::new(path, table);
                    let named = section.table.contains_key("name");
                    let mut name: Option<String> = None;
                    self.optional(
                        &mut section,
                        "name",
                        None,
                        |raw| domain_name(&raw.text()?),
                        &mut name,
                    );
                    let mut signer: Option<Identity> = None;
                    self.optional(&mut section, "signer", None, identity, &mut signer);
                    match name {
                        Some(name) => names.push((name, signer, section.path.clone())),
                        None if !named => self.error(section.key("name"), "required"),
                        // Present but invalid: already reported.
                        None => {}
                    }
                    self.finish(section);
                }
            }
            Some(other) => self.error(
                "domains",
                format!("expected [[domains]] tables, found {}", other.type_str()),
            ),
        }
        if let Some(text) = self.env("BTPS_HOSTED_DOMAINS") {
            let mut replaced = Vec::new();
            for item in Raw::Env(text).list().unwrap_or_default() {
                match domain_name(&item) {
                    Ok(name) => {
                        let signer = names
                            .iter()
                            .find(|(known, _, _)| known.eq_ignore_ascii_case(&name))
                            .and_then(|(_, signer, _)| signer.clone());
                        replaced.push((name, signer, "BTPS_HOSTED_DOMAINS".to_owned()));
                    }
                    Err(message) => self.error("BTPS_HOSTED_DOMAINS", message),
                }
            }
            names = replaced;
        }
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for (name, signer, origin) in names {
            if !seen.insert(name.to_ascii_lowercase()) {
                self.error(origin, format!("domain {name:?} is listed twice"));
                continue;
            }
            let signer = match signer {
                Some(signer) if !signer.domain().eq_ignore_ascii_case(&name) => {
                    // Clients check that the signer belongs to the looked-up domain
                    // (`04-identity-dns.md` §6.4); any other signer is refused there.
                    self.error(
                        format!("{origin}.signer"),
                        format!("{signer} is not an identity of the domain {name}"),
                    );
                    continue;
                }
                Some(signer) => signer,
                None => match Identity::parse(&format!("admin${name}")) {
                    Ok(signer) => signer,
                    Err(error) => {
                        self.error(origin, error.to_string());
                        continue;
                    }
                },
            };
            config.domains.push(DomainSettings { name, signer });
        }
    }

    fn log(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "log");
        let log = &mut config.log;
        self.setting(
            &mut section,
            "level",
            Some("BTPS_LOG_LEVEL"),
            |raw| {
                let text = raw.text()?;
                tracing_subscriber::EnvFilter::try_new(&text)
                    .map(|_| text.clone())
                    .map_err(|error| {
                        format!("{text:?} is not a log filter (e.g. info, btps=debug): {error}")
                    })
            },
            &mut log.level,
        );
        self.setting(
            &mut section,
            "format",
            Some("BTPS_LOG_FORMAT"),
            |raw| match raw.text()?.as_str() {
                "auto" => Ok(LogFormat::Auto),
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                other => Err(format!(
                    "expected \"auto\", \"text\" or \"json\", found {other:?}"
                )),
            },
            &mut log.format,
        );
        self.finish(section);
    }
}

impl Loader<'_> {
    fn admin(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "admin");
        let admin = &mut config.admin;
        self.setting(
            &mut section,
            "enabled",
            Some("BTPS_ADMIN"),
            Raw::boolean,
            &mut admin.enabled,
        );
        self.setting(
            &mut section,
            "socket",
            Some("BTPS_ADMIN_SOCKET"),
            path,
            &mut admin.socket,
        );
        self.setting(
            &mut section,
            "socket_mode",
            Some("BTPS_ADMIN_SOCKET_MODE"),
            socket_mode,
            &mut admin.socket_mode,
        );
        self.finish(section);
    }

    fn http(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "http");
        let http = &mut config.http;
        self.setting(
            &mut section,
            "listen",
            Some("BTPS_HTTP_LISTEN"),
            |raw| parse_http_listen(&raw.text()?),
            &mut http.listen,
        );
        self.optional(
            &mut section,
            "token",
            Some("BTPS_HTTP_TOKEN"),
            |raw| http_token(&raw.text()?),
            &mut http.token,
        );
        if let Err(error) = http.check() {
            self.errors.push(error);
        }
        self.finish(section);
    }
}

/// Permission bits of the admin socket: an octal string (`"0660"`) or a TOML
/// integer (`0o660`). The owner must be able to connect (read and write), and others
/// get nothing: whoever can connect administers the server.
fn socket_mode(raw: Raw) -> Result<u32, String> {
    let mode = match raw {
        Raw::Toml(toml::Value::Integer(value)) => u32::try_from(value)
            .map_err(|_| format!("{value} is not a permission mode such as \"0600\""))?,
        other => {
            let text = other.text()?;
            let digits = text.trim().trim_start_matches("0o");
            u32::from_str_radix(digits, 8).map_err(|_| {
                format!("{text:?} is not an octal permission mode such as \"0600\" or \"0660\"")
            })?
        }
    };
    if mode > 0o777 {
        return Err(format!(
            "{mode:#o} has bits beyond the permission bits (at most 0777)"
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(format!(
            "{mode:04o} does not let the owner connect; it needs at least 0600"
        ));
    }
    if mode & 0o007 != 0 {
        return Err(format!(
            "{mode:04o} lets every local user administer the server; use 0600, or 0660 with a dedicated group"
        ));
    }
    Ok(mode)
}

/// The HTTP endpoint's address: `IP:PORT`, or `""` / `"off"` to turn it off.
pub fn parse_http_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    match text.trim() {
        "" | "off" => Ok(None),
        address => address.parse::<SocketAddr>().map(Some).map_err(|_| {
            format!("{text:?} is not an IP:PORT address (e.g. 127.0.0.1:3480) or \"off\"")
        }),
    }
}

/// A bearer token: long enough not to be guessed, and legal in an HTTP header.
fn http_token(text: &str) -> Result<Secret, String> {
    if text.len() < MIN_HTTP_TOKEN_LEN {
        return Err(format!(
            "too short ({} characters); use at least {MIN_HTTP_TOKEN_LEN}, e.g. from `openssl rand -hex 32`",
            text.len()
        ));
    }
    if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(
            "must be printable ASCII without spaces (it is sent in an HTTP header)".to_owned(),
        );
    }
    Ok(Secret::new(text))
}

/// Levenshtein distance, for "did you mean" on unknown keys.
fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for (i, left_char) in left.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, right_char) in right.iter().enumerate() {
            let substitution = previous[j] + usize::from(left_char != *right_char);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[right.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn sizes_take_binary_units_only() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size(" 2 GiB "), Ok(2 << 30));
        assert_eq!(parse_size("512kib"), Ok(512 << 10));
        assert!(parse_size("64MB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn socket_modes_keep_others_out_and_the_owner_in() {
        let text = |text: &str| socket_mode(Raw::Env(text.to_owned()));
        assert_eq!(text("0600"), Ok(0o600));
        assert_eq!(text("660"), Ok(0o660));
        assert_eq!(text("0o640"), Ok(0o640));
        assert_eq!(
            socket_mode(Raw::Toml(toml::Value::Integer(0o660))),
            Ok(0o660)
        );
        assert!(text("0666").unwrap_err().contains("every local user"));
        assert!(text("0400").unwrap_err().contains("owner"));
        assert!(text("4600").is_err());
        assert!(text("rw-------").is_err());
    }

    #[test]
    fn the_admin_socket_follows_the_data_directory() {
        let config = Config::defaults_under(Path::new("/srv/btps"));
        assert_eq!(config.admin.socket, Path::new("/srv/btps/admin.sock"));
        assert_eq!(config.admin.socket_mode, 0o600);
        assert!(config.admin.enabled);
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("idle_timout_ms", "idle_timeout_ms"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
