//! The accept loop: a connection cap taken before accepting, TLS handshakes with a
//! timeout, one task per connection, and the drain at shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::connection::{self, ConnectionLimits};
use super::pipeline::Pipeline;
use crate::protocol::response;
use crate::protocol::{ErrorCode, ProtocolError};

/// How the listener treats connections.
#[derive(Clone, Copy, Debug)]
pub struct ListenerSettings {
    /// Per-connection limits.
    pub connection: ConnectionLimits,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How many connections may be open at once; further ones wait in the backlog.
    pub max_connections: usize,
    /// How many connections one IP address may have open at once; a client over it
    /// is answered with an error line and closed.
    pub max_connections_per_ip: usize,
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
                line_timeout: Duration::from_secs(20),
            },
            handshake_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_ip: 64,
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
    per_address: Arc<PerAddress>,
}

/// Open connections per IP address.
#[derive(Debug, Default)]
struct PerAddress(std::sync::Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A poisoned lock only means a panic elsewhere; counts stay consistent
        // because each change is one statement.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a new connection from `address`, unless it already has `cap`.
    fn admit(self: &Arc<Self>, address: IpAddr, cap: usize) -> Option<AddressSlot> {
        let mut counts = self.counts();
        let count = counts.entry(address).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: Arc::clone(self),
            address,
        })
    }
}

/// One connection's place in [`PerAddress`], given back when the connection ends.
struct AddressSlot {
    table: Arc<PerAddress>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts();
        if let Some(count) = counts.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// The longest a refused client's TLS handshake may take before it is dropped.
const REFUSAL_HANDSHAKE: Duration = Duration::from_secs(2);

/// Answers a client over its address's connection cap with an error line after
/// the TLS handshake, then closes.
async fn refuse_over_cap(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote: std::net::SocketAddr,
    handshake_timeout: Duration,
    cap: usize,
) {
    use tokio::io::AsyncWriteExt;
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        handshake_timeout.min(REFUSAL_HANDSHAKE),
        acceptor.accept(tcp),
    )
    .await
    else {
        return;
    };
    let mut error = ProtocolError::new(
        ErrorCode::RateLimiter,
        format!("{} already has {cap} connections open", remote.ip()),
    )
    .with_reason("too many connections from this address");
    error.message_override = Some("Too many connections".to_owned());
    let mut line = response::error(&error, None).to_canonical();
    line.push('\n');
    let _ = tokio::time::timeout(REFUSAL_HANDSHAKE, async {
        stream.write_all(line.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
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
            per_address: Arc::default(),
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
            let acceptor = self.tls.clone();
            let settings = self.settings;
            let address = remote.ip().to_canonical();
            let Some(slot) = self
                .per_address
                .admit(address, settings.max_connections_per_ip)
            else {
                tracing::info!(remote = %remote, cap = settings.max_connections_per_ip, "connection over the per-address cap refused");
                // The refusal holds its connection slot only for the short handshake.
                connections.spawn(async move {
                    let _permit = permit;
                    refuse_over_cap(
                        acceptor,
                        tcp,
                        remote,
                        settings.handshake_timeout,
                        settings.max_connections_per_ip,
                    )
                    .await;
                });
                continue;
            };
            let pipeline = Arc::clone(&self.pipeline);
            let stats = Arc::clone(&self.stats);
            let stopped = stopped.clone();
            connections.spawn(async move {
                let _permit = permit;
                let _slot = slot;
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
