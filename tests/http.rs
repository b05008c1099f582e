//! The local HTTP endpoint: health and readiness states, Prometheus metrics that move
//! with the traffic, a backup taken under continuous writes that restores into a
//! working server, the bearer-token rule, and `btps serve` wiring it up.
//!
//! Metrics are process-wide and the tests of this binary run in parallel, so metric
//! assertions compare counter values before and after, with lower bounds.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use btps::config::{Config, HttpSettings, Secret};
use btps::http::{HttpState, router};
use btps::identity::compute_trust_id;
use btps::protocol::TransporterType;
use btps::server::ListenerStats;
use btps::store::{
    DATABASE_FILE_NAME, NewTrustRecord, Perspective, PrivacyType, RedbOptions, RedbStore,
    Timestamp, TrustPatch, TrustStatus,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use crate::util::server::{
    TRUST_REQUEST, TestOptions, TestServer, artifact, artifact_with_id, invoice,
};

const SENDER: &str = "billing$vendor.test";
const RECEIVER: &str = "finance$client.test";
const TOKEN: &str = "0123456789abcdef-test-token";

pub(crate) fn state_for(server: &TestServer, token: Option<&str>) -> HttpState {
    HttpState::new(
        std::sync::Arc::new(server.store.clone()),
        Arc::clone(&server.stats),
        btps::metrics::install(),
        token.map(Secret::new).as_ref(),
    )
}

/// One request through the router, without a socket: (status, body).
async fn call(state: &HttpState, path: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, body.to_vec())
}

async fn call_text(state: &HttpState, path: &str) -> (StatusCode, String) {
    let (status, body) = call(state, path, None).await;
    (status, String::from_utf8(body).unwrap())
}

/// A plain HTTP/1.1 GET over a real socket: (status, headers, body).
async fn http_get(
    address: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

/// Serves `state` on a loopback port until the returned sender is dropped or fired.
async fn bind(state: HttpState) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(btps::http::serve(listener, router(state), async move {
        let _ = stopped.await;
    }));
    (address, stop)
}

// ---- Prometheus text, parsed strictly -------------------------------------------

/// One sample line: name, labels, value.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the text exposition format (version 0.0.4) and checks its rules: valid
/// names and label syntax, one TYPE per family before its samples, samples of a
/// family together, histogram buckets cumulative and ending in `+Inf` = `_count`.
pub(crate) fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut finished_families: Vec<String> = Vec::new();
    let mut current_family: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap();
            let name = parts
                .next()
                .unwrap_or_else(|| panic!("bad comment {line:?}"));
            assert!(is_metric_name(name), "bad name in {line:?}");
            if keyword == "TYPE" {
                let kind = parts.next().unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad type in {line:?}"
                );
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "TYPE twice for {name}"
                );
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => panic!("no value in {line:?}"),
        };
        assert!(is_metric_name(name), "bad metric name in {line:?}");
        let mut labels = BTreeMap::new();
        let rest = if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let close;
            loop {
                let (start, c) = chars.next().unwrap_or_else(|| panic!("unclosed {line:?}"));
                if c == '}' {
                    close = start;
                    break;
                }
                if c == ',' {
                    continue;
                }
                let mut key = String::from(c);
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert!(is_metric_name(&key), "bad label name {key:?} in {line:?}");
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line:?}");
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(c @ ('\\' | '"')) => value.push(c),
                            other => panic!("bad escape {other:?} in {line:?}"),
                        },
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => panic!("unterminated label value in {line:?}"),
                    }
                }
                assert!(
                    labels.insert(key, value).is_none(),
                    "label twice in {line:?}"
                );
            }
            &inner[close + 1..]
        } else {
            rest
        };
        let mut fields = rest.split_whitespace();
        let value = match fields
            .next()
            .unwrap_or_else(|| panic!("no value in {line:?}"))
        {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            number => number
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        if let Some(timestamp) = fields.next() {
            timestamp.parse::<i64>().unwrap();
        }
        assert!(fields.next().is_none(), "trailing data in {line:?}");
        // The family of a sample: histograms and summaries add suffixes.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix).filter(|base| {
                    types
                        .get(*base)
                        .is_some_and(|t| t == "histogram" || t == "summary")
                })
            })
            .unwrap_or(name)
            .to_owned();
        assert!(
            types.contains_key(&family),
            "sample before its TYPE: {line:?}"
        );
        if current_family.as_deref() != Some(family.as_str()) {
            assert!(
                !finished_families.contains(&family),
                "samples of {family} are not together"
            );
            if let Some(previous) = current_family.replace(family.clone()) {
                finished_families.push(previous);
            }
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    // Histograms: cumulative buckets, +Inf equals _count.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|sample| sample.name == format!("{family}_bucket"))
            .collect();
        let mut previous = 0.0;
        let mut previous_le = f64::NEG_INFINITY;
        for bucket in &buckets {
            let le: f64 = match bucket.labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                number => number.parse().unwrap(),
            };
            assert!(le > previous_le, "{family}: buckets out of order");
            assert!(bucket.value >= previous, "{family}: buckets not cumulative");
            previous = bucket.value;
            previous_le = le;
        }
        if !buckets.is_empty() {
            assert_eq!(previous_le, f64::INFINITY, "{family}: no +Inf bucket");
            let count = samples
                .iter()
                .find(|sample| sample.name == format!("{family}_count"))
                .unwrap();
            assert_eq!(previous, count.value, "{family}: +Inf bucket is not _count");
        }
    }
    samples
}

/// The value of the sample `name` with exactly these labels (0 when absent).
pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    samples
        .iter()
        .find(|sample| sample.name == name && sample.labels == wanted)
        .map_or(0.0, |sample| sample.value)
}

pub(crate) async fn scrape(state: &HttpState) -> Vec<Sample> {
    let (status, body) = call_text(state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    parse_prometheus(&body)
}

// ---- Health and readiness ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_follow_the_listener() {
    let server = TestServer::start(TestOptions::default()).await;

    // A listener that never ran: alive, not ready, and the reason says why.
    let idle = HttpState::new(
        std::sync::Arc::new(server.store.clone()),
        Arc::new(ListenerStats::default()),
        btps::metrics::install(),
        None,
    );
    assert_eq!(
        call_text(&idle, "/healthz").await,
        (StatusCode::OK, "ok\n".to_owned())
    );
    let (status, reason) = call_text(&idle, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reason.contains("BTPS listener"), "{reason}");

    // The running server is ready once its accept loop runs.
    let state = state_for(&server, None);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = call_text(&state, "/readyz").await;
        if status == StatusCode::OK {
            assert_eq!(body, "ready\n");
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (address, stop) = bind(state.clone()).await;
    let (status, _, body) = http_get(address, "/readyz", None).await;
    assert_eq!((status, body.as_slice()), (200, b"ready\n".as_slice()));
    let (status, _, _) = http_get(address, "/nowhere", None).await;
    assert_eq!(status, 404);

    // Stopped: no longer ready, still alive.
    let _temp = server.stop().await;
    let (status, reason) = call_text(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reason.contains("not accepting"), "{reason}");
    let (status, _, _) = http_get(address, "/healthz", None).await;
    assert_eq!(status, 200);
    drop(stop);
}

// ---- Metrics ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_with_the_traffic() {
    let server = TestServer::start(TestOptions::default()).await;
    let state = state_for(&server, None);
    let before = scrape(&state).await;

    // One accepted trust request, the same again (a duplicate), a line that is not
    // JSON, and a document to an identity not hosted here.
    let request = artifact_with_id(
        TransporterType::TrustRequest,
        SENDER,
        "billing",
        RECEIVER,
        TRUST_REQUEST,
        Some("metrics-trust-request"),
    );
    let mut client = server.client().await;
    assert!(client.request(&request).await.unwrap().ok);
    assert!(client.request(&request).await.unwrap().ok);
    assert!(!client.request("{not json").await.unwrap().ok);
    let stray = artifact(
        TransporterType::Document,
        SENDER,
        "billing",
        "nobody$client.test",
        &invoice("INV-M1"),
    );
    assert!(!client.request(&stray).await.unwrap().ok);
    drop(client);

    let after = scrape(&state).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let artifacts = "btps_artifacts_total";
    assert!(delta(artifacts, &[("kind", "TRUST_REQ"), ("outcome", "accepted")]) >= 1.0);
    assert!(
        delta(
            artifacts,
            &[("kind", "TRUST_REQ"), ("outcome", "duplicate")]
        ) >= 1.0
    );
    assert!(
        delta(
            artifacts,
            &[("kind", "unparsed"), ("outcome", "BTP_ERROR_INVALID_JSON")]
        ) >= 1.0
    );
    assert!(
        delta(
            artifacts,
            &[
                ("kind", "BTPS_DOC"),
                ("outcome", "BTP_ERROR_IDENTITY_NOT_FOUND")
            ]
        ) >= 1.0
    );
    // Two signature checks at least (the duplicate is verified before it is found).
    assert!(delta("btps_signature_verification_seconds_count", &[]) >= 2.0);
    assert!(delta("btps_db_commit_seconds_count", &[]) >= 1.0);
    // The first key lookup went to DNS, the second came from the cache.
    assert!(delta("btps_dns_cache_misses_total", &[]) >= 1.0);
    assert!(delta("btps_dns_cache_hits_total", &[("answer", "records")]) >= 1.0);

    // Gauges read at render time describe this server.
    let file_bytes = std::fs::metadata(server.store.path()).unwrap().len();
    assert_eq!(value(&after, "btps_db_file_bytes", &[]), file_bytes as f64);
    assert_eq!(
        value(
            &after,
            "btps_trust_records",
            &[("perspective", "inbound"), ("status", "pending")]
        ),
        1.0
    );
    assert!(value(&after, "btps_connections_accepted_total", &[]) >= 1.0);
    assert!(
        after
            .iter()
            .any(|sample| sample.name == "btps_connections_open")
    );
    assert_eq!(
        value(
            &after,
            "btps_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // A status whose count drops to zero is rendered as 0, not as its last value.
    let id = compute_trust_id(SENDER, RECEIVER);
    server
        .store
        .update_trust(
            Perspective::Inbound,
            &id,
            TrustPatch {
                status: Some(TrustStatus::Accepted),
                ..TrustPatch::default()
            },
        )
        .unwrap();
    let later = scrape(&state).await;
    let trust = |samples: &[Sample], status| {
        value(
            samples,
            "btps_trust_records",
            &[("perspective", "inbound"), ("status", status)],
        )
    };
    assert_eq!(trust(&later, "pending"), 0.0);
    assert_eq!(trust(&later, "accepted"), 1.0);
    server.stop().await;
}

// ---- Backup ----------------------------------------------------------------------

fn record(sender: &str, status: TrustStatus) -> NewTrustRecord {
    NewTrustRecord {
        sender_id: sender.to_owned(),
        receiver_id: RECEIVER.to_owned(),
        status,
        created_at: Timestamp::now(),
        decided_by: "test".into(),
        decided_at: Timestamp::now(),
        expires_at: None,
        public_key_base64: String::new(),
        public_key_fingerprint: String::new(),
        key_history: vec![],
        privacy_type: PrivacyType::Mixed,
        retry_after_date: None,
        metadata: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_continuous_writes_restores_into_a_working_server() {
    let server = TestServer::start(TestOptions::default()).await;
    // Real traffic first: a trust request over the wire, then accepted by the owner.
    let request = artifact(
        TransporterType::TrustRequest,
        SENDER,
        "billing",
        RECEIVER,
        TRUST_REQUEST,
    );
    assert!(server.send(&request).await.ok);
    server
        .store
        .update_trust(
            Perspective::Inbound,
            &compute_trust_id(SENDER, RECEIVER),
            TrustPatch {
                status: Some(TrustStatus::Accepted),
                retry_after_date: Some(None),
                ..TrustPatch::default()
            },
        )
        .unwrap();

    // A writer commits one trust record per transaction until told to stop; the
    // senders it has seen committed are recorded after each commit returns.
    let committed = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop_writer = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, committed, stop) = (
            std::sync::Arc::new(server.store.clone()),
            Arc::clone(&committed),
            Arc::clone(&stop_writer),
        );
        std::thread::spawn(move || {
            let mut n = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let sender = format!("writer{n}$load.test");
                store
                    .create_trust(
                        Perspective::Inbound,
                        record(&sender, TrustStatus::Pending),
                        None,
                    )
                    .unwrap();
                committed.lock().unwrap().push(sender);
                n += 1;
            }
            n
        })
    };
    // Let the writer get going, then take the backup while it runs.
    while committed.lock().unwrap().len() < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (address, stop_http) = bind(state_for(&server, Some(TOKEN))).await;
    let before_request: Vec<String> = committed.lock().unwrap().clone();
    let (status, headers, body) = http_get(address, "/backup", Some(TOKEN)).await;
    let after_response = committed.lock().unwrap().len();
    stop_writer.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    drop(stop_http);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["content-length"], body.len().to_string());
    assert!(headers["content-disposition"].contains(".redb"));
    assert!(
        written > before_request.len() as u64,
        "the writer kept committing during the backup"
    );
    // No scratch file is left beside the database.
    let leftovers: Vec<_> = std::fs::read_dir(&server.data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".btps-backup-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The file is an intact btps database holding every record committed before the
    // request, and nothing committed after the response.
    let restored = tempfile::tempdir().unwrap();
    let database = restored.path().join(DATABASE_FILE_NAME);
    std::fs::write(&database, &body).unwrap();
    assert!(RedbStore::check_file_integrity(&database).unwrap());
    let copy = RedbStore::open(&database, &RedbOptions::default()).unwrap();
    let inbound = copy
        .read(|snapshot| snapshot.trust_count(Perspective::Inbound))
        .unwrap();
    assert_eq!(
        headers["x-btps-trust-records"],
        inbound.to_string(),
        "the header reports what the file holds"
    );
    for sender in &before_request {
        let id = compute_trust_id(sender, RECEIVER);
        assert!(
            copy.trust(Perspective::Inbound, &id).unwrap().is_some(),
            "{sender} was committed before the backup began but is missing"
        );
    }
    // One per writer commit plus the wire request's record; the status counters of
    // the snapshot agree with its records (one transaction, not a torn copy).
    assert!(inbound > before_request.len() as u64);
    assert!(inbound <= after_response as u64 + 1);
    let listed = copy
        .read(|snapshot| {
            snapshot.list_all(
                Perspective::Inbound,
                &btps::store::PageRequest::first(1_000_000),
            )
        })
        .unwrap();
    assert_eq!(listed.items.len() as u64, inbound);
    drop(copy);

    // A server started on a data directory holding the backup serves its records: the
    // accepted sender's document is accepted, a pending writer's refused.
    let dns = Arc::clone(&server.dns);
    server.stop().await;
    let restarted = TestServer::start_in(restored.path(), dns, TestOptions::default()).await;
    let document = artifact(
        TransporterType::Document,
        SENDER,
        "billing",
        RECEIVER,
        &invoice("INV-RESTORED"),
    );
    let response = restarted.send(&document).await;
    assert!(response.ok, "{:?}", response.raw);
    assert_eq!(
        restarted
            .store
            .trust(
                Perspective::Inbound,
                &compute_trust_id(&before_request[0], RECEIVER)
            )
            .unwrap()
            .unwrap()
            .status,
        TrustStatus::Pending
    );
    restarted.stop().await;
}

// ---- The token rule --------------------------------------------------------------

fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, btps::config::ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("btps.toml");
    std::fs::write(&path, toml).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    Config::load(Some(&path), &move |name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    })
}

#[test]
fn a_non_loopback_endpoint_requires_a_token() {
    // Default: loopback, no token.
    let config = load("", &[]).unwrap();
    assert_eq!(config.http.listen, Some(btps::config::DEFAULT_HTTP_LISTEN));
    assert!(config.http.token.is_none());

    // Any other address without a token is refused, naming the setting.
    for listen in [
        "0.0.0.0:9480",
        "[::]:9480",
        "192.0.2.10:9480",
        "[::ffff:192.0.2.10]:80",
    ] {
        let errors = load(&format!("[http]\nlisten = \"{listen}\""), &[]).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].setting, "http.token");
        assert!(
            errors.0[0]
                .message
                .contains(listen.trim_start_matches('[').split(']').next().unwrap())
        );
    }
    let errors = load("", &[("BTPS_HTTP_LISTEN", "0.0.0.0:9480")]).unwrap_err();
    assert_eq!(errors.0[0].setting, "http.token");

    // With a token it is accepted; the token never shows in Debug output.
    let config = load(
        &format!("[http]\nlisten = \"0.0.0.0:9480\"\ntoken = \"{TOKEN}\""),
        &[],
    )
    .unwrap();
    assert_eq!(config.http.token.as_ref().map(Secret::expose), Some(TOKEN));
    assert!(!format!("{config:?}").contains(TOKEN));
    let config = load(
        "",
        &[
            ("BTPS_HTTP_LISTEN", "[::]:9000"),
            ("BTPS_HTTP_TOKEN", TOKEN),
        ],
    )
    .unwrap();
    assert!(config.http.token.is_some());
    // IPv6 and IPv4-mapped loopback count as loopback.
    assert!(load("[http]\nlisten = \"[::1]:9480\"", &[]).is_ok());
    assert!(load("[http]\nlisten = \"[::ffff:127.0.0.1]:9480\"", &[]).is_ok());

    // Off, and bad values.
    assert_eq!(
        load("[http]\nlisten = \"\"", &[]).unwrap().http.listen,
        None
    );
    assert_eq!(
        load("", &[("BTPS_HTTP_LISTEN", "off")])
            .unwrap()
            .http
            .listen,
        None
    );
    let errors = load("[http]\nlisten = \"localhost\"\ntoken = \"short\"", &[]).unwrap_err();
    let settings: Vec<&str> = errors
        .0
        .iter()
        .map(|error| error.setting.as_str())
        .collect();
    assert_eq!(settings, ["http.listen", "http.token"]);
    let errors = load(&format!("[http]\ntoken = \"{TOKEN} x\""), &[]).unwrap_err();
    assert_eq!(errors.0[0].setting, "http.token");

    // The check used after a command-line override.
    let settings = HttpSettings {
        listen: Some("0.0.0.0:1".parse().unwrap()),
        token: None,
    };
    assert_eq!(settings.check().unwrap_err().setting, "http.token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_request_must_carry_it() {
    let server = TestServer::start(TestOptions::default()).await;
    let state = state_for(&server, Some(TOKEN));
    for path in ["/healthz", "/readyz", "/metrics", "/backup", "/nowhere"] {
        assert_eq!(
            call(&state, path, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            call(&state, path, Some("0123456789abcdef-test-tokeN"))
                .await
                .0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    assert_eq!(
        call(&state, "/healthz", Some(TOKEN)).await.0,
        StatusCode::OK
    );
    // Over a socket too, with the scheme in any case.
    let (address, stop) = bind(state).await;
    let (status, headers, _) = http_get(address, "/healthz", None).await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"].starts_with("Bearer"));
    let (status, _, body) = http_get(address, "/backup", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(body.len() > 4096);
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {TOKEN}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    drop(stop);
    server.stop().await;
}

// ---- `btps serve` ----------------------------------------------------------------

/// Starts `btps serve` and returns it with the HTTP address it printed.
fn spawn_serve(args: &[&str], cwd: &Path) -> (std::process::Child, SocketAddr) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_btps"))
        .arg("serve")
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_HTTP_LISTEN")
        .env_remove("BTPS_HTTP_TOKEN")
        // Ephemeral unless the caller's --listen says otherwise.
        .env("BTPS_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut http = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("btps http endpoint on http://") {
            http = Some(rest.trim().parse().unwrap());
        }
        if line.starts_with("btps listening on ") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, http.expect("btps serve printed its HTTP address"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btps_serve_runs_the_endpoint_and_stops_it_with_the_listener() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let data_arg = data.to_str().unwrap();
    let (mut child, http) = spawn_serve(
        &[
            "--data-dir",
            data_arg,
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--dns-server",
            "127.0.0.1:9",
        ],
        temp.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = http_get(http, "/readyz", None).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, headers, body) = http_get(http, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let samples = parse_prometheus(&String::from_utf8(body).unwrap());
    assert!(value(&samples, "btps_db_file_bytes", &[]) > 0.0);

    let Some(status) = crate::util::sigterm_and_wait(&mut child, Duration::from_secs(15)) else {
        panic!("btps serve did not stop");
    };
    assert!(status.success(), "{status}");
    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "the endpoint stopped too"
    );

    // A non-loopback endpoint without a token does not start.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(["serve", "--data-dir", data_arg, "--listen", "127.0.0.1:0"])
        .args(["--http-listen", "0.0.0.0:0"])
        .env_remove("BTPS_HTTP_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http.token"), "{stderr}");
}
