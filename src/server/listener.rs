//! The accept loop: a connection cap taken before accepting, TLS handshakes with a
//! timeout, one task per connection, and the drain at shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::connection::{self, ConnectionLimits};
use super::pipeline::Pipeline;

/// How the listener treats connections.
#[derive(Clone, Copy, Debug)]
pub struct ListenerSettings {
    /// Per-connection limits.
    pub connection: ConnectionLimits,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How many connections may be open at once; further ones wait in the backlog.
    pub max_connections: usize,
    /// How long shutdown waits for open connections to finish their current line.
    pub shutdown_grace: Duration,
}

impl Default for ListenerSettings {
    /// The configuration's defaults (`docs/configuration.md`).
    fn default() -> Self {
        ListenerSettings {
            connection: ConnectionLimits {
                max_line_bytes: 4 * 1024 * 1024,
                idle_timeout: Duration::from_secs(30),
            },
            handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Live counters of the listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    open: std::sync::atomic::AtomicUsize,
    accepted: std::sync::atomic::AtomicU64,
    /// Set while the listener accepts connections (readiness).
    listening: std::sync::atomic::AtomicBool,
}

impl ListenerStats {
    /// Whether the server is accepting connections: from the start of
    /// [`Server::run`](crate::server::Server::run) (its listener is bound by then) until shutdown begins.
    pub fn is_listening(&self) -> bool {
        self.listening.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections accepted since start.
    pub fn accepted_connections(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The accept loop of a [`Server`]: the listener, its connection cap and the drain
/// at shutdown.
pub(crate) struct Listener {
    pipeline: Arc<Pipeline>,
    tls: TlsAcceptor,
    settings: ListenerSettings,
    stats: Arc<ListenerStats>,
}

struct OpenConnection<'a>(&'a ListenerStats);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Listener {
    /// A listener answering with `pipeline` over TLS configured by `tls`.
    pub(crate) fn new(
        pipeline: Arc<Pipeline>,
        tls: Arc<rustls::ServerConfig>,
        settings: ListenerSettings,
    ) -> Self {
        Listener {
            pipeline,
            tls: TlsAcceptor::from(tls),
            settings,
            stats: Arc::default(),
        }
    }

    /// The listener's counters (shared; valid after `run` returns too).
    pub(crate) fn stats(&self) -> Arc<ListenerStats> {
        Arc::clone(&self.stats)
    }

    /// Accepts connections on `listener` until `shutdown` completes, then drains.
    pub(crate) async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let limit = Arc::new(Semaphore::new(self.settings.max_connections.max(1)));
        let (stop, stopped) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        self.stats
            .listening
            .store(true, std::sync::atomic::Ordering::Release);
        loop {
            // Take a connection slot before accepting: at the cap, new peers wait in
            // the kernel's backlog instead of being accepted and starved.
            let permit = tokio::select! {
                permit = Arc::clone(&limit).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Reap finished connection tasks so the set does not grow without bound.
            while connections.try_join_next().is_some() {}
            if !self
                .pipeline
                .middleware()
                .iter()
                .all(|hook| hook.allow_connection(remote))
            {
                tracing::info!(remote = %remote, "connection refused by the IP filter");
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let pipeline = Arc::clone(&self.pipeline);
            let acceptor = self.tls.clone();
            let settings = self.settings;
            let stats = Arc::clone(&self.stats);
            let stopped = stopped.clone();
            connections.spawn(async move {
                let _permit = permit;
                stats
                    .accepted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                stats
                    .open
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _open = OpenConnection(&stats);
                let stream = match tokio::time::timeout(
                    settings.handshake_timeout,
                    acceptor.accept(tcp),
                )
                .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(remote = %remote, error = %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(remote = %remote, "TLS handshake timed out");
                        return;
                    }
                };
                connection::serve(stream, remote, &pipeline, settings.connection, stopped).await;
            });
        }
        // Not ready from here on: a load balancer stops sending while connections drain.
        self.stats
            .listening
            .store(false, std::sync::atomic::Ordering::Release);
        drop(listener);
        let _ = stop.send(true);
        let drained = tokio::time::timeout(self.settings.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = connections.len(),
                "shutdown grace period over; closing the remaining connections"
            );
            connections.shutdown().await;
        }
    }
}
