//! The composition root: [`Server::builder`] takes everything a BTPS server needs —
//! storage, keys, TLS, key discovery, limits, middleware, hooks, services — and owns
//! the order in which they start and stop. `btps serve`, the integration tests and
//! the examples all start a server this way.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::BoxFuture;
use crate::config::TlsVersion;
use crate::crypto::PrivateKey;
use crate::identity::Identity;
use crate::identity::dns::{
    CacheConfig, CachingResolver, HickoryTxtResolver, KeyDirectory, ResolverOptions,
};
use crate::server::agent::{AgentOutbound, AgentPolicy, AgentSweeper};
use crate::server::clock::ClockPolicy;
use crate::server::events::Events;
use crate::server::hooks::{ErrorCallback, ErrorEvent, Lifecycle, StartInfo};
use crate::server::listener::{Listener, ListenerSettings, ListenerStats};
use crate::server::middleware::Middleware;
use crate::server::pipeline::{LookupSigner, Pipeline, PipelineParts};
use crate::server::trust::TrustPolicy;
use crate::signing::{DnsKeys, KeySource};
use crate::store::Storage;

/// Why a server could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A required part was not given.
    #[error("the server needs {0}")]
    Missing(&'static str),
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The system's DNS configuration could not be read (give a key source or DNS
    /// servers instead).
    #[error("DNS: {0}")]
    Dns(String),
    /// The group-commit thread could not be started.
    #[error("starting the group-commit thread: {0}")]
    Committer(std::io::Error),
}

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The listener's address could not be read.
    #[error("reading the listener's address: {0}")]
    Listener(std::io::Error),
    /// A lifecycle hook refused the start.
    #[error("a start hook failed: {0}")]
    StartHook(Box<dyn std::error::Error + Send + Sync>),
}

/// What a [`Service`] is given when the server starts it.
#[derive(Clone)]
pub struct ServiceContext {
    /// The server's storage.
    pub storage: Arc<dyn Storage>,
    /// The BTPS listener's counters and readiness.
    pub listener: Arc<ListenerStats>,
    /// The BTPS listener's bound address.
    pub address: SocketAddr,
    /// The inbound pipeline: what a service hands an artifact for a hosted
    /// receiver to, with the checks of an artifact from the network.
    pub pipeline: Arc<Pipeline>,
}

/// A service that runs beside the BTPS listener (the HTTP endpoint, the admin
/// socket, an application's own): started after the start hooks, stopped after the
/// listener has drained.
pub trait Service: Send + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Runs the service until `stop` completes, then finishes what it has in hand.
    fn run(
        self: Box<Self>,
        context: ServiceContext,
        stop: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, ()>;
}

/// Where the listener's TLS configuration comes from.
enum TlsSource {
    Config(Arc<rustls::ServerConfig>),
    Files {
        certificate: PathBuf,
        key: PathBuf,
        min_version: TlsVersion,
    },
}

/// Builds a [`Server`]; see [`Server::builder`].
#[must_use]
pub struct ServerBuilder {
    storage: Option<Arc<dyn Storage>>,
    server_key: Option<Arc<PrivateKey>>,
    server_selector: String,
    tls: Option<TlsSource>,
    keys: Option<Arc<dyn KeySource>>,
    dns_servers: Vec<SocketAddr>,
    lookup_signer: Option<LookupSigner>,
    policy: TrustPolicy,
    clock: ClockPolicy,
    settings: ListenerSettings,
    committer_nice: u8,
    middleware: Vec<Arc<dyn Middleware>>,
    lifecycle: Vec<Arc<dyn Lifecycle>>,
    on_error: Option<ErrorCallback>,
    services: Vec<Box<dyn Service>>,
    agents: AgentPolicy,
    agent_outbound: Option<Arc<dyn AgentOutbound>>,
}

impl ServerBuilder {
    /// The storage the server runs on (required): [`crate::store::RedbStore`],
    /// [`crate::store::MemoryStorage`], [`crate::store::JsonFilesStorage`] or your own.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// The server's own key pair (required): it signs identity-lookup answers, and
    /// its public key is published as `<selector>._btps.identity.<account>.<domain>`
    /// of each domain's [`lookup_signer`](Self::lookup_signer) (the reference's
    /// `serverIdentity`).
    pub fn server_key(mut self, key: PrivateKey) -> Self {
        self.server_key = Some(Arc::new(key));
        self
    }

    /// [`ServerBuilder::server_key`] shared with other parts of the program (the
    /// delivery worker signs with the same key).
    pub fn server_key_shared(mut self, key: Arc<PrivateKey>) -> Self {
        self.server_key = Some(key);
        self
    }

    /// The selector the server key is published under (default `btps1`).
    pub fn server_selector(mut self, selector: impl Into<String>) -> Self {
        self.server_selector = selector.into();
        self
    }

    /// The listener's TLS configuration (the reference's `options`).
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsSource::Config(config));
        self
    }

    /// The listener's certificate chain and key, from PEM files; TLS 1.3, or 1.2
    /// and 1.3 with `min_version`.
    pub fn tls_files(
        mut self,
        certificate: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        min_version: TlsVersion,
    ) -> Self {
        self.tls = Some(TlsSource::Files {
            certificate: certificate.into(),
            key: key.into(),
            min_version,
        });
        self
    }

    /// Where signers' public keys come from. Default: DNS TXT records through the
    /// [`dns_servers`](Self::dns_servers), else the system's resolver, with a cache.
    pub fn key_source(mut self, keys: Arc<dyn KeySource>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The DNS servers of the default key source.
    pub fn dns_servers(mut self, servers: Vec<SocketAddr>) -> Self {
        self.dns_servers = servers;
        self
    }

    /// The identity that signs identity-lookup answers for a domain (default
    /// `admin$<domain>`).
    pub fn lookup_signer(
        mut self,
        signer: impl Fn(&str) -> Identity + Send + Sync + 'static,
    ) -> Self {
        self.lookup_signer = Some(Arc::new(signer));
        self
    }

    /// The trust policy (cooling-off, default privacy, privacy enforcement).
    pub fn trust_policy(mut self, policy: TrustPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How far an artifact's `issuedAt` may be from the clock (default: one hour
    /// ahead, any age; never before 2000).
    pub fn clock_policy(mut self, clock: ClockPolicy) -> Self {
        self.clock = clock;
        self
    }

    /// Connection limits, timeouts and the shutdown grace period (the reference's
    /// `connectionTimeoutMs` is `settings.connection.idle_timeout`).
    pub fn listener_settings(mut self, settings: ListenerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// How many nice steps below the connection threads the group-commit thread
    /// runs (default 10).
    pub fn committer_nice(mut self, nice: u8) -> Self {
        self.committer_nice = nice;
        self
    }

    /// Adds a middleware hook; hooks run by priority, then in the order added.
    pub fn middleware(mut self, hook: Arc<dyn Middleware>) -> Self {
        self.middleware.push(hook);
        self
    }

    /// Adds lifecycle hooks (start, stop, response sent).
    pub fn lifecycle(mut self, hooks: Arc<dyn Lifecycle>) -> Self {
        self.lifecycle.push(hooks);
        self
    }

    /// The error callback (the reference's `onError`): every error answered, with
    /// its peer, stage and code.
    pub fn on_error(mut self, callback: impl Fn(&ErrorEvent<'_>) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(callback));
        self
    }

    /// Adds a service to run beside the listener (the HTTP endpoint, the admin
    /// socket, your own).
    pub fn service(mut self, service: Box<dyn Service>) -> Self {
        self.services.push(service);
        self
    }

    /// How agents enroll, refresh and act (default: [`AgentPolicy::default`]).
    pub fn agent_policy(mut self, policy: AgentPolicy) -> Self {
        self.agents = policy;
        self
    }

    /// What queues the agents' `trust.request`, `trust.respond` and `artifact.send`
    /// (outbound delivery's [`crate::delivery::Outbound`]); without it those three
    /// actions are refused.
    pub fn agent_outbound(mut self, outbound: Arc<dyn AgentOutbound>) -> Self {
        self.agent_outbound = Some(outbound);
        self
    }

    /// Assembles the server: loads TLS, sets up key discovery, starts the
    /// group-commit thread. Nothing listens until [`Server::run`].
    pub fn build(self) -> Result<Server, BuildError> {
        let storage = self.storage.ok_or(BuildError::Missing("a storage"))?;
        let server_key = self.server_key.ok_or(BuildError::Missing("a server key"))?;
        let tls = match self.tls.ok_or(BuildError::Missing("a TLS configuration"))? {
            TlsSource::Config(config) => config,
            TlsSource::Files {
                certificate,
                key,
                min_version,
            } => Arc::new(
                crate::server::tls::server_config(&certificate, &key, min_version)
                    .map_err(|error| BuildError::Tls(error.to_string()))?,
            ),
        };
        let keys = match self.keys {
            Some(keys) => keys,
            None => {
                let options = ResolverOptions::default();
                let resolver = if self.dns_servers.is_empty() {
                    HickoryTxtResolver::from_system_config(options)
                        .map_err(|error| BuildError::Dns(error.to_string()))?
                } else {
                    HickoryTxtResolver::with_name_servers(&self.dns_servers, options)
                };
                let cached = CachingResolver::new(resolver, CacheConfig::default())
                    .with_observer(crate::metrics::dns_cache);
                Arc::new(DnsKeys::new(KeyDirectory::new(Arc::new(cached))))
            }
        };
        let lookup_signer = self.lookup_signer.unwrap_or_else(|| {
            Arc::new(|domain: &str| {
                // The domain comes from a parsed identity, so this parses; the
                // fallback names a signer no DNS publishes.
                Identity::parse(&format!("admin${domain}"))
                    .unwrap_or_else(|_| unverifiable_signer())
            })
        });
        let pipeline = Pipeline::new(PipelineParts {
            storage: Arc::clone(&storage),
            keys,
            server_key,
            server_selector: self.server_selector,
            lookup_signer,
            policy: self.policy,
            clock: self.clock,
            middleware: self.middleware,
            lifecycle: self.lifecycle.clone(),
            on_error: self.on_error,
            committer_nice: self.committer_nice,
            agents: self.agents.clone(),
            agent_outbound: self.agent_outbound,
        })
        .map_err(BuildError::Committer)?;
        let mut services = self.services;
        // Expired tokens and sessions go away while the server runs.
        services.push(Box::new(AgentSweeper::new(
            self.agents.sweep_interval,
            self.agents.expired_record_grace,
        )));
        let pipeline = Arc::new(pipeline);
        let listener = Listener::new(Arc::clone(&pipeline), tls, self.settings);
        Ok(Server {
            events: pipeline.events(),
            pipeline,
            listener,
            storage,
            lifecycle: self.lifecycle,
            services,
            shutdown_grace: self.settings.shutdown_grace,
        })
    }
}

#[allow(clippy::expect_used)]
fn unverifiable_signer() -> Identity {
    // A fixed literal that satisfies the identity grammar.
    Identity::parse("admin$unknown.invalid").expect("literal identity is valid")
}

/// A BTPS server, assembled and ready to [`run`](Server::run).
///
/// ```no_run
/// use std::sync::Arc;
/// use btps::server::Server;
/// use btps::store::MemoryStorage;
///
/// # async fn start(tls: Arc<rustls::ServerConfig>) -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::builder()
///     .storage(Arc::new(MemoryStorage::new()))
///     .server_key(btps::crypto::PrivateKey::generate(2048)?)
///     .tls(tls)
///     .on_error(|event| eprintln!("{} from {}: {}", event.code(), event.remote, event.error))
///     .build()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// server.run(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(())
/// # }
/// ```
pub struct Server {
    pipeline: Arc<Pipeline>,
    listener: Listener,
    storage: Arc<dyn Storage>,
    events: Events,
    lifecycle: Vec<Arc<dyn Lifecycle>>,
    services: Vec<Box<dyn Service>>,
    shutdown_grace: std::time::Duration,
}

impl Server {
    /// Starts building a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            storage: None,
            server_key: None,
            server_selector: "btps1".to_owned(),
            tls: None,
            keys: None,
            dns_servers: Vec::new(),
            lookup_signer: None,
            policy: TrustPolicy::default(),
            clock: ClockPolicy::default(),
            settings: ListenerSettings::default(),
            committer_nice: 10,
            middleware: Vec::new(),
            lifecycle: Vec::new(),
            on_error: None,
            services: Vec::new(),
            agents: AgentPolicy::default(),
            agent_outbound: None,
        }
    }

    /// The listener's counters and readiness (valid after `run` returns too).
    pub fn stats(&self) -> Arc<ListenerStats> {
        self.listener.stats()
    }

    /// The storage the server runs on.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// After-commit subscriptions to the inboxes; usable before, during and after
    /// [`run`](Server::run).
    pub fn events(&self) -> Events {
        self.events.clone()
    }

    /// Serves on `listener` until `shutdown` completes.
    ///
    /// Start: the start hooks run (an error aborts), then the services start, then
    /// the listener accepts. Stop: the listener stops accepting and every connection
    /// finishes the line it is handling (up to the grace period); the group
    /// committer commits what it holds; the services stop; the stop hooks run; the
    /// storage handle is released.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RunError> {
        let address = listener.local_addr().map_err(RunError::Listener)?;
        let info = StartInfo { address };
        for hooks in &self.lifecycle {
            hooks.on_start(&info).await.map_err(RunError::StartHook)?;
        }
        let (stop_services, services_stopped) = watch::channel(false);
        let context = ServiceContext {
            storage: Arc::clone(&self.storage),
            listener: self.listener.stats(),
            address,
            pipeline: Arc::clone(&self.pipeline),
        };
        let mut running = tokio::task::JoinSet::new();
        for service in self.services {
            let name = service.name();
            let mut stopped = services_stopped.clone();
            let context = context.clone();
            let stop: BoxFuture<'static, ()> = Box::pin(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            });
            running.spawn(async move {
                service.run(context, stop).await;
                name
            });
        }
        self.listener.run(listener, shutdown).await;
        // The last connection is gone: dropping the pipeline stops the committer
        // once it has committed everything queued.
        drop(self.pipeline);
        let _ = stop_services.send(true);
        let drained = tokio::time::timeout(self.shutdown_grace, async {
            while let Some(finished) = running.join_next().await {
                if let Ok(name) = finished {
                    tracing::debug!(service = name, "service stopped");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("services still running after the grace period; stopping them");
            running.shutdown().await;
        }
        for hooks in &self.lifecycle {
            if tokio::time::timeout(self.shutdown_grace, hooks.on_stop())
                .await
                .is_err()
            {
                tracing::warn!("a stop hook did not finish within the grace period");
            }
        }
        drop(self.storage);
        Ok(())
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}
