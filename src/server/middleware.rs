//! Middleware: hooks around the pipeline's stages, with the reference's phase names
//! (`spec/08-delivery.md` §7), and the two built-ins: a token-bucket rate limiter per
//! IP and per sender, and IP allow/deny lists.
//!
//! A hook is async: it may look records up or call out before it decides. It lets
//! the line pass ([`Verdict::Continue`]), answers it with any response
//! ([`Verdict::Respond`]), or refuses it and optionally closes the connection
//! ([`Verdict::Reject`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::config::IpFilterSettings;
use std::sync::Mutex;
use std::time::Instant;

use crate::BoxFuture;
use crate::protocol::json::Object;
use crate::protocol::{Artifact, ErrorCode, ProtocolError};
use crate::store::Storage;

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

impl Phase {
    /// Every phase, in pipeline order.
    pub const ALL: [Phase; 10] = [
        Phase::BeforeParsing,
        Phase::AfterParsing,
        Phase::BeforeSignatureVerification,
        Phase::AfterSignatureVerification,
        Phase::BeforeTrustVerification,
        Phase::AfterTrustVerification,
        Phase::BeforeOnArtifact,
        Phase::AfterOnArtifact,
        Phase::BeforeOnError,
        Phase::AfterOnError,
    ];

    /// The reference's `phase.step` name, e.g. `before.parsing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::BeforeParsing => "before.parsing",
            Phase::AfterParsing => "after.parsing",
            Phase::BeforeSignatureVerification => "before.signatureVerification",
            Phase::AfterSignatureVerification => "after.signatureVerification",
            Phase::BeforeTrustVerification => "before.trustVerification",
            Phase::AfterTrustVerification => "after.trustVerification",
            Phase::BeforeOnArtifact => "before.onArtifact",
            Phase::AfterOnArtifact => "after.onArtifact",
            Phase::BeforeOnError => "before.onError",
            Phase::AfterOnError => "after.onError",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hook is shown of one line: built for that line only, never shared with
/// another (unlike the reference's per-connection context, `spec/08-delivery.md`
/// §7.2 note 1).
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The peer.
    pub remote: SocketAddr,
    /// The line as received (empty in the error phases).
    pub line: &'a [u8],
    /// The artifact, once parsed.
    pub artifact: Option<&'a Artifact>,
    /// The error of the stage just finished, if it failed; in the error phases, the
    /// error being answered.
    pub error: Option<&'a ProtocolError>,
    /// The storage the server runs on, for hooks that look records up.
    pub storage: &'a dyn Storage,
}

impl Request<'_> {
    /// The `id` of the artifact, once parsed: the `reqId` of the answer.
    pub fn request_id(&self) -> Option<&str> {
        self.artifact.map(Artifact::id).filter(|id| !id.is_empty())
    }

    /// The line's (`from`, `to`), once parsed: a transporter's sender and receiver,
    /// an agent's id and receiver, a lookup's requester and looked-up identity.
    pub fn parties(&self) -> Option<(&str, &str)> {
        match self.artifact? {
            Artifact::Transporter(artifact) => Some((artifact.from.as_str(), artifact.to.as_str())),
            Artifact::Agent(artifact) => Some((artifact.agent_id.as_str(), artifact.to.as_str())),
            Artifact::IdentityLookup(lookup) => {
                Some((lookup.from.as_str(), lookup.identity.as_str()))
            }
            Artifact::Control(_) => None,
        }
    }

    /// In `after.signatureVerification`: whether the signature verified.
    pub fn is_valid(&self) -> bool {
        self.error.is_none()
    }

    /// In `after.trustVerification`: whether the artifact was trusted (and stored).
    pub fn is_trusted(&self) -> bool {
        self.error.is_none()
    }
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("remote", &self.remote)
            .field("line_bytes", &self.line.len())
            .field("request_id", &self.request_id())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// A hook's decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Go on: the next hook, then the pipeline's own step.
    Continue,
    /// Answer with this response object (its `reqId` set to the line's artifact id)
    /// and end the processing of this line; the connection stays open.
    Respond(Object),
    /// Answer with this error (with the line's `reqId`) and end the processing of
    /// this line; close the connection gracefully afterwards when `close`.
    Reject {
        /// The error to answer.
        error: ProtocolError,
        /// Whether to close the connection after the answer.
        close: bool,
    },
}

impl Verdict {
    /// Refuses the line with `error`, keeping the connection open.
    pub fn reject(error: ProtocolError) -> Self {
        Verdict::Reject {
            error,
            close: false,
        }
    }

    /// This verdict as the future [`Middleware::handle`] returns, for hooks that
    /// decide without waiting.
    pub fn ready<'a>(self) -> BoxFuture<'a, Verdict> {
        Box::pin(std::future::ready(self))
    }
}

/// The priority of a hook that does not name one: after every hook that does.
pub const DEFAULT_PRIORITY: u32 = u32::MAX;

/// A pipeline hook: the reference's middleware as a Rust trait
/// (`spec/08-delivery.md` §7.3).
///
/// Hooks run in ascending [`priority`](Middleware::priority), hooks of equal
/// priority in registration order; each is awaited before the next. A hook that
/// panics answers the line with `BTP_ERROR_UNKNOWN`; the server goes on. A hook
/// that waits holds up only its own connection's line (each connection handles one
/// line at a time), but it does hold that line: keep waits short.
///
/// ```
/// use btps::server::middleware::{Middleware, Phase, Request, Verdict};
/// use btps::BoxFuture;
///
/// /// Refuses documents larger than 64 KiB before any work is spent on them.
/// struct SizeCap;
///
/// impl Middleware for SizeCap {
///     fn name(&self) -> &'static str {
///         "size-cap"
///     }
///
///     fn phases(&self) -> &'static [Phase] {
///         &[Phase::BeforeParsing]
///     }
///
///     fn handle<'a>(&'a self, _phase: Phase, request: &'a Request<'a>) -> BoxFuture<'a, Verdict> {
///         let verdict = if request.line.len() > 64 * 1024 {
///             Verdict::reject(btps::protocol::ProtocolError::validation("line too long for this server"))
///         } else {
///             Verdict::Continue
///         };
///         verdict.ready()
///     }
/// }
/// ```
pub trait Middleware: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Where this hook runs among the others: lower first.
    fn priority(&self) -> u32 {
        DEFAULT_PRIORITY
    }

    /// The phases at which [`handle`](Middleware::handle) is called (every phase by
    /// default). A hook is never called at other phases, and a phase without hooks
    /// costs nothing.
    fn phases(&self) -> &'static [Phase] {
        &Phase::ALL
    }

    /// Whether a new connection from `remote` is allowed at all (checked before the
    /// TLS handshake; a refused connection is closed without a word).
    fn allow_connection(&self, _remote: SocketAddr) -> bool {
        true
    }

    /// Runs at `phase` of one line.
    fn handle<'a>(&'a self, _phase: Phase, _request: &'a Request<'a>) -> BoxFuture<'a, Verdict> {
        Verdict::Continue.ready()
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

    fn priority(&self) -> u32 {
        // The reference's default set registers it with priority 1.
        1
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::BeforeParsing, Phase::AfterParsing]
    }

    fn handle<'a>(&'a self, phase: Phase, request: &'a Request<'a>) -> BoxFuture<'a, Verdict> {
        let now = Instant::now();
        let verdict = match phase {
            Phase::BeforeParsing if !self.per_ip.take(&request.remote.ip(), now) => {
                Verdict::reject(too_many_requests(format!(
                    "rate limit for {}",
                    request.remote.ip()
                )))
            }
            Phase::AfterParsing if request.artifact.is_some() => {
                let key = Self::sender_key(request);
                if self.per_sender.take(&key, now) {
                    Verdict::Continue
                } else {
                    Verdict::reject(too_many_requests(format!("rate limit for {key}")))
                }
            }
            _ => Verdict::Continue,
        };
        verdict.ready()
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

    fn phases(&self) -> &'static [Phase] {
        &[]
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
