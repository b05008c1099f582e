//! The owner's trust records through its agents: `trust.fetch`, `trust.update`,
//! `trust.delete` (`spec/07-agents-auth.md` §3.2), and `trust.request` /
//! `trust.respond` through the outbox.

use btps::agent::{AgentError, Query};
use btps::identity::compute_trust_id;
use btps::protocol::json::{self, Value};
use btps::store::{Perspective, TrustStatus};

use super::{BILLING, FINANCE, agent_record, enroll, trust};
use crate::util::server::{TestOptions, TestServer, trust_record};

fn decision(status: &str) -> Value {
    json::parse(&format!(
        r#"{{"id":"req-1","decision":"{status}","decidedAt":"2026-01-01T00:00:00.000Z","decidedBy":"finance desk"}}"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_lists_updates_and_deletes_its_own_records() {
    let server = TestServer::start(TestOptions::default()).await;
    trust(&server, BILLING, "billing", FINANCE);
    // A requesting-side record of finance's, and another identity's record that
    // merely names finance as its sender (not finance's to see).
    server
        .store
        .create_trust(
            Perspective::Outbound,
            trust_record(FINANCE, "pay$other.test", TrustStatus::Pending, None),
            None,
        )
        .unwrap();
    server
        .store
        .create_trust(
            Perspective::Inbound,
            trust_record(FINANCE, "someone$else.test", TrustStatus::Accepted, None),
            None,
        )
        .unwrap();
    let (mut agent, session) = enroll(&server, FINANCE, "agent-device").await;

    let listed = agent.trust_list(&Query::new()).await.unwrap();
    let parties: Vec<(String, String)> = listed
        .results
        .iter()
        .map(|record| {
            let record = record.as_object().unwrap();
            (
                record.str("senderId").unwrap().to_owned(),
                record.str("receiverId").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed.total, Some(3), "{parties:?}");
    assert!(parties.contains(&(BILLING.to_owned(), FINANCE.to_owned())));
    assert!(parties.contains(&(session.agent_id.clone(), FINANCE.to_owned())));
    assert!(parties.contains(&(FINANCE.to_owned(), "pay$other.test".to_owned())));
    // Filters and pages.
    let partners = agent
        .trust_list(&Query::new().filter("from", "eq", BILLING))
        .await
        .unwrap();
    assert_eq!(partners.total, Some(1));
    let first = agent.trust_list(&Query::new().limit(2)).await.unwrap();
    let rest = agent
        .trust_list(
            &Query::new()
                .limit(2)
                .cursor(first.cursor.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(first.results.len() + rest.results.len(), 3);
    assert!(!rest.has_next);

    // Block billing, locally.
    let billing_id = compute_trust_id(BILLING, FINANCE);
    let updated = agent
        .trust_update(&billing_id, decision("blocked"))
        .await
        .unwrap();
    assert_eq!(updated.len(), 1);
    assert_eq!(
        updated[0].as_object().unwrap().str("status"),
        Some("blocked")
    );
    let record = server
        .store
        .trust(Perspective::Inbound, &billing_id)
        .unwrap()
        .unwrap();
    assert_eq!(record.status, TrustStatus::Blocked);
    assert_eq!(record.decided_by, "finance desk");
    // Another identity's record is not finance's to change.
    let foreign = compute_trust_id(FINANCE, "someone$else.test");
    match agent.trust_update(&foreign, decision("revoked")).await {
        Err(AgentError::Refused { reason, .. }) => {
            assert_eq!(reason.as_deref(), Some("BTP_ERROR_TRUST_NON_EXISTENT"));
        }
        other => panic!("{other:?}"),
    }
    // A decision must be one.
    assert!(
        agent
            .trust_update(&billing_id, decision("pending"))
            .await
            .is_err()
    );

    // Delete: finance's own record goes, the unknown id is reported.
    let outbound = compute_trust_id(FINANCE, "pay$other.test");
    let done = agent
        .trust_delete(&[&outbound, "feed", &foreign])
        .await
        .unwrap();
    assert_eq!(done.updated, std::slice::from_ref(&outbound));
    assert_eq!(done.not_found, ["feed".to_owned(), foreign.clone()]);
    assert!(
        server
            .store
            .trust(Perspective::Outbound, &outbound)
            .unwrap()
            .is_none()
    );
    assert!(
        server
            .store
            .trust(Perspective::Inbound, &foreign)
            .unwrap()
            .is_some()
    );

    // The owner revokes its own device: record revoked, session gone, refused.
    let device = compute_trust_id(&session.agent_id, FINANCE);
    agent
        .trust_update(&device, decision("revoked"))
        .await
        .unwrap();
    assert_eq!(
        agent_record(&server, &session.agent_id, FINANCE)
            .unwrap()
            .status,
        TrustStatus::Revoked
    );
    assert!(
        server
            .store
            .read(|snapshot| snapshot.agent_session(&session.agent_id))
            .unwrap()
            .is_none()
    );
    assert!(agent.ping().await.is_err());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_agent_record_deletes_its_session() {
    let server = TestServer::start(TestOptions::default()).await;
    let (mut phone, lost) = enroll(&server, FINANCE, "rogue").await;
    drop(phone.ping().await);
    let (mut desk, _) = enroll(&server, FINANCE, "agent-device").await;
    let lost_id = compute_trust_id(&lost.agent_id, FINANCE);
    // The wrapped form the reference's agent sends works too.
    let wrapped = desk
        .transporter(
            btps::protocol::TransporterType::TrustResponse,
            &btps::identity::Identity::parse(FINANCE).unwrap(),
            json::parse(&format!(r#"{{"ids":["{lost_id}"]}}"#)).unwrap(),
            None,
        )
        .unwrap();
    let response = desk
        .command(
            btps::protocol::AgentAction::TrustDelete,
            Some(Value::Object(wrapped)),
        )
        .await
        .unwrap();
    let document = response.raw.get("document").unwrap().as_object().unwrap();
    assert_eq!(
        document.get("updated"),
        Some(&Value::Array(vec![Value::from(lost_id.as_str())]))
    );
    assert!(agent_record(&server, &lost.agent_id, FINANCE).is_none());
    assert!(
        server
            .store
            .read(|snapshot| snapshot.agent_session(&lost.agent_id))
            .unwrap()
            .is_none()
    );
    assert!(phone.ping().await.is_err());
    desk.ping().await.unwrap();
    server.stop().await;
}
