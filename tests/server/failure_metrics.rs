//! Failures of the server's own means are counted under labels of their own: a
//! temporary DNS failure as `dns_failure`, a storage failure as `storage_failure`,
//! and any other internal failure as `BTP_UNKNOWN_ERROR` — although all three are
//! answered `Unknown error` (or the temporary-DNS sentence) on the wire.

use std::sync::Arc;

use btps::BoxFuture;
use btps::identity::Identity;
use btps::identity::responder::Failure;
use btps::protocol::TransporterType;
use btps::server::middleware::{Middleware, Phase, Request, Verdict};
use btps::store::{
    IdentityStore, InboundGroup, MailboxStore, OutboxStore, Storage, StoreError, StoreResult,
    StoreTransaction, TrustStore,
};

use crate::http::{scrape, state_for, value};
use crate::util::server::{TRUST_REQUEST, TestOptions, TestServer, artifact_with_id, invoice};

const SENDER: &str = "billing$vendor.test";
const RECEIVER: &str = "finance$client.test";
const ARTIFACTS: &str = "btps_artifacts_total";

/// A storage whose commits always fail (a disk that refuses every write).
struct FailingCommits(Arc<dyn Storage>);

impl Storage for FailingCommits {
    fn trust(&self) -> &dyn TrustStore {
        self.0.trust()
    }

    fn identities(&self) -> &dyn IdentityStore {
        self.0.identities()
    }

    fn mailboxes(&self) -> &dyn MailboxStore {
        self.0.mailboxes()
    }

    fn outbox(&self) -> &dyn OutboxStore {
        self.0.outbox()
    }

    fn transact(
        &self,
        owner: &str,
        work: &mut dyn FnMut(&mut dyn StoreTransaction) -> StoreResult<()>,
    ) -> StoreResult<()> {
        self.0.transact(owner, work)
    }

    fn commit_inbound(&self, _group: &mut dyn InboundGroup) -> StoreResult<()> {
        Err(StoreError::TaskFailed(
            "the test's storage refuses every commit".to_owned(),
        ))
    }
}

/// Panics on the line whose id is `panic`: an internal failure of another kind.
struct Panics;

impl Middleware for Panics {
    fn name(&self) -> &'static str {
        "panics"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::AfterParsing]
    }

    fn handle<'a>(&'a self, _phase: Phase, request: &'a Request<'a>) -> BoxFuture<'a, Verdict> {
        assert_ne!(request.request_id(), Some("panic"), "a hook that fails");
        Verdict::Continue.ready()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_storage_and_other_failures_have_their_own_metric_labels() {
    btps::metrics::install();
    let options = TestOptions {
        middleware: vec![Arc::new(Panics)],
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;
    let state = state_for(&server, None);
    let before = scrape(&state).await;

    // The sender's key cannot be resolved for now: a temporary DNS failure.
    let key_name = Identity::parse(SENDER).unwrap().key_record_name("btps1");
    server.dns.set_failure(&key_name, Failure::ServFail);
    let document = artifact_with_id(
        TransporterType::Document,
        SENDER,
        "billing",
        RECEIVER,
        &invoice("INV-F1"),
        Some("dns-fails"),
    );
    let answer = server.send(&document).await;
    assert!(!answer.ok);
    assert_eq!(answer.reason.as_deref(), Some("temporary dns failure"));
    server.dns.clear_failure(&key_name);

    // Another internal failure: a hook that panics.
    let panic = artifact_with_id(
        TransporterType::Document,
        SENDER,
        "billing",
        RECEIVER,
        &invoice("INV-F2"),
        Some("panic"),
    );
    let answer = server.send(&panic).await;
    assert!(!answer.ok);
    assert_eq!(answer.reason.as_deref(), Some("internal error"));

    let after = scrape(&state).await;
    let delta = |labels: &[(&str, &str)]| {
        value(&after, ARTIFACTS, labels) - value(&before, ARTIFACTS, labels)
    };
    assert!(delta(&[("kind", "BTPS_DOC"), ("outcome", "dns_failure")]) >= 1.0);
    assert!(delta(&[("kind", "BTPS_DOC"), ("outcome", "BTP_UNKNOWN_ERROR")]) >= 1.0);
    server.stop().await;

    // A storage that fails every commit.
    let options = TestOptions {
        wrap_storage: Some(|storage| Arc::new(FailingCommits(storage))),
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;
    let state = state_for(&server, None);
    let before = scrape(&state).await;
    let request = artifact_with_id(
        TransporterType::TrustRequest,
        SENDER,
        "billing",
        RECEIVER,
        TRUST_REQUEST,
        Some("storage-fails"),
    );
    let answer = server.send(&request).await;
    assert!(!answer.ok);
    assert_eq!(answer.reason.as_deref(), Some("storage failure"));
    let after = scrape(&state).await;
    let delta = |labels: &[(&str, &str)]| {
        value(&after, ARTIFACTS, labels) - value(&before, ARTIFACTS, labels)
    };
    assert!(delta(&[("kind", "TRUST_REQ"), ("outcome", "storage_failure")]) >= 1.0);
    server.stop().await;
}
