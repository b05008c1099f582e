//! The reference's vectors sent over the wire: every signed artifact a server should
//! accept is accepted with the matching trust in place, every tampered one is refused
//! with its error.

use btps::identity::compute_trust_id;
use btps::store::{NewTrustRecord, Perspective, TrustStatus};

use crate::util::server::{TestOptions, TestServer, trust_record};
use crate::util::vector_files;

const BILLING_AGENT: &str = "btps_ag_aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
const FINANCE_AGENT: &str = "btps_ag_11111111-2222-4333-8444-555555555555";

fn record(sender: &str, receiver: &str, key: &str) -> NewTrustRecord {
    trust_record(sender, receiver, TrustStatus::Accepted, Some(key))
}

/// A server hosting the vectors' receivers, with billing trusted by finance and the
/// vectors' agents enrolled.
async fn vector_server() -> TestServer {
    let options = TestOptions {
        hosted: vec![
            ("finance$client.test", "finance"),
            ("admin$vendor.test", "admin-vendor"),
            ("billing$vendor.test", "billing"),
        ],
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;
    let store = &server.store;
    store
        .create_trust(
            Perspective::Inbound,
            record("billing$vendor.test", "finance$client.test", "billing"),
            None,
        )
        .unwrap();
    store
        .create_trust(
            Perspective::Inbound,
            record(FINANCE_AGENT, "finance$client.test", "agent-device"),
            None,
        )
        .unwrap();
    store
        .create_trust(
            Perspective::Inbound,
            record(BILLING_AGENT, "billing$vendor.test", "agent-device"),
            None,
        )
        .unwrap();
    server
}

fn is_response(name: &str, vector: &serde_json::Value) -> bool {
    vector["kind"] == "serverResponse"
        || vector["base"]
            .as_str()
            .is_some_and(|base| base.contains("response"))
        || name.contains("lookup-response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_vectors_over_the_wire() {
    let server = vector_server().await;
    let mut checked = 0;
    for (name, vector) in vector_files("signed") {
        if is_response(&name, &vector) {
            continue;
        }
        let line = vector["artifact"].as_str().unwrap();
        let response = server.send(line).await;
        match vector["kind"].as_str().unwrap() {
            "transporter" | "transporter-delegated" | "identityLookup" | "control" => {
                assert!(response.ok, "{name}: {:?}", response.raw);
            }
            "agent" => {
                // Verified and trusted (what each action then does, and the state it
                // needs, is checked in tests/agents/vectors.rs).
                assert_ne!(
                    response.message.as_deref(),
                    Some(" Signature verification failed"),
                    "{name}: {:?}",
                    response.raw
                );
            }
            other => panic!("{name}: unknown kind {other}"),
        }
        checked += 1;
    }
    assert!(checked >= 14, "only {checked} vectors sent");
    // The trust request of the vectors created a pending record; the response accepted it
    // on the requesting side (both identities are hosted here).
    let id = compute_trust_id("admin$vendor.test", "finance$client.test");
    let outbound = server
        .store
        .trust(Perspective::Outbound, &id)
        .unwrap()
        .unwrap();
    assert_eq!(outbound.status, TrustStatus::Accepted);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_vectors_over_the_wire() {
    let server = vector_server().await;
    for (name, vector) in vector_files("tampered") {
        if is_response(&name, &vector) {
            continue;
        }
        let response = server.send(vector["artifact"].as_str().unwrap()).await;
        match vector["failsAt"].as_str().unwrap() {
            "signature" => {
                assert!(!response.ok, "{name}");
                assert_eq!(
                    response.message.as_deref(),
                    Some(" Signature verification failed"),
                    "{name}"
                );
                let expected = vector["artifact"].as_str().map(|line| {
                    btps::protocol::json::parse(line)
                        .unwrap()
                        .as_object()
                        .unwrap()
                        .str("id")
                        .unwrap()
                        .to_owned()
                });
                assert_eq!(response.req_id, expected, "{name}");
                // The reference server answered the same message.
                if let Some(message) = vector["referenceServer"]["message"].as_str() {
                    assert_eq!(response.message.as_deref(), Some(message), "{name}");
                }
            }
            // The server never decrypts: the signature is valid, so it accepts.
            "decrypt" => assert!(response.ok, "{name}: {:?}", response.raw),
            other => panic!("{name}: unknown failsAt {other}"),
        }
    }
    server.stop().await;
}
