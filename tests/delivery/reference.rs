//! Delivery to a receiver that speaks the reference's dialect: every refusal is code
//! 500, an artifact it cannot validate is answered without `reqId`, and temporary
//! trouble is "Unknown error" or 429 "Too many requests". The outcome classes of
//! `08-delivery.md` §5.4 decide what the sender does.
//!
//! The receiver here is a TLS server of the test's own (a CA-issued certificate,
//! its host record in the DNS responder) that answers by the invoice's title.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use btps::config::TlsVersion;
use btps::server::tls::server_config;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{VENDOR, World, eventually, free_port};

const PARTNER: &str = "pay$ref.test";

/// Starts the reference-dialect receiver on `port` in a thread of its own.
fn reference_receiver(world: &World, port: u16) -> Arc<Mutex<HashMap<String, u32>>> {
    let (certificate, key) = world.ca.leaf();
    let dir = world.dir.join("ref");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), certificate).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let config = server_config(
        &dir.join("cert.pem"),
        &dir.join("key.pem"),
        TlsVersion::Tls12,
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let counts = Arc::clone(&seen);
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let counts = Arc::clone(&counts);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (read, mut write) = tokio::io::split(tls);
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let artifact: Value = serde_json::from_str(&line).unwrap();
                        let id = artifact["id"].as_str().unwrap().to_owned();
                        let title = artifact["document"]["title"].as_str().unwrap().to_owned();
                        let times = {
                            let mut counts = counts.lock().unwrap();
                            let seen = counts.entry(title.clone()).or_insert(0);
                            *seen += 1;
                            *seen
                        };
                        let answer = answer(&title, times, &id);
                        let mut bytes = answer.to_string().into_bytes();
                        bytes.push(b'\n');
                        if write.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    seen
}

/// The reference's answer to the `times`-th delivery of the invoice titled `title`.
fn answer(title: &str, times: u32, id: &str) -> Value {
    let error = |code: u16, message: &str, req_id: Option<&str>| {
        let mut value = json!({
            "version": "1.0.0",
            "status": {"ok": false, "code": code, "message": message},
            "id": format!("err-{id}-{times}"),
            "issuedAt": "2025-01-01T00:00:00.000Z",
            "type": "btps_error",
        });
        if let Some(req_id) = req_id {
            value["reqId"] = json!(req_id);
        }
        value
    };
    let success = json!({
        "version": "1.0.0",
        "status": {"ok": true, "code": 200, "message": "Success"},
        "id": format!("ok-{id}"),
        "issuedAt": "2025-01-01T00:00:00.000Z",
        "type": "btps_response",
        "reqId": id,
    });
    match (title, times) {
        ("accept", _) | ("flaky" | "busy", 2..) => success,
        ("refuse", _) => error(
            500,
            "BTPS trust request is not allowed at this time. Contact receiver",
            Some(id),
        ),
        ("invalid", _) => error(500, "BTPS artifact validation failed", None),
        ("flaky", _) => error(500, "Unknown error", Some(id)),
        ("busy", _) => error(429, "Too many requests", Some(id)),
        _ => error(500, "unexpected title", Some(id)),
    }
}

#[test]
fn the_reference_s_answers_are_classified_as_the_spec_says() {
    let world = World::new();
    let (mut vendor, _client) = world.pair();
    let port = free_port();
    let seen = reference_receiver(&world, port);
    world
        .dns
        .publish_host("ref.test", &format!("127.0.0.1:{port}"), "btps1");
    vendor.start();
    let mut admin = vendor.admin();
    for title in ["accept", "refuse", "invalid", "flaky", "busy"] {
        vendor.queue_invoice(&mut admin, VENDOR, PARTNER, title);
    }
    let sent = eventually(Duration::from_secs(30), "three delivered", || {
        let sent = vendor.json(&["sentbox", "list", VENDOR]);
        let sent = sent.as_array().unwrap().clone();
        (sent.len() == 3).then_some(sent)
    });
    let mut by_title: HashMap<String, Value> = HashMap::new();
    for entry in sent {
        by_title.insert(entry["title"].as_str().unwrap().to_owned(), entry);
    }
    assert_eq!(by_title["accept"]["attempts"], 1);
    // Transient: "Unknown error" (500) and 429 were retried, then delivered.
    assert_eq!(by_title["flaky"]["attempts"], 2);
    assert_eq!(by_title["busy"]["attempts"], 2);
    assert!(
        by_title["flaky"]["responseId"]
            .as_str()
            .unwrap()
            .starts_with("ok-")
    );
    // Permanent: the trust refusal (500 with reqId) and the validation failure
    // (500 without reqId) each leave one notice, after one attempt.
    let notices = eventually(Duration::from_secs(10), "two notices", || {
        let listed = vendor.json(&["inbox", "list", VENDOR]);
        let entries = listed["entries"].as_array().unwrap().clone();
        (entries.len() == 2).then_some(entries)
    });
    let mut reasons = Vec::new();
    for notice in notices {
        let shown = vendor.json(&["inbox", "show", &notice["entryId"].to_string()]);
        let artifact: Value = serde_json::from_str(shown["artifact"].as_str().unwrap()).unwrap();
        let document = &artifact["document"];
        assert_eq!(document["retryCount"], 0);
        reasons.push((
            document["document"]["document"]["title"]
                .as_str()
                .unwrap()
                .to_owned(),
            document["errorLog"]["code"].as_str().unwrap().to_owned(),
        ));
    }
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("invalid".to_owned(), "BTP_ERROR_VALIDATION".to_owned()),
            (
                "refuse".to_owned(),
                "BTP_ERROR_TRUST_NOT_ALLOWED".to_owned()
            ),
        ]
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen["refuse"], 1, "a refusal is not retried");
    assert_eq!(seen["invalid"], 1);
    assert_eq!(seen["accept"], 1);
    vendor.stop();
}
