//! Encryption between agents and their server (`spec/07-agents-auth.md` §2.4 step 4,
//! §6.8): agent documents encrypted to the `decryptBy` identity's key, decrypted
//! only after the signature verified; answers encrypted to the agent and signed
//! when the operator asks for it.

use std::sync::Arc;

use btps::agent::{AgentError, Query};
use btps::identity::Identity;
use btps::protocol::AgentAction;
use btps::protocol::json;
use btps::server::agent::AgentPolicy;
use btps::signing::StaticKeys;
use btps::store::Mailbox;

use super::{BILLING, FINANCE, deliver, enroll, trust};
use crate::util::server::{TestOptions, TestServer, vector_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_agent_document_is_decrypted_after_verification() {
    let server = TestServer::start(TestOptions::default()).await;
    trust(&server, BILLING, "billing", FINANCE);
    deliver(&server, "doc-0", "Invoice zero").await;
    deliver(&server, "doc-1", "Statement one").await;
    let (mut agent, session) = enroll(&server, FINANCE, "agent-device").await;
    assert_eq!(session.decrypt_by, "admin$client.test");
    // The query travels encrypted to the server key (decryptBy's DNS key).
    let query = json::parse(r#"{"query":{"title":{"like":"statement"}}}"#).unwrap();
    let artifact = agent
        .encrypted_artifact(AgentAction::InboxFetch, &query, &server.server_key)
        .unwrap();
    let response = agent.request(&artifact).await.unwrap();
    let answer = agent.answer_document(&response).unwrap().unwrap();
    let results = answer.as_object().unwrap().get("results").unwrap();
    assert_eq!(results.as_array().unwrap().len(), 1);

    // Encrypted to another key: the server cannot read it.
    let wrong = agent
        .encrypted_artifact(
            AgentAction::InboxFetch,
            &query,
            vector_key("rogue").public_key(),
        )
        .unwrap();
    match agent.request(&wrong).await {
        Err(AgentError::Refused { response, .. }) => {
            assert!(!response.ok);
            assert_ne!(
                response.message.as_deref(),
                Some(" Signature verification failed")
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Tampered after signing: refused at the signature, never decrypted.
    let mut tampered = artifact.clone();
    tampered.insert("id", "another-id");
    match agent.request(&tampered).await {
        Err(AgentError::Refused { message, .. }) => {
            assert_eq!(message, " Signature verification failed");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A plaintext that is not a valid document for the action is refused.
    let invalid = agent
        .encrypted_artifact(
            AgentAction::InboxFetch,
            &json::parse(r#"{"limit":"ten"}"#).unwrap(),
            &server.server_key,
        )
        .unwrap();
    match agent.request(&invalid).await {
        Err(AgentError::Refused { message, .. }) => {
            assert_eq!(message, "BTPS artifact validation failed");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_results_are_encrypted_to_the_agent_and_signed_when_asked() {
    let server = TestServer::start(TestOptions {
        agents: AgentPolicy {
            encrypt_answers: true,
            ..AgentPolicy::default()
        },
        ..TestOptions::default()
    })
    .await;
    trust(&server, BILLING, "billing", FINANCE);
    deliver(&server, "doc-0", "Invoice zero").await;
    let (mut agent, _) = enroll(&server, FINANCE, "agent-device").await;
    let mut keys = StaticKeys::new();
    keys.insert(
        &Identity::parse("admin$client.test").unwrap(),
        "btps1",
        server.server_key.clone(),
    );
    agent.verify_answers_with(Arc::new(keys));
    let response = agent
        .command(
            AgentAction::InboxFetch,
            Some(json::parse(r#"{"limit":5}"#).unwrap()),
        )
        .await
        .unwrap();
    // Encrypted and signed over exactly what was sent (`encryption` included).
    assert!(response.encryption.is_some());
    let signer = response.signer.as_ref().expect("signed");
    assert_eq!(signer.signed_by.as_str(), "admin$client.test");
    assert!(response.raw.get("document").unwrap().is_string());
    // The client's own path decrypts it.
    let page = agent.fetch(Mailbox::Inbox, &Query::new()).await.unwrap();
    assert_eq!(page.artifact_ids(), ["doc-0"]);
    // Auth answers stay plain.
    let refreshed = agent.ping().await;
    assert!(refreshed.is_ok());
    server.stop().await;
}
