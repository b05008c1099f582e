//! Enrollment, refresh, key rotation, revocation, and every way authentication is
//! refused (`spec/07-agents-auth.md` §6).

use btps::admin::operations::{AdminRequest, AdminResponse};
use btps::agent::{Agent, AgentError};
use btps::crypto::PrivateKey;
use btps::identity::Identity;
use btps::model::{is_agent_id, refresh_token_hash};
use btps::protocol::AgentAction;
use btps::protocol::json::{Object, Value};
use btps::store::{PrivacyType, TrustStatus};

use super::{BILLING, FINANCE, agent_record, connect, enroll, issue_token, operator, options};
use crate::util::server::{TestOptions, TestServer, vector_key};

fn two_identities() -> TestOptions {
    TestOptions {
        hosted: vec![(FINANCE, "finance"), (BILLING, "billing")],
        ..TestOptions::default()
    }
}

fn refused(outcome: Result<impl std::fmt::Debug, AgentError>) -> (String, Option<String>) {
    match outcome {
        Err(AgentError::Refused {
            message, reason, ..
        }) => (message, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// An auth.request with this document, signed by `key`, sent as agent `temp`.
async fn auth_request(
    server: &TestServer,
    to: &str,
    document: Object,
    key: PrivateKey,
) -> Result<btps::protocol::response::ServerResponse, AgentError> {
    let mut agent = connect(server, to, "temp", key).await;
    let artifact = agent.artifact(AgentAction::AuthRequest, Some(Value::Object(document)));
    agent.request(&artifact).await
}

fn auth_document(identity: &str, token: &str, key: &PrivateKey) -> Object {
    let mut document = Object::new();
    document.insert("identity", identity);
    document.insert("authToken", token);
    document.insert("publicKey", key.public_key().to_pem());
    document
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_creates_the_agent_record_and_its_session() {
    let server = TestServer::start(TestOptions::default()).await;
    let (mut agent, session) = enroll(&server, FINANCE, "agent-device").await;
    assert!(is_agent_id(&session.agent_id), "{session:?}");
    assert_eq!(agent.agent_id(), session.agent_id);
    assert_eq!(session.refresh_token.len(), 43);
    assert_eq!(session.decrypt_by, "admin$client.test");
    let record = agent_record(&server, &session.agent_id, FINANCE).expect("agent record");
    assert_eq!(record.status, TrustStatus::Accepted);
    assert_eq!(record.privacy_type, PrivacyType::Encrypted);
    assert_eq!(record.decided_by, "admin$client.test");
    assert_eq!(
        record.public_key_fingerprint,
        vector_key("agent-device").public_key().fingerprint()
    );
    assert_eq!(
        record.expires_at.as_ref().map(|at| at.as_str()),
        Some(session.expires_at.as_str())
    );
    // Seven days, give or take the test's own time.
    let lifetime = record.expires_at.unwrap().millis() - record.created_at.millis();
    assert_eq!(lifetime, 7 * 24 * 60 * 60 * 1000);
    let stored = server
        .store
        .read(|snapshot| snapshot.agent_session(&session.agent_id))
        .unwrap()
        .expect("session");
    assert_eq!(stored.owner, FINANCE);
    // Only the hash of the refresh token is kept.
    assert_eq!(
        stored.refresh_hash,
        refresh_token_hash(&session.refresh_token)
    );
    // The agent acts at once.
    agent.ping().await.unwrap();
    // The operator sees it.
    let response = operator(
        &server,
        AdminRequest::AgentList {
            identity: Some(FINANCE.to_owned()),
        },
    )
    .await
    .unwrap();
    let AdminResponse::Agents { agents } = response else {
        panic!("{response:?}")
    };
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["agentId"], session.agent_id.as_str());
    assert_eq!(agents[0]["status"], "accepted");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_the_token_and_the_key_and_a_replayed_token_revokes() {
    let server = TestServer::start(TestOptions::default()).await;
    let (mut agent, first) = enroll(&server, FINANCE, "agent-device").await;
    let before = agent_record(&server, &first.agent_id, FINANCE).unwrap();

    // A refresh with the same key: a new token, a later expiry.
    let second = agent
        .refresh(&first.refresh_token, None, None)
        .await
        .unwrap();
    assert_eq!(second.agent_id, first.agent_id);
    assert_ne!(second.refresh_token, first.refresh_token);
    let after = agent_record(&server, &first.agent_id, FINANCE).unwrap();
    assert!(after.expires_at.unwrap().millis() >= before.expires_at.unwrap().millis());
    assert!(after.key_history.is_empty());

    // A refresh with a new key: the record takes it, the old one goes to the history.
    let third = agent
        .refresh(&second.refresh_token, Some(vector_key("rogue")), None)
        .await
        .unwrap();
    let after = agent_record(&server, &first.agent_id, FINANCE).unwrap();
    assert_eq!(
        after.public_key_fingerprint,
        vector_key("rogue").public_key().fingerprint()
    );
    assert_eq!(
        after.key_history[0].fingerprint,
        vector_key("agent-device").public_key().fingerprint()
    );
    agent.ping().await.unwrap();
    // The old key no longer speaks for the agent.
    let mut old = connect(
        &server,
        FINANCE,
        &first.agent_id,
        vector_key("agent-device"),
    )
    .await;
    let (message, _) = refused(old.ping().await);
    assert_eq!(message, " Signature verification failed");

    // A token that differs only in letter case is another token (the reference
    // compared them ignoring case).
    let flipped: String = third
        .refresh_token
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let (message, reason) = refused(agent.refresh(&flipped, None, None).await);
    assert_eq!(message, "Authentication failed");
    assert_eq!(reason.as_deref(), Some("unknown refresh token"));

    // Replaying a retired token is taken for theft: session gone, record revoked.
    let (message, reason) = refused(agent.refresh(&first.refresh_token, None, None).await);
    assert_eq!(message, "Authentication failed");
    assert_eq!(
        reason.as_deref(),
        Some("refresh token reused: the session is revoked")
    );
    let record = agent_record(&server, &first.agent_id, FINANCE).unwrap();
    assert_eq!(record.status, TrustStatus::Revoked);
    assert!(
        server
            .store
            .read(|snapshot| snapshot.agent_session(&first.agent_id))
            .unwrap()
            .is_none()
    );
    // Even the current token no longer works, nor does anything else.
    let (message, _) = refused(agent.refresh(&third.refresh_token, None, None).await);
    assert_eq!(
        message,
        "BTPS trust request is not allowed at this time. Contact receiver"
    );
    refused(agent.ping().await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_revokes_an_agent_and_its_next_request_is_refused() {
    let server = TestServer::start(TestOptions::default()).await;
    let (mut agent, session) = enroll(&server, FINANCE, "agent-device").await;
    agent.ping().await.unwrap();
    let response = operator(
        &server,
        AdminRequest::AgentRevoke {
            agent_id: session.agent_id.clone(),
            decided_by: "operator".to_owned(),
        },
    )
    .await
    .unwrap();
    assert!(matches!(response, AdminResponse::AgentRevoked { ref owner, .. } if owner == FINANCE));
    let (message, reason) = refused(agent.ping().await);
    assert_eq!(
        message,
        "BTPS trust request is not allowed at this time. Contact receiver"
    );
    assert_eq!(reason.as_deref(), Some("BTP_ERROR_TRUST_NOT_ALLOWED"));
    let (message, _) = refused(agent.refresh(&session.refresh_token, None, None).await);
    assert_eq!(
        message,
        "BTPS trust request is not allowed at this time. Contact receiver"
    );
    // Unknown agents and malformed ids are refused by the operation.
    for bad in ["btps_ag_00000000-0000-4000-8000-000000000000", "a$b.test"] {
        assert!(
            operator(
                &server,
                AdminRequest::AgentRevoke {
                    agent_id: bad.to_owned(),
                    decided_by: "operator".to_owned(),
                },
            )
            .await
            .is_err(),
            "{bad}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_expired_revoked_and_foreign_tokens_are_refused() {
    let server = TestServer::start(two_identities()).await;
    let enroll_with = |token: String, identity: &'static str| {
        let port = server.address.port();
        async move {
            Agent::enroll(
                "127.0.0.1",
                port,
                &options(),
                Identity::parse(identity).unwrap(),
                &token,
                vector_key("agent-device"),
                None,
            )
            .await
        }
    };
    // Used: single use.
    let token = issue_token(&server, FINANCE).await;
    enroll_with(token.clone(), FINANCE).await.unwrap();
    let (message, reason) = refused(enroll_with(token, FINANCE).await);
    assert_eq!(message, "Authentication failed");
    assert_eq!(reason.as_deref(), Some("unknown enrollment token"));

    // Expired.
    let response = operator(
        &server,
        AdminRequest::AgentTokenIssue {
            identity: FINANCE.to_owned(),
            ttl_ms: Some(1),
            issued_by: "test".to_owned(),
        },
    )
    .await
    .unwrap();
    let AdminResponse::AgentToken { token, .. } = response else {
        panic!("{response:?}")
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (_, reason) = refused(enroll_with(token, FINANCE).await);
    assert_eq!(reason.as_deref(), Some("enrollment token expired"));

    // Revoked by the operator before use.
    let token = issue_token(&server, FINANCE).await;
    let AdminResponse::AgentTokens { tokens } = operator(
        &server,
        AdminRequest::AgentTokenList {
            identity: Some(FINANCE.to_owned()),
        },
    )
    .await
    .unwrap() else {
        panic!()
    };
    assert!(
        tokens
            .iter()
            .all(|listed| !listed.to_string().contains(&token))
    );
    let live = tokens
        .iter()
        .find(|listed| listed["expired"] == false)
        .unwrap();
    operator(
        &server,
        AdminRequest::AgentTokenRevoke {
            token_id: live["tokenId"].as_str().unwrap().to_owned(),
        },
    )
    .await
    .unwrap();
    let (_, reason) = refused(enroll_with(token, FINANCE).await);
    assert_eq!(reason.as_deref(), Some("unknown enrollment token"));

    // A token of another identity: the reference accepts it, btps does not.
    let billing_token = issue_token(&server, BILLING).await;
    let (_, reason) = refused(enroll_with(billing_token.clone(), FINANCE).await);
    assert_eq!(reason.as_deref(), Some("unknown enrollment token"));
    // Nor the reference's other hole: `to` with its own token, document.identity another.
    let key = vector_key("agent-device");
    let finance_token = issue_token(&server, FINANCE).await;
    let (_, reason) = refused(
        auth_request(
            &server,
            FINANCE,
            auth_document(BILLING, &finance_token, &key),
            vector_key("agent-device"),
        )
        .await,
    );
    assert_eq!(
        reason.as_deref(),
        Some("document.identity is not the artifact's to")
    );
    // The billing token still enrolls billing's agent: nothing was spent.
    enroll_with(billing_token, BILLING).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_signature_is_refused_without_spending_the_token() {
    let server = TestServer::start(TestOptions::default()).await;
    let token = issue_token(&server, FINANCE).await;
    let device = vector_key("agent-device");
    // Signed with another key than the one presented (the reference's tampered
    // vector does the same).
    let (message, reason) = refused(
        auth_request(
            &server,
            FINANCE,
            auth_document(FINANCE, &token, &device),
            vector_key("rogue"),
        )
        .await,
    );
    assert_eq!(message, " Signature verification failed");
    assert_eq!(reason.as_deref(), Some("BTP_ERROR_SIG_MISMATCH"));
    // Neither spent the token.
    let mut agent = connect(&server, FINANCE, "temp", vector_key("agent-device")).await;
    let artifact = agent.artifact(
        AgentAction::AuthRequest,
        Some(Value::Object(auth_document(FINANCE, &token, &device))),
    );
    agent.request(&artifact).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_limited_per_address() {
    let server = TestServer::start(TestOptions::default()).await;
    let key = vector_key("agent-device");
    for attempt in 0..10 {
        let (message, _) = refused(
            auth_request(
                &server,
                FINANCE,
                auth_document(FINANCE, &format!("WRONG{attempt}"), &key),
                vector_key("agent-device"),
            )
            .await,
        );
        assert_eq!(message, "Authentication failed", "attempt {attempt}");
    }
    // The eleventh is not even looked at, a good token included.
    let token = issue_token(&server, FINANCE).await;
    let outcome = auth_request(&server, FINANCE, auth_document(FINANCE, &token, &key), key).await;
    match outcome {
        Err(AgentError::Refused { response, .. }) => {
            assert_eq!(response.code, 429.0);
            assert_eq!(response.message.as_deref(), Some("Too many requests"));
        }
        other => panic!("expected 429, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_one_identity_cannot_act_for_another() {
    let server = TestServer::start(two_identities()).await;
    let (agent, session) = enroll(&server, FINANCE, "agent-device").await;
    drop(agent);
    // The same agent id and key, addressing billing's inbox.
    let mut intruder = connect(
        &server,
        BILLING,
        &session.agent_id,
        vector_key("agent-device"),
    )
    .await;
    let outcome = intruder
        .fetch(btps::store::Mailbox::Inbox, &btps::agent::Query::new())
        .await;
    let (message, _) = refused(outcome);
    assert_eq!(message, " Signature verification failed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_sessions_and_agent_records_are_swept() {
    use btps::server::agent::{AgentSweeper, SweepReport};
    use btps::store::{Perspective, Storage, Timestamp, TrustPatch};
    let server = TestServer::start(TestOptions::default()).await;
    let storage: std::sync::Arc<dyn Storage> = std::sync::Arc::new(server.store.clone());
    let sweeper = AgentSweeper::new(
        std::time::Duration::from_secs(3600),
        std::time::Duration::from_secs(24 * 3600),
    );
    let (_, kept) = enroll(&server, FINANCE, "agent-device").await;
    let (_, old) = enroll(&server, FINANCE, "rogue").await;
    operator(
        &server,
        AdminRequest::AgentTokenIssue {
            identity: FINANCE.to_owned(),
            ttl_ms: Some(1),
            issued_by: "test".to_owned(),
        },
    )
    .await
    .unwrap();
    issue_token(&server, FINANCE).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // The old agent's session and record expired two days ago.
    let two_days_ago = Timestamp::from_millis(Timestamp::now().millis() - 2 * 86_400_000).unwrap();
    server
        .store
        .write(|batch| {
            let mut session = batch.agent_session(&old.agent_id)?.unwrap();
            session.refresh_expires_at = two_days_ago.clone();
            batch.put_agent_session(&session)
        })
        .unwrap();
    server
        .store
        .update_trust(
            Perspective::Inbound,
            &btps::identity::compute_trust_id(&old.agent_id, FINANCE),
            TrustPatch {
                expires_at: Some(Some(two_days_ago)),
                ..TrustPatch::default()
            },
        )
        .unwrap();
    let report = sweeper.sweep(&storage).await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            tokens: 1,
            sessions: 1,
            records: 1
        }
    );
    assert!(agent_record(&server, &old.agent_id, FINANCE).is_none());
    assert!(agent_record(&server, &kept.agent_id, FINANCE).is_some());
    // Nothing more to do.
    assert_eq!(
        sweeper.sweep(&storage).await.unwrap(),
        SweepReport::default()
    );
    server.stop().await;
}
