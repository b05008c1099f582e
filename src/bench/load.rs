//! The load generator: C TLS connections to the server, each keeping W artifacts in
//! flight (or, in the connection-rate mode, one new connection per artifact), all
//! taking the next artifact from one shared counter, and recording the latency from
//! writing an artifact to reading its response.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::client::{BtpsClient, ClientError, ClientOptions};
use crate::protocol::response::parse_response;

use super::artifacts::Prepared;

/// Where and how to send.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// The server's host (name or IP address).
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// Concurrent connections.
    pub connections: usize,
    /// Artifacts in flight per connection (persistent connections only).
    pub window: usize,
    /// Open a new connection for every artifact instead of keeping C open.
    pub new_connection_per_artifact: bool,
    /// Limit for connecting and for each response.
    pub timeout: Duration,
}

/// What a load run observed.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Indexes (into the artifact list) of the artifacts answered with `status.ok`.
    pub accepted: Vec<usize>,
    /// Latency of every accepted artifact, in microseconds.
    pub latencies_micros: Vec<u32>,
    /// Failures by message: refusals by their code and message, connection
    /// failures by the client's error.
    pub errors: BTreeMap<String, u64>,
    /// The measured window: from the first artifact written (every connection
    /// already open) to the last response read.
    pub elapsed: Duration,
}

impl LoadOutcome {
    fn merge(&mut self, other: LoadOutcome) {
        self.accepted.extend(other.accepted);
        self.latencies_micros.extend(other.latencies_micros);
        for (message, count) in other.errors {
            *self.errors.entry(message).or_default() += count;
        }
    }

    fn error(&mut self, message: String, count: u64) {
        *self.errors.entry(message).or_default() += count;
    }

    /// All failures.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Client options of the benchmark: any certificate (the appliance's own is
/// self-signed), and `timeout` for connecting and for each response.
pub fn client_options(timeout: Duration) -> ClientOptions {
    ClientOptions {
        insecure: true,
        timeout,
        ..ClientOptions::default()
    }
}

/// Sends every artifact once and collects the outcome. Persistent connections are
/// all opened before the measured window starts; in the connection-rate mode each
/// artifact's latency includes its TCP and TLS handshake.
pub async fn run(plan: &LoadPlan, artifacts: Arc<Vec<Prepared>>) -> LoadOutcome {
    let next = Arc::new(AtomicUsize::new(0));
    let options = client_options(plan.timeout);
    let mut outcome = LoadOutcome::default();
    let mut tasks = JoinSet::new();
    if plan.new_connection_per_artifact {
        let started = Instant::now();
        for _ in 0..plan.connections.max(1) {
            let (plan, options, artifacts, next) = (
                plan.clone(),
                options.clone(),
                Arc::clone(&artifacts),
                Arc::clone(&next),
            );
            tasks
                .spawn(async move { one_per_connection(&plan, &options, &artifacts, &next).await });
        }
        while let Some(joined) = tasks.join_next().await {
            collect(&mut outcome, joined);
        }
        outcome.elapsed = started.elapsed();
    } else {
        let clients = open(plan, &options, plan.connections.max(1)).await;
        let mut clients_opened = Vec::with_capacity(clients.len());
        for client in clients {
            match client {
                Ok(client) => clients_opened.push(client),
                Err(error) => outcome.error(format!("connect: {error}"), 1),
            }
        }
        let started = Instant::now();
        for client in clients_opened {
            let (artifacts, next, window) = (
                Arc::clone(&artifacts),
                Arc::clone(&next),
                plan.window.max(1),
            );
            tasks.spawn(async move { pipelined(client, &artifacts, &next, window).await });
        }
        while let Some(joined) = tasks.join_next().await {
            collect(&mut outcome, joined);
        }
        outcome.elapsed = started.elapsed();
    }
    // Artifacts no connection took: every connection failed before the end.
    let taken = next.load(Ordering::Relaxed).min(artifacts.len());
    let unsent = artifacts.len() - taken;
    if unsent > 0 {
        outcome.error("not sent: no connection left".to_owned(), unsent as u64);
    }
    outcome
}

fn collect(outcome: &mut LoadOutcome, joined: Result<LoadOutcome, tokio::task::JoinError>) {
    match joined {
        Ok(part) => outcome.merge(part),
        Err(error) => outcome.error(format!("connection task failed: {error}"), 1),
    }
}

/// Opens `count` connections, at most 64 handshakes at a time (as many clients
/// arriving at once would; an unbounded burst only measures the accept backlog).
pub async fn open(
    plan: &LoadPlan,
    options: &ClientOptions,
    count: usize,
) -> Vec<Result<BtpsClient, ClientError>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        let (host, port, options, limit) = (
            plan.host.clone(),
            plan.port,
            options.clone(),
            Arc::clone(&limit),
        );
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            BtpsClient::connect(&host, port, &options).await
        });
    }
    let mut clients = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        // A panicked connect task cannot happen short of a bug in the client; it
        // is reported like a failed connection.
        clients.push(joined.unwrap_or_else(|error| {
            Err(ClientError::Io(std::io::Error::other(error.to_string())))
        }));
    }
    clients
}

/// One persistent connection: keeps up to `window` artifacts in flight, matching
/// responses to artifacts by `reqId` (a server may answer out of order).
async fn pipelined(
    mut client: BtpsClient,
    artifacts: &[Prepared],
    next: &AtomicUsize,
    window: usize,
) -> LoadOutcome {
    let mut outcome = LoadOutcome::default();
    let mut in_flight: HashMap<&str, (usize, Instant)> = HashMap::with_capacity(window);
    let mut batch: Vec<u8> = Vec::new();
    loop {
        batch.clear();
        let sent_at = Instant::now();
        while in_flight.len() < window {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(artifact) = artifacts.get(index) else {
                break;
            };
            batch.extend_from_slice(artifact.line.as_bytes());
            batch.push(b'\n');
            in_flight.insert(artifact.id.as_str(), (index, sent_at));
        }
        if !batch.is_empty()
            && let Err(error) = client.send_raw(&batch).await
        {
            outcome.error(format!("send: {error}"), in_flight.len() as u64);
            return outcome;
        }
        if in_flight.is_empty() {
            let _ = client.close().await;
            return outcome;
        }
        let line = match client.read_line().await {
            Ok(Some(line)) => line,
            Ok(None) => {
                outcome.error(
                    "the server closed the connection".to_owned(),
                    in_flight.len() as u64,
                );
                return outcome;
            }
            Err(error) => {
                outcome.error(format!("receive: {error}"), in_flight.len() as u64);
                return outcome;
            }
        };
        let response = match parse_response(&line) {
            Ok(response) => response,
            Err(error) => {
                outcome.error(format!("invalid response: {error}"), 1);
                continue;
            }
        };
        let answered = response
            .req_id
            .as_deref()
            .and_then(|id| in_flight.remove(id));
        let Some((index, sent_at)) = answered else {
            outcome.error(
                format!("response to no artifact in flight: {}", refusal(&response)),
                1,
            );
            continue;
        };
        if response.ok {
            outcome.accepted.push(index);
            outcome.latencies_micros.push(micros(sent_at.elapsed()));
        } else {
            outcome.error(refusal(&response), 1);
        }
    }
}

/// Takes artifacts one at a time, each on a new connection (connect, TLS handshake,
/// one line, its response, close).
async fn one_per_connection(
    plan: &LoadPlan,
    options: &ClientOptions,
    artifacts: &[Prepared],
    next: &AtomicUsize,
) -> LoadOutcome {
    let mut outcome = LoadOutcome::default();
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(artifact) = artifacts.get(index) else {
            return outcome;
        };
        let started = Instant::now();
        let mut client = match BtpsClient::connect(&plan.host, plan.port, options).await {
            Ok(client) => client,
            Err(error) => {
                outcome.error(format!("connect: {error}"), 1);
                continue;
            }
        };
        match client.request(&artifact.line).await {
            Ok(response) if response.ok && response.req_id.as_deref() == Some(&artifact.id) => {
                outcome.accepted.push(index);
                outcome.latencies_micros.push(micros(started.elapsed()));
            }
            Ok(response) => outcome.error(refusal(&response), 1),
            Err(error) => outcome.error(format!("request: {error}"), 1),
        }
        let _ = client.close().await;
    }
}

/// The error key of a refusal: its code and message.
fn refusal(response: &crate::protocol::response::ServerResponse) -> String {
    format!(
        "{} {}",
        response.code,
        response.message.as_deref().unwrap_or("(no message)")
    )
}

/// A duration in whole microseconds, saturating at about 71 minutes.
fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}
