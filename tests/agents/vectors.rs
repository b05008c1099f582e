//! The reference's agent vectors (`signed/agent-*.json`, `tampered/agent-*.json`)
//! sent over the wire: each signed one is accepted and does what it asks, each
//! tampered one is refused at the signature, with its own `reqId`.

use btps::model::{EnrollmentToken, enrollment_token_key};
use btps::protocol::json::{self, Value};
use btps::store::{Perspective, Timestamp, TrustStatus};

use super::{BILLING, FINANCE};
use crate::util::server::{TestOptions, TestServer, trust_record};
use crate::util::vector_files;

const BILLING_AGENT: &str = "btps_ag_aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
const FINANCE_AGENT: &str = "btps_ag_11111111-2222-4333-8444-555555555555";

/// A server in the state the vectors assume: both agents enrolled, the auth
/// token of the auth.request vector issued, billing trusted by finance.
async fn vector_server() -> TestServer {
    let server = TestServer::start(TestOptions {
        hosted: vec![
            (FINANCE, "finance"),
            (BILLING, "billing"),
            ("admin$vendor.test", "admin-vendor"),
        ],
        agent_outbound: true,
        ..TestOptions::default()
    })
    .await;
    let store = &server.store;
    for (agent, owner) in [(FINANCE_AGENT, FINANCE), (BILLING_AGENT, BILLING)] {
        store
            .create_trust(
                Perspective::Inbound,
                trust_record(agent, owner, TrustStatus::Accepted, Some("agent-device")),
                None,
            )
            .unwrap();
    }
    // Finance trusts billing, and billing's own record of that trust.
    for perspective in [Perspective::Inbound, Perspective::Outbound] {
        store
            .create_trust(
                perspective,
                trust_record(BILLING, FINANCE, TrustStatus::Accepted, Some("billing")),
                None,
            )
            .unwrap();
    }
    let now = Timestamp::now();
    let token = EnrollmentToken {
        identity: FINANCE.to_owned(),
        created_at: now.clone(),
        expires_at: Timestamp::from_millis(now.millis() + 60_000).unwrap(),
        decrypt_by: "admin$client.test".to_owned(),
        issued_by: "vectors".to_owned(),
        metadata: None,
    };
    store
        .write(|batch| {
            batch.put_enrollment_token(&enrollment_token_key(FINANCE, "INTEROPAUTHTOKEN1"), &token)
        })
        .unwrap();
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_agent_vectors_are_accepted() {
    let server = vector_server().await;
    let mut seen = 0;
    for (name, vector) in vector_files("signed") {
        if !name.starts_with("agent-") {
            continue;
        }
        seen += 1;
        let line = vector["artifact"].as_str().unwrap();
        let sent = json::parse(line).unwrap();
        let request_id = sent.as_object().unwrap().str("id").unwrap().to_owned();
        let response = server.send(line).await;
        assert!(response.ok, "{name}: {:?}", response.raw);
        assert_eq!(
            response.req_id.as_deref(),
            Some(request_id.as_str()),
            "{name}"
        );
        let document = response.raw.get("document").and_then(Value::as_object);
        match name.as_str() {
            "agent-auth-request.json" => {
                // The reference's answer, member for member (values differ).
                let reference =
                    json::parse(vector["referenceServer"]["line"].as_str().unwrap()).unwrap();
                let reference = reference.as_object().unwrap();
                let keys = |object: &json::Object| -> Vec<String> {
                    object.iter().map(|(key, _)| format!("{key:?}")).collect()
                };
                assert_eq!(keys(&response.raw), keys(reference), "{name}");
                assert_eq!(
                    response.raw.get("status").unwrap().to_canonical(),
                    reference.get("status").unwrap().to_canonical()
                );
                let document = document.expect("auth response");
                let expected = reference.get("document").unwrap().as_object().unwrap();
                assert_eq!(keys(document), keys(expected));
                let agent_id = document.str("agentId").unwrap();
                assert!(btps::model::is_agent_id(agent_id), "{agent_id}");
                // The token is spent.
                let again = server.send(line).await;
                assert_eq!(again.message.as_deref(), Some("Authentication failed"));
            }
            "agent-inbox-fetch.json" => {
                let document = document.expect("query result");
                assert!(
                    document
                        .get("results")
                        .is_some_and(|r| r.as_array().is_some())
                );
                assert_eq!(document.get("hasNext"), Some(&Value::Bool(false)));
            }
            "agent-artifact-send.json" => {
                assert_eq!(response.code, 202.0, "{name}");
                assert_eq!(response.message.as_deref(), Some("queued"));
                let document = document.expect("queued document");
                let inner =
                    json::parse(vector["innerArtifact"]["artifact"].as_str().unwrap()).unwrap();
                assert_eq!(
                    document.str("artifactId"),
                    inner.as_object().unwrap().str("id")
                );
            }
            other => panic!("an agent vector without a check: {other}"),
        }
    }
    assert_eq!(seen, 3, "agent vectors found");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_agent_vectors_are_refused_at_the_signature() {
    let server = vector_server().await;
    let mut seen = 0;
    for (name, vector) in vector_files("tampered") {
        if !name.starts_with("agent-") {
            continue;
        }
        seen += 1;
        assert_eq!(vector["failsAt"], "signature", "{name}");
        let line = vector["artifact"].as_str().unwrap();
        let request_id = json::parse(line)
            .unwrap()
            .as_object()
            .unwrap()
            .str("id")
            .unwrap()
            .to_owned();
        let response = server.send(line).await;
        assert!(!response.ok, "{name}: {:?}", response.raw);
        assert_eq!(
            response.message.as_deref(),
            vector["referenceServer"]["message"].as_str(),
            "{name}"
        );
        assert_eq!(
            response.req_id.as_deref(),
            Some(request_id.as_str()),
            "{name}"
        );
    }
    assert_eq!(seen, 4, "tampered agent vectors found");
    // The tampered auth request did not spend the vector's token.
    let signed = crate::util::vector_json("signed/agent-auth-request.json");
    let response = server.send(signed["artifact"].as_str().unwrap()).await;
    assert!(response.ok, "{:?}", response.raw);
    server.stop().await;
}
