//! `[limits]`: connection limits and timeouts of the listener, and the threads that
//! serve connections and commit their effects.

use std::time::Duration;

use super::Config;
use super::loader::{Loader, Raw, Section, positive_ms, positive_usize};

/// Connection limits and timeouts of the listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted request line, in bytes, without its LF.
    pub max_line_bytes: usize,
    /// Most connections served at once; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Most connections from one IP address at once; a client over it is answered
    /// with an error line and closed.
    pub max_connections_per_ip: usize,
    /// A connection on which nothing was read or written for this long is closed
    /// (the reference's `connectionTimeoutMs`).
    pub idle_timeout: Duration,
    /// A line must be complete (its `\n` received) within this time of its first
    /// byte, however the bytes trickle in; otherwise the connection is answered
    /// with an error and closed.
    pub line_timeout: Duration,
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

impl Limits {
    /// 4 MiB lines, 4096 connections (64 per address), 30 s idle, 20 s per line,
    /// 10 s grace, automatic threads.
    pub(super) fn defaults() -> Self {
        Limits {
            max_line_bytes: 4 * 1024 * 1024,
            max_connections: 4096,
            max_connections_per_ip: 64,
            idle_timeout: Duration::from_secs(30),
            line_timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(10),
            worker_threads: None,
            committer_nice: 10,
        }
    }
}

fn nice_increment(raw: Raw) -> Result<u8, String> {
    let value = raw.unsigned()?;
    u8::try_from(value)
        .ok()
        .filter(|&value| value <= 19)
        .ok_or_else(|| format!("must be 0–19, found {value}"))
}

impl Loader<'_> {
    pub(super) fn limits(&mut self, top: &mut Section, config: &mut Config) {
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
            "max_connections_per_ip",
            Some("BTPS_MAX_CONNECTIONS_PER_IP"),
            positive_usize,
            &mut limits.max_connections_per_ip,
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
            "line_timeout_ms",
            Some("BTPS_LINE_TIMEOUT_MS"),
            positive_ms,
            &mut limits.line_timeout,
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
}
