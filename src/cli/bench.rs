//! `btps bench`: the load generator (see `btps::bench`), its options and its one
//! JSON line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use btps::bench::{self, BenchOptions};

/// Arguments of `btps bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Concurrent TLS connections (C).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// BTPS_DOC artifacts to send (M), signed before the measurement starts.
    #[arg(long, default_value_t = 10_000)]
    artifacts: usize,
    /// Distinct senders (K), all trusted by the receiver.
    #[arg(long, default_value_t = 100)]
    senders: usize,
    /// Share of the artifacts encrypted to the receiver's key (0.0–1.0).
    #[arg(long, default_value_t = 0.2)]
    encrypted_share: f64,
    /// Artifacts in flight per connection (W).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Open a new TLS connection for every artifact (measures connections per second).
    #[arg(long)]
    new_connection_per_artifact: bool,
    /// Before the load, open N idle TLS connections and report the server's memory
    /// with them (use --artifacts 0 for this measurement alone).
    #[arg(long, default_value_t = 0)]
    idle_connections: usize,
    /// Measure a running server at HOST:PORT instead of starting one. Its data
    /// directory must have been prepared with --prepare (same --keys and --senders),
    /// and it must resolve keys from this benchmark's DNS responder (--dns-listen).
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// Only prepare the data directory DIR of a stopped server for --target: host the
    /// receiver and trust the senders; then exit.
    #[arg(long, value_name = "DIR")]
    prepare: Option<PathBuf>,
    /// Where the sender and receiver keys are kept between runs
    /// [default: $XDG_CACHE_HOME/btps-bench/keys or ~/.cache/btps-bench/keys].
    #[arg(long = "keys", value_name = "DIR")]
    key_dir: Option<PathBuf>,
    /// Address of the benchmark's DNS responder, which publishes the senders' keys
    /// (port 0: any; give a fixed one for --target).
    #[arg(long, default_value = "127.0.0.1:0")]
    dns_listen: SocketAddr,
    /// Parent directory of the temporary data directory [default: the system's].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the temporary data directory after the run.
    #[arg(long)]
    keep_data: bool,
    /// Accepted artifacts to look up in the inbox afterwards (all when fewer).
    #[arg(long, default_value_t = 1000)]
    check_sample: usize,
    /// Limit for connecting and for each response, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Threads sending the load [default: 1 when the benchmark starts its own server,
    /// which shares the machine; one per core with --target].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    client_threads: Option<u16>,
    /// Measure agents instead: `inbox.fetch` of --agent-limit entries by the agents of
    /// --agent-identities identities with --agent-entries inbox entries each, over
    /// --connections connections, --agent-requests requests in all.
    #[arg(long)]
    agents: bool,
    /// Hosted identities, one agent each (--agents).
    #[arg(long, default_value_t = 1000)]
    agent_identities: usize,
    /// Inbox entries per identity (--agents).
    #[arg(long, default_value_t = 1000)]
    agent_entries: usize,
    /// `inbox.fetch` requests to send (--agents).
    #[arg(long, default_value_t = 20_000)]
    agent_requests: usize,
    /// Entries per request (--agents).
    #[arg(long, default_value_t = 50)]
    agent_limit: u32,
    /// The data directory of --agents, kept and reused by later runs with the same
    /// identities and entries [default: btps-agents-bench-NxE in --work-dir or the
    /// system's temporary directory].
    #[arg(long, value_name = "DIR")]
    agent_data: Option<PathBuf>,
    /// Leave the load generator's threads to the scheduler. By default, when the
    /// benchmark starts its own server on a machine with two or more CPUs, they
    /// keep to the last CPU the process may use, and the server to whichever it
    /// likes (see docs/benchmark.md).
    #[arg(long)]
    no_pin: bool,
}

/// Runs the benchmark and prints its JSON line; exit 1 when accepted artifacts are
/// missing from the inbox.
pub(crate) fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let key_dir = args.key_dir.unwrap_or_else(default_key_dir);
    if let Some(data_dir) = &args.prepare {
        bench::prepare_target(data_dir, &key_dir, args.senders)
            .with_context(|| format!("preparing {}", data_dir.display()))?;
        println!(
            "prepared {}: {} hosted, {} trusted senders (keys in {}). Start the server with \
             --dns-server pointing at the address given to `btps bench --dns-listen`.",
            data_dir.display(),
            bench::setup::RECEIVER,
            args.senders,
            key_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.agents {
        let data_dir = args.agent_data.clone().unwrap_or_else(|| {
            args.work_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir)
                .join(format!(
                    "btps-agents-bench-{}x{}",
                    args.agent_identities, args.agent_entries
                ))
        });
        let options = bench::agents::AgentBenchOptions {
            identities: args.agent_identities,
            entries_per_identity: args.agent_entries,
            requests: args.agent_requests,
            limit: args.agent_limit,
            connections: args.connections,
            data_dir,
            key_dir,
            executable: std::env::current_exe().context("locating the btps executable")?,
            timeout: Duration::from_millis(args.timeout_ms),
        };
        let report = bench::agents::run(&options, &|line| eprintln!("bench: {line}"))?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(if report.answered == report.requests {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let options = BenchOptions {
        connections: args.connections,
        artifacts: args.artifacts,
        senders: args.senders,
        encrypted_share: args.encrypted_share,
        window: args.window,
        new_connection_per_artifact: args.new_connection_per_artifact,
        idle_connections: args.idle_connections,
        target: args.target,
        key_dir,
        dns_listen: args.dns_listen,
        executable: std::env::current_exe().context("locating the btps executable")?,
        work_dir: args.work_dir,
        keep_data: args.keep_data,
        check_sample: args.check_sample,
        timeout: Duration::from_millis(args.timeout_ms),
        client_threads: args.client_threads.map(usize::from),
        pin_generator: !args.no_pin,
    };
    let report = bench::run(&options, &|line| eprintln!("bench: {line}"))?;
    println!("{}", serde_json::to_string(&report)?);
    if report.inbox_complete() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: accepted artifacts are missing from the inbox");
        Ok(ExitCode::from(1))
    }
}

/// `$XDG_CACHE_HOME/btps-bench/keys`, `~/.cache/btps-bench/keys`, or under the
/// temporary directory when neither is set.
fn default_key_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("btps-bench").join("keys")
}
