//! The trust handshake both ways and a document, between two appliances.

use std::time::Duration;

use btps::identity::compute_trust_id;
use serde_json::Value;

use super::{CLIENT, VENDOR, World, eventually};

fn entries(value: &Value) -> Vec<Value> {
    value.as_array().expect("a JSON array").clone()
}

#[test]
fn request_accept_and_an_invoice_travel_between_two_appliances() {
    let world = World::new();
    let (mut vendor, mut client) = world.pair();
    vendor.set_env("BTPS_HTTP_LISTEN", "127.0.0.1:0");
    vendor.start();
    client.start();

    // The vendor asks the client for trust.
    let requested = vendor.json(&[
        "trust",
        "request",
        VENDOR,
        CLIENT,
        "--name",
        "Vendor Ltd",
        "--email",
        "billing@vendor.test",
        "--reason",
        "invoices",
        "--phone",
        "+1 555 0100",
    ]);
    assert_eq!(requested["record"]["status"], "pending");
    assert_eq!(requested["record"]["senderId"], VENDOR);
    assert_eq!(requested["entry"]["type"], "TRUST_REQ");
    assert!(requested["entry"]["id"].as_u64().is_some());
    assert!(requested["entry"]["state"].is_string());

    // It arrives: a pending record on the client, the request in its inbox.
    let id = compute_trust_id(VENDOR, CLIENT);
    let pending = eventually(
        Duration::from_secs(20),
        "the request reaches the client",
        || {
            let output = client.btps(&["trust", "show", VENDOR, CLIENT, "--json"]);
            output
                .status
                .success()
                .then(|| serde_json::from_slice::<Value>(&output.stdout).unwrap())
        },
    );
    assert_eq!(pending["inbound"]["status"], "pending");
    assert_eq!(pending["inbound"]["id"], id);
    let sent = eventually(
        Duration::from_secs(10),
        "the request is in the vendor's sentbox",
        || {
            let listed = entries(&vendor.json(&["sentbox", "list", VENDOR]));
            (!listed.is_empty()).then_some(listed)
        },
    );
    assert_eq!(sent[0]["type"], "TRUST_REQ");
    assert_eq!(sent[0]["state"], "delivered");
    assert!(sent[0]["responseId"].is_string(), "{sent:?}");
    assert!(entries(&vendor.json(&["outbox", "list"])).is_empty());

    // The client accepts; the answer travels back and updates the vendor's record.
    let accepted = client.json(&[
        "trust",
        "accept",
        VENDOR,
        CLIENT,
        "--expires-at",
        "2099-01-01T00:00:00Z",
    ]);
    assert_eq!(accepted["status"], "accepted");
    let notified = &accepted["notification"]["entry"];
    assert_eq!(notified["type"], "TRUST_RES", "{accepted}");
    let outbound = eventually(
        Duration::from_secs(20),
        "the answer reaches the vendor",
        || {
            let shown = vendor.json(&["trust", "show", VENDOR, CLIENT]);
            (shown["outbound"]["status"] == "accepted").then_some(shown)
        },
    );
    assert_eq!(outbound["outbound"]["decidedBy"], "operator");
    assert_eq!(outbound["outbound"]["expiresAt"], "2099-01-01T00:00:00Z");

    // Now an invoice: queued on the vendor, delivered, verified by the client.
    let invoice = super::invoice_document("Invoice 42");
    let document = world.dir.join("invoice.json");
    std::fs::write(&document, invoice).unwrap();
    let queued = vendor.json(&[
        "send",
        "--from",
        VENDOR,
        "--to",
        CLIENT,
        "--type",
        "BTPS_DOC",
        "--document",
        document.to_str().unwrap(),
    ]);
    assert!(queued["id"].as_u64().is_some(), "{queued}");
    assert!(queued["state"].is_string(), "{queued}");
    let artifact_id = queued["artifactId"].as_str().unwrap().to_owned();
    let delivered = eventually(Duration::from_secs(20), "the invoice is delivered", || {
        let listed = entries(&vendor.json(&["sentbox", "list", VENDOR]));
        listed
            .into_iter()
            .find(|entry| entry["artifactId"] == artifact_id.as_str())
    });
    assert_eq!(delivered["state"], "delivered");
    let stored = vendor.json(&["outbox", "show", &delivered["id"].to_string()]);
    let sent_bytes = stored["artifact"].as_str().unwrap().to_owned();

    let inbox = client.json(&["inbox", "list", CLIENT]);
    let received = inbox["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["artifactId"] == artifact_id.as_str())
        .cloned()
        .expect("the invoice is in the client's inbox");
    assert_eq!(received["type"], "BTPS_DOC");
    let shown = client.json(&["inbox", "show", &received["entryId"].to_string()]);
    // The bytes the vendor queued are the bytes the client stored.
    assert_eq!(shown["artifact"].as_str().unwrap(), sent_bytes);
    let artifact: Value = serde_json::from_str(&sent_bytes).unwrap();
    // Signed through the vendor domain's delegator, without attestation.
    assert_eq!(artifact["delegation"]["signedBy"], "admin$vendor.test");
    assert!(artifact["delegation"].get("attestation").is_none());

    // And the client's own signature check, as a receiving server makes it, from DNS.
    let path = world.dir.join("received.json");
    std::fs::write(&path, &sent_bytes).unwrap();
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(["verify", path.to_str().unwrap(), "--dns-server"])
        .arg(world.dns.local_addr().to_string())
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "btps verify: {}\n{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );

    // The id of the client's answer is recorded.
    assert!(!stored["responseId"].as_str().unwrap().is_empty());

    // Encrypted to the client's key from DNS: only its owner reads the document.
    let encrypted = vendor.json(&[
        "send",
        "--from",
        VENDOR,
        "--to",
        CLIENT,
        "--type",
        "BTPS_DOC",
        "--document",
        document.to_str().unwrap(),
        "--encrypt",
    ]);
    let encrypted_id = encrypted["artifactId"].as_str().unwrap().to_owned();
    let received = eventually(
        Duration::from_secs(20),
        "the encrypted invoice arrives",
        || {
            let inbox = client.json(&["inbox", "list", CLIENT]);
            inbox["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|entry| entry["artifactId"] == encrypted_id.as_str())
                .cloned()
        },
    );
    let shown = client.json(&["inbox", "show", &received["entryId"].to_string()]);
    let text = shown["artifact"].as_str().unwrap();
    let artifact: Value = serde_json::from_str(text).unwrap();
    assert_eq!(artifact["encryption"]["algorithm"], "aes-256-gcm");
    assert!(artifact["document"].is_string(), "ciphertext");
    let path = world.dir.join("encrypted.json");
    std::fs::write(&path, text).unwrap();
    let key = world.dir.join("finance.key.pem");
    std::fs::write(&key, crate::util::vector_text("keys/finance.key.pem")).unwrap();
    let decrypted = std::process::Command::new(env!("CARGO_BIN_EXE_btps"))
        .args([
            "verify",
            path.to_str().unwrap(),
            "--decrypt-key",
            key.to_str().unwrap(),
            "--dns-server",
        ])
        .arg(world.dns.local_addr().to_string())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&decrypted.stdout);
    assert!(
        decrypted.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&decrypted.stderr)
    );
    assert!(out.contains("Invoice 42"), "{out}");

    // The vendor's metrics saw three deliveries and an empty outbox.
    let samples = vendor.metrics();
    let metric = |name: &str, labels: &[(&str, &str)]| crate::http::value(&samples, name, labels);
    assert_eq!(
        metric("btps_delivery_attempts_total", &[("class", "delivered")]),
        3.0
    );
    assert_eq!(
        metric("btps_outbox_events_total", &[("event", "delivered")]),
        3.0
    );
    assert_eq!(
        metric("btps_outbox_events_total", &[("event", "queued")]),
        3.0
    );
    assert_eq!(metric("btps_outbox_entries", &[]), 0.0);
    assert_eq!(metric("btps_outbox_in_flight", &[]), 0.0);
    assert_eq!(metric("btps_outbox_oldest_age_seconds", &[]), 0.0);

    vendor.stop();
    client.stop();
}

#[test]
fn a_decision_without_notify_sends_nothing_and_one_on_a_settled_record_says_why() {
    let world = World::new();
    let (mut vendor, mut client) = world.pair();
    vendor.start();
    client.start();
    vendor.json(&[
        "trust",
        "request",
        VENDOR,
        CLIENT,
        "--name",
        "V",
        "--email",
        "v@vendor.test",
        "--reason",
        "r",
        "--phone",
        "1",
    ]);
    eventually(Duration::from_secs(20), "the request arrives", || {
        client
            .btps(&["trust", "show", VENDOR, CLIENT])
            .status
            .success()
            .then_some(())
    });
    let rejected = client.json(&["trust", "reject", VENDOR, CLIENT, "--no-notify"]);
    assert_eq!(rejected["status"], "rejected");
    assert!(rejected["notification"]["entry"].is_null());
    assert!(entries(&client.json(&["outbox", "list"])).is_empty());
    // No longer pending: a requester would refuse an answer now.
    let blocked = client.json(&["trust", "block", VENDOR, CLIENT]);
    assert!(blocked["notification"]["entry"].is_null());
    let note = blocked["notification"]["note"].as_str().unwrap();
    assert!(note.contains("pending"), "{note}");
    // The vendor's record stays pending: it never heard back.
    let shown = vendor.json(&["trust", "show", VENDOR, CLIENT]);
    assert_eq!(shown["outbound"]["status"], "pending");
    vendor.stop();
    client.stop();
}

#[test]
fn both_parties_on_one_appliance_are_served_in_process() {
    let world = World::new();
    let (mut vendor, _unused) = world.pair();
    vendor.also_host(&world, "client.test", CLIENT, "finance");
    vendor.start();
    let one = &vendor;

    one.json(&[
        "trust",
        "request",
        VENDOR,
        CLIENT,
        "--name",
        "V",
        "--email",
        "v@vendor.test",
        "--reason",
        "r",
        "--phone",
        "1",
    ]);
    let pending = eventually(
        Duration::from_secs(20),
        "the request is delivered in-process",
        || {
            let shown = one.json(&["trust", "show", VENDOR, CLIENT]);
            (shown["inbound"]["status"] == "pending").then_some(shown)
        },
    );
    // Both perspectives of one relationship live side by side (05-trust.md §6.6).
    assert_eq!(pending["outbound"]["status"], "pending");
    let accepted = one.json(&["trust", "accept", VENDOR, CLIENT]);
    assert_eq!(accepted["notification"]["entry"]["type"], "TRUST_RES");
    eventually(
        Duration::from_secs(20),
        "the answer is applied to the requesting side",
        || {
            let shown = one.json(&["trust", "show", VENDOR, CLIENT]);
            (shown["outbound"]["status"] == "accepted").then_some(())
        },
    );
    let mut admin = one.admin();
    let queued = one.queue_invoice(&mut admin, VENDOR, CLIENT, "Local invoice");
    let artifact = queued["artifactId"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(20),
        "the invoice is in the client's inbox",
        || {
            let inbox = one.json(&["inbox", "list", CLIENT]);
            inbox["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|entry| entry["artifactId"] == artifact.as_str())
                .then_some(())
        },
    );
    let sent = entries(&one.json(&["sentbox", "list", VENDOR]));
    let types: Vec<&str> = sent
        .iter()
        .map(|entry| entry["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["BTPS_DOC", "TRUST_REQ"], "newest first");
    let client_sent = entries(&one.json(&["sentbox", "list", CLIENT]));
    assert_eq!(client_sent.len(), 1);
    assert_eq!(client_sent[0]["type"], "TRUST_RES");
    assert!(entries(&one.json(&["outbox", "list"])).is_empty());
    vendor.stop();
}
