//! The library's hooks over real TLS: middleware at every phase, answers and refusals
//! from hooks, lifecycle hooks, the error callback, after-commit subscriptions, and a
//! server on the in-memory storage.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use btps::BoxFuture;
use btps::protocol::json::Value;
use btps::protocol::{ErrorCode, ProtocolError, TransporterType, response};
use btps::server::hooks::{ErrorEvent, ErrorStage, HookError, Lifecycle, ResponseSent, StartInfo};
use btps::server::middleware::{Middleware, Phase, Request, Verdict};
use btps::server::{RunError, Server};
use btps::store::{
    IdentityRecord, Mailbox, MemoryStorage, PageRequest, Perspective, PublicKeyRecord, Storage,
    Timestamp, TrustStatus,
};

use crate::util::server::{
    TestOptions, TestServer, artifact, artifact_with_id, invoice, trust_record, vector_dns,
    vector_key,
};

const VENDOR: &str = "billing$vendor.test";
const CLIENT: &str = "finance$client.test";

fn ping(id: &str) -> String {
    format!(
        r#"{{"version":"1.0.0","id":"{id}","issuedAt":"2025-01-15T10:30:00.000Z","action":"PING"}}"#
    )
}

/// Records every (hook name, phase) it is called at.
struct Recorder {
    name: &'static str,
    priority: u32,
    seen: Arc<Mutex<Vec<(&'static str, Phase)>>>,
}

impl Middleware for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn priority(&self) -> u32 {
        self.priority
    }

    fn handle<'a>(&'a self, phase: Phase, _request: &'a Request<'a>) -> BoxFuture<'a, Verdict> {
        let seen = Arc::clone(&self.seen);
        let name = self.name;
        Box::pin(async move {
            // A hook may wait: the pipeline awaits it.
            tokio::task::yield_now().await;
            seen.lock().unwrap().push((name, phase));
            Verdict::Continue
        })
    }
}

fn phases_of(seen: &[(&'static str, Phase)], name: &str) -> Vec<Phase> {
    seen.iter()
        .filter(|(hook, _)| *hook == name)
        .map(|(_, phase)| *phase)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_runs_at_every_phase_by_priority() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    // Registered late but with the lower priority: runs first at every phase.
    let options = TestOptions {
        middleware: vec![
            Arc::new(Recorder {
                name: "second",
                priority: 5,
                seen: Arc::clone(&seen),
            }),
            Arc::new(Recorder {
                name: "first",
                priority: 1,
                seen: Arc::clone(&seen),
            }),
        ],
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;
    let request = artifact(
        TransporterType::TrustRequest,
        VENDOR,
        "billing",
        CLIENT,
        crate::util::server::TRUST_REQUEST,
    );
    assert!(server.send(&request).await.ok);
    let accepted = {
        let seen = seen.lock().unwrap();
        assert_eq!(
            phases_of(&seen, "first"),
            vec![
                Phase::BeforeParsing,
                Phase::AfterParsing,
                Phase::BeforeSignatureVerification,
                Phase::AfterSignatureVerification,
                Phase::BeforeTrustVerification,
                Phase::BeforeOnArtifact,
                Phase::AfterTrustVerification,
                Phase::AfterOnArtifact,
            ]
        );
        assert_eq!(phases_of(&seen, "second"), phases_of(&seen, "first"));
        for pair in seen.chunks(2) {
            assert_eq!(
                (pair[0].0, pair[1].0, pair[0].1),
                ("first", "second", pair[1].1),
                "the lower priority runs first at each phase: {seen:?}"
            );
        }
        seen.len()
    };
    // A line that does not parse: the error phases run too.
    let refused = server.send("{not json").await;
    assert!(!refused.ok);
    // `after.onError` runs once the answer is written: give it a moment.
    let mut after_refusal = Vec::new();
    for _ in 0..100 {
        after_refusal = phases_of(&seen.lock().unwrap()[accepted..], "first");
        if after_refusal.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        after_refusal,
        vec![
            Phase::BeforeParsing,
            Phase::AfterParsing,
            Phase::BeforeOnError,
            Phase::AfterOnError,
        ]
    );
    server.stop().await;
}

/// Answers `answer-me` itself, refuses `close-me` and closes, panics on `panic`.
struct Gate;

impl Middleware for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::AfterParsing]
    }

    fn handle<'a>(&'a self, _phase: Phase, request: &'a Request<'a>) -> BoxFuture<'a, Verdict> {
        let verdict = match request.request_id() {
            Some("answer-me") => {
                let mut answer = response::success("answered by a hook", None);
                answer.insert("hook", "gate");
                Verdict::Respond(answer)
            }
            Some("close-me") => Verdict::Reject {
                error: ProtocolError::validation("refused by a hook"),
                close: true,
            },
            Some("panic") => panic!("a hook that fails"),
            _ => Verdict::Continue,
        };
        verdict.ready()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_answers_refuses_or_fails_for_one_line_only() {
    let options = TestOptions {
        middleware: vec![Arc::new(Gate)],
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;
    let mut client = server.client().await;

    let answered = client.request(&ping("answer-me")).await.unwrap();
    assert!(answered.ok);
    assert_eq!(answered.message.as_deref(), Some("answered by a hook"));
    assert_eq!(answered.req_id.as_deref(), Some("answer-me"));
    assert_eq!(answered.raw.get("hook"), Some(&Value::from("gate")));

    let failed = client.request(&ping("panic")).await.unwrap();
    assert!(!failed.ok);
    assert_eq!(
        failed.message.as_deref(),
        Some(ErrorCode::Unknown.message())
    );
    assert_eq!(failed.reason.as_deref(), Some("internal error"));
    assert_eq!(failed.req_id.as_deref(), Some("panic"));

    // The same connection goes on after both.
    let pong = client.request(&ping("plain")).await.unwrap();
    assert_eq!(pong.message.as_deref(), Some("pong"));

    let refused = client.request(&ping("close-me")).await.unwrap();
    assert!(!refused.ok);
    assert_eq!(refused.req_id.as_deref(), Some("close-me"));
    assert!(
        client.read_line().await.unwrap().is_none(),
        "a refusal with close ends the connection"
    );
    server.stop().await;
}

/// Counts lifecycle calls.
#[derive(Default)]
struct Life {
    started: Mutex<Option<SocketAddr>>,
    responses: Mutex<Vec<(String, Option<String>)>>,
    stopped: Mutex<bool>,
}

impl Lifecycle for Life {
    fn on_start<'a>(&'a self, info: &'a StartInfo) -> BoxFuture<'a, Result<(), HookError>> {
        *self.started.lock().unwrap() = Some(info.address);
        Box::pin(async { Ok(()) })
    }

    fn on_stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            *self.stopped.lock().unwrap() = true;
        })
    }

    fn on_response_sent(&self, response: &ResponseSent<'_>) {
        self.responses.lock().unwrap().push((
            response.line.to_owned(),
            response.request_id.map(str::to_owned),
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_and_the_error_callback_see_the_server() {
    let life = Arc::new(Life::default());
    type Seen = (ErrorStage, ErrorCode, Option<String>, String);
    let errors: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let recorded = Arc::clone(&errors);
    let options = TestOptions {
        lifecycle: vec![Arc::clone(&life) as Arc<dyn Lifecycle>],
        on_error: Some(Arc::new(move |event: &ErrorEvent<'_>| {
            recorded.lock().unwrap().push((
                event.stage,
                event.code(),
                event.request_id.map(str::to_owned),
                event.remote.ip().to_string(),
            ));
        })),
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;
    let pong = server.send(&ping("p-1")).await;
    assert!(pong.ok);
    // Accepting means the start hooks ran.
    assert_eq!(*life.started.lock().unwrap(), Some(server.address));
    // To an identity not hosted here: refused at the hosted check.
    let stray = artifact_with_id(
        TransporterType::Document,
        VENDOR,
        "billing",
        "someone$elsewhere.test",
        &invoice("INV-1"),
        Some("stray-1"),
    );
    assert!(!server.send(&stray).await.ok);
    server.stop().await;

    assert!(*life.stopped.lock().unwrap(), "on_stop ran");
    let responses = life.responses.lock().unwrap();
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert_eq!(responses[0].1.as_deref(), Some("p-1"));
    assert!(responses[0].0.contains("pong"));
    assert_eq!(responses[1].1.as_deref(), Some("stray-1"));
    let errors = errors.lock().unwrap();
    assert_eq!(
        *errors,
        vec![(
            ErrorStage::Hosted,
            ErrorCode::IdentityNotFound,
            Some("stray-1".to_owned()),
            "127.0.0.1".to_owned()
        )]
    );
}

struct RefusesToStart;

impl Lifecycle for RefusesToStart {
    fn on_start<'a>(&'a self, _info: &'a StartInfo) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(async { Err("the ERP is not reachable".into()) })
    }
}

/// A server on the in-memory storage, hosting `CLIENT`, resolving keys from the
/// vectors' DNS.
async fn memory_server(
    storage: &MemoryStorage,
    lifecycle: Option<Arc<dyn Lifecycle>>,
) -> (Server, tempfile::TempDir) {
    let key = PublicKeyRecord {
        selector: "btps1".to_owned(),
        public_key: vector_key("finance").public_key().to_pem() + "\n",
        key_type: "rsa".to_owned(),
        version: "1.0.0".to_owned(),
        created_at: Timestamp::now(),
        source: None,
    };
    if storage
        .identities()
        .get_by_identity(CLIENT)
        .await
        .unwrap()
        .is_none()
    {
        storage
            .identities()
            .create(IdentityRecord::new(CLIENT, key, Timestamp::now()))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = crate::util::server::config_for(dir.path());
    let prepared = btps::server::bootstrap::prepare(&config).unwrap();
    let dns = vector_dns();
    let mut builder = Server::builder()
        .storage(Arc::new(storage.clone()))
        .server_key(prepared.server_key)
        .tls(prepared.tls)
        .dns_servers(vec![dns.local_addr()]);
    // The responder must outlive the server: leak it for the test's duration.
    std::mem::forget(dns);
    if let Some(hooks) = lifecycle {
        builder = builder.lifecycle(hooks);
    }
    (builder.build().unwrap(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_start_hook_stops_the_start() {
    let storage = MemoryStorage::new();
    let (server, _dir) = memory_server(&storage, Some(Arc::new(RefusesToStart))).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outcome = server.run(listener, std::future::pending()).await;
    assert!(
        matches!(&outcome, Err(RunError::StartHook(error)) if error.to_string().contains("ERP")),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_storage_serves_the_trust_flow() {
    let storage = MemoryStorage::new();
    let (server, _dir) = memory_server(&storage, None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    let options = btps::client::ClientOptions {
        insecure: true,
        ..Default::default()
    };
    let mut client = btps::client::BtpsClient::connect("127.0.0.1", port, &options)
        .await
        .unwrap();
    let request = artifact(
        TransporterType::TrustRequest,
        VENDOR,
        "billing",
        CLIENT,
        crate::util::server::TRUST_REQUEST,
    );
    assert!(client.request(&request).await.unwrap().ok);
    let id = btps::identity::compute_trust_id(VENDOR, CLIENT);
    let pending = storage
        .trust()
        .get(Perspective::Inbound, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending.status, TrustStatus::Pending);
    set_inbound_status(&storage, &id, TrustStatus::Accepted).await;
    let document = artifact(
        TransporterType::Document,
        VENDOR,
        "billing",
        CLIENT,
        &invoice("INV-7"),
    );
    assert!(client.request(&document).await.unwrap().ok);
    // Sent again: acknowledged, stored once.
    assert!(client.request(&document).await.unwrap().ok);
    let inbox = storage
        .mailboxes()
        .list(CLIENT, Mailbox::Inbox, PageRequest::first(10), false)
        .await
        .unwrap();
    assert_eq!(inbox.items.len(), 2, "the request and one invoice");
    assert_eq!(inbox.items[1].raw, document.as_bytes());
    // An operator's revocation through the store reaches the next document at once
    // (the committer's trust cache learns of writes made outside it).
    set_inbound_status(&storage, &id, TrustStatus::Revoked).await;
    let after_revocation = artifact(
        TransporterType::Document,
        VENDOR,
        "billing",
        CLIENT,
        &invoice("INV-8"),
    );
    let refused = client.request(&after_revocation).await.unwrap();
    assert!(!refused.ok, "a revoked sender is refused");
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_at_least_once_from_its_durable_cursor() {
    let server = TestServer::start(TestOptions::default()).await;
    server
        .store
        .create_trust(
            Perspective::Inbound,
            trust_record(VENDOR, CLIENT, TrustStatus::Accepted, Some("billing")),
            None,
        )
        .unwrap();
    let documents: Vec<String> = (1..=3)
        .map(|n| {
            artifact(
                TransporterType::Document,
                VENDOR,
                "billing",
                CLIENT,
                &invoice(&format!("INV-{n}")),
            )
        })
        .collect();
    for document in &documents {
        assert!(server.send(document).await.ok);
    }
    let mut feed = server.events.subscribe("erp").await.unwrap();
    let mut ids = Vec::new();
    for document in &documents {
        let entry = feed.next().await.unwrap();
        assert_eq!(entry.raw, document.as_bytes());
        ids.push(entry.entry_id);
    }
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    // Only the first two are handled before the consumer stops.
    feed.ack(ids[1]).await.unwrap();
    drop(feed);
    let dns = Arc::clone(&server.dns);
    let data_dir = server.data_dir.clone();
    let temp = server.stop().await;

    let server = TestServer::start_in(&data_dir, dns, TestOptions::default()).await;
    let mut feed = server.events.subscribe("erp").await.unwrap();
    let again = feed.next().await.unwrap();
    assert_eq!(
        again.entry_id, ids[2],
        "the unacknowledged entry comes again"
    );
    // A document committed while the consumer waits wakes it.
    let waiting = tokio::spawn(async move { feed.next().await.map(|entry| entry.raw) });
    let late = artifact(
        TransporterType::Document,
        VENDOR,
        "billing",
        CLIENT,
        &invoice("INV-4"),
    );
    assert!(server.send(&late).await.ok);
    let raw = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken within the poll interval")
        .unwrap()
        .unwrap();
    assert_eq!(raw, late.as_bytes());
    server.stop().await;
    drop(temp);
}

/// An operator's decision on an inbound trust record, written through the store.
async fn set_inbound_status(storage: &dyn Storage, id: &str, status: TrustStatus) {
    storage
        .trust()
        .update(
            Perspective::Inbound,
            id,
            btps::store::TrustPatch {
                status: Some(status),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}
