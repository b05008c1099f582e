//! The server's behaviour on the wire: the trust flow, documents, every refusal of
//! the spec, duplicates, identity lookup, control artifacts and agent pings.

use btps::identity::compute_trust_id;
use btps::protocol::TransporterType;
use btps::protocol::response::parse_response;
use btps::signing::{self, KeySource};
use btps::store::{
    Mailbox, PageRequest, Perspective, PrivacyType, Timestamp, TrustPatch, TrustStatus,
};

use crate::util::server::{
    TRUST_REQUEST, TestOptions, TestServer, artifact, artifact_with_id, invoice,
};

const SENDER: &str = "billing$vendor.test";
const RECEIVER: &str = "finance$client.test";

fn inbox_len(server: &TestServer, owner: &str) -> usize {
    server
        .store
        .read(|snapshot| {
            snapshot.list_mailbox(owner, Mailbox::Inbox, &PageRequest::first(1000), true)
        })
        .unwrap()
        .items
        .len()
}

fn accept(server: &TestServer, sender: &str, receiver: &str) {
    let id = compute_trust_id(sender, receiver);
    let patch = TrustPatch {
        status: Some(TrustStatus::Accepted),
        decided_by: Some("test".into()),
        decided_at: Some(Timestamp::now()),
        retry_after_date: Some(None),
        ..TrustPatch::default()
    };
    server
        .store
        .update_trust(Perspective::Inbound, &id, patch)
        .unwrap();
}

/// SENDER's trust request to RECEIVER.
fn trust_request() -> String {
    artifact(
        TransporterType::TrustRequest,
        SENDER,
        "billing",
        RECEIVER,
        TRUST_REQUEST,
    )
}

/// SENDER asks RECEIVER for trust (the answer is not looked at).
async fn request_trust(server: &TestServer) {
    server.send(&trust_request()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_request_acceptance_and_documents() {
    let server = TestServer::start(TestOptions::default()).await;

    // A trust request creates a pending record and lands in the receiver's inbox.
    let response = server.send(&trust_request()).await;
    assert!(response.ok, "{:?}", response.raw);
    assert_eq!(response.message.as_deref(), Some("success"));
    let id = compute_trust_id(SENDER, RECEIVER);
    let record = server
        .store
        .trust(Perspective::Inbound, &id)
        .unwrap()
        .expect("pending record");
    assert_eq!(record.status, TrustStatus::Pending);
    assert_eq!(record.privacy_type, PrivacyType::Mixed);
    assert_eq!(
        record.public_key_fingerprint,
        crate::util::server::vector_key("billing")
            .public_key()
            .fingerprint()
    );
    assert!(record.retry_after_date.is_some(), "cooling-off period set");
    assert_eq!(inbox_len(&server, RECEIVER), 1);

    // Before acceptance a document is refused.
    let document = artifact(
        TransporterType::Document,
        SENDER,
        "billing",
        RECEIVER,
        &invoice("INV-1"),
    );
    let refused = server.send(&document).await;
    assert!(!refused.ok);
    assert_eq!(
        refused.message.as_deref(),
        Some("BTPS trust request is not allowed at this time. Contact receiver")
    );
    assert_eq!(
        refused.reason.as_deref(),
        Some("BTP_ERROR_TRUST_NON_EXISTENT")
    );

    // The operator accepts; the same document is now stored, as the exact bytes sent.
    accept(&server, SENDER, RECEIVER);
    let accepted = server.send(&document).await;
    assert!(accepted.ok, "{:?}", accepted.raw);
    let doc_id = btps::protocol::json::parse(&document)
        .unwrap()
        .as_object()
        .unwrap()
        .str("id")
        .unwrap()
        .to_owned();
    assert_eq!(accepted.req_id.as_deref(), Some(doc_id.as_str()));
    let entries = server
        .store
        .read(|snapshot| {
            snapshot.list_mailbox(RECEIVER, Mailbox::Inbox, &PageRequest::first(10), true)
        })
        .unwrap()
        .items;
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0].raw,
        document.as_bytes(),
        "newest first, stored byte for byte"
    );

    // A second request while trust is active is refused as already active.
    let again = server.send(&trust_request()).await;
    assert!(!again.ok);
    assert_eq!(
        again.reason.as_deref(),
        Some("BTP_ERROR_TRUST_ALREADY_ACTIVE")
    );
    server.stop().await;
}

/// The committer keeps the trust records it read for later documents; a change made
/// by another writer (here the store handle an operator's command would use) must
/// apply to the very next document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_changes_by_another_writer_apply_to_the_next_document() {
    let server = TestServer::start(TestOptions::default()).await;
    request_trust(&server).await;
    let mut client = server.client().await;
    let mut number = 0;
    let mut send_document = async || {
        number += 1;
        let document = artifact(
            TransporterType::Document,
            SENDER,
            "billing",
            RECEIVER,
            &invoice(&format!("INV-C{number}")),
        );
        client.request(&document).await.unwrap()
    };
    let refused = |response: &btps::protocol::response::ServerResponse| {
        !response.ok
            && response
                .reason
                .as_deref()
                .is_some_and(|reason| reason.starts_with("BTP_ERROR_TRUST"))
    };

    // Pending: refused, twice (the second answer may come from the kept record).
    for _ in 0..2 {
        let response = send_document().await;
        assert!(refused(&response), "{response:?}");
    }
    accept(&server, SENDER, RECEIVER);
    for _ in 0..3 {
        let response = send_document().await;
        assert!(response.ok, "accepted trust: {response:?}");
    }
    let id = compute_trust_id(SENDER, RECEIVER);
    let blocked = TrustPatch {
        status: Some(TrustStatus::Blocked),
        ..TrustPatch::default()
    };
    server
        .store
        .update_trust(Perspective::Inbound, &id, blocked)
        .unwrap();
    for _ in 0..2 {
        let response = send_document().await;
        assert!(refused(&response), "blocked: {response:?}");
    }
    accept(&server, SENDER, RECEIVER);
    let response = send_document().await;
    assert!(response.ok, "accepted again: {response:?}");
    assert!(
        server
            .store
            .delete_trust(Perspective::Inbound, &id)
            .unwrap()
    );
    let response = send_document().await;
    assert!(refused(&response), "deleted: {response:?}");
    assert_eq!(
        inbox_len(&server, RECEIVER),
        5,
        "the trust request and the four accepted documents"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_delivery_is_acknowledged_and_stored_once() {
    let server = TestServer::start(TestOptions::default()).await;
    request_trust(&server).await;
    accept(&server, SENDER, RECEIVER);
    let document = artifact_with_id(
        TransporterType::Document,
        SENDER,
        "billing",
        RECEIVER,
        &invoice("INV-2"),
        Some("doc-dup"),
    );
    let mut client = server.client().await;
    for _ in 0..3 {
        let response = client.request(&document).await.unwrap();
        assert!(response.ok);
        assert_eq!(response.req_id.as_deref(), Some("doc-dup"));
    }
    assert_eq!(
        inbox_len(&server, RECEIVER),
        2,
        "the trust request and one copy of the document"
    );

    // Another sender reusing the id does not suppress it (it is refused for trust here,
    // but a trusted one is stored separately).
    server
        .send(&artifact(
            TransporterType::TrustRequest,
            "admin$vendor.test",
            "admin-vendor",
            RECEIVER,
            TRUST_REQUEST,
        ))
        .await;
    accept(&server, "admin$vendor.test", RECEIVER);
    let other = artifact_with_id(
        TransporterType::Document,
        "admin$vendor.test",
        "admin-vendor",
        RECEIVER,
        &invoice("INV-3"),
        Some("doc-dup"),
    );
    assert!(server.send(&other).await.ok);
    assert_eq!(inbox_len(&server, RECEIVER), 4);

    // A duplicate TRUST_REQ is acknowledged, not met with the cooling-off refusal.
    let request = artifact_with_id(
        TransporterType::TrustRequest,
        "attest$notary.test",
        "attestor",
        RECEIVER,
        TRUST_REQUEST,
        Some("req-dup"),
    );
    assert!(server.send(&request).await.ok);
    assert!(
        server.send(&request).await.ok,
        "re-delivered request is acknowledged"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_of_the_spec() {
    let server = TestServer::start(TestOptions::default()).await;
    let mut client = server.client().await;

    // Not JSON: no reqId, connection stays open.
    let response = client.request("{not json").await.unwrap();
    assert_eq!(
        (
            response.ok,
            response.message.as_deref(),
            response.req_id.as_deref()
        ),
        (false, Some("Invalid JSON format"), None)
    );
    // Valid JSON, no artifact kind.
    let response = client.request(r#"{"id":"x","hello":1}"#).await.unwrap();
    assert_eq!(
        response.message.as_deref(),
        Some("BTPS artifact validation failed")
    );
    assert_eq!(response.req_id, None);
    // A transporter with a bad field.
    let bad = artifact(
        TransporterType::Document,
        SENDER,
        "billing",
        RECEIVER,
        &invoice("INV-4"),
    )
    .replace("\"AUD\"", "\"XYZ\"");
    let response = client.request(&bad).await.unwrap();
    assert_eq!(
        response.message.as_deref(),
        Some("BTPS artifact validation failed")
    );

    // Not hosted here.
    let response = client
        .request(&artifact(
            TransporterType::TrustRequest,
            SENDER,
            "billing",
            "nobody$client.test",
            TRUST_REQUEST,
        ))
        .await
        .unwrap();
    assert_eq!(response.message.as_deref(), Some("Identity not found"));
    assert!(response.req_id.is_some());

    // Unknown key: the sender publishes no key.
    let response = client
        .request(&artifact(
            TransporterType::TrustRequest,
            "ghost$vendor.test",
            "billing",
            RECEIVER,
            TRUST_REQUEST,
        ))
        .await
        .unwrap();
    assert_eq!(
        response.message.as_deref(),
        Some(" Signature verification failed")
    );
    assert_eq!(response.reason.as_deref(), Some("BTP_ERROR_RESOLVE_PUBKEY"));

    // Bad signature: signed with another key than the published one.
    let response = client
        .request(&artifact(
            TransporterType::TrustRequest,
            SENDER,
            "rogue",
            RECEIVER,
            TRUST_REQUEST,
        ))
        .await
        .unwrap();
    assert_eq!(
        response.message.as_deref(),
        Some(" Signature verification failed")
    );
    assert_eq!(response.reason.as_deref(), Some("BTP_ERROR_SIG_MISMATCH"));

    // A temporary DNS failure is not a rejection.
    server.dns.set_failure(
        "btps1._btps.identity.admin.vendor.test",
        btps::identity::responder::Failure::ServFail,
    );
    let response = client
        .request(&artifact(
            TransporterType::TrustRequest,
            "admin$vendor.test",
            "admin-vendor",
            RECEIVER,
            TRUST_REQUEST,
        ))
        .await
        .unwrap();
    assert!(
        response.message.as_deref().unwrap().starts_with(
            "Temporary DNS failure while resolving btps1._btps.identity.admin.vendor.test"
        ),
        "{:?}",
        response.message
    );
    server
        .dns
        .clear_failure("btps1._btps.identity.admin.vendor.test");

    // Blocked.
    assert!(client.request(&trust_request()).await.unwrap().ok);
    let id = compute_trust_id(SENDER, RECEIVER);
    let blocked = TrustPatch {
        status: Some(TrustStatus::Blocked),
        retry_after_date: Some(None),
        ..TrustPatch::default()
    };
    server
        .store
        .update_trust(Perspective::Inbound, &id, blocked)
        .unwrap();
    let response = client.request(&trust_request()).await.unwrap();
    assert_eq!(
        response.message.as_deref(),
        Some("BTPS trust request is not allowed at this time. Contact receiver")
    );
    assert_eq!(response.reason.as_deref(), Some("BTP_ERROR_TRUST_BLOCKED"));

    // Retry-after in the future.
    let rejected = TrustPatch {
        status: Some(TrustStatus::Rejected),
        retry_after_date: Some(Some(Timestamp::parse("2999-01-01T00:00:00.000Z").unwrap())),
        ..TrustPatch::default()
    };
    server
        .store
        .update_trust(Perspective::Inbound, &id, rejected)
        .unwrap();
    let response = client.request(&trust_request()).await.unwrap();
    assert_eq!(
        response.reason.as_deref(),
        Some("BTP_ERROR_TRUST_NOT_ALLOWED")
    );

    // Not trusted: a document from a sender without any record.
    let response = client
        .request(&artifact(
            TransporterType::Document,
            "attest$notary.test",
            "attestor",
            RECEIVER,
            &invoice("INV-5"),
        ))
        .await
        .unwrap();
    assert_eq!(
        response.reason.as_deref(),
        Some("BTP_ERROR_TRUST_NON_EXISTENT")
    );

    // Identity lookup of an unknown identity.
    let lookup = r#"{"version":"1.0.0","id":"il-x","issuedAt":"2025-01-15T10:30:00.000Z","identity":"nobody$client.test","from":"billing$vendor.test","hostSelector":"btps1"}"#;
    let response = client.request(lookup).await.unwrap();
    assert_eq!(
        (response.message.as_deref(), response.req_id.as_deref()),
        (Some("Identity not found"), Some("il-x"))
    );

    // The connection survived every refusal.
    let ping =
        r#"{"version":"1.0.0","id":"p-1","issuedAt":"2025-01-15T10:30:00.000Z","action":"PING"}"#;
    assert!(client.request(ping).await.unwrap().ok);
    // Nothing was stored by any refusal but the one accepted request.
    assert_eq!(inbox_len(&server, RECEIVER), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_type_encrypted_requires_encrypted_documents() {
    let server = TestServer::start(TestOptions::default()).await;
    let request = r#"{"id":"req-1","name":"Vendor Ltd","email":"billing@vendor.test","reason":"r","phone":"1","privacyType":"encrypted"}"#;
    assert!(
        server
            .send(&artifact(
                TransporterType::TrustRequest,
                SENDER,
                "billing",
                RECEIVER,
                request
            ))
            .await
            .ok
    );
    accept(&server, SENDER, RECEIVER);
    let plain = server
        .send(&artifact(
            TransporterType::Document,
            SENDER,
            "billing",
            RECEIVER,
            &invoice("INV-6"),
        ))
        .await;
    assert_eq!(
        plain.message.as_deref(),
        Some("BTPS artifact validation failed")
    );
    assert_eq!(
        plain.reason.as_deref(),
        Some("encryption required by trust")
    );
    // Encrypted to the receiver's key: accepted.
    let finance = crate::util::server::vector_key("finance");
    let draft = btps::signing::TransporterDraft {
        kind: TransporterType::Document,
        from: btps::identity::Identity::parse(SENDER).unwrap(),
        to: btps::identity::Identity::parse(RECEIVER).unwrap(),
        selector: "btps1".into(),
        document: btps::protocol::json::parse(&invoice("INV-7")).unwrap(),
        id: None,
        issued_at: None,
    };
    let line = signing::build_transporter(
        draft,
        &crate::util::server::vector_key("billing"),
        Some((finance.public_key(), btps::crypto::EncryptionMode::Standard)),
    )
    .unwrap()
    .to_canonical();
    assert!(server.send(&line).await.ok);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_lookup_answer_is_signed_and_verifies() {
    let server = TestServer::start(TestOptions::default()).await;
    // The server key is published for the domain's signer, admin$client.test.
    let signer = btps::identity::Identity::parse("admin$client.test").unwrap();
    server
        .dns
        .publish_key(&signer, "btps1", &server.server_key.to_base64());
    let lookup = r#"{"version":"1.0.0","id":"il-1","issuedAt":"2025-01-15T10:30:00.000Z","identity":"Finance$Client.test","from":"billing$vendor.test","hostSelector":"btps1"}"#;
    let mut client = server.client().await;
    let response = client.request(lookup).await.unwrap();
    assert!(response.ok);
    assert_eq!(response.req_id.as_deref(), Some("il-1"));
    let document = response.raw.get("document").unwrap().as_object().unwrap();
    assert_eq!(document.str("selector"), Some("btps1"));
    assert_eq!(document.str("keyType"), Some("rsa"));
    assert!(!document.contains_key("createdAt"));
    let expected_key = crate::util::server::vector_key("finance")
        .public_key()
        .clone();
    let served = btps::crypto::PublicKey::from_pem(document.str("publicKey").unwrap()).unwrap();
    assert_eq!(served.fingerprint(), expected_key.fingerprint());
    // The signature verifies with the signer's DNS key, over the response as sent.
    let keys = btps::signing::DnsKeys::new(btps::identity::dns::KeyDirectory::new(
        std::sync::Arc::new(btps::identity::dns::HickoryTxtResolver::with_name_servers(
            &[server.dns.local_addr()],
            Default::default(),
        )),
    ));
    let verified = signing::verify_response(&response, &keys as &dyn KeySource)
        .await
        .unwrap();
    assert_eq!(verified.fingerprint(), server.server_key.fingerprint());
    // The server ends the connection after a found lookup.
    assert!(client.read_line().await.unwrap().is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_keeps_and_quit_ends_the_connection() {
    let server = TestServer::start(TestOptions::default()).await;
    let mut client = server.client().await;
    let ping =
        r#"{"version":"1.0.0","id":"c-1","issuedAt":"2025-01-15T10:30:00.000Z","action":"PING"}"#;
    let response = client.request(ping).await.unwrap();
    assert_eq!(
        (
            response.ok,
            response.message.as_deref(),
            response.req_id.as_deref()
        ),
        (true, Some("pong"), Some("c-1"))
    );
    let quit =
        r#"{"version":"1.0.0","id":"c-2","issuedAt":"2025-01-15T10:30:00.000Z","action":"QUIT"}"#;
    let response = client.request(quit).await.unwrap();
    assert_eq!(
        (
            response.ok,
            response.message.as_deref(),
            response.req_id.as_deref()
        ),
        (true, Some("bye"), Some("c-2"))
    );
    assert!(
        client.read_line().await.unwrap().is_none(),
        "QUIT ends the connection"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_system_ping_and_a_second_action_on_one_connection() {
    let server = TestServer::start(TestOptions::default()).await;
    // An agent record for finance, as enrollment would create it.
    let device = crate::util::server::vector_key("agent-device");
    let agent_id = "btps_ag_11111111-2222-4333-8444-555555555555";
    let record = btps::store::NewTrustRecord {
        privacy_type: PrivacyType::Encrypted,
        ..crate::util::server::trust_record(
            agent_id,
            RECEIVER,
            TrustStatus::Accepted,
            Some("agent-device"),
        )
    };
    server
        .store
        .create_trust(Perspective::Inbound, record, None)
        .unwrap();
    let agent_line = |action: &str, id: &str, key: &btps::crypto::PrivateKey, agent: &str| {
        let mut object = btps::protocol::json::Object::new();
        object.insert("action", action);
        object.insert("agentId", agent);
        object.insert("to", RECEIVER);
        object.insert("encryption", btps::protocol::json::Value::Null);
        object.insert("id", id);
        object.insert("issuedAt", "2025-01-15T10:30:00.000Z");
        object.insert("version", "1.0.0");
        signing::sign_object(&mut object, key);
        object.to_canonical()
    };
    let mut client = server.client().await;
    let response = client
        .request(&agent_line("system.ping", "a-1", &device, agent_id))
        .await
        .unwrap();
    assert!(response.ok, "{:?}", response.raw);
    assert_eq!(response.message.as_deref(), Some("pong"));
    let document = response.raw.get("document").unwrap().as_object().unwrap();
    assert_eq!(document.str("status"), Some("healthy"));
    // A later request on the same connection still gets its own answer.
    let response = client
        .request(&agent_line("trust.fetch", "a-2", &device, agent_id))
        .await
        .unwrap();
    assert_eq!(
        (response.message.as_deref(), response.req_id.as_deref()),
        (Some("success"), Some("a-2"))
    );
    // Signed with another key: refused.
    let rogue = crate::util::server::vector_key("rogue");
    let response = client
        .request(&agent_line("system.ping", "a-3", &rogue, agent_id))
        .await
        .unwrap();
    assert_eq!(
        response.message.as_deref(),
        Some(" Signature verification failed")
    );
    // A partner identity posing as an agent: refused like an unknown agent.
    request_trust(&server).await;
    accept(&server, SENDER, RECEIVER);
    let billing = crate::util::server::vector_key("billing");
    let response = client
        .request(&agent_line("system.ping", "a-4", &billing, SENDER))
        .await
        .unwrap();
    assert_eq!(
        response.message.as_deref(),
        Some(" Signature verification failed")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_parse_as_the_envelope() {
    let server = TestServer::start(TestOptions::default()).await;
    let mut client = server.client().await;
    client.send_line("{").await.unwrap();
    let line = client.read_line().await.unwrap().unwrap();
    let response = parse_response(&line).unwrap();
    assert!(line.starts_with(r#"{"version":"1.0.0","status":{"ok":false,"code":500,"message":"Invalid JSON format"},"id":""#));
    assert!(line.ends_with(r#","type":"btps_error"}"#));
    assert_eq!(response.code, 500.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiter_answers_429_and_keeps_the_connection() {
    use btps::server::middleware::{BucketSpec, RateLimiter};
    let limiter = RateLimiter::new(
        BucketSpec {
            rate_per_second: 0.001,
            burst: 3,
        },
        BucketSpec {
            rate_per_second: 0.001,
            burst: 100,
        },
    );
    let options = TestOptions {
        middleware: vec![std::sync::Arc::new(limiter)],
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;
    let mut client = server.client().await;
    let ping =
        r#"{"version":"1.0.0","id":"r","issuedAt":"2025-01-15T10:30:00.000Z","action":"PING"}"#;
    for _ in 0..3 {
        assert!(client.request(ping).await.unwrap().ok);
    }
    let limited = client.request(ping).await.unwrap();
    assert_eq!(
        (limited.ok, limited.code, limited.message.as_deref()),
        (false, 429.0, Some("Too many requests"))
    );
    // Still connected: the next answer comes on the same connection.
    let again = client.request(ping).await.unwrap();
    assert_eq!(again.code, 429.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiter_counts_per_sender() {
    use btps::server::middleware::{BucketSpec, RateLimiter};
    let limiter = RateLimiter::new(
        BucketSpec {
            rate_per_second: 0.001,
            burst: 100,
        },
        BucketSpec {
            rate_per_second: 0.001,
            burst: 1,
        },
    );
    let options = TestOptions {
        middleware: vec![std::sync::Arc::new(limiter)],
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;
    let first = artifact(
        TransporterType::TrustRequest,
        SENDER,
        "billing",
        RECEIVER,
        TRUST_REQUEST,
    );
    assert!(server.send(&first).await.ok);
    let second = artifact(
        TransporterType::TrustRequest,
        SENDER,
        "billing",
        RECEIVER,
        TRUST_REQUEST,
    );
    assert_eq!(server.send(&second).await.code, 429.0);
    // Another sender has its own bucket.
    let other = artifact(
        TransporterType::TrustRequest,
        "admin$vendor.test",
        "admin-vendor",
        RECEIVER,
        TRUST_REQUEST,
    );
    assert!(server.send(&other).await.ok);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ip_filter_refuses_denied_peers_before_tls() {
    use btps::config::IpFilterSettings;
    use btps::server::middleware::IpFilter;
    let deny = IpFilterSettings {
        allow: vec![],
        deny: vec!["127.0.0.1/32".parse().unwrap()],
    };
    let options = TestOptions {
        middleware: vec![std::sync::Arc::new(IpFilter::new(deny))],
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;
    let quick = btps::client::ClientOptions {
        insecure: true,
        timeout: std::time::Duration::from_secs(2),
        ..btps::client::ClientOptions::default()
    };
    assert!(
        btps::client::BtpsClient::connect("127.0.0.1", server.address.port(), &quick)
            .await
            .is_err()
    );
    server.stop().await;

    let allow_other = IpFilterSettings {
        allow: vec!["10.0.0.0/8".parse().unwrap()],
        deny: vec![],
    };
    let options = TestOptions {
        middleware: vec![std::sync::Arc::new(IpFilter::new(allow_other))],
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;
    assert!(
        btps::client::BtpsClient::connect("127.0.0.1", server.address.port(), &quick)
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_response_applies_its_decision_to_the_original_request() {
    // billing$vendor.test is hosted here and asked finance$client.test for trust.
    let options = TestOptions {
        hosted: vec![("billing$vendor.test", "billing")],
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;
    let response_document = r#"{"id":"req-1","decision":"accepted","decidedAt":"2025-03-01T09:00:00.000Z","decidedBy":"ap-team@client.test","expiresAt":"2030-01-01T00:00:00.000Z","privacyType":"encrypted"}"#;
    let answer = artifact(
        TransporterType::TrustResponse,
        RECEIVER,
        "finance",
        SENDER,
        response_document,
    );

    // Without a pending request, an "acceptance" creates nothing.
    let refused = server.send(&answer).await;
    assert_eq!(
        refused.reason.as_deref(),
        Some("BTP_ERROR_TRUST_NOT_ALLOWED")
    );

    let pending = crate::util::server::trust_record(SENDER, RECEIVER, TrustStatus::Pending, None);
    server
        .store
        .create_trust(Perspective::Outbound, pending, None)
        .unwrap();
    let accepted = server.send(&answer).await;
    assert!(accepted.ok, "{:?}", accepted.raw);
    let record = server
        .store
        .trust(Perspective::Outbound, &compute_trust_id(SENDER, RECEIVER))
        .unwrap()
        .unwrap();
    assert_eq!(record.status, TrustStatus::Accepted);
    assert_eq!(record.decided_by, "ap-team@client.test");
    assert_eq!(record.decided_at.as_str(), "2025-03-01T09:00:00.000Z");
    assert_eq!(
        record.expires_at.unwrap().as_str(),
        "2030-01-01T00:00:00.000Z"
    );
    assert_eq!(record.privacy_type, PrivacyType::Encrypted);
    // The responder's key is now known (it was empty while pending).
    assert_eq!(
        record.public_key_fingerprint,
        crate::util::server::vector_key("finance")
            .public_key()
            .fingerprint()
    );
    assert_eq!(inbox_len(&server, SENDER), 1);

    // A second, different answer meets a record that is no longer pending.
    let late = artifact(
        TransporterType::TrustResponse,
        RECEIVER,
        "finance",
        SENDER,
        &response_document.replace("accepted", "rejected"),
    );
    assert_eq!(
        server.send(&late).await.reason.as_deref(),
        Some("BTP_ERROR_TRUST_NOT_ALLOWED")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_sender_key_is_tracked_in_the_key_history() {
    let server = TestServer::start(TestOptions::default()).await;
    request_trust(&server).await;
    accept(&server, SENDER, RECEIVER);
    // The sender rotates: its DNS record now holds another key (same selector here,
    // which stands for any change the verifier sees).
    let new_key = crate::util::server::vector_key("rogue");
    let sender = btps::identity::Identity::parse(SENDER).unwrap();
    server
        .dns
        .publish_key(&sender, "btps2", &new_key.public_key().to_base64());
    let draft = btps::signing::TransporterDraft {
        kind: TransporterType::Document,
        from: sender,
        to: btps::identity::Identity::parse(RECEIVER).unwrap(),
        selector: "btps2".into(),
        document: btps::protocol::json::parse(&invoice("ROT-1")).unwrap(),
        id: None,
        issued_at: None,
    };
    let line = signing::build_transporter(draft, &new_key, None)
        .unwrap()
        .to_canonical();
    assert!(
        server.send(&line).await.ok,
        "a key change never causes a refusal"
    );
    let record = server
        .store
        .trust(Perspective::Inbound, &compute_trust_id(SENDER, RECEIVER))
        .unwrap()
        .unwrap();
    assert_eq!(
        record.public_key_fingerprint,
        new_key.public_key().fingerprint()
    );
    assert_eq!(record.key_history.len(), 1);
    assert_eq!(
        record.key_history[0].fingerprint,
        crate::util::server::vector_key("billing")
            .public_key()
            .fingerprint()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_are_all_committed_and_duplicates_stored_once() {
    let server = std::sync::Arc::new(TestServer::start(TestOptions::default()).await);
    request_trust(&server).await;
    accept(&server, SENDER, RECEIVER);
    let documents: Vec<String> = (0..160)
        .map(|index| {
            artifact(
                TransporterType::Document,
                SENDER,
                "billing",
                RECEIVER,
                &invoice(&format!("C-{index}")),
            )
        })
        .collect();
    let duplicate = artifact_with_id(
        TransporterType::Document,
        SENDER,
        "billing",
        RECEIVER,
        &invoice("D"),
        Some("same-id"),
    );
    let mut tasks = Vec::new();
    for chunk in documents.chunks(20) {
        let server = std::sync::Arc::clone(&server);
        let chunk = chunk.to_vec();
        let duplicate = duplicate.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = server.client().await;
            // Pipelined: write the whole chunk, then read every answer.
            for line in chunk.iter().chain(std::iter::once(&duplicate)) {
                client.send_line(line).await.unwrap();
            }
            let mut ok = 0;
            for _ in 0..=chunk.len() {
                let line = client.read_line().await.unwrap().unwrap();
                ok += usize::from(btps::protocol::response::parse_response(&line).unwrap().ok);
            }
            ok
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.unwrap();
    }
    assert_eq!(
        accepted,
        160 + 8,
        "every document and every copy of the duplicate is acknowledged"
    );
    assert_eq!(
        inbox_len(&server, RECEIVER),
        1 + 160 + 1,
        "the duplicate is stored once"
    );
    match std::sync::Arc::try_unwrap(server) {
        Ok(server) => {
            server.stop().await;
        }
        Err(_) => panic!("server still shared"),
    }
}
