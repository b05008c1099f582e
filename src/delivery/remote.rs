//! One attempt to a receiver on another server (`08-delivery.md` §5.3): its host
//! from `_btps.host.<domain>` (through the DNS cache), a pooled TLS connection, the
//! stored bytes written as one line, and the answer whose `reqId` is the artifact's
//! `id` — or an error line without `reqId`, which is the answer to the one
//! artifact a connection carries at a time.
//!
//! The pool keeps at most `connections_per_host` connections per (host, port);
//! idle ones are closed after [`IDLE_LIMIT`]. A reused connection the receiver has
//! closed meanwhile fails before anything is read; the attempt then retries once on
//! a fresh connection, since nothing can have been received.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use tokio::sync::Semaphore;

use crate::client::{BtpsClient, ClientError, ClientOptions};
use crate::identity::Identity;
use crate::identity::dns::KeyDirectory;
use crate::protocol::response::parse_response;

use super::outcome::{Failure, Outcome, classify};

/// How long an idle pooled connection is kept.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// Where and how the worker connects.
pub struct Remote {
    directory: KeyDirectory,
    /// The TLS configuration, or why there is none (no trusted CA at all).
    tls: Result<Arc<ClientConfig>, String>,
    options: ClientOptions,
    response_timeout: Duration,
    per_host: usize,
    pools: Mutex<HashMap<(String, u16), Arc<HostPool>>>,
}

/// The connections to one receiving server.
struct HostPool {
    slots: Semaphore,
    idle: Mutex<Vec<(BtpsClient, Instant)>>,
}

impl HostPool {
    /// A pooled connection still fresh enough to use, if any.
    fn take_idle(&self) -> Option<BtpsClient> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((client, since)) = idle.pop() {
            if since.elapsed() < IDLE_LIMIT {
                return Some(client);
            }
            // Dropped: closed without ceremony, like an idle timeout.
        }
        None
    }

    fn put_back(&self, client: BtpsClient) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.push((client, Instant::now()));
    }
}

/// Where an attempt went: for the failure notice's `errorLog.meta`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destination {
    /// The receiver's host, when DNS named it.
    pub host: Option<String>,
    /// Its port.
    pub port: Option<u16>,
}

impl Remote {
    /// Connects with `tls` (built once from the delivery settings; an error says why
    /// there is none, and every remote attempt then fails with it), waits
    /// `connect_timeout` for a connection and `response_timeout` for an answer.
    pub fn new(
        directory: KeyDirectory,
        tls: Result<Arc<ClientConfig>, String>,
        connect_timeout: Duration,
        response_timeout: Duration,
        per_host: usize,
    ) -> Self {
        Remote {
            directory,
            tls,
            options: ClientOptions {
                timeout: connect_timeout,
                ..ClientOptions::default()
            },
            response_timeout,
            per_host: per_host.max(1),
            pools: Mutex::new(HashMap::new()),
        }
    }

    fn pool(&self, host: &str, port: u16) -> Arc<HostPool> {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (host.to_ascii_lowercase(), port);
        Arc::clone(pools.entry(key).or_insert_with(|| {
            Arc::new(HostPool {
                slots: Semaphore::new(self.per_host),
                idle: Mutex::new(Vec::new()),
            })
        }))
    }

    /// Delivers `raw` (the artifact `artifact_id`) to `to`'s server.
    pub async fn attempt(
        &self,
        to: &Identity,
        artifact_id: &str,
        raw: &[u8],
    ) -> (Outcome, Destination) {
        let host = match self.directory.host(to.domain()).await {
            Ok(host) => host,
            Err(error) => {
                let failure = Failure::dns(format!("DNS resolution failed for {to}: {error}"));
                return (Outcome::Transient(failure), Destination::default());
            }
        };
        let destination = Destination {
            host: Some(host.host.clone()),
            port: Some(host.port),
        };
        let pool = self.pool(&host.host, host.port);
        let Ok(_slot) = pool.slots.acquire().await else {
            let failure = Failure::closed("the connection pool was closed");
            return (Outcome::Transient(failure), destination);
        };
        let mut line = Vec::with_capacity(raw.len() + 1);
        line.extend_from_slice(raw);
        line.push(b'\n');
        if let Some(client) = pool.take_idle() {
            match self.exchange(client, artifact_id, &line).await {
                Exchange::Answered(outcome, client) => {
                    if let Some(client) = client {
                        pool.put_back(*client);
                    }
                    return (outcome, destination);
                }
                // The receiver closed the idle connection: nothing was read, so
                // nothing was received; go on with a fresh one.
                Exchange::Stale => {}
                Exchange::Failed(failure) => return (Outcome::Transient(failure), destination),
            }
        }
        let tls = match &self.tls {
            Ok(tls) => Arc::clone(tls),
            Err(reason) => {
                return (
                    Outcome::Transient(Failure::tls(reason.clone())),
                    destination,
                );
            }
        };
        let client = match BtpsClient::connect_with(&host.host, host.port, tls, &self.options).await
        {
            Ok(client) => client,
            Err(error) => return (Outcome::Transient(connect_failure(&error)), destination),
        };
        let outcome = match self.exchange(client, artifact_id, &line).await {
            Exchange::Answered(outcome, client) => {
                if let Some(client) = client {
                    pool.put_back(*client);
                }
                outcome
            }
            Exchange::Stale => {
                Outcome::Transient(Failure::closed("the connection closed before the answer"))
            }
            Exchange::Failed(failure) => Outcome::Transient(failure),
        };
        (outcome, destination)
    }

    /// Writes the line and reads until the answer to `artifact_id`.
    async fn exchange(&self, mut client: BtpsClient, artifact_id: &str, line: &[u8]) -> Exchange {
        client.set_timeout(self.response_timeout);
        if let Err(error) = client.send_raw(line).await {
            return match error {
                ClientError::Io(_) => Exchange::Stale,
                other => Exchange::Failed(Failure::closed(other.to_string())),
            };
        }
        let started = Instant::now();
        let mut read_anything = false;
        loop {
            let left = self.response_timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Exchange::Failed(timeout_failure(self.response_timeout));
            }
            client.set_timeout(left);
            let answer = match client.read_line().await {
                Ok(Some(answer)) => answer,
                Ok(None) if !read_anything => return Exchange::Stale,
                Ok(None) => {
                    return Exchange::Failed(Failure::closed(
                        "the receiver closed the connection before the answer",
                    ));
                }
                Err(ClientError::Timeout { .. }) => {
                    return Exchange::Failed(timeout_failure(self.response_timeout));
                }
                Err(ClientError::Io(_)) if !read_anything => return Exchange::Stale,
                Err(error) => return Exchange::Failed(Failure::closed(error.to_string())),
            };
            read_anything = true;
            let response = match parse_response(&answer) {
                Ok(response) => response,
                Err(error) => {
                    return Exchange::Failed(Failure::unreadable(format!(
                        "the receiver's answer is not a response: {error}"
                    )));
                }
            };
            match response.req_id.as_deref() {
                Some(id) if id == artifact_id => {
                    return Exchange::Answered(classify(&response), Some(Box::new(client)));
                }
                // The answer to the line itself (invalid JSON, validation): no
                // `reqId`, and this connection carries only this artifact.
                None if !response.ok => {
                    // A reference server may close after such an answer; do not
                    // reuse the connection.
                    return Exchange::Answered(classify(&response), None);
                }
                // A late answer to an earlier line: not ours.
                _ => {}
            }
        }
    }
}

/// How an exchange on one connection ended.
enum Exchange {
    /// The answer came; the connection, when it may be reused.
    Answered(Outcome, Option<Box<BtpsClient>>),
    /// The connection was already closed: nothing was sent or read.
    Stale,
    /// Sent, but no answer (timeout, closed after reading, unreadable answer).
    Failed(Failure),
}

fn timeout_failure(after: Duration) -> Failure {
    Failure::timeout(format!("no answer within {} ms", after.as_millis()))
}

fn connect_failure(error: &ClientError) -> Failure {
    match error {
        ClientError::Handshake { .. } | ClientError::InvalidServerName { .. } => {
            Failure::tls(error.to_string())
        }
        ClientError::Timeout { .. } => Failure::timeout(error.to_string()),
        _ => Failure::connect(error.to_string()),
    }
}
