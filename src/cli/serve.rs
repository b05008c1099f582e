//! `btps serve`: the server, wired from the configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use btps::config::{Config, StorageKind};
use btps::delivery::Outbound;
use btps::http::{HttpAuth, HttpService};
use btps::server::ClockPolicy;
use btps::server::middleware::{BucketSpec, IpFilter, RateLimiter};
use btps::server::trust::TrustPolicy;
use btps::server::{ListenerSettings, Server, Service, bootstrap};
use btps::signing::{DnsKeys, KeySource};
use btps::store::{JsonFilesStorage, JsonIdentityStore, JsonTrustStore, RedbStore, Storage};
use btps::systemd::Notifier;

use super::delivery;

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
    warn_about_environment();
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
    raise_open_file_limit(config.limits.max_connections);
    let prepared = bootstrap::prepare(&config).context("preparing the data directory")?;
    for action in &prepared.actions {
        println!("{action}");
    }
    for changed in &prepared.tightened.tightened {
        println!("{changed}");
        tracing::warn!(path = %changed.path.display(), from = %format!("{:04o}", changed.from), to = %format!("{:04o}", changed.to), "tightened the mode of a private file that was open to other users");
    }
    for (path, error) in &prepared.tightened.failed {
        println!(
            "warning: could not take other users' access away from {}: {error}",
            path.display()
        );
        tracing::warn!(path = %path.display(), %error, "a private file is open to other users and its mode could not be changed");
    }
    // The redb file holds everything (redb) or the mailboxes (json); PostgreSQL
    // storage has no file.
    let store = match config.storage.kind {
        StorageKind::Redb | StorageKind::Json => Some(
            RedbStore::open(&config.storage.database_path, &config.redb_options())
                .with_context(|| format!("opening {}", config.storage.database_path.display()))?,
        ),
        StorageKind::Postgres => None,
    };
    let storage: Arc<dyn Storage> = match (config.storage.kind, &store) {
        (StorageKind::Postgres, _) => postgres_storage(&config).await?,
        (StorageKind::Json, Some(store)) => {
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
            Arc::new(JsonFilesStorage::new(
                trust,
                identities,
                Arc::new(store.clone()),
            ))
        }
        (_, Some(store)) => Arc::new(store.clone()),
        (_, None) => anyhow::bail!(
            "no storage for storage.type {}",
            config.storage.kind.as_str()
        ),
    };
    let resolver = config
        .dns_resolver()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let keys: Arc<dyn KeySource> = Arc::new(DnsKeys::new(btps::identity::dns::KeyDirectory::new(
        Arc::clone(&resolver),
    )));
    let signer_config = config.clone();
    let server_key = Arc::new(prepared.server_key);
    let trust_policy = TrustPolicy {
        cooling_off: config.trust.cooling_off,
        default_privacy: config.trust.default_privacy.clone(),
        enforce_privacy: config.trust.enforce_privacy,
    };
    let outbound = delivery::outbound(&config, &server_key, &resolver, &trust_policy).await;
    let mut builder = Server::builder()
        .storage(Arc::clone(&storage))
        .server_key_shared(Arc::clone(&server_key))
        .server_selector(config.server.selector.clone())
        .tls(prepared.tls)
        .key_source(keys)
        .lookup_signer(move |domain: &str| signer_config.lookup_signer(domain))
        .trust_policy(trust_policy)
        .clock_policy(ClockPolicy {
            max_future_skew: config.trust.max_future_skew,
            max_age: config.trust.max_age,
        })
        .listener_settings(ListenerSettings {
            connection: btps::server::ConnectionLimits {
                max_line_bytes: config.limits.max_line_bytes,
                idle_timeout: config.limits.idle_timeout,
                line_timeout: config.limits.line_timeout,
            },
            handshake_timeout: config.tls.handshake_timeout,
            max_connections: config.limits.max_connections,
            max_connections_per_ip: config.limits.max_connections_per_ip,
            shutdown_grace: config.limits.shutdown_grace,
        })
        .committer_nice(config.limits.committer_nice)
        .agent_policy(super::agent::policy(&config.agents))
        .agent_outbound(Arc::new(outbound.clone()));
    if !config.ip_filter.allow.is_empty() || !config.ip_filter.deny.is_empty() {
        builder = builder.middleware(Arc::new(IpFilter::new(config.ip_filter.clone())));
    }
    if config.rate_limit.enabled {
        let bucket = |bucket: &btps::config::Bucket| BucketSpec {
            rate_per_second: bucket.rate_per_second,
            burst: bucket.burst,
        };
        builder = builder.middleware(Arc::new(RateLimiter::new(
            bucket(&config.rate_limit.per_ip),
            bucket(&config.rate_limit.per_sender),
        )));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    // DNS records printed through the admin socket name the address actually bound.
    let mut admin_config = config.clone();
    admin_config.listen = address;
    if let Some(admin) = admin_socket(&admin_config, &storage, store.as_ref(), &outbound)? {
        builder = builder.service(admin);
    }
    if config.delivery.enabled {
        builder = builder.service(delivery::service(&config, resolver, &outbound)?);
    } else {
        println!("outbound delivery is off (delivery.enabled = false): the outbox only fills");
    }
    if let Some(http_address) = config.http.listen {
        let http = tokio::net::TcpListener::bind(http_address)
            .await
            .with_context(|| format!("binding the HTTP endpoint {http_address} (http.listen)"))?;
        let bound = http
            .local_addr()
            .context("reading the HTTP endpoint's bound address")?;
        println!("btps http endpoint on http://{bound}");
        let auth = match (&config.http.token, &prepared.http_token) {
            (Some(token), _) => HttpAuth::Every(token.clone()),
            (None, Some(generated)) => {
                println!(
                    "GET /backup needs the bearer token in {}",
                    bootstrap::http_token_path(&config).display()
                );
                HttpAuth::Backup(generated.clone())
            }
            (None, None) => HttpAuth::NoToken,
        };
        tracing::info!(address = %bound, token = config.http.token.is_some(), "HTTP endpoint listening");
        builder = builder.service(Box::new(HttpService::with_auth(http, auth)));
    }
    let server = builder.build().context("assembling the server")?;
    // Registered before readiness is reported: a SIGTERM that arrives right after
    // (a service stopped as soon as it started) must still stop the server cleanly.
    let shutdown = shutdown_signal();
    println!(
        "btps listening on {address} (database {})",
        database_name(&config)
    );
    tracing::info!(address = %address, "listening");
    // Ready only now: the storage is open and every listener is bound, so a client
    // that connects as soon as systemd reports the service started is queued by the
    // kernel and served, never refused.
    let notifier = Notifier::from_env();
    report(notifier.ready(&format!("Listening on {address}")));
    let watchdog = notifier
        .watchdog_interval()
        .map(|interval| tokio::spawn(keep_alive(notifier.clone(), interval)));
    let stopping = notifier.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down");
        report(stopping.stopping());
    };
    server.run(listener, shutdown).await?;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    drop(store);
    tracing::info!("stopped");
    println!("btps stopped");
    Ok(ExitCode::SUCCESS)
}

/// Raises the soft open-file limit to the hard limit: every connection is a file
/// descriptor, and the usual soft limit (1024) is below `limits.max_connections`.
/// Warns when even the hard limit leaves too few.
fn raise_open_file_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let mut current = limit.current;
        if let Some(hard) = limit.maximum
            && limit.current.is_none_or(|soft| soft < hard)
        {
            match setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(hard),
                    maximum: Some(hard),
                },
            ) {
                Ok(()) => {
                    tracing::info!(from = ?limit.current, to = hard, "raised the open-file limit");
                    current = Some(hard);
                }
                Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
            }
        }
        // Files beside the connections: the database, the log, listeners, DNS.
        let needed = u64::try_from(max_connections)
            .unwrap_or(u64::MAX)
            .saturating_add(64);
        if let Some(current) = current
            && current < needed
        {
            tracing::warn!(
                open_files = current,
                max_connections,
                "the open-file limit is below limits.max_connections; raise LimitNOFILE or lower the setting"
            );
        }
    }
}

/// Logs the environment variables the server does not read: the reference's
/// unsupported ones and unknown `BTPS_*` / `POSTGRES_*` / `MONGODB_*` names.
fn warn_about_environment() {
    use btps::config::EnvironmentNote;
    let vars: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    for note in btps::config::environment_report(vars.iter().map(|name| (name.as_str(), ""))) {
        match note {
            EnvironmentNote::Recognised { .. } => {}
            EnvironmentNote::Unsupported { name, message } => {
                tracing::warn!(variable = %name, "{message}");
            }
            EnvironmentNote::Unknown { name, suggestion } => {
                tracing::warn!(variable = %name, suggestion = ?suggestion, "unknown environment variable, not read");
            }
        }
    }
}

/// What the storage is, for the start-up line: the redb file, or the database
/// with its password hidden.
fn database_name(config: &Config) -> String {
    match (config.storage.kind, &config.storage.postgres.uri) {
        (StorageKind::Postgres, Some(uri)) => uri.to_string(),
        _ => config.storage.database_path.display().to_string(),
    }
}

/// The PostgreSQL backend, connected (and its schema migrated) on a blocking
/// thread.
#[cfg(feature = "postgres")]
async fn postgres_storage(config: &Config) -> anyhow::Result<Arc<dyn Storage>> {
    let owned = config.clone();
    let storage = tokio::task::spawn_blocking(move || super::postgres::connect(&owned))
        .await
        .context("connecting to PostgreSQL")??;
    println!(
        "storage: PostgreSQL {} (node {}); backups with pg_dump, not /backup",
        storage.name(),
        storage.node()
    );
    tracing::info!(database = %storage.name(), node = %storage.node(), "PostgreSQL storage");
    Ok(Arc::new(storage))
}

#[cfg(not(feature = "postgres"))]
async fn postgres_storage(_config: &Config) -> anyhow::Result<Arc<dyn Storage>> {
    anyhow::bail!("this btps was built without PostgreSQL (cargo feature \"postgres\")")
}

/// Binds the admin socket (when enabled) as a service of the server.
#[cfg(unix)]
fn admin_socket(
    config: &Config,
    storage: &Arc<dyn Storage>,
    store: Option<&RedbStore>,
    outbound: &Outbound,
) -> anyhow::Result<Option<Box<dyn Service>>> {
    use btps::admin::operations::AdminContext;
    use btps::admin::service::AdminService;
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
    let mut context =
        AdminContext::new(Arc::clone(storage), config.clone()).with_outbound(outbound.clone());
    if let Some(store) = store {
        // The mailboxes (and, for redb, the records) are in the file: `check` and
        // backups work on it.
        context = context.with_database(store.clone());
    }
    Ok(Some(Box::new(AdminService::new(socket, context))))
}

#[cfg(not(unix))]
fn admin_socket(
    _config: &Config,
    _storage: &Arc<dyn Storage>,
    _store: Option<&RedbStore>,
    _outbound: &Outbound,
) -> anyhow::Result<Option<Box<dyn Service>>> {
    Ok(None)
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
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
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
