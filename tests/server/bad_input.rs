//! Bad input over the wire: the server answers with the spec's error or closes that
//! connection, keeps serving the others, and stored data stays as it was.

use std::time::Duration;

use btps::client::{BtpsClient, ClientOptions};
use btps::protocol::TransporterType;
use btps::store::{Mailbox, PageRequest, Perspective};

use crate::util::server::{TRUST_REQUEST, TestOptions, TestServer, artifact};

const PING: &str =
    r#"{"version":"1.0.0","id":"ping","issuedAt":"2025-01-15T10:30:00.000Z","action":"PING"}"#;

/// Everything the database holds that a bad line could have touched.
fn state(server: &TestServer) -> (usize, u64) {
    server
        .store
        .read(|snapshot| {
            let inbox = snapshot
                .list_mailbox(
                    "finance$client.test",
                    Mailbox::Inbox,
                    &PageRequest::first(1000),
                    true,
                )?
                .items
                .len();
            Ok((inbox, snapshot.trust_count(Perspective::Inbound)?))
        })
        .unwrap()
}

async fn still_serving(server: &TestServer) {
    let response = server.send(PING).await;
    assert!(response.ok && response.message.as_deref() == Some("pong"));
}

async fn seeded(options: TestOptions) -> TestServer {
    let server = TestServer::start(options).await;
    let request = artifact(
        TransporterType::TrustRequest,
        "billing$vendor.test",
        "billing",
        "finance$client.test",
        TRUST_REQUEST,
    );
    assert!(server.send(&request).await.ok);
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_line_is_refused_and_the_connection_closed() {
    let server = seeded(TestOptions {
        max_line_bytes: 4096,
        ..TestOptions::default()
    })
    .await;
    let before = state(&server);
    let mut client = server.client().await;
    let mut line = vec![b'a'; 10_000];
    line.push(b'\n');
    client.send_raw(&line).await.unwrap();
    let response =
        btps::protocol::response::parse_response(&client.read_line().await.unwrap().unwrap())
            .unwrap();
    assert_eq!(
        response.message.as_deref(),
        Some("BTPS artifact validation failed")
    );
    assert_eq!(response.reason.as_deref(), Some("line too long"));
    assert_eq!(response.req_id, None);
    assert!(
        client
            .read_line()
            .await
            .map(|line| line.is_none())
            .unwrap_or(true),
        "connection closed"
    );
    still_serving(&server).await;
    assert_eq!(state(&server), before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_invalid_json_and_the_connection_stays_open() {
    let server = seeded(TestOptions::default()).await;
    let before = state(&server);
    let mut client = server.client().await;
    client.send_raw(b"\xff\xfe{}\n").await.unwrap();
    let response =
        btps::protocol::response::parse_response(&client.read_line().await.unwrap().unwrap())
            .unwrap();
    assert_eq!(response.message.as_deref(), Some("Invalid JSON format"));
    // Invalid bytes inside a string become U+FFFD: valid JSON, not a valid artifact.
    client.send_raw(b"{\"action\":\"PI\xffNG\",\"id\":\"x\",\"version\":\"1\",\"issuedAt\":\"2025-01-15T10:30:00Z\"}\n").await.unwrap();
    let response =
        btps::protocol::response::parse_response(&client.read_line().await.unwrap().unwrap())
            .unwrap();
    assert_eq!(
        response.message.as_deref(),
        Some("BTPS artifact validation failed")
    );
    assert!(
        client.request(PING).await.unwrap().ok,
        "same connection still answers"
    );
    assert_eq!(state(&server), before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_line_then_silence_times_out() {
    let server = seeded(TestOptions {
        idle_timeout: Duration::from_millis(700),
        ..TestOptions::default()
    })
    .await;
    let before = state(&server);
    let mut client = server.client().await;
    // A full request first, so the timeout answer carries its id.
    assert!(client.request(PING).await.unwrap().ok);
    client
        .send_raw(br#"{"version":"1.0.0","id":"half"#)
        .await
        .unwrap();
    let line = client.read_line().await.unwrap().expect("timeout answer");
    let response = btps::protocol::response::parse_response(&line).unwrap();
    assert_eq!(
        response.message.as_deref(),
        Some("Socket timeout. Connection closed")
    );
    assert_eq!(response.req_id.as_deref(), Some("ping"));
    assert!(
        client
            .read_line()
            .await
            .map(|line| line.is_none())
            .unwrap_or(true),
        "connection closed"
    );
    still_serving(&server).await;
    assert_eq!(state(&server), before);
    server.stop().await;
}

/// The idle limit counts silence, not the connection's age: a connection that keeps
/// talking for several limits stays open, and times out one limit after it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_silence_times_a_connection_out() {
    let limit = Duration::from_millis(400);
    let server = seeded(TestOptions {
        idle_timeout: limit,
        ..TestOptions::default()
    })
    .await;
    let mut client = server.client().await;
    let started = std::time::Instant::now();
    let mut last_answer = started;
    while started.elapsed() < limit * 4 {
        assert!(
            client.request(PING).await.unwrap().ok,
            "an active connection is answered"
        );
        last_answer = std::time::Instant::now();
        tokio::time::sleep(limit / 4).await;
    }
    let line = client.read_line().await.unwrap().expect("timeout answer");
    let waited = last_answer.elapsed();
    let response = btps::protocol::response::parse_response(&line).unwrap();
    assert_eq!(
        response.message.as_deref(),
        Some("Socket timeout. Connection closed")
    );
    assert!(
        waited >= limit - Duration::from_millis(50),
        "timed out {waited:?} after the last answer, before the limit of {limit:?}"
    );
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_line_harms_nobody() {
    let server = seeded(TestOptions::default()).await;
    let before = state(&server);
    for _ in 0..20 {
        let mut client = server.client().await;
        let request = artifact(
            TransporterType::TrustRequest,
            "admin$vendor.test",
            "admin-vendor",
            "finance$client.test",
            TRUST_REQUEST,
        );
        client
            .send_raw(&request.as_bytes()[..request.len() / 2])
            .await
            .unwrap();
        drop(client);
    }
    still_serving(&server).await;
    assert_eq!(state(&server), before, "half a line is never processed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_stop_the_server() {
    let server = seeded(TestOptions::default()).await;
    let mut idle = Vec::with_capacity(1000);
    for _ in 0..1000 {
        idle.push(server.client().await);
    }
    still_serving(&server).await;
    // Every idle connection is still usable.
    for client in idle.iter_mut().step_by(100) {
        assert!(client.request(PING).await.unwrap().ok);
    }
    drop(idle);
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_lines_are_answered_in_order_with_their_ids() {
    let server = seeded(TestOptions::default()).await;
    let mut client = server.client().await;
    let mut burst = String::new();
    for index in 0..10 {
        burst.push_str(&PING.replace("\"ping\"", &format!("\"p{index}\"")));
        burst.push('\n');
    }
    burst.push('\n'); // a blank line gets no answer
    client.send_raw(burst.as_bytes()).await.unwrap();
    for index in 0..10 {
        let response =
            btps::protocol::response::parse_response(&client.read_line().await.unwrap().unwrap())
                .unwrap();
        assert_eq!(response.req_id, Some(format!("p{index}")));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_new_peers_back() {
    let server = seeded(TestOptions {
        max_connections: 2,
        ..TestOptions::default()
    })
    .await;
    let first = server.client().await;
    let _second = server.client().await;
    let quick = ClientOptions {
        insecure: true,
        timeout: Duration::from_millis(400),
        ..ClientOptions::default()
    };
    let third = BtpsClient::connect("127.0.0.1", server.address.port(), &quick).await;
    assert!(
        third.is_err(),
        "a third peer is not served while two are connected"
    );
    drop(first);
    still_serving(&server).await;
    server.stop().await;
}
