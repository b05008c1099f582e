//! `btps serve`: the server, wired from the configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use btps::config::Config;
use btps::server::middleware::{BucketSpec, IpFilter, Middleware, RateLimiter};
use btps::server::trust::TrustPolicy;
use btps::server::{ListenerSettings, Pipeline, PipelineParts, Server, bootstrap};
use btps::signing::{DnsKeys, KeySource};
use btps::store::RedbStore;
use btps::systemd::Notifier;

/// The configuration file of an installed server, read when no other is named.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "/etc/btps/btps.toml";

/// Arguments of `btps serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML); environment variables override it. Default:
    /// /etc/btps/btps.toml when it exists, else built-in defaults.
    #[arg(long, env = "BTPS_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the configuration).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// DNS server(s) for key discovery, HOST:PORT (overrides the configuration).
    #[arg(long = "dns-server")]
    dns_servers: Vec<SocketAddr>,
    /// Data directory (overrides the configuration).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The configuration file to read: the one named (`--config` or `BTPS_CONFIG`), else
/// [`DEFAULT_CONFIG_FILE`] when it exists, else none (a development instance).
pub(crate) fn config_file(named: Option<PathBuf>) -> Option<PathBuf> {
    named.or_else(|| {
        let installed = Path::new(DEFAULT_CONFIG_FILE);
        installed.is_file().then(|| installed.to_owned())
    })
}

/// Loads the configuration: defaults < file < environment < command line.
pub(crate) fn load_config(
    file: Option<&Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Config> {
    // A --data-dir on the command line counts as the highest-precedence BTPS_DATA_DIR,
    // so that every default under the data directory follows it.
    let data_dir = data_dir.map(|dir| dir.display().to_string());
    let env = |name: &str| match (name, &data_dir) {
        ("BTPS_DATA_DIR", Some(dir)) => Some(dir.clone()),
        _ => btps::config::process_env(name),
    };
    Config::load(file, &env).map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))
}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let file = config_file(args.config);
    let mut config = load_config(file.as_deref(), args.data_dir)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if !args.dns_servers.is_empty() {
        config.dns.servers = args.dns_servers;
    }
    super::logging::init(&config.log);
    if let Some(file) = &file {
        tracing::info!(file = %file.display(), "configuration read");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let prepared = bootstrap::prepare(&config).context("preparing the data directory")?;
    for action in &prepared.actions {
        println!("{action}");
    }
    let store = RedbStore::open(&config.storage.database_path, &config.redb_options())
        .with_context(|| format!("opening {}", config.storage.database_path.display()))?;
    let resolver = config
        .dns_resolver()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let keys: Arc<dyn KeySource> = Arc::new(DnsKeys::new(btps::identity::dns::KeyDirectory::new(
        resolver,
    )));
    let mut middleware: Vec<Arc<dyn Middleware>> = Vec::new();
    if !config.ip_filter.allow.is_empty() || !config.ip_filter.deny.is_empty() {
        middleware.push(Arc::new(IpFilter::new(config.ip_filter.clone())));
    }
    if config.rate_limit.enabled {
        let bucket = |bucket: &btps::config::Bucket| BucketSpec {
            rate_per_second: bucket.rate_per_second,
            burst: bucket.burst,
        };
        middleware.push(Arc::new(RateLimiter::new(
            bucket(&config.rate_limit.per_ip),
            bucket(&config.rate_limit.per_sender),
        )));
    }
    let signer_config = config.clone();
    let pipeline = Pipeline::new(PipelineParts {
        store: store.clone(),
        keys,
        server_key: Arc::new(prepared.server_key),
        server_selector: config.server.selector.clone(),
        lookup_signer: Arc::new(move |domain: &str| signer_config.lookup_signer(domain)),
        policy: TrustPolicy {
            cooling_off: config.trust.cooling_off,
            default_privacy: config.trust.default_privacy.clone(),
            enforce_privacy: config.trust.enforce_privacy,
        },
        middleware,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    let settings = ListenerSettings {
        connection: btps::server::ConnectionLimits {
            max_line_bytes: config.limits.max_line_bytes,
            idle_timeout: config.limits.idle_timeout,
        },
        handshake_timeout: config.tls.handshake_timeout,
        max_connections: config.limits.max_connections,
        shutdown_grace: config.limits.shutdown_grace,
    };
    let server = Server::new(Arc::new(pipeline), prepared.tls, settings);
    println!(
        "btps listening on {address} (database {})",
        config.storage.database_path.display()
    );
    tracing::info!(address = %address, "listening");
    // Ready only now: the database is open and every listener is bound, so a client
    // that connects as soon as systemd reports the service started is queued by the
    // kernel and served, never refused.
    let notifier = Notifier::from_env();
    report(notifier.ready(&format!("Listening on {address}")));
    let watchdog = notifier
        .watchdog_interval()
        .map(|interval| tokio::spawn(keep_alive(notifier.clone(), interval)));
    let stopping = notifier.clone();
    server
        .run(listener, async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            report(stopping.stopping());
        })
        .await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    drop(store);
    tracing::info!("stopped");
    println!("btps stopped");
    Ok(ExitCode::SUCCESS)
}

/// Sends `WATCHDOG=1` every `interval` for as long as the runtime schedules tasks:
/// a wedged runtime stops the pings and systemd restarts the service.
async fn keep_alive(notifier: Notifier, interval: std::time::Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        report(notifier.watchdog());
    }
}

/// A failed notification does not stop the server; systemd notices by itself (a
/// start-up or watchdog timeout), and the log says why.
fn report(outcome: Result<(), btps::systemd::NotifyError>) {
    if let Err(error) = outcome {
        tracing::warn!(%error, "systemd notification failed");
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
