//! The real [`TxtResolver`]: TXT queries over UDP (TCP when an answer is truncated)
//! through hickory-resolver.
//!
//! hickory's own cache is switched off: [`super::CachingResolver`] caches with the
//! policy the server needs (bounded, negative answers briefly, failures never), and a
//! second cache underneath would make TTLs and invalidation hard to reason about.
//!
//! A lookup never takes longer than `timeout × attempts` (the documented bound of
//! `dns.timeout_ms` and `dns.attempts`): hickory counts its `attempts` as retries
//! after the first query (2 meant three queries, 6 s with the defaults), so it is
//! given one fewer, and the whole lookup runs under one deadline besides, because a
//! query may also go to several name servers in turn or over TCP.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::{ResolveError, ResolveErrorKind, TokioResolver};

use super::{BoxFuture, DnsError, TxtAnswer, TxtResolver};

/// Timeouts of a [`HickoryTxtResolver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolverOptions {
    /// How long to wait for one answer before trying again or giving up.
    pub timeout: Duration,
    /// How many times a query is sent before the lookup fails (at least 1).
    pub attempts: usize,
}

impl ResolverOptions {
    /// The longest a lookup may take: `timeout × attempts` (at least one attempt).
    pub fn deadline(&self) -> Duration {
        let attempts = u32::try_from(self.attempts.max(1)).unwrap_or(u32::MAX);
        self.timeout.saturating_mul(attempts)
    }
}

impl Default for ResolverOptions {
    /// 2 s × 2 attempts: a lookup that does not succeed within about 4 s is reported as
    /// a temporary failure, well inside a sender's patience.
    fn default() -> Self {
        ResolverOptions {
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }
}

/// A [`TxtResolver`] that sends real DNS queries.
///
/// Must be used inside a Tokio runtime.
pub struct HickoryTxtResolver {
    resolver: TokioResolver,
    /// `timeout × attempts`: no lookup waits longer.
    deadline: Duration,
}

impl HickoryTxtResolver {
    /// Queries the given name servers (each over UDP, and over TCP when an answer is
    /// truncated), in order of their observed performance.
    pub fn with_name_servers(servers: &[SocketAddr], options: ResolverOptions) -> Self {
        let mut config = ResolverConfig::new();
        for &server in servers {
            config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(server, Protocol::Tcp));
        }
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        configure(builder.options_mut(), options);
        // TXT records never live in /etc/hosts; reading it is wasted work.
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        HickoryTxtResolver {
            resolver: builder.build(),
            deadline: options.deadline(),
        }
    }

    /// Queries the name servers of the system configuration (`/etc/resolv.conf`), with
    /// `options` replacing the configured timeout and attempts.
    pub fn from_system_config(options: ResolverOptions) -> Result<Self, ResolveError> {
        let mut builder = TokioResolver::builder_tokio()?;
        configure(builder.options_mut(), options);
        Ok(HickoryTxtResolver {
            resolver: builder.build(),
            deadline: options.deadline(),
        })
    }

    async fn lookup(&self, name: &str) -> Result<TxtAnswer, DnsError> {
        let query_name = query_name(name).map_err(|error| DnsError::InvalidName {
            name: name.to_owned(),
            reason: error.to_string(),
        })?;
        let lookup = tokio::time::timeout(
            self.deadline,
            self.resolver.lookup(query_name, RecordType::TXT),
        )
        .await
        .map_err(|_| DnsError::Temporary {
            name: name.to_owned(),
            reason: format!(
                "no answer within {} ms (timeout x attempts)",
                self.deadline.as_millis()
            ),
        })?
        .map_err(|error| classify(name, &error))?;
        let mut records = Vec::new();
        let mut ttl: Option<u32> = None;
        for record in lookup.records() {
            if let RData::TXT(txt) = record.data() {
                records.push(txt.iter().map(|string| string.to_vec()).collect());
                ttl = Some(ttl.map_or(record.ttl(), |ttl| ttl.min(record.ttl())));
            }
        }
        match ttl {
            Some(ttl) => Ok(TxtAnswer {
                records,
                ttl: Duration::from_secs(u64::from(ttl)),
            }),
            // Only other types (e.g. a CNAME chain ending nowhere) came back.
            None => Err(DnsError::NotFound {
                name: name.to_owned(),
            }),
        }
    }
}

impl TxtResolver for HickoryTxtResolver {
    fn lookup_txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<TxtAnswer, DnsError>> {
        Box::pin(self.lookup(name))
    }
}

/// The wire form of `name`, always absolute (no search domain is ever appended).
///
/// An ASCII name is sent byte for byte, label by label, as the reference's resolver
/// does: DNS labels may hold any byte, and identities such as `pay+x$vendor.com` must
/// resolve although `+` is not a host-name character. A name with non-ASCII
/// characters is converted with IDNA (punycode), as Node does before querying.
fn query_name(name: &str) -> Result<Name, ProtoError> {
    if name.is_ascii() {
        let relative = name.strip_suffix('.').unwrap_or(name);
        Name::from_labels(relative.split('.').map(str::as_bytes))
    } else {
        let mut name = Name::from_utf8(name)?;
        name.set_fqdn(true);
        Ok(name)
    }
}

fn configure(options: &mut ResolverOpts, ours: ResolverOptions) {
    options.timeout = ours.timeout;
    // hickory sends a query once and then retries it `attempts` more times.
    options.attempts = ours.attempts.max(1) - 1;
    // 0 disables hickory's cache (see the module comment).
    options.cache_size = 0;
    // Key records are ~420 bytes, RSA-4096 ones ~800: EDNS avoids a TCP retry for most.
    options.edns0 = true;
}

/// Sorts a hickory failure into "definitively absent" and "may work later".
fn classify(name: &str, error: &ResolveError) -> DnsError {
    let not_found = || DnsError::NotFound {
        name: name.to_owned(),
    };
    let temporary = |reason: String| DnsError::Temporary {
        name: name.to_owned(),
        reason,
    };
    match error.kind() {
        ResolveErrorKind::Proto(proto) => classify_proto(proto, not_found, temporary),
        // Messages carry no structure; nothing says the record is absent.
        _ => temporary(error.to_string()),
    }
}

fn classify_proto(
    error: &ProtoError,
    not_found: impl FnOnce() -> DnsError,
    temporary: impl FnOnce(String) -> DnsError,
) -> DnsError {
    match error.kind() {
        // hickory reports every non-success response code as NoRecordsFound; only
        // NXDOMAIN and NOERROR-without-answer (NODATA) mean the record does not exist.
        ProtoErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
            ResponseCode::NXDomain | ResponseCode::NoError => not_found(),
            code => temporary(format!("server answered {code}")),
        },
        ProtoErrorKind::Timeout => temporary("no answer before the timeout".to_owned()),
        ProtoErrorKind::RequestRefused => temporary("request refused".to_owned()),
        _ => temporary(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_names_are_sent_verbatim() {
        let name = query_name("btps1._btps.identity.Pay+X.vendor.test.").unwrap();
        assert!(name.is_fqdn());
        let labels: Vec<&[u8]> = name.iter().collect();
        assert_eq!(
            labels,
            [
                &b"btps1"[..],
                b"_btps",
                b"identity",
                b"Pay+X",
                b"vendor",
                b"test"
            ]
        );
        assert_eq!(query_name("a.b").unwrap().num_labels(), 2);
    }

    #[test]
    fn unicode_names_become_punycode() {
        let name = query_name("_btps.host.örnek.test").unwrap();
        assert_eq!(name.to_ascii(), "_btps.host.xn--rnek-4qa.test.");
    }

    #[test]
    fn impossible_names_are_rejected() {
        assert!(query_name(&format!("{}.test", "a".repeat(64))).is_err());
        assert!(query_name("a..test").is_err());
        assert!(query_name("").is_err());
        let long = vec!["abcdefghij"; 30].join(".");
        assert!(query_name(&long).is_err());
    }
}
