//! Clock sanity over real TLS: an `issuedAt` far in the future (9999, or beyond the
//! configured skew) or before 2000 (1970) is refused right after parsing, for every
//! kind of artifact; a maximum age applies only when configured.

use std::time::Duration;

use btps::identity::compute_trust_id;
use btps::protocol::TransporterType;
use btps::protocol::json::{Object, Value};
use btps::protocol::response::ServerResponse;
use btps::server::ClockPolicy;
use btps::signing;
use btps::store::{Mailbox, Perspective, Timestamp};

use crate::util::server::{TRUST_REQUEST, TestOptions, TestServer, artifact_issued_at, vector_key};

const SENDER: &str = "billing$vendor.test";
const RECEIVER: &str = "finance$client.test";
const VALIDATION: &str = "BTPS artifact validation failed";

/// The instant `offset_ms` from now, as `toISOString()` writes it.
fn from_now(offset_ms: i64) -> String {
    Timestamp::from_millis(Timestamp::now().millis() + offset_ms)
        .unwrap()
        .as_str()
        .to_owned()
}

fn trust_request(id: &str, issued_at: &str) -> String {
    artifact_issued_at(
        TransporterType::TrustRequest,
        SENDER,
        "billing",
        RECEIVER,
        TRUST_REQUEST,
        Some(id),
        Some(issued_at),
    )
}

fn control(id: &str, issued_at: &str) -> String {
    format!(r#"{{"version":"1.0.0","id":"{id}","issuedAt":"{issued_at}","action":"PING"}}"#)
}

fn lookup(id: &str, issued_at: &str) -> String {
    format!(
        r#"{{"version":"1.0.0","id":"{id}","issuedAt":"{issued_at}","identity":"{RECEIVER}","from":"{SENDER}","hostSelector":"btps1"}}"#
    )
}

fn agent(id: &str, issued_at: &str) -> String {
    let mut object = Object::new();
    object.insert("action", "system.ping");
    object.insert("agentId", "btps_ag_11111111-2222-4333-8444-555555555555");
    object.insert("to", RECEIVER);
    object.insert("encryption", Value::Null);
    object.insert("id", id);
    object.insert("issuedAt", issued_at);
    object.insert("version", "1.0.0");
    signing::sign_object(&mut object, &vector_key("agent-device"));
    object.to_canonical()
}

fn assert_refused(response: &ServerResponse, id: &str, reason: &str) {
    assert!(!response.ok, "{id}: {:?}", response.raw);
    assert_eq!(response.message.as_deref(), Some(VALIDATION), "{id}");
    assert_eq!(response.reason.as_deref(), Some(reason), "{id}");
    assert_eq!(response.req_id.as_deref(), Some(id));
}

fn stored(server: &TestServer) -> (bool, u64) {
    let id = compute_trust_id(SENDER, RECEIVER);
    let record = server.store.trust(Perspective::Inbound, &id).unwrap();
    let inbox = server
        .store
        .read(|snapshot| snapshot.mailbox_count(RECEIVER, Mailbox::Inbox))
        .unwrap();
    (record.is_some(), inbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_dated_9999_or_1970_are_refused_by_default() {
    let server = TestServer::start(TestOptions::default()).await;
    let mut client = server.client().await;
    let future = "issuedAt in the future";
    let early = "issuedAt before 2000";
    let far = "9999-12-31T23:59:59.999Z";
    let epoch = "1970-01-01T00:00:00.000Z";
    let two_hours = from_now(2 * 3_600_000);

    for (id, issued_at, reason) in [
        ("tr-9999", far, future),
        ("tr-2h", two_hours.as_str(), future),
        ("tr-1970", epoch, early),
        ("tr-1999", "1999-12-31T23:59:59Z", early),
    ] {
        let response = client.request(&trust_request(id, issued_at)).await.unwrap();
        assert_refused(&response, id, reason);
    }
    assert_eq!(stored(&server), (false, 0), "nothing was stored");

    // Every other kind of artifact carries issuedAt and is checked the same way.
    for (id, line, reason) in [
        ("c-9999", control("c-9999", far), future),
        ("c-1970", control("c-1970", epoch), early),
        ("il-9999", lookup("il-9999", far), future),
        ("a-9999", agent("a-9999", far), future),
        ("a-1970", agent("a-1970", epoch), early),
    ] {
        let response = client.request(&line).await.unwrap();
        assert_refused(&response, id, reason);
    }

    // The connection is still open, and a date within the skew is accepted.
    let response = client
        .request(&control("c-now", &from_now(0)))
        .await
        .unwrap();
    assert!(response.ok);
    let half_hour = from_now(30 * 60_000);
    let response = client
        .request(&trust_request("tr-30min", &half_hour))
        .await
        .unwrap();
    assert!(response.ok, "{:?}", response.raw);
    assert_eq!(stored(&server), (true, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximum_age_applies_only_when_configured() {
    // The default accepts a delivery retried a year later.
    let server = TestServer::start(TestOptions::default()).await;
    let year_ago = from_now(-365 * 86_400_000);
    let response = server.send(&trust_request("tr-old", &year_ago)).await;
    assert!(response.ok, "{:?}", response.raw);
    server.stop().await;

    // A day at most, and no future limit.
    let options = TestOptions {
        clock: ClockPolicy {
            max_future_skew: None,
            max_age: Some(Duration::from_secs(86_400)),
        },
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;
    let mut client = server.client().await;
    let two_days_ago = from_now(-2 * 86_400_000);
    let response = client
        .request(&trust_request("tr-2d", &two_days_ago))
        .await
        .unwrap();
    assert_refused(&response, "tr-2d", "issuedAt too old");
    // Before 2000 is refused whatever the policy.
    let response = client
        .request(&control("c-1970", "1970-01-01T00:00:00.000Z"))
        .await
        .unwrap();
    assert_refused(&response, "c-1970", "issuedAt before 2000");
    let document = artifact_issued_at(
        TransporterType::TrustRequest,
        SENDER,
        "billing",
        RECEIVER,
        TRUST_REQUEST,
        Some("tr-9999"),
        Some("9999-12-31T23:59:59.999Z"),
    );
    let response = client.request(&document).await.unwrap();
    assert!(response.ok, "no future limit: {:?}", response.raw);
    server.stop().await;
}
