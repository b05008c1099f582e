//! `btps bench --agents`: agent queries against a large store.
//!
//! Outside the measured window it prepares a data directory — N hosted identities,
//! each with an enrolled agent (one agent key for all, one agent id each) and E
//! inbox entries (arriving interleaved across the identities, as mail does), so
//! N × E entries in all — or reuses one prepared before with the same N and E. It
//! then signs R `inbox.fetch` artifacts (`{"limit": L}`, each for an identity
//! picked evenly at random), starts `btps serve` on the directory, checks one
//! answer (L results of a total of E), sends the R requests over C TLS connections
//! one at a time each, and reports the latency of each request (written → answer
//! read) and the requests per second over the whole run, as one JSON line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::crypto::PrivateKey;
use crate::identity::compute_id;
use crate::protocol::json::{Object, Value};
use crate::protocol::response::{new_id, now_iso};
use crate::signing;
use crate::store::{
    IdentityRecord, NewInboxEntry, NewTrustRecord, Perspective, PrivacyType, PublicKeyRecord,
    RedbOptions, RedbStore, Timestamp, TrustStatus,
};

use super::BenchError;
use super::artifacts::Prepared;
use super::child::ServerProcess;
use super::load::{self, LoadPlan};
use super::setup::{load_or_generate_keys, worker_threads};
use super::stats::{Latencies, round_to};

/// What to measure.
#[derive(Clone, Debug)]
pub struct AgentBenchOptions {
    /// Hosted identities (N), each with one agent.
    pub identities: usize,
    /// Inbox entries per identity (E).
    pub entries_per_identity: usize,
    /// `inbox.fetch` requests to send (R).
    pub requests: usize,
    /// Entries asked for per request (L).
    pub limit: u32,
    /// Concurrent TLS connections (C), one request in flight each.
    pub connections: usize,
    /// The data directory; prepared when it is not one of the same N and E yet.
    pub data_dir: PathBuf,
    /// Where the agent key is kept between runs.
    pub key_dir: PathBuf,
    /// The `btps` executable to start as the server.
    pub executable: PathBuf,
    /// Limit for connecting and for each response.
    pub timeout: Duration,
}

/// The result of a run, one JSON line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentBenchReport {
    /// `"agents"`.
    pub mode: &'static str,
    /// Hosted identities.
    pub identities: usize,
    /// Inbox entries in the store.
    pub entries: u64,
    /// Requests sent.
    pub requests: usize,
    /// Entries per request.
    pub limit: u32,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests answered with `status.ok`.
    pub answered: usize,
    /// Failures by message.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Requests per second over the measured window.
    pub requests_per_second: f64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Slowest request.
    pub max_ms: Option<f64>,
    /// Seconds spent filling the store (0 when reused).
    pub prepare_s: f64,
    /// Seconds spent signing the requests.
    pub presign_s: f64,
    /// Size of the database file, MiB.
    pub database_mib: f64,
    /// Server CPU seconds during the whole run (from `/proc`).
    pub server_cpu_s: Option<f64>,
    /// Average answer size, bytes.
    pub answer_bytes: Option<usize>,
}

/// The marker of a prepared data directory: what it holds.
const MARKER: &str = "agents-bench.json";

/// Entries per write transaction while filling the store.
const ENTRIES_PER_TRANSACTION: usize = 20_000;

fn identity_of(index: usize) -> String {
    format!("user{index}$agents.bench.test")
}

fn agent_of(index: usize) -> String {
    // A fixed, valid v4 UUID per identity.
    format!("btps_ag_00000000-0000-4000-8000-{index:012}")
}

fn store_error(error: crate::store::StoreError) -> BenchError {
    BenchError::Store(error)
}

/// A stored artifact of about 1 KB: what an inbox entry holds.
fn stored_artifact(owner: &str, index: usize, at: &str) -> Vec<u8> {
    format!(
        concat!(
            r#"{{"version":"1.0.0","type":"BTPS_DOC","from":"billing{sender}$vendor.bench.test","to":"{owner}","#,
            r#""selector":"btps1","id":"doc-{index}","issuedAt":"{at}","document":{{"title":"Invoice {index}","#,
            r#""id":"INV-{index}","issuedAt":"{at}","status":"unpaid","totalAmount":{{"value":1234.5,"currency":"AUD"}},"#,
            r#""lineItems":{{"columns":["Description","Quantity","Amount"],"rows":[{{"Description":"Consulting services","#,
            r#""Quantity":3,"Amount":900}},{{"Description":"Hosting, dedicated instance","Quantity":1,"Amount":334.5}}]}}}},"#,
            r#""encryption":null,"signature":{{"algorithmHash":"sha256","value":"{signature}","fingerprint":"{fingerprint}"}}}}"#
        ),
        sender = index % 50,
        owner = owner,
        index = index,
        at = at,
        signature = "A".repeat(344),
        fingerprint = "B".repeat(44),
    )
    .into_bytes()
}

/// Fills `data_dir` with N identities, their agents, and N × E entries, unless its
/// marker says it holds exactly that already. Returns the seconds spent.
fn prepare(
    options: &AgentBenchOptions,
    key: &PrivateKey,
    progress: &dyn Fn(&str),
) -> Result<f64, BenchError> {
    let marker = options.data_dir.join(MARKER);
    let wanted = format!(
        "{{\"identities\":{},\"entriesPerIdentity\":{}}}",
        options.identities, options.entries_per_identity
    );
    if std::fs::read_to_string(&marker).is_ok_and(|found| found == wanted) {
        progress(&format!("reusing {}", options.data_dir.display()));
        return Ok(0.0);
    }
    if options
        .data_dir
        .join(crate::store::DATABASE_FILE_NAME)
        .exists()
    {
        return Err(BenchError::InvalidOption(format!(
            "{} holds another database; give an empty or a prepared --agent-data",
            options.data_dir.display()
        )));
    }
    let started = Instant::now();
    let store = RedbStore::open_dir(&options.data_dir, &RedbOptions::default())?;
    let now = Timestamp::now();
    let public = key.public_key();
    store
        .write(|batch| {
            for index in 0..options.identities {
                let identity = identity_of(index);
                if batch.identity(&compute_id(&identity))?.is_some() {
                    continue;
                }
                let record = PublicKeyRecord {
                    selector: String::from("btps1"),
                    public_key: public.to_pem() + "\n",
                    key_type: String::from("rsa"),
                    version: String::from("1.0.0"),
                    created_at: now.clone(),
                    source: None,
                };
                batch.create_identity(IdentityRecord::new(&identity, record, now.clone()))?;
                batch.create_trust(
                    Perspective::Inbound,
                    NewTrustRecord {
                        sender_id: agent_of(index),
                        receiver_id: identity,
                        status: TrustStatus::Accepted,
                        created_at: now.clone(),
                        decided_by: String::from("btps bench"),
                        decided_at: now.clone(),
                        expires_at: None,
                        public_key_base64: public.to_base64(),
                        public_key_fingerprint: public.fingerprint().to_owned(),
                        key_history: Vec::new(),
                        privacy_type: PrivacyType::Encrypted,
                        retry_after_date: None,
                        metadata: None,
                    },
                    None,
                )?;
            }
            Ok(())
        })
        .map_err(store_error)?;
    let total = options.identities * options.entries_per_identity;
    let base = now.millis() - i64::try_from(total).unwrap_or(0);
    let mut next = 0;
    while next < total {
        let end = (next + ENTRIES_PER_TRANSACTION).min(total);
        store
            .write(|batch| {
                batch.with_inbox(|_, inbox| {
                    for index in next..end {
                        let owner = identity_of(index % options.identities);
                        let received =
                            Timestamp::from_millis(base + i64::try_from(index).unwrap_or(0))
                                .unwrap_or_else(|_| now.clone());
                        let entry = NewInboxEntry {
                            owner: owner.clone(),
                            artifact_id: format!("doc-{index}"),
                            artifact_type: String::from("BTPS_DOC"),
                            from: format!("billing{}$vendor.bench.test", index % 50),
                            to: owner.clone(),
                            title: Some(format!("Invoice {index}")),
                            raw: stored_artifact(&owner, index, received.as_str()),
                            received_at: received,
                            remote_address: None,
                        };
                        inbox.insert(entry)?;
                    }
                    Ok(())
                })
            })
            .map_err(store_error)?;
        next = end;
        if next % 200_000 == 0 || next == total {
            progress(&format!("stored {next} of {total} entries"));
        }
    }
    drop(store);
    std::fs::write(&marker, wanted).map_err(|source| BenchError::Io {
        what: format!("writing {}", marker.display()),
        source,
    })?;
    Ok(started.elapsed().as_secs_f64())
}

/// R signed `inbox.fetch` artifacts, each by the agent of an identity picked
/// evenly at random (a fixed sequence).
fn presign(options: &AgentBenchOptions, key: &PrivateKey) -> Vec<Prepared> {
    let count = options.requests;
    let threads = worker_threads().min(count.max(1));
    let per_thread = count.div_ceil(threads);
    let sign_one = |index: usize| -> Prepared {
        // A 64-bit mix of the index: evenly spread, the same on every run.
        let mut mixed = (index as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^= mixed >> 31;
        let identity = usize::try_from(mixed % options.identities.max(1) as u64).unwrap_or(0);
        let mut document = Object::new();
        document.insert("limit", f64::from(options.limit));
        let id = new_id();
        let mut artifact = Object::new();
        artifact.insert("action", "inbox.fetch");
        artifact.insert("agentId", agent_of(identity));
        artifact.insert("to", identity_of(identity));
        artifact.insert("document", document);
        artifact.insert("encryption", Value::Null);
        artifact.insert("id", id.as_str());
        artifact.insert("issuedAt", now_iso());
        artifact.insert("version", "1.0.0");
        signing::sign_object(&mut artifact, key);
        Prepared {
            id,
            line: artifact.to_canonical(),
            encrypted: false,
        }
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let start = (thread * per_thread).min(count);
                let end = (start + per_thread).min(count);
                let sign_one = &sign_one;
                scope.spawn(move || (start..end).map(sign_one).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap_or_default())
            .collect()
    })
}

/// One request on its own connection: the answer must carry L results of E.
async fn check_answer(
    address: std::net::SocketAddr,
    request: &Prepared,
    options: &AgentBenchOptions,
) -> Result<usize, BenchError> {
    let invalid =
        |detail: String| BenchError::InvalidOption(format!("the check request: {detail}"));
    let client_options = load::client_options(options.timeout);
    let mut client =
        crate::client::BtpsClient::connect("127.0.0.1", address.port(), &client_options)
            .await
            .map_err(|error| invalid(error.to_string()))?;
    client
        .send_line(&request.line)
        .await
        .map_err(|error| invalid(error.to_string()))?;
    let line = client
        .read_line()
        .await
        .map_err(|error| invalid(error.to_string()))?
        .ok_or_else(|| invalid(String::from("no answer")))?;
    let response = crate::protocol::response::parse_response(&line)
        .map_err(|error| invalid(error.to_string()))?;
    let document = response.raw.get("document").and_then(Value::as_object);
    let results = document
        .and_then(|document| document.get("results"))
        .and_then(Value::as_array)
        .map_or(0, <[Value]>::len);
    let total = document
        .and_then(|document| document.get("total"))
        .and_then(Value::as_f64);
    let expected = options.entries_per_identity.min(options.limit as usize);
    #[allow(clippy::cast_precision_loss)]
    let expected_total = options.entries_per_identity as f64;
    if !response.ok || results != expected || total != Some(expected_total) {
        return Err(invalid(format!(
            "expected {expected} results of {expected_total}, got {line:.300}"
        )));
    }
    Ok(line.len())
}

/// Runs the agent benchmark.
pub fn run(
    options: &AgentBenchOptions,
    progress: &dyn Fn(&str),
) -> Result<AgentBenchReport, BenchError> {
    if options.identities == 0 || options.requests == 0 || options.connections == 0 {
        return Err(BenchError::InvalidOption(String::from(
            "identities, requests and connections must be at least 1",
        )));
    }
    let keys = load_or_generate_keys(&options.key_dir, 1)?;
    let key = &keys.receiver;
    let mut report = AgentBenchReport {
        mode: "agents",
        identities: options.identities,
        entries: (options.identities * options.entries_per_identity) as u64,
        requests: options.requests,
        limit: options.limit,
        connections: options.connections,
        ..AgentBenchReport::default()
    };
    report.prepare_s = round_to(prepare(options, key, progress)?, 1);
    let signing = Instant::now();
    let requests = Arc::new(presign(options, key));
    report.presign_s = round_to(signing.elapsed().as_secs_f64(), 1);
    progress(&format!(
        "signed {} requests in {:.1} s",
        requests.len(),
        report.presign_s
    ));
    let database = options.data_dir.join(crate::store::DATABASE_FILE_NAME);
    report.database_mib = std::fs::metadata(&database).map_or(0.0, |metadata| {
        #[allow(clippy::cast_precision_loss)]
        let mib = metadata.len() as f64 / 1_048_576.0;
        round_to(mib, 0)
    });
    let dns = crate::identity::responder::DnsResponder::start(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| BenchError::InvalidOption(String::from("loopback address")))?,
    )
    .map_err(|source| BenchError::Io {
        what: String::from("starting the DNS responder"),
        source,
    })?;
    let server = ServerProcess::spawn(
        &options.executable,
        &options.data_dir,
        dns.local_addr(),
        options.connections + 8,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io {
            what: String::from("starting the load generator's runtime"),
            source,
        })?;
    let address = server.address();
    let outcome = runtime.block_on(async {
        let checked = check_answer(address, &requests[0], options).await?;
        let plan = LoadPlan {
            host: String::from("127.0.0.1"),
            port: address.port(),
            connections: options.connections,
            window: 1,
            new_connection_per_artifact: false,
            timeout: options.timeout,
        };
        let outcome = load::run(&plan, Arc::clone(&requests)).await;
        Ok::<_, BenchError>((checked, outcome))
    });
    report.server_cpu_s = server.cpu_seconds().map(|seconds| round_to(seconds, 2));
    server.stop()?;
    let (answer_bytes, outcome) = outcome?;
    report.answer_bytes = Some(answer_bytes);
    report.answered = outcome.accepted.len();
    report.errors.clone_from(&outcome.errors);
    #[allow(clippy::cast_precision_loss)]
    let per_second = outcome.accepted.len() as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
    report.requests_per_second = round_to(per_second, 0);
    let latencies = Latencies::new(outcome.latencies_micros);
    report.p50_ms = latencies.percentile_ms(0.50).map(|ms| round_to(ms, 2));
    report.p90_ms = latencies.percentile_ms(0.90).map(|ms| round_to(ms, 2));
    report.p99_ms = latencies.percentile_ms(0.99).map(|ms| round_to(ms, 2));
    report.max_ms = latencies.max_ms().map(|ms| round_to(ms, 2));
    Ok(report)
}
