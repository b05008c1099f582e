//! What agents send: `artifact.send`, `trust.request`, `trust.respond` delegated by
//! the owner's domain and queued in its outbox (`spec/07-agents-auth.md` §3.2, §8.3),
//! `outbox.cancel`; and the whole life of an agent end to end.

use btps::admin::operations::AdminRequest;
use btps::agent::{AgentError, Query};
use btps::identity::{Identity, compute_trust_id};
use btps::protocol::json::{self, Value};
use btps::protocol::{AgentAction, TransporterType};
use btps::signing::StaticKeys;
use btps::store::{Mailbox, Perspective, TrustStatus};

use super::{BILLING, FINANCE, deliver, enroll, operator, trust};
use crate::util::server::{
    TRUST_REQUEST, TestOptions, TestServer, artifact, invoice, trust_record, vector_key,
};

const PARTNER: &str = "pay$other.test";

fn sending_server() -> TestOptions {
    TestOptions {
        hosted: vec![(FINANCE, "finance"), (BILLING, "billing")],
        agent_outbound: true,
        ..TestOptions::default()
    }
}

fn refusal(outcome: Result<impl std::fmt::Debug, AgentError>) -> (String, Option<String>) {
    match outcome {
        Err(AgentError::Refused {
            message, reason, ..
        }) => (message, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The one outbox entry's artifact, parsed.
async fn outbox_artifact(agent: &mut btps::agent::Agent) -> json::Object {
    let outbox = agent.fetch(Mailbox::Outbox, &Query::new()).await.unwrap();
    assert_eq!(outbox.total, Some(1), "{outbox:?}");
    outbox.results[0]
        .as_object()
        .unwrap()
        .get("artifact")
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

/// Verifies a delegated artifact as a receiving server does, with the server key
/// as the delegator's DNS key.
async fn verify_delegated(server: &TestServer, artifact: &json::Object, delegator: &str) {
    let line = artifact.to_canonical();
    let Some(btps::protocol::Artifact::Transporter(parsed)) =
        btps::protocol::parse_line(line.as_bytes()).unwrap()
    else {
        panic!("not a transporter artifact: {line}")
    };
    let mut keys = StaticKeys::new();
    keys.insert(
        &Identity::parse(delegator).unwrap(),
        "btps1",
        server.server_key.clone(),
    );
    btps::signing::verify_transporter(&parsed, &keys)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_is_delegated_queued_and_can_be_cancelled() {
    let server = TestServer::start(sending_server()).await;
    server
        .store
        .create_trust(
            Perspective::Outbound,
            trust_record(BILLING, PARTNER, TrustStatus::Accepted, None),
            None,
        )
        .unwrap();
    let (mut agent, session) = enroll(&server, BILLING, "agent-device").await;
    let partner = Identity::parse(PARTNER).unwrap();
    let invoice_document = json::parse(&invoice("INV-77")).unwrap();
    let queued = agent
        .send_document(&partner, invoice_document.clone(), None)
        .await
        .unwrap();
    assert_eq!(queued.status, "queued");

    let artifact = outbox_artifact(&mut agent).await;
    assert_eq!(artifact.str("id"), Some(queued.artifact_id.as_str()));
    let delegation = artifact.get("delegation").unwrap().as_object().unwrap();
    assert_eq!(delegation.str("agentId"), Some(session.agent_id.as_str()));
    assert_eq!(delegation.str("signedBy"), Some("admin$vendor.test"));
    assert!(delegation.get("attestation").is_none());
    verify_delegated(&server, &artifact, "admin$vendor.test").await;

    // No accepted trust with the recipient: refused before anything is queued.
    let stranger = Identity::parse("nobody$other.test").unwrap();
    let (message, reason) = refusal(
        agent
            .send_document(&stranger, invoice_document.clone(), None)
            .await,
    );
    assert_eq!(
        message,
        "BTPS trust request is not allowed at this time. Contact receiver"
    );
    assert_eq!(reason.as_deref(), Some("BTP_ERROR_TRUST_NON_EXISTENT"));
    // A bare document: the server holds no key of the owner to sign it with.
    let artifact_line = agent.artifact(AgentAction::ArtifactSend, Some(invoice_document.clone()));
    let (_, reason) = refusal(agent.request(&artifact_line).await);
    assert_eq!(
        reason.as_deref(),
        Some("signed transporter artifact required")
    );
    // A nested artifact signed by another key than the agent's.
    let mut nested = agent
        .transporter(TransporterType::Document, &partner, invoice_document, None)
        .unwrap();
    btps::signing::sign_object(&mut nested, &vector_key("rogue"));
    let forged = agent.artifact_to(
        AgentAction::ArtifactSend,
        PARTNER,
        Some(Value::Object(nested)),
    );
    let (message, _) = refusal(agent.request(&forged).await);
    assert_eq!(message, " Signature verification failed");

    // Cancel: the entry goes to the trash with cancelledAt.
    let done = agent
        .delete(Mailbox::Outbox, &[&queued.artifact_id])
        .await
        .unwrap();
    assert_eq!(done.updated, std::slice::from_ref(&queued.artifact_id));
    assert!(done.in_flight.is_empty());
    let trash = agent.fetch(Mailbox::Trash, &Query::new()).await.unwrap();
    let meta = trash.results[0]
        .as_object()
        .unwrap()
        .get("meta")
        .unwrap()
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(meta.str("origin"), Some("outbox"));
    assert!(meta.str("cancelledAt").is_some());
    let outbox = agent.fetch(Mailbox::Outbox, &Query::new()).await.unwrap();
    assert_eq!(outbox.total, Some(0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_is_requested_and_a_request_answered() {
    let server = TestServer::start(sending_server()).await;
    let (mut agent, _) = enroll(&server, FINANCE, "agent-device").await;
    let partner = Identity::parse(PARTNER).unwrap();

    // Request: the requesting side's pending record and the TRUST_REQ queued together.
    let queued = agent
        .trust_request(&partner, json::parse(TRUST_REQUEST).unwrap())
        .await
        .unwrap();
    let record = server
        .store
        .trust(Perspective::Outbound, &compute_trust_id(FINANCE, PARTNER))
        .unwrap()
        .expect("pending requesting-side record");
    assert_eq!(record.status, TrustStatus::Pending);
    let artifact = outbox_artifact(&mut agent).await;
    assert_eq!(artifact.str("id"), Some(queued.artifact_id.as_str()));
    assert_eq!(artifact.str("type"), Some("TRUST_REQ"));
    verify_delegated(&server, &artifact, "admin$client.test").await;

    // Answer: billing asked finance over the wire; finance's agent accepts.
    let request = artifact_for_billing();
    assert!(server.send(&request).await.ok);
    let billing = Identity::parse(BILLING).unwrap();
    let decision = json::parse(
        r#"{"id":"req-1","decision":"accepted","decidedAt":"2026-01-01T00:00:00.000Z","decidedBy":"finance desk","expiresAt":"2099-01-01T00:00:00.000Z"}"#,
    )
    .unwrap();
    agent
        .trust_respond(&billing, decision.clone())
        .await
        .unwrap();
    let record = server
        .store
        .trust(Perspective::Inbound, &compute_trust_id(BILLING, FINANCE))
        .unwrap()
        .unwrap();
    assert_eq!(record.status, TrustStatus::Accepted);
    assert_eq!(record.decided_by, "finance desk");
    let outbox = agent.fetch(Mailbox::Outbox, &Query::new()).await.unwrap();
    assert_eq!(outbox.total, Some(2));
    // Answered already: the request is no longer pending.
    let (message, _) = refusal(agent.trust_respond(&billing, decision).await);
    assert_eq!(
        message,
        "BTPS trust request is not allowed at this time. Contact receiver"
    );
    server.stop().await;
}

/// billing's signed TRUST_REQ to finance.
fn artifact_for_billing() -> String {
    artifact(
        TransporterType::TrustRequest,
        BILLING,
        "billing",
        FINANCE,
        TRUST_REQUEST,
    )
}

/// The issue's whole life of an agent: a token, enrollment, a refresh, three pages
/// of an inbox with filters, seen, delete, a trust request answered, a document
/// sent, the operator's revocation, and the next request refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_from_enrollment_to_revocation() {
    let server = TestServer::start(sending_server()).await;
    trust(&server, BILLING, "billing", FINANCE);
    for index in 0..6 {
        let title = if index % 2 == 0 {
            "Invoice"
        } else {
            "Statement"
        };
        deliver(
            &server,
            &format!("doc-{index}"),
            &format!("{title} {index}"),
        )
        .await;
    }
    let (mut agent, session) = enroll(&server, FINANCE, "agent-device").await;
    let session = agent
        .refresh(&session.refresh_token, None, None)
        .await
        .unwrap();

    // Three pages of the invoices and statements from billing, two at a time.
    let query = Query::new().limit(2).filter("from", "eq", BILLING);
    let mut pages = Vec::new();
    let mut next = Some(agent.fetch(Mailbox::Inbox, &query).await.unwrap());
    while let Some(page) = next.take() {
        next = match &page.cursor {
            Some(cursor) => Some(
                agent
                    .fetch(Mailbox::Inbox, &query.clone().cursor(cursor))
                    .await
                    .unwrap(),
            ),
            None => None,
        };
        pages.push(page.artifact_ids());
    }
    assert_eq!(
        pages,
        [
            vec!["doc-5", "doc-4"],
            vec!["doc-3", "doc-2"],
            vec!["doc-1", "doc-0"]
        ]
    );
    let invoices = agent
        .fetch(
            Mailbox::Inbox,
            &Query::new().limit(2).filter("title", "like", "invoice"),
        )
        .await
        .unwrap();
    assert_eq!(invoices.total, Some(3));

    agent.mark_seen(&["doc-5"]).await.unwrap();
    agent.delete(Mailbox::Inbox, &["doc-4"]).await.unwrap();
    let inbox = agent.fetch(Mailbox::Inbox, &Query::new()).await.unwrap();
    assert_eq!(inbox.total, Some(5));

    // A trust request from a partner, answered by the agent.
    server
        .store
        .delete_trust(Perspective::Inbound, &compute_trust_id(BILLING, FINANCE))
        .unwrap();
    assert!(server.send(&artifact_for_billing()).await.ok);
    let billing = Identity::parse(BILLING).unwrap();
    agent
        .trust_respond(
            &billing,
            json::parse(
                r#"{"id":"req-1","decision":"accepted","decidedAt":"2026-01-01T00:00:00.000Z","decidedBy":"finance desk"}"#,
            )
            .unwrap(),
        )
        .await
        .unwrap();

    // A document to a partner that accepted finance.
    server
        .store
        .create_trust(
            Perspective::Outbound,
            trust_record(FINANCE, PARTNER, TrustStatus::Accepted, None),
            None,
        )
        .unwrap();
    let queued = agent
        .send_document(
            &Identity::parse(PARTNER).unwrap(),
            json::parse(&invoice("INV-1")).unwrap(),
            None,
        )
        .await
        .unwrap();
    let outbox = agent.fetch(Mailbox::Outbox, &Query::new()).await.unwrap();
    assert!(outbox.artifact_ids().contains(&queued.artifact_id));

    // The operator revokes the agent: its next request is refused.
    operator(
        &server,
        AdminRequest::AgentRevoke {
            agent_id: session.agent_id.clone(),
            decided_by: "operator".to_owned(),
        },
    )
    .await
    .unwrap();
    let (message, _) = refusal(agent.fetch(Mailbox::Inbox, &Query::new()).await);
    assert_eq!(
        message,
        "BTPS trust request is not allowed at this time. Contact receiver"
    );
    server.stop().await;
}
