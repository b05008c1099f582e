//! Agents end to end (`spec/07-agents-auth.md`): enrollment with operator tokens,
//! refresh, every action, the bad cases, the reference's agent vectors, and the
//! `btps agent` commands — over real TLS on loopback with the redb file of a real
//! server.

mod auth;
mod cli;
mod encryption;
mod mailbox;
mod outbound;
mod trust;
mod vectors;

use btps::admin::operations::{AdminContext, AdminRequest, AdminResponse, execute};
use btps::agent::{Agent, Session};
use btps::client::ClientOptions;
use btps::crypto::PrivateKey;
use btps::identity::{Identity, compute_trust_id};
use btps::protocol::TransporterType;
use btps::store::{Perspective, TrustStatus};

use crate::util::server::{TestServer, artifact_with_id, config_for, invoice, trust_record};

/// The vectors' receiver, hosted by the test server.
pub(crate) const FINANCE: &str = "finance$client.test";
/// The vectors' sender of documents.
pub(crate) const BILLING: &str = "billing$vendor.test";

/// The operator's context on a running test server's database.
pub(crate) fn admin(server: &TestServer) -> AdminContext {
    AdminContext::for_redb(server.store.clone(), config_for(&server.data_dir))
}

/// Runs an operator request on the server's database, as the admin socket does
/// (on the blocking pool).
pub(crate) async fn operator(
    server: &TestServer,
    request: AdminRequest,
) -> Result<AdminResponse, btps::admin::operations::AdminError> {
    let context = admin(server);
    tokio::task::spawn_blocking(move || execute(&context, request))
        .await
        .unwrap()
}

/// A one-time enrollment token for `identity`, as `btps agent token issue` makes it.
pub(crate) async fn issue_token(server: &TestServer, identity: &str) -> String {
    let response = operator(
        server,
        AdminRequest::AgentTokenIssue {
            identity: identity.to_owned(),
            ttl_ms: None,
            issued_by: "test".to_owned(),
        },
    )
    .await
    .unwrap();
    let AdminResponse::AgentToken { token, .. } = response else {
        panic!("unexpected answer {response:?}");
    };
    token
}

/// Client options for the test server's self-signed certificate.
pub(crate) fn options() -> ClientOptions {
    ClientOptions {
        insecure: true,
        timeout: std::time::Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

/// Enrolls an agent of `identity` with the vector key `key` and a fresh token.
pub(crate) async fn enroll(server: &TestServer, identity: &str, key: &str) -> (Agent, Session) {
    let token = issue_token(server, identity).await;
    Agent::enroll(
        "127.0.0.1",
        server.address.port(),
        &options(),
        Identity::parse(identity).unwrap(),
        &token,
        crate::util::server::vector_key(key),
        None,
    )
    .await
    .unwrap()
}

/// Connects as an enrolled agent.
pub(crate) async fn connect(
    server: &TestServer,
    identity: &str,
    agent_id: &str,
    key: PrivateKey,
) -> Agent {
    Agent::connect(
        "127.0.0.1",
        server.address.port(),
        &options(),
        Identity::parse(identity).unwrap(),
        agent_id,
        key,
    )
    .await
    .unwrap()
}

/// Makes `sender` (signing with vector key `key`) trusted by the hosted `receiver`.
pub(crate) fn trust(server: &TestServer, sender: &str, key: &str, receiver: &str) {
    server
        .store
        .create_trust(
            Perspective::Inbound,
            trust_record(sender, receiver, TrustStatus::Accepted, Some(key)),
            None,
        )
        .unwrap();
}

/// Delivers a BTPS_DOC from BILLING to FINANCE with this id and title over TLS.
pub(crate) async fn deliver(server: &TestServer, id: &str, title: &str) {
    let document = invoice(id).replace(&format!("Invoice {id}"), title);
    let line = artifact_with_id(
        TransporterType::Document,
        BILLING,
        "billing",
        FINANCE,
        &document,
        Some(id),
    );
    let response = server.send(&line).await;
    assert!(response.ok, "{:?}", response.raw);
}

/// The agent record of `agent_id` for `owner`.
pub(crate) fn agent_record(
    server: &TestServer,
    agent_id: &str,
    owner: &str,
) -> Option<btps::store::TrustRecord> {
    server
        .store
        .trust(Perspective::Inbound, &compute_trust_id(agent_id, owner))
        .unwrap()
}
