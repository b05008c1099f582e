//! `btps serve`: the server, wired from the configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use btps::config::{Config, StorageKind};
use btps::server::inbound::RecordSource;
use btps::server::middleware::{BucketSpec, IpFilter, Middleware, RateLimiter};
use btps::server::trust::TrustPolicy;
use btps::server::{ListenerSettings, Pipeline, PipelineParts, Server, bootstrap};
use btps::signing::{DnsKeys, KeySource};
use btps::store::RedbStore;
use btps::store::{JsonIdentityStore, JsonTrustStore};
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
    /// Address of the local HTTP endpoint (health, metrics, backup), or "off"
    /// (overrides the configuration).
    #[arg(long, value_name = "ADDR", value_parser = http_listen)]
    http_listen: Option<HttpListen>,
}

/// `--http-listen`: an address, or off.
#[derive(Clone, Copy, Debug)]
struct HttpListen(Option<SocketAddr>);

fn http_listen(text: &str) -> Result<HttpListen, String> {
    btps::config::parse_http_listen(text).map(HttpListen)
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
    if let Some(HttpListen(listen)) = args.http_listen {
        config.http.listen = listen;
        config
            .http
            .check()
            .map_err(|error| anyhow::anyhow!("invalid configuration:\n{error}"))?;
    }
    super::logging::init(&config.log);
    if let Some(file) = &file {
        tracing::info!(file = %file.display(), "configuration read");
    }
    // The group-commit thread is the serial stage of every accepted artifact: by
    // default the connection threads leave it a core (docs/benchmark.md).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.limits.effective_worker_threads())
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
    let records = match config.storage.kind {
        StorageKind::Redb => RecordSource::Redb,
        StorageKind::Json => {
            let trust = JsonTrustStore::open(
                &config.storage.trust_file_path,
                config.storage.trust_entity_name.as_deref(),
            )
            .with_context(|| format!("opening {}", config.storage.trust_file_path.display()))?;
            let identities = JsonIdentityStore::open(
                &config.storage.identity_file_path,
                config.storage.identity_entity_name.as_deref(),
            )
            .with_context(|| format!("opening {}", config.storage.identity_file_path.display()))?;
            println!(
                "trust and identity records in {} and {} (STORAGE_TYPE=json)",
                config.storage.trust_file_path.display(),
                config.storage.identity_file_path.display()
            );
            RecordSource::json(trust, identities)
        }
    };
    let pipeline = Pipeline::new(PipelineParts {
        store: store.clone(),
        records,
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
        committer_nice: config.limits.committer_nice,
    })
    .context("starting the group-commit thread")?;
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
    // One shutdown signal, seen by the listener and the admin socket.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stopping = stopping.clone();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    };
    // DNS records printed through the admin socket name the address actually bound.
    let mut admin_config = config.clone();
    admin_config.listen = address;
    let admin = start_admin_socket(&admin_config, &store, stopped())?;
    let http = match config.http.listen {
        Some(http_address) => {
            Some(start_http(&config, http_address, &store, server.stats()).await?)
        }
        None => None,
    };
    // Registered before readiness is reported: a SIGTERM that arrives right after
    // (a service stopped as soon as it started) must still stop the server cleanly.
    let shutdown = shutdown_signal();
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
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        report(stopping.stopping());
        let _ = stop.send(true);
    });
    server.run(listener, stopped()).await;
    if let Some(http) = http {
        http.stop(config.limits.shutdown_grace).await;
    }
    if let Some(admin) = admin {
        // The socket is closed and its file removed; requests in progress finish.
        let _ = admin.await;
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    drop(store);
    tracing::info!("stopped");
    println!("btps stopped");
    Ok(ExitCode::SUCCESS)
}

/// Binds the admin socket (when enabled) and serves it on a task until `shutdown`.
#[cfg(unix)]
fn start_admin_socket(
    config: &Config,
    store: &RedbStore,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    use btps::admin::operations::AdminContext;
    use btps::admin::socket::AdminSocket;

    if !config.admin.enabled {
        return Ok(None);
    }
    let socket = AdminSocket::bind(&config.admin.socket, config.admin.socket_mode)
        .context("opening the admin socket")?;
    if socket.replaced_stale() {
        tracing::warn!(path = %socket.path().display(), "replaced a stale admin socket file");
    }
    println!(
        "admin socket {} (mode {:04o})",
        socket.path().display(),
        config.admin.socket_mode
    );
    let context = AdminContext::new(store.clone(), config.clone());
    Ok(Some(tokio::spawn(socket.run(context, shutdown))))
}

#[cfg(not(unix))]
fn start_admin_socket(
    _config: &Config,
    _store: &RedbStore,
    _shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    Ok(None)
}

/// The running HTTP endpoint.
struct HttpEndpoint {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    upkeep: tokio::task::JoinHandle<()>,
}

/// Binds the HTTP endpoint and starts serving it; metrics recording starts here, so a
/// process without the endpoint records nothing.
async fn start_http(
    config: &Config,
    address: SocketAddr,
    store: &RedbStore,
    listener_stats: Arc<btps::server::ListenerStats>,
) -> anyhow::Result<HttpEndpoint> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the HTTP endpoint {address} (http.listen)"))?;
    let bound = listener
        .local_addr()
        .context("reading the HTTP endpoint's bound address")?;
    let metrics = btps::metrics::install();
    let removed = store.remove_stale_backups();
    if removed > 0 {
        tracing::info!(removed, "removed scratch files of interrupted backups");
    }
    let state = btps::http::HttpState::new(
        store.clone(),
        listener_stats,
        metrics,
        config.http.token.as_ref(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(btps::http::serve(
        listener,
        btps::http::router(state),
        async move {
            let _ = stopped.await;
        },
    ));
    // Without a scrape, histogram samples would pile up; drain them regularly.
    let upkeep = tokio::spawn(metrics.upkeep_every(std::time::Duration::from_secs(5)));
    println!("btps http endpoint on http://{bound}");
    tracing::info!(address = %bound, token = config.http.token.is_some(), "HTTP endpoint listening");
    Ok(HttpEndpoint { stop, task, upkeep })
}

impl HttpEndpoint {
    /// Stops after the BTPS listener: requests in flight (a backup download) get
    /// `grace` to finish.
    async fn stop(mut self, grace: std::time::Duration) {
        let _ = self.stop.send(());
        self.upkeep.abort();
        match tokio::time::timeout(grace, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(error = %error, "HTTP endpoint failed"),
            Ok(Err(error)) => tracing::warn!(error = %error, "HTTP endpoint task failed"),
            Err(_) => {
                tracing::warn!("HTTP requests still running after the grace period; closing them");
                self.task.abort();
                let _ = self.task.await;
            }
        }
    }
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

/// Registers for SIGTERM and SIGINT (Ctrl-C) now, and returns what completes on the
/// first of them. Must be called inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                (Ok(mut only), Err(_)) | (Err(_), Ok(mut only)) => {
                    only.recv().await;
                }
                (Err(_), Err(_)) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
