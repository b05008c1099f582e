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

// Layout: this file holds `Config` with its methods and defaults, `Config::load` and
// the errors it reports; `loader.rs` reads values from the file and the environment,
// reports unknown keys and reads the top-level settings; `settings.rs` lists every
// setting. Every other file is one section of the TOML file (`[dns]` in `dns.rs`):
// its settings struct, defaults, keys, environment variables and value parsers.
mod admin;
mod agents;
mod delivery;
mod dns;
mod domains;
mod environment;
mod http;
mod ip_filter;
mod limits;
mod loader;
mod log;
mod postgres;
mod rate_limit;
mod server;
mod settings;
mod storage;
mod tls;
mod trust;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use admin::{ADMIN_SOCKET_FILE_NAME, AdminSettings};
pub use agents::{AgentSettings, TOKEN_LENGTHS};
pub use delivery::DeliverySettings;
pub use dns::DnsSettings;
pub use domains::DomainSettings;
pub use environment::{EnvironmentNote, environment_report};
pub use http::{DEFAULT_HTTP_LISTEN, HttpSettings, MIN_HTTP_TOKEN_LEN, Secret, parse_http_listen};
pub use ip_filter::IpFilterSettings;
pub use limits::Limits;
pub use log::{LogFormat, LogSettings};
pub use postgres::{PostgresSettings, PostgresUri};
pub use rate_limit::{Bucket, RateLimitSettings};
pub use server::{DEFAULT_SELECTOR, ServerIdentitySettings};
pub use settings::SETTINGS;
pub use storage::{StorageKind, StorageSettings};
pub use tls::{TlsSettings, TlsVersion};
pub use trust::TrustSettings;

use loader::Loader;

use crate::identity::Identity;
use crate::identity::dns::{CachingResolver, HickoryTxtResolver, ResolverOptions, TxtResolver};
use crate::store::RedbOptions;

/// The default data directory of a development instance.
pub const DEFAULT_DATA_DIR: &str = "./btps-data";
/// The default listening address: loopback only, the protocol's port.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    crate::identity::dns::DEFAULT_BTPS_PORT,
);

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
    /// Outbound delivery.
    pub delivery: DeliverySettings,
    /// Agent enrollment, sessions and actions.
    pub agents: AgentSettings,
}

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
            server: ServerIdentitySettings::defaults_under(data_dir),
            tls: TlsSettings::defaults_under(data_dir),
            storage: StorageSettings::defaults_under(data_dir),
            dns: DnsSettings::defaults(),
            limits: Limits::defaults(),
            trust: TrustSettings::defaults(),
            rate_limit: RateLimitSettings::defaults(),
            ip_filter: IpFilterSettings::default(),
            domains: Vec::new(),
            log: LogSettings::defaults(),
            admin: AdminSettings::defaults_under(data_dir),
            http: HttpSettings::defaults(),
            delivery: DeliverySettings::defaults(),
            agents: AgentSettings::defaults(),
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
    /// (or the system's) and timeouts, wrapped in the TTL-respecting cache, which
    /// counts its lookups in the process metrics ([`crate::metrics::dns_cache`]).
    /// Call it inside a Tokio runtime.
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
        Ok(Arc::new(
            CachingResolver::new(resolver, self.dns.cache).with_observer(crate::metrics::dns_cache),
        ))
    }
}

/// A syntactically valid identity that no DNS publishes a key for (`.invalid` is
/// reserved, RFC 2606).
fn unverifiable_signer() -> Identity {
    // A fixed literal that satisfies the identity grammar.
    #[allow(clippy::expect_used)]
    Identity::parse("admin$unknown.invalid").expect("literal identity is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults the documentation and the reference name: BTPS on 3443
    /// (`spec/04-identity-dns.md` §2), the HTTP endpoint on loopback 3480 (README).
    #[test]
    fn the_default_addresses_are_the_documented_ones() {
        assert_eq!(DEFAULT_LISTEN.to_string(), "127.0.0.1:3443");
        assert_eq!(DEFAULT_HTTP_LISTEN.to_string(), "127.0.0.1:3480");
        assert_eq!(Config::default().listen, DEFAULT_LISTEN);
        assert_eq!(Config::default().http.listen, Some(DEFAULT_HTTP_LISTEN));
    }
}
