//! Middleware: hooks around the pipeline's stages, with the reference's phase names
//! (`spec/08-delivery.md` §7), and the two built-ins: a token-bucket rate limiter per
//! IP and per sender, and IP allow/deny lists.
//!
//! Middleware is synchronous: it decides from what it is shown, without I/O, so that a
//! hook can never stall a connection. A hook answers early by returning
//! [`Verdict::Respond`]; the connection stays open.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::config::IpFilterSettings;
use std::sync::Mutex;
use std::time::Instant;

use crate::protocol::{Artifact, ErrorCode, ProtocolError};

/// Where in the pipeline a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// A line arrived; nothing is parsed yet.
    BeforeParsing,
    /// The line parsed, or failed to (see [`Request::error`]).
    AfterParsing,
    /// Before signature verification.
    BeforeSignatureVerification,
    /// After signature verification (failed if [`Request::error`] is set).
    AfterSignatureVerification,
    /// Before the trust check.
    BeforeTrustVerification,
    /// After the trust check (failed if [`Request::error`] is set).
    AfterTrustVerification,
    /// Before the handler runs.
    BeforeOnArtifact,
    /// After the handler ran.
    AfterOnArtifact,
    /// Before an error is answered.
    BeforeOnError,
    /// After an error was answered.
    AfterOnError,
}

/// What a hook is shown.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The peer.
    pub remote: SocketAddr,
    /// The line as received.
    pub line: &'a [u8],
    /// The artifact, once parsed.
    pub artifact: Option<&'a Artifact>,
    /// The error of the stage just finished, if it failed.
    pub error: Option<&'a ProtocolError>,
}

/// A hook's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Continue,
    /// Answer this error now and skip the rest of the pipeline for this line.
    Respond(ProtocolError),
}

/// A pipeline hook.
pub trait Middleware: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Whether a new connection from `remote` is allowed at all (checked before the
    /// TLS handshake; a refused connection is closed without a word).
    fn allow_connection(&self, _remote: SocketAddr) -> bool {
        true
    }

    /// Runs at `phase` of one line.
    fn handle(&self, _phase: Phase, _request: &Request<'_>) -> Verdict {
        Verdict::Continue
    }
}

/// The answer of the reference's rate limiter: `btps_error`, code 429, message
/// `Too many requests`; the connection stays open.
pub fn too_many_requests(detail: String) -> ProtocolError {
    let mut error = ProtocolError::new(ErrorCode::RateLimiter, detail);
    error.message_override = Some("Too many requests".to_owned());
    error
}

/// A token bucket's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketSpec {
    /// Tokens added per second.
    pub rate_per_second: f64,
    /// Bucket size (the largest burst).
    pub burst: u32,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by `K`, bounded in number.
struct Buckets<K> {
    spec: BucketSpec,
    buckets: Mutex<HashMap<K, Bucket>>,
}

/// How many keys a limiter tracks before it forgets the idle ones.
const MAX_TRACKED_KEYS: usize = 100_000;

impl<K: std::hash::Hash + Eq + Clone> Buckets<K> {
    fn new(spec: BucketSpec) -> Self {
        Buckets {
            spec,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; false when the bucket is empty.
    fn take(&self, key: &K, now: Instant) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let burst = f64::from(self.spec.burst);
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(key) {
            // Forget buckets that have refilled: they carry no information.
            let rate = self.spec.rate_per_second;
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_TRACKED_KEYS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.spec.rate_per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Token-bucket rate limiting per client IP (every line, before parsing) and per
/// sender identity (after parsing: transporter `from`, agent id, lookup requester,
/// else the IP).
pub struct RateLimiter {
    per_ip: Buckets<IpAddr>,
    per_sender: Buckets<String>,
}

impl RateLimiter {
    /// A limiter with the given bucket sizes.
    pub fn new(per_ip: BucketSpec, per_sender: BucketSpec) -> Self {
        RateLimiter {
            per_ip: Buckets::new(per_ip),
            per_sender: Buckets::new(per_sender),
        }
    }

    fn sender_key(request: &Request<'_>) -> String {
        match request.artifact {
            Some(Artifact::Transporter(artifact)) => artifact.from.as_str().to_lowercase(),
            Some(Artifact::Agent(artifact)) => format!("agent:{}", artifact.agent_id),
            Some(Artifact::IdentityLookup(lookup)) => lookup.from.as_str().to_lowercase(),
            _ => request.remote.ip().to_string(),
        }
    }
}

impl Middleware for RateLimiter {
    fn name(&self) -> &'static str {
        "rate-limiter"
    }

    fn handle(&self, phase: Phase, request: &Request<'_>) -> Verdict {
        let now = Instant::now();
        match phase {
            Phase::BeforeParsing if !self.per_ip.take(&request.remote.ip(), now) => {
                Verdict::Respond(too_many_requests(format!(
                    "rate limit for {}",
                    request.remote.ip()
                )))
            }
            Phase::AfterParsing if request.artifact.is_some() => {
                let key = Self::sender_key(request);
                if self.per_sender.take(&key, now) {
                    Verdict::Continue
                } else {
                    Verdict::Respond(too_many_requests(format!("rate limit for {key}")))
                }
            }
            _ => Verdict::Continue,
        }
    }
}

/// IP allow and deny lists ([`IpFilterSettings`]): a denied address is refused; when
/// the allow list is not empty, only addresses on it are admitted.
pub struct IpFilter {
    settings: IpFilterSettings,
}

impl IpFilter {
    /// A filter from the configured lists.
    pub fn new(settings: IpFilterSettings) -> Self {
        IpFilter { settings }
    }
}

impl Middleware for IpFilter {
    fn name(&self) -> &'static str {
        "ip-filter"
    }

    fn allow_connection(&self, remote: SocketAddr) -> bool {
        self.settings.allows(remote.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_refill_at_their_rate() {
        let buckets = Buckets::new(BucketSpec {
            rate_per_second: 10.0,
            burst: 2,
        });
        let start = Instant::now();
        assert!(buckets.take(&1, start));
        assert!(buckets.take(&1, start));
        assert!(!buckets.take(&1, start));
        assert!(buckets.take(&2, start), "keys are independent");
        assert!(buckets.take(&1, start + Duration::from_millis(100)));
        assert!(!buckets.take(&1, start + Duration::from_millis(100)));
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let settings = IpFilterSettings {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            deny: vec!["127.0.0.2/32".parse().unwrap()],
        };
        let filter = IpFilter::new(settings);
        let admits =
            |address: &str| filter.allow_connection(SocketAddr::new(address.parse().unwrap(), 1));
        assert!(admits("127.0.0.1") && admits("::ffff:127.0.0.1"));
        assert!(!admits("127.0.0.2"));
        assert!(!admits("192.0.2.1"));
        assert!(
            IpFilter::new(IpFilterSettings::default())
                .allow_connection("192.0.2.1:1".parse().unwrap())
        );
    }
}
