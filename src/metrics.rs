//! Process metrics, rendered as Prometheus text by the local HTTP endpoint.
//!
//! The hot path (the pipeline, signature checks, the DNS cache, commits) records into
//! handles registered once with a `metrics-exporter-prometheus` recorder: a counter
//! increment is one relaxed atomic add behind a pointer, a histogram sample one push
//! onto a lock-free bucket; no label set is built or hashed per call. Artifact counters
//! are registered lazily per (kind, outcome) pair and then cached in a fixed table.
//!
//! Values that already exist elsewhere (open connections, the database file size,
//! trust records by status) are not counted twice: they are read when `/metrics` is
//! rendered and set on gauges just before rendering ([`Metrics::render`]).
//!
//! One process-wide instance: the code that records (pipeline, signing, DNS cache)
//! has no context object to carry a registry, so [`install`] creates it once in a
//! `OnceLock`. Until `install` is called every recording function is a no-op, so
//! command-line tools, benchmarks and tests that do not look at metrics pay nothing
//! and accumulate no histogram samples. The recorder is *not* installed as the
//! `metrics` crate's global recorder: handles are registered on it directly, so no
//! other library's global recorder can collide with it. Tests in one process share
//! the instance and assert on counter deltas. Metric names: `docs/metrics.md`.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use metrics::{
    Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub use crate::identity::dns::DnsCacheEvent;
use crate::protocol::{ErrorCode, Failure, ProtocolError};

/// Open TLS connections (gauge).
pub const CONNECTIONS_OPEN: &str = "btps_connections_open";
/// TLS connections accepted since start (counter).
pub const CONNECTIONS_ACCEPTED: &str = "btps_connections_accepted_total";
/// Lines handled, by artifact kind and outcome (counter).
pub const ARTIFACTS: &str = "btps_artifacts_total";
/// One RSA signature check, seconds (histogram).
pub const SIGNATURE_VERIFICATION: &str = "btps_signature_verification_seconds";
/// One write transaction of an inbound artifact, begin to durable commit (histogram).
pub const DB_COMMIT: &str = "btps_db_commit_seconds";
/// DNS TXT lookups answered without a query of their own (counter; `answer` =
/// `records`, `not_found` or `coalesced`).
pub const DNS_CACHE_HITS: &str = "btps_dns_cache_hits_total";
/// DNS TXT lookups sent to the name servers (counter).
pub const DNS_CACHE_MISSES: &str = "btps_dns_cache_misses_total";
/// Size of the database file (gauge).
pub const DB_FILE_BYTES: &str = "btps_db_file_bytes";
/// Trust records by perspective and status (gauge).
pub const TRUST_RECORDS: &str = "btps_trust_records";
/// Always 1, labelled with the version (gauge).
pub const BUILD_INFO: &str = "btps_build_info";
/// Outbound delivery attempts by outcome class (counter; `class` = `delivered`,
/// `transient` or `permanent`).
pub const DELIVERY_ATTEMPTS: &str = "btps_delivery_attempts_total";
/// Outbox entries by what happened to them (counter; `event` = `queued`,
/// `delivered`, `retried`, `failed` or `cancelled`).
pub const OUTBOX_EVENTS: &str = "btps_outbox_events_total";
/// Entries in the outbox: queued, in flight or waiting for a retry (gauge).
pub const OUTBOX_ENTRIES: &str = "btps_outbox_entries";
/// Outbox entries a delivery attempt of this process holds (gauge).
pub const OUTBOX_IN_FLIGHT: &str = "btps_outbox_in_flight";
/// Age of the oldest outbox entry, seconds; 0 when the outbox is empty (gauge).
pub const OUTBOX_OLDEST_AGE: &str = "btps_outbox_oldest_age_seconds";

/// Signature checks take tens of microseconds (RSA-2048) to a few milliseconds (4096).
const SIGNATURE_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05,
];
/// A durable commit is one or two fsyncs: sub-millisecond on NVMe, tens of
/// milliseconds on SD cards.
const COMMIT_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// The `kind` label of [`ARTIFACTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactLabel {
    /// `TRUST_REQ`.
    TrustRequest,
    /// `TRUST_RES`.
    TrustResponse,
    /// `BTPS_DOC`.
    Document,
    /// An agent artifact.
    Agent,
    /// An identity lookup.
    IdentityLookup,
    /// `QUIT` / `PING`.
    Control,
    /// A line that did not parse or classify as any artifact.
    Unparsed,
}

impl ArtifactLabel {
    const ALL: [ArtifactLabel; 7] = [
        ArtifactLabel::TrustRequest,
        ArtifactLabel::TrustResponse,
        ArtifactLabel::Document,
        ArtifactLabel::Agent,
        ArtifactLabel::IdentityLookup,
        ArtifactLabel::Control,
        ArtifactLabel::Unparsed,
    ];

    /// The label value: the wire type for transporter artifacts, a lower-case word
    /// for the others.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactLabel::TrustRequest => "TRUST_REQ",
            ArtifactLabel::TrustResponse => "TRUST_RES",
            ArtifactLabel::Document => "BTPS_DOC",
            ArtifactLabel::Agent => "agent",
            ArtifactLabel::IdentityLookup => "identity_lookup",
            ArtifactLabel::Control => "control",
            ArtifactLabel::Unparsed => "unparsed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The `outcome` label of [`ARTIFACTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with success (stored, for transporter artifacts).
    Accepted,
    /// A transporter artifact stored before: acknowledged, not stored again.
    Duplicate,
    /// Refused with this error; the label is the precise code (`BTP_ERROR_SIG_MISMATCH`),
    /// not the coarser one written on the wire.
    Refused(ErrorCode),
    /// Answered with a temporary DNS failure (`dns_failure`): the sender retries.
    DnsFailure,
    /// Answered with an error because the storage failed (`storage_failure`).
    StorageFailure,
}

/// accepted, duplicate, every error code, dns_failure, storage_failure.
const OUTCOMES: usize = 4 + ErrorCode::ALL.len();
const DNS_FAILURE_SLOT: usize = 2 + ErrorCode::ALL.len();
const STORAGE_FAILURE_SLOT: usize = DNS_FAILURE_SLOT + 1;

impl Outcome {
    /// The outcome of an answered error: DNS and storage failures have labels of
    /// their own (on the wire both are `Unknown error`, like any other internal
    /// failure, which keeps the label `BTP_UNKNOWN_ERROR`).
    pub fn of(error: &ProtocolError) -> Outcome {
        match error.failure {
            Some(Failure::Dns) => Outcome::DnsFailure,
            Some(Failure::Storage) => Outcome::StorageFailure,
            _ => Outcome::Refused(error.code),
        }
    }

    fn index(self) -> usize {
        match self {
            Outcome::Accepted => 0,
            Outcome::Duplicate => 1,
            Outcome::DnsFailure => DNS_FAILURE_SLOT,
            Outcome::StorageFailure => STORAGE_FAILURE_SLOT,
            // ALL lists every constant (the protocol tests hold it to the enum); were
            // one missing, it would be counted as BTP_UNKNOWN_ERROR, never mislabelled.
            Outcome::Refused(code) => {
                let position =
                    |wanted: ErrorCode| ErrorCode::ALL.iter().position(|known| *known == wanted);
                2 + position(code)
                    .or_else(|| position(ErrorCode::Unknown))
                    .unwrap_or(0)
            }
        }
    }

    /// The label of slot `index` (the inverse of `index`).
    fn label_of(index: usize) -> &'static str {
        match index {
            0 => "accepted",
            1 => "duplicate",
            DNS_FAILURE_SLOT => "dns_failure",
            STORAGE_FAILURE_SLOT => "storage_failure",
            other => ErrorCode::ALL
                .get(other - 2)
                .map_or("BTP_UNKNOWN_ERROR", |code| code.code()),
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::DnsFailure => "dns_failure",
            Outcome::StorageFailure => "storage_failure",
            Outcome::Refused(code) => code.code(),
        }
    }
}

/// What `/metrics` reads from elsewhere at render time.
#[derive(Clone, Debug, Default)]
pub struct RenderInputs {
    /// Open TLS connections.
    pub connections_open: u64,
    /// TLS connections accepted since start.
    pub connections_accepted: u64,
    /// Size of the database file, if it could be read.
    pub db_file_bytes: Option<u64>,
    /// (perspective, status, count) of every non-zero trust record count.
    pub trust_records: Vec<(&'static str, String, u64)>,
    /// Entries in the outbox and the age of the oldest, if they could be read.
    pub outbox: Option<(u64, Duration)>,
}

/// The process's metrics: the recorder, its render handle and the hot-path handles.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    connections_open: Gauge,
    connections_accepted: Counter,
    signature_verification: Histogram,
    db_commit: Histogram,
    dns_hits_records: Counter,
    dns_hits_not_found: Counter,
    dns_hits_coalesced: Counter,
    dns_misses: Counter,
    db_file_bytes: Gauge,
    outbox_entries: Gauge,
    outbox_in_flight: Gauge,
    outbox_oldest_age: Gauge,
    /// Delivery counters by (metric, label value), registered on first use.
    delivery: Mutex<BTreeMap<(&'static str, &'static str), Counter>>,
    artifacts: [[OnceLock<Counter>; OUTCOMES]; ArtifactLabel::ALL.len()],
    /// Every trust gauge set so far, so that a status whose count dropped to zero
    /// (its counter row is deleted) is rendered as 0 instead of its last value.
    trust_records: Mutex<BTreeMap<(&'static str, String), Gauge>>,
    /// Serialises set-then-render, so that concurrent scrapes of different stores
    /// (tests) each render their own values.
    render: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Creates the process's metrics on first call and turns recording on; later calls
/// return the same instance.
pub fn install() -> &'static Metrics {
    GLOBAL.get_or_init(Metrics::new)
}

/// The process's metrics, if [`install`] was called.
pub fn installed() -> Option<&'static Metrics> {
    GLOBAL.get()
}

/// Counts one handled line.
pub fn artifact(kind: ArtifactLabel, outcome: Outcome) {
    if let Some(metrics) = GLOBAL.get() {
        metrics.artifact_counter(kind, outcome).increment(1);
    }
}

/// Starts a timer when metrics are on (so that a process without metrics does not
/// even read the clock).
pub fn timer() -> Option<Instant> {
    GLOBAL.get().map(|_| Instant::now())
}

/// Records one signature check started at `started` (from [`timer`]).
pub fn signature_checked(started: Option<Instant>) {
    if let (Some(metrics), Some(started)) = (GLOBAL.get(), started) {
        metrics
            .signature_verification
            .record(started.elapsed().as_secs_f64());
    }
}

/// Records one inbound write transaction started at `started` (from [`timer`]).
pub fn committed(started: Option<Instant>) {
    if let (Some(metrics), Some(started)) = (GLOBAL.get(), started) {
        metrics.db_commit.record(started.elapsed().as_secs_f64());
    }
}

/// Counts one DNS cache lookup: the observer the server gives its
/// [`CachingResolver`](crate::identity::dns::CachingResolver)s
/// (`CachingResolver::with_observer(metrics::dns_cache)`).
pub fn dns_cache(event: DnsCacheEvent) {
    if let Some(metrics) = GLOBAL.get() {
        match event {
            DnsCacheEvent::Hit => metrics.dns_hits_records.increment(1),
            DnsCacheEvent::NegativeHit => metrics.dns_hits_not_found.increment(1),
            DnsCacheEvent::Miss => metrics.dns_misses.increment(1),
            DnsCacheEvent::Coalesced => metrics.dns_hits_coalesced.increment(1),
        }
    }
}

/// Counts one delivery attempt of outcome `class` (`delivered`, `transient`,
/// `permanent`).
pub fn delivery_attempt(class: &'static str) {
    if let Some(metrics) = GLOBAL.get() {
        metrics.delivery_counter(DELIVERY_ATTEMPTS, "class", class);
    }
}

/// Counts one outbox event (`queued`, `delivered`, `retried`, `failed`, `cancelled`).
pub fn outbox_event(event: &'static str) {
    if let Some(metrics) = GLOBAL.get() {
        metrics.delivery_counter(OUTBOX_EVENTS, "event", event);
    }
}

/// One more (`true`) or one fewer outbox entry held by a delivery attempt.
pub fn outbox_in_flight(more: bool) {
    if let Some(metrics) = GLOBAL.get() {
        if more {
            metrics.outbox_in_flight.increment(1.0);
        } else {
            metrics.outbox_in_flight.decrement(1.0);
        }
    }
}

fn static_key(name: &'static str) -> Key {
    Key::from_static_name(name)
}

impl Metrics {
    fn new() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(SIGNATURE_VERIFICATION.to_owned()),
                SIGNATURE_BUCKETS,
            )
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Full(DB_COMMIT.to_owned()), COMMIT_BUCKETS)
            });
        // Only an empty bucket list is refused; the constants above are not empty.
        let builder = builder.unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // HELP texts, by kind (the recorder keeps one description table per kind).
        let gauges = [
            (CONNECTIONS_OPEN, None, "Open TLS connections."),
            (
                DB_FILE_BYTES,
                Some(Unit::Bytes),
                "Size of the database file.",
            ),
            (
                TRUST_RECORDS,
                None,
                "Trust records by perspective and status.",
            ),
            (BUILD_INFO, None, "Always 1; the version is a label."),
            (
                OUTBOX_ENTRIES,
                None,
                "Entries in the outbox (queued, in flight or waiting for a retry).",
            ),
            (
                OUTBOX_IN_FLIGHT,
                None,
                "Outbox entries a delivery attempt of this process holds.",
            ),
            (
                OUTBOX_OLDEST_AGE,
                Some(Unit::Seconds),
                "Age of the oldest outbox entry; 0 when the outbox is empty.",
            ),
        ];
        let counters = [
            (
                CONNECTIONS_ACCEPTED,
                "TLS connections accepted since start.",
            ),
            (
                ARTIFACTS,
                "Lines handled, by artifact kind and outcome (accepted, duplicate, dns_failure, storage_failure or the error code).",
            ),
            (
                DNS_CACHE_HITS,
                "DNS TXT lookups answered without a query of their own.",
            ),
            (
                DNS_CACHE_MISSES,
                "DNS TXT lookups sent to the name servers.",
            ),
            (
                DELIVERY_ATTEMPTS,
                "Outbound delivery attempts by outcome class (delivered, transient, permanent).",
            ),
            (
                OUTBOX_EVENTS,
                "Outbox entries by event (queued, delivered, retried, failed, cancelled).",
            ),
        ];
        let histograms = [
            (
                SIGNATURE_VERIFICATION,
                "Duration of one signature check (RSA verification of the canonical text).",
            ),
            (
                DB_COMMIT,
                "Duration of the write transaction of an inbound artifact, begin to durable commit.",
            ),
        ];
        for (name, unit, text) in gauges {
            recorder.describe_gauge(name.into(), unit, SharedString::const_str(text));
        }
        for (name, text) in counters {
            recorder.describe_counter(name.into(), None, SharedString::const_str(text));
        }
        for (name, text) in histograms {
            recorder.describe_histogram(
                name.into(),
                Some(Unit::Seconds),
                SharedString::const_str(text),
            );
        }
        let dns_hit = |answer: &'static str| {
            static_key(DNS_CACHE_HITS)
                .with_extra_labels(vec![Label::from_static_parts("answer", answer)])
        };
        let metrics = Metrics {
            connections_open: recorder.register_gauge(&static_key(CONNECTIONS_OPEN), &METADATA),
            connections_accepted: recorder
                .register_counter(&static_key(CONNECTIONS_ACCEPTED), &METADATA),
            signature_verification: recorder
                .register_histogram(&static_key(SIGNATURE_VERIFICATION), &METADATA),
            db_commit: recorder.register_histogram(&static_key(DB_COMMIT), &METADATA),
            dns_hits_records: recorder.register_counter(&dns_hit("records"), &METADATA),
            dns_hits_not_found: recorder.register_counter(&dns_hit("not_found"), &METADATA),
            dns_hits_coalesced: recorder.register_counter(&dns_hit("coalesced"), &METADATA),
            dns_misses: recorder.register_counter(&static_key(DNS_CACHE_MISSES), &METADATA),
            db_file_bytes: recorder.register_gauge(&static_key(DB_FILE_BYTES), &METADATA),
            outbox_entries: recorder.register_gauge(&static_key(OUTBOX_ENTRIES), &METADATA),
            outbox_in_flight: recorder.register_gauge(&static_key(OUTBOX_IN_FLIGHT), &METADATA),
            outbox_oldest_age: recorder.register_gauge(&static_key(OUTBOX_OLDEST_AGE), &METADATA),
            delivery: Mutex::new(BTreeMap::new()),
            artifacts: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            trust_records: Mutex::new(BTreeMap::new()),
            render: Mutex::new(()),
            handle,
            recorder,
        };
        let version = Key::from_parts(
            BUILD_INFO,
            vec![Label::new("version", env!("CARGO_PKG_VERSION"))],
        );
        metrics
            .recorder
            .register_gauge(&version, &METADATA)
            .set(1.0);
        metrics
    }

    fn delivery_counter(&self, name: &'static str, label: &'static str, value: &'static str) {
        let mut counters = self.delivery.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .entry((name, value))
            .or_insert_with(|| {
                let key = Key::from_parts(name, vec![Label::from_static_parts(label, value)]);
                self.recorder.register_counter(&key, &METADATA)
            })
            .increment(1);
    }

    fn artifact_counter(&self, kind: ArtifactLabel, outcome: Outcome) -> &Counter {
        let slot = outcome.index();
        self.artifacts[kind.index()][slot].get_or_init(|| {
            let key = Key::from_parts(
                ARTIFACTS,
                vec![
                    Label::from_static_parts("kind", kind.as_str()),
                    Label::from_static_parts("outcome", Outcome::label_of(slot)),
                ],
            );
            self.recorder.register_counter(&key, &METADATA)
        })
    }

    /// Sets the gauges read from elsewhere and renders every metric as Prometheus text.
    pub fn render(&self, inputs: &RenderInputs) -> String {
        let _rendering = self.render.lock().unwrap_or_else(PoisonError::into_inner);
        // Counts fit an f64 exactly up to 2^53.
        #[allow(clippy::cast_precision_loss)]
        let as_f64 = |value: u64| value as f64;
        self.connections_open.set(as_f64(inputs.connections_open));
        self.connections_accepted
            .absolute(inputs.connections_accepted);
        if let Some(bytes) = inputs.db_file_bytes {
            self.db_file_bytes.set(as_f64(bytes));
        }
        let mut gauges = self
            .trust_records
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for gauge in gauges.values() {
            gauge.set(0.0);
        }
        for (perspective, status, count) in &inputs.trust_records {
            let gauge = gauges
                .entry((*perspective, status.clone()))
                .or_insert_with(|| {
                    let key = Key::from_parts(
                        TRUST_RECORDS,
                        vec![
                            Label::from_static_parts("perspective", perspective),
                            Label::new("status", status.clone()),
                        ],
                    );
                    self.recorder.register_gauge(&key, &METADATA)
                });
            gauge.set(as_f64(*count));
        }
        drop(gauges);
        if let Some((entries, oldest)) = inputs.outbox {
            self.outbox_entries.set(as_f64(entries));
            self.outbox_oldest_age.set(oldest.as_secs_f64());
        }
        self.handle.render()
    }

    /// Drains histogram samples into their buckets; run it periodically so that an
    /// unscraped process does not accumulate samples (`/metrics` does it as well).
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Runs [`Metrics::run_upkeep`] every `interval` until the task is dropped.
    pub async fn upkeep_every(&self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.run_upkeep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_slot() {
        let mut seen = std::collections::BTreeSet::new();
        assert!(seen.insert(Outcome::Accepted.index()));
        assert!(seen.insert(Outcome::Duplicate.index()));
        assert!(seen.insert(Outcome::DnsFailure.index()));
        assert!(seen.insert(Outcome::StorageFailure.index()));
        for code in ErrorCode::ALL {
            assert!(seen.insert(Outcome::Refused(code).index()), "{code:?}");
        }
        assert_eq!(seen.len(), OUTCOMES);
        for outcome in [
            Outcome::Accepted,
            Outcome::Duplicate,
            Outcome::Refused(ErrorCode::SigMismatch),
            Outcome::DnsFailure,
            Outcome::StorageFailure,
        ] {
            assert_eq!(Outcome::label_of(outcome.index()), outcome.as_str());
        }
        for (index, kind) in ArtifactLabel::ALL.iter().enumerate() {
            assert_eq!(kind.index(), index);
        }
    }
}
