//! `btps bench`: a load generator shipped in the server's own binary, so that it
//! runs on the edge box it measures.
//!
//! A run prepares everything outside the measured window — sender keys
//! ([`setup`]), a data directory whose receiver trusts every sender, a DNS
//! responder publishing the senders' keys, and M signed (partly encrypted)
//! invoices ([`artifacts`]) — then starts `btps serve` as a child process
//! ([`child`]), sends the artifacts over C TLS connections ([`load`]), stops the
//! server with SIGTERM and checks that the accepted artifacts are in the receiver's
//! inbox byte for byte. The result is one JSON line ([`BenchReport`]).
//!
//! Against a server that is already running (`target`), the server is neither
//! started nor inspected: its data directory must have been prepared with
//! [`prepare_target`] from the same key directory, and it must resolve keys from
//! the benchmark's DNS responder (a fixed `dns_listen` address).

pub mod agents;
pub mod artifacts;
pub mod child;
pub mod load;
pub mod setup;
pub mod stats;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::crypto::KeyError;
use crate::protocol::ProtocolError;
use crate::store::{Mailbox, RedbOptions, RedbStore, StoreError};

use self::artifacts::Prepared;
use self::child::ServerProcess;
use self::load::LoadPlan;
use self::setup::RECEIVER;
use self::stats::{Latencies, kib_to_mib, round_to};

/// Why a benchmark could not run (failures of single artifacts are counted in the
/// report instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A key file in the key directory is not a usable private key.
    #[error("key file {}: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        source: KeyError,
    },
    /// Generating a key failed.
    #[error("generating a key: {0}")]
    Generate(KeyError),
    /// A key expected after loading and generating is not there (a bug).
    #[error("a key is missing after generation")]
    KeysMissing,
    /// A preparation thread panicked.
    #[error("a {0} thread panicked")]
    WorkerPanicked(&'static str),
    /// Signing or encrypting an artifact failed.
    #[error("signing an artifact: {0}")]
    Sign(ProtocolError),
    /// The data directory could not be prepared or read.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The options do not describe a possible run.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The server did not print its address in time.
    #[error("the server did not become ready; see {}", log.display())]
    ServerNotReady {
        /// Its standard error.
        log: PathBuf,
    },
    /// The server did not stop cleanly.
    #[error("the server did not stop cleanly ({status}); see {}", log.display())]
    ServerExit {
        /// How it ended.
        status: String,
        /// Its standard error.
        log: PathBuf,
    },
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Concurrent TLS connections (C).
    pub connections: usize,
    /// Artifacts to send (M).
    pub artifacts: usize,
    /// Distinct trusted senders (K); artifact `i` comes from sender `i % K`.
    pub senders: usize,
    /// Share of the artifacts encrypted to the receiver (0.0–1.0).
    pub encrypted_share: f64,
    /// Artifacts in flight per connection (W).
    pub window: usize,
    /// One new connection per artifact (measures connections per second).
    pub new_connection_per_artifact: bool,
    /// Idle TLS connections to open after start, to measure the server's memory
    /// with them (0: skip).
    pub idle_connections: usize,
    /// A running server (`host:port`) instead of a child process.
    pub target: Option<String>,
    /// Where the keys are kept between runs.
    pub key_dir: PathBuf,
    /// Where the DNS responder listens (port 0: any free port).
    pub dns_listen: SocketAddr,
    /// The `btps` executable to start as the server.
    pub executable: PathBuf,
    /// Parent of the temporary data directory (the system's temporary directory
    /// when `None`).
    pub work_dir: Option<PathBuf>,
    /// Keep the temporary data directory after the run.
    pub keep_data: bool,
    /// Accepted artifacts to look up in the inbox afterwards (all when fewer).
    pub check_sample: usize,
    /// Limit for connecting and for each response.
    pub timeout: Duration,
    /// Threads of the load generator's runtime; `None`: one when it measures its own
    /// child server (which it shares the machine with), one per core with `target`.
    pub client_threads: Option<usize>,
    /// Keep the load generator's threads on one CPU when the benchmark starts its
    /// own server (ignored with `target`): see `generator_cpu`.
    pub pin_generator: bool,
}

impl BenchOptions {
    /// The number of load-generator threads to start (see
    /// [`BenchOptions::client_threads`]).
    pub fn effective_client_threads(&self) -> usize {
        self.client_threads.unwrap_or_else(|| {
            if self.target.is_some() {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            } else {
                1
            }
        })
    }
}

/// The result of a run: printed as one JSON line. Figures that could not be
/// measured (no `/proc`, a `target` server) are `null`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchReport {
    /// `"pipelined"` or `"new-connection-per-artifact"`.
    pub mode: &'static str,
    /// Concurrent connections.
    pub connections: usize,
    /// Artifacts sent.
    pub artifacts: usize,
    /// Distinct senders.
    pub senders: usize,
    /// Artifacts in flight per connection.
    pub window: usize,
    /// Threads of the load generator.
    pub client_threads: usize,
    /// The CPU the load generator's threads kept to, if they were pinned.
    pub generator_cpu: Option<usize>,
    /// How many CPUs the server may run on (all of the machine's: only the
    /// generator is ever pinned).
    pub server_cpus: Option<usize>,
    /// Share of encrypted artifacts.
    pub encrypted_share: f64,
    /// Average artifact line length in bytes.
    pub artifact_bytes_avg: f64,
    /// Artifacts answered with `status.ok`.
    pub accepted: u64,
    /// Accepted artifacts per second of the measured window.
    pub accepted_per_s: f64,
    /// Connections (each with one accepted artifact) per second, in the
    /// connection-rate mode.
    pub connections_per_s: Option<f64>,
    /// Median latency, write to response.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency.
    pub p99_ms: Option<f64>,
    /// Largest latency.
    pub max_ms: Option<f64>,
    /// The measured window.
    pub elapsed_s: f64,
    /// Artifacts not accepted, for whatever reason.
    pub errors: u64,
    /// The failures by message.
    pub error_messages: BTreeMap<String, u64>,
    /// From starting the server process to its "listening" line.
    pub server_start_ms: Option<f64>,
    /// The server's resident memory right after start.
    pub server_idle_rss_mb: Option<f64>,
    /// Idle connections held open for the memory measurement.
    pub idle_connections: usize,
    /// Of those, opened successfully.
    pub idle_connections_opened: usize,
    /// The server's resident memory with the idle connections open.
    pub idle_connections_rss_mb: Option<f64>,
    /// The server's peak resident memory over its life (VmHWM).
    pub server_peak_rss_mb: Option<f64>,
    /// The server's CPU time (user + system) during the measured window.
    pub server_cpu_s: Option<f64>,
    /// The load generator's own CPU time (user + system) during the measured
    /// window: on a machine shared with the server, what the server did not get.
    pub client_cpu_s: Option<f64>,
    /// Keys generated in this run (the rest came from the key directory).
    pub keys_generated: usize,
    /// Seconds spent signing and encrypting the artifacts (not measured).
    pub presign_s: f64,
    /// Accepted artifacts looked up in the inbox afterwards.
    pub inbox_checked: Option<u64>,
    /// Of those, not found with the exact bytes sent.
    pub inbox_missing: Option<u64>,
    /// Entries in the receiver's inbox after the run.
    pub inbox_entries: Option<u64>,
}

impl BenchReport {
    /// Whether the run proved what it should: every looked-up artifact is stored.
    pub fn inbox_complete(&self) -> bool {
        self.inbox_missing.is_none_or(|missing| missing == 0)
    }
}

/// Runs a benchmark; `progress` receives one line per phase (for standard error).
pub fn run(options: &BenchOptions, progress: &dyn Fn(&str)) -> Result<BenchReport, BenchError> {
    validate(options)?;
    let mut report = BenchReport {
        mode: if options.new_connection_per_artifact {
            "new-connection-per-artifact"
        } else {
            "pipelined"
        },
        connections: options.connections,
        artifacts: options.artifacts,
        senders: options.senders,
        window: options.window,
        client_threads: options.effective_client_threads(),
        encrypted_share: options.encrypted_share,
        idle_connections: options.idle_connections,
        ..BenchReport::default()
    };

    let started = Instant::now();
    let keys = setup::load_or_generate_keys(&options.key_dir, options.senders)?;
    report.keys_generated = keys.generated;
    progress(&format!(
        "keys: {} senders from {} ({} generated) in {:.1} s",
        options.senders,
        options.key_dir.display(),
        keys.generated,
        started.elapsed().as_secs_f64()
    ));
    let dns = setup::start_dns(options.dns_listen, &keys)?;
    progress(&format!("DNS responder on {}", dns.local_addr()));

    let signing = Instant::now();
    let prepared = Arc::new(artifacts::presign(
        &keys,
        options.artifacts,
        options.encrypted_share,
    )?);
    report.presign_s = round_to(signing.elapsed().as_secs_f64(), 2);
    let total_bytes: usize = prepared.iter().map(|artifact| artifact.line.len()).sum();
    report.artifact_bytes_avg = round_to(total_bytes as f64 / prepared.len().max(1) as f64, 0);
    progress(&format!(
        "signed {} artifacts ({} encrypted, {} bytes on average) in {:.1} s",
        prepared.len(),
        prepared
            .iter()
            .filter(|artifact| artifact.encrypted)
            .count(),
        report.artifact_bytes_avg,
        report.presign_s
    ));

    report.generator_cpu = if options.pin_generator && options.target.is_none() {
        generator_cpu()
    } else {
        None
    };
    let pinned = report.generator_cpu;
    // Only the runtime's own threads are pinned: the server is started from this
    // thread and inherits its (unrestricted) CPU set.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.effective_client_threads())
        .enable_all()
        .on_thread_start(move || {
            if let Some(cpu) = pinned {
                pin_current_thread(cpu);
            }
        })
        .build()
        .map_err(|source| BenchError::Io {
            what: "starting the runtime".to_owned(),
            source,
        })?;

    if let Some(target) = &options.target {
        let (host, port) = parse_target(target)?;
        let plan = plan(options, host, port);
        let outcome = runtime.block_on(measure(&plan, options, &prepared, &mut report, None));
        fill_load(&mut report, &outcome, options);
        return Ok(report);
    }

    let data = TempData::create(options.work_dir.as_deref(), options.keep_data)?;
    setup::prepare_data_dir(data.path(), &keys)?;
    let server = ServerProcess::spawn(
        &options.executable,
        data.path(),
        dns.local_addr(),
        options.connections.max(options.idle_connections) + 64,
    )?;
    report.server_cpus = server.cpus_allowed();
    report.server_start_ms = Some(round_to(server.start_to_ready.as_secs_f64() * 1000.0, 1));
    // Let the runtime's threads settle before reading the idle figure.
    std::thread::sleep(Duration::from_millis(200));
    report.server_idle_rss_mb = server.memory().map(|memory| kib_to_mib(memory.rss_kib));
    progress(&format!(
        "server {} listening on {} after {:.0} ms, {} MiB resident",
        data.path().display(),
        server.address(),
        report.server_start_ms.unwrap_or_default(),
        report.server_idle_rss_mb.unwrap_or_default()
    ));

    let address = server.address();
    let plan = plan(options, address.ip().to_string(), address.port());
    let outcome = runtime.block_on(measure(
        &plan,
        options,
        &prepared,
        &mut report,
        Some(&server),
    ));
    report.server_peak_rss_mb = server
        .memory()
        .map(|memory| kib_to_mib(memory.peak_rss_kib));
    fill_load(&mut report, &outcome, options);
    drop(runtime);
    server.stop()?;
    drop(dns);

    let check = check_inbox(
        data.path(),
        &prepared,
        &outcome.accepted,
        options.check_sample,
    )?;
    report.inbox_checked = Some(check.checked);
    report.inbox_missing = Some(check.missing);
    report.inbox_entries = Some(check.entries);
    progress(&format!(
        "inbox: {} entries, {} of {} looked up missing",
        check.entries, check.missing, check.checked
    ));
    Ok(report)
}

/// The CPU for the load generator when it shares the machine with the server it
/// measures: the last one this process may run on, or `None` with fewer than two.
///
/// Left to the scheduler, the generator is often woken on the CPU of the server
/// thread that just answered it (the scheduler's wake-up affinity) and takes turns
/// with it there while the other CPU idles; with the generator kept to one CPU the
/// server's threads have the rest of the machine to themselves. Clients of a real
/// server run elsewhere, so this is the closer model (figures with and without in
/// docs/benchmark.md).
#[cfg(target_os = "linux")]
fn generator_cpu() -> Option<usize> {
    let allowed = rustix::thread::sched_getaffinity(None).ok()?;
    if allowed.count() < 2 {
        return None;
    }
    (0..rustix::thread::CpuSet::MAX_CPU)
        .rev()
        .find(|&cpu| allowed.is_set(cpu))
}

#[cfg(not(target_os = "linux"))]
fn generator_cpu() -> Option<usize> {
    None
}

/// Keeps the calling thread on `cpu` (best effort: a failure leaves it unpinned).
#[cfg(target_os = "linux")]
fn pin_current_thread(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    if let Err(error) = rustix::thread::sched_setaffinity(None, &set) {
        tracing::warn!(%error, cpu, "could not pin a load-generator thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_cpu: usize) {}

/// Prepares the data directory of a server to be measured with `target`: hosts the
/// receiver and trusts the senders of the keys in `key_dir` (generating the
/// missing ones). The server must be stopped while this runs.
pub fn prepare_target(data_dir: &Path, key_dir: &Path, senders: usize) -> Result<(), BenchError> {
    let keys = setup::load_or_generate_keys(key_dir, senders)?;
    setup::prepare_data_dir(data_dir, &keys)
}

fn validate(options: &BenchOptions) -> Result<(), BenchError> {
    let invalid = |text: &str| Err(BenchError::InvalidOption(text.to_owned()));
    if options.artifacts == 0 && options.idle_connections == 0 {
        return invalid("nothing to do: --artifacts and --idle-connections are both 0");
    }
    if options.senders == 0 {
        return invalid("--senders must be at least 1");
    }
    if options.connections == 0 || options.window == 0 {
        return invalid("--connections and --window must be at least 1");
    }
    if !(0.0..=1.0).contains(&options.encrypted_share) {
        return invalid("--encrypted-share must be between 0 and 1");
    }
    if options.target.is_some() && options.idle_connections > 0 {
        return invalid(
            "--idle-connections measures a server started by the benchmark, not a --target",
        );
    }
    Ok(())
}

fn plan(options: &BenchOptions, host: String, port: u16) -> LoadPlan {
    LoadPlan {
        host,
        port,
        connections: options.connections,
        window: options.window,
        new_connection_per_artifact: options.new_connection_per_artifact,
        timeout: options.timeout,
    }
}

/// `HOST:PORT` (an IPv6 host in brackets).
pub fn parse_target(target: &str) -> Result<(String, u16), BenchError> {
    let invalid = || BenchError::InvalidOption(format!("--target {target:?} is not HOST:PORT"));
    let (host, port) = target.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(invalid());
    }
    Ok((host.to_owned(), port))
}

/// The idle-connection measurement (when asked for), then the load, with the
/// server's CPU time taken around the measured window.
async fn measure(
    plan: &LoadPlan,
    options: &BenchOptions,
    prepared: &Arc<Vec<Prepared>>,
    report: &mut BenchReport,
    server: Option<&ServerProcess>,
) -> load::LoadOutcome {
    if options.idle_connections > 0 {
        let opened = load::open(
            plan,
            &load::client_options(options.timeout),
            options.idle_connections,
        )
        .await;
        let clients: Vec<_> = opened.into_iter().flatten().collect();
        report.idle_connections_opened = clients.len();
        // Give the server a moment to finish the handshakes' bookkeeping.
        tokio::time::sleep(Duration::from_millis(500)).await;
        report.idle_connections_rss_mb =
            server.and_then(|server| server.memory().map(|memory| kib_to_mib(memory.rss_kib)));
        for client in clients {
            let _ = client.close().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if prepared.is_empty() {
        return load::LoadOutcome::default();
    }
    let cpu_before = server.and_then(ServerProcess::cpu_seconds);
    let own_before = child::process_cpu_seconds("/proc/self/stat");
    let outcome = load::run(plan, Arc::clone(prepared)).await;
    let own_after = child::process_cpu_seconds("/proc/self/stat");
    let cpu_after = server.and_then(ServerProcess::cpu_seconds);
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        report.server_cpu_s = Some(round_to(after - before, 2));
    }
    if let (Some(before), Some(after)) = (own_before, own_after) {
        report.client_cpu_s = Some(round_to(after - before, 2));
    }
    outcome
}

fn fill_load(report: &mut BenchReport, outcome: &load::LoadOutcome, options: &BenchOptions) {
    let latencies = Latencies::new(outcome.latencies_micros.clone());
    let seconds = outcome.elapsed.as_secs_f64();
    report.accepted = outcome.accepted.len() as u64;
    report.accepted_per_s = if seconds > 0.0 {
        round_to(report.accepted as f64 / seconds, 1)
    } else {
        0.0
    };
    if options.new_connection_per_artifact {
        report.connections_per_s = Some(report.accepted_per_s);
    }
    report.p50_ms = latencies.percentile_ms(0.50);
    report.p99_ms = latencies.percentile_ms(0.99);
    report.max_ms = latencies.max_ms();
    report.elapsed_s = round_to(seconds, 3);
    report.errors = outcome.error_count();
    report.error_messages = outcome.errors.clone();
}

/// What the inbox check found.
#[derive(Clone, Copy, Debug)]
struct InboxCheck {
    checked: u64,
    missing: u64,
    entries: u64,
}

/// Opens the stopped server's database and looks up `sample` of the accepted
/// artifacts (evenly spread over the run; all when fewer) in the receiver's inbox,
/// comparing the stored bytes with the line sent.
fn check_inbox(
    data_dir: &Path,
    prepared: &[Prepared],
    accepted: &[usize],
    sample: usize,
) -> Result<InboxCheck, BenchError> {
    let store = RedbStore::open_dir(
        data_dir,
        &RedbOptions {
            check_integrity_on_open: false,
            ..RedbOptions::default()
        },
    )?;
    let mut accepted = accepted.to_vec();
    accepted.sort_unstable();
    let picked = sample_evenly(&accepted, sample);
    let mut missing = 0;
    store.read(|snapshot| {
        for &index in &picked {
            let artifact = &prepared[index];
            let entries =
                snapshot.mailbox_entries_by_artifact(RECEIVER, Mailbox::Inbox, &artifact.id)?;
            if !entries
                .iter()
                .any(|entry| entry.raw == artifact.line.as_bytes())
            {
                missing += 1;
            }
        }
        Ok(())
    })?;
    let entries = store.read(|snapshot| snapshot.mailbox_count(RECEIVER, Mailbox::Inbox))?;
    Ok(InboxCheck {
        checked: picked.len() as u64,
        missing,
        entries,
    })
}

/// Up to `count` items of `items`, evenly spaced (all of them when fewer).
pub fn sample_evenly<T: Copy>(items: &[T], count: usize) -> Vec<T> {
    if items.len() <= count {
        return items.to_vec();
    }
    (0..count).map(|k| items[k * items.len() / count]).collect()
}

/// A data directory of its own under the temporary directory, removed afterwards
/// unless it is to be kept.
struct TempData {
    path: PathBuf,
    keep: bool,
}

impl TempData {
    fn create(parent: Option<&Path>, keep: bool) -> Result<Self, BenchError> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_owned);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let path = parent.join(format!("btps-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|source| BenchError::Io {
            what: format!("creating {}", path.display()),
            source,
        })?;
        Ok(TempData { path, keep })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempData {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_host_and_port() {
        assert_eq!(
            parse_target("btps.example:3443").unwrap(),
            ("btps.example".to_owned(), 3443)
        );
        assert_eq!(
            parse_target("[::1]:3443").unwrap(),
            ("::1".to_owned(), 3443)
        );
        for bad in ["btps.example", ":3443", "host:port", "host:70000"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn samples_are_spread_over_the_run() {
        let items: Vec<usize> = (0..1000).collect();
        let picked = sample_evenly(&items, 100);
        assert_eq!(picked.len(), 100);
        assert_eq!(picked[0], 0);
        assert_eq!(picked[99], 990);
        assert_eq!(sample_evenly(&items[..5], 100), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_report_is_one_json_line_with_the_promised_fields() {
        let report = BenchReport::default();
        let line = serde_json::to_string(&report).unwrap();
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        for field in [
            "accepted_per_s",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "errors",
            "server_peak_rss_mb",
            "server_cpu_s",
            "client_cpu_s",
            "client_threads",
            "generator_cpu",
            "inbox_checked",
        ] {
            assert!(value.get(field).is_some(), "{field}");
        }
    }
}
