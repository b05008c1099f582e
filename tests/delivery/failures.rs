//! Delivery when things go wrong: the receiver down and back, a permanent
//! refusal, and the sender killed with a full queue.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use btps::store::{Perspective, PrivacyType, RedbOptions, RedbStore, TrustStatus};
use serde_json::Value;

use super::{Appliance, CLIENT, VENDOR, World, eventually};
use crate::store::new_trust;

/// The client's receiving-side record of the vendor, accepted (before it starts).
fn trusted(client: &Appliance) {
    let store = RedbStore::open_dir(&client.data, &RedbOptions::default()).unwrap();
    let mut record = new_trust(VENDOR, CLIENT, TrustStatus::Accepted, None);
    // Plain invoices are welcome.
    record.privacy_type = PrivacyType::Mixed;
    store
        .create_trust(Perspective::Inbound, record, None)
        .unwrap();
}

fn list(appliance: &Appliance, args: &[&str]) -> Vec<Value> {
    appliance.json(args).as_array().unwrap().clone()
}

fn inbox_ids(appliance: &Appliance, identity: &str) -> Vec<String> {
    let listed = appliance.json(&["inbox", "list", identity, "--limit", "1000"]);
    listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["artifactId"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_receiver_that_is_down_gets_the_document_once_it_is_back() {
    let world = World::new();
    let (mut vendor, mut client) = world.pair();
    trusted(&client);
    vendor.start();
    let mut admin = vendor.admin();
    let queued = vendor.queue_invoice(&mut admin, VENDOR, CLIENT, "While you were out");
    let artifact = queued["artifactId"].as_str().unwrap().to_owned();

    // Attempts fail for now (nothing listens); the entry stays queued.
    let waiting = eventually(Duration::from_secs(20), "a failed attempt", || {
        let listed = list(&vendor, &["outbox", "list", VENDOR]);
        listed
            .into_iter()
            .find(|entry| entry["attempts"].as_u64().unwrap_or(0) >= 2)
    });
    assert_eq!(waiting["artifactId"], artifact.as_str());
    assert!(
        ["queued", "retry_wait", "in_flight"].contains(&waiting["state"].as_str().unwrap()),
        "{waiting}"
    );
    assert!(waiting["lastError"].is_string(), "{waiting}");
    assert!(list(&vendor, &["sentbox", "list", VENDOR]).is_empty());

    // Back up: delivered at the next attempt.
    client.start();
    let back = Instant::now();
    eventually(
        Duration::from_secs(20),
        "delivered after the restart",
        || {
            let sent = list(&vendor, &["sentbox", "list", VENDOR]);
            (sent.len() == 1).then_some(())
        },
    );
    println!(
        "recovered {} ms after the receiver came back",
        back.elapsed().as_millis()
    );
    assert_eq!(inbox_ids(&client, CLIENT), [artifact]);
    assert!(list(&vendor, &["outbox", "list"]).is_empty());
    vendor.stop();
    client.stop();
}

#[test]
fn a_permanent_refusal_leaves_one_failure_notice_and_nothing_queued() {
    let world = World::new();
    let (mut vendor, mut client) = world.pair();
    vendor.start();
    client.start();
    let mut admin = vendor.admin();
    // No trust: the client refuses the document; an unknown receiver likewise.
    let untrusted = vendor.queue_invoice(&mut admin, VENDOR, CLIENT, "Unasked");
    let unknown = vendor.queue_invoice(&mut admin, VENDOR, "nobody$client.test", "Lost");
    let notices = eventually(Duration::from_secs(20), "two failure notices", || {
        let listed = vendor.json(&["inbox", "list", VENDOR]);
        let entries = listed["entries"].as_array().unwrap().clone();
        (entries.len() >= 2).then_some(entries)
    });
    assert_eq!(notices.len(), 2, "one notice per undelivered artifact");
    let mut undelivered = BTreeSet::new();
    for notice in &notices {
        assert_eq!(notice["type"], "BTP_DELIVERY_FAILURE");
        let shown = vendor.json(&["inbox", "show", &notice["entryId"].to_string()]);
        let artifact: Value = serde_json::from_str(shown["artifact"].as_str().unwrap()).unwrap();
        assert_eq!(artifact["to"], VENDOR);
        assert_eq!(artifact["from"], "admin$vendor.test");
        let document = &artifact["document"];
        assert_eq!(document["errorLog"]["meta"]["final"], true);
        assert_eq!(document["retryCount"], 0, "a refusal is not retried");
        assert!(
            document["reason"]
                .as_str()
                .is_some_and(|reason| !reason.is_empty())
        );
        assert_eq!(
            document["document"]["id"], document["transportArtifactId"],
            "the undelivered artifact rides along"
        );
        undelivered.insert(document["transportArtifactId"].as_str().unwrap().to_owned());
    }
    let expected: BTreeSet<String> = [&untrusted, &unknown]
        .iter()
        .map(|entry| entry["artifactId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(undelivered, expected);
    assert!(list(&vendor, &["outbox", "list"]).is_empty());
    assert!(list(&vendor, &["sentbox", "list", VENDOR]).is_empty());
    assert!(inbox_ids(&client, CLIENT).is_empty());
    vendor.stop();
    client.stop();
}

#[test]
fn two_hundred_queued_entries_survive_a_kill_and_are_delivered_once_each() {
    let world = World::new();
    let (mut vendor, mut client) = world.pair();
    trusted(&client);
    vendor.start();
    let mut admin = vendor.admin();
    let mut queued = BTreeSet::new();
    for serial in 0..200 {
        let entry = vendor.queue_invoice(&mut admin, VENDOR, CLIENT, &format!("Invoice {serial}"));
        queued.insert(entry["artifactId"].as_str().unwrap().to_owned());
    }
    drop(admin);
    // The receiver is down: the head of the queue is being retried.
    eventually(Duration::from_secs(20), "an attempt on the queue", || {
        let listed = list(&vendor, &["outbox", "list", "--limit", "1"]);
        (listed[0]["attempts"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    vendor.kill();

    client.start();
    vendor.start();
    eventually(Duration::from_secs(60), "all 200 delivered", || {
        let sent = vendor.json(&["sentbox", "list", VENDOR, "--limit", "1000"]);
        (sent.as_array().unwrap().len() == 200).then_some(())
    });
    let received = inbox_ids(&client, CLIENT);
    assert_eq!(received.len(), 200, "each stored once");
    let distinct: BTreeSet<String> = received.into_iter().collect();
    assert_eq!(distinct, queued);
    assert!(list(&vendor, &["outbox", "list"]).is_empty());
    vendor.stop();
    client.stop();
}

#[test]
fn without_the_delegator_key_in_dns_nothing_is_signed_and_the_operator_is_told_why() {
    let world = World::new();
    let (mut vendor, _client) = world.pair();
    let delegator = btps::identity::Identity::parse("admin$vendor.test").unwrap();
    world.dns.remove(&delegator.key_record_name("btps1"));
    vendor.start();
    let document = world.dir.join("invoice.json");
    std::fs::write(&document, super::invoice_document("Unsigned")).unwrap();
    let output = vendor.btps(&[
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
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the delegator admin$vendor.test cannot sign for vendor.test")
            && stderr.contains("btps1._btps.identity.admin.vendor.test"),
        "{stderr}"
    );
    assert!(list(&vendor, &["outbox", "list"]).is_empty());
    vendor.stop();
}

#[test]
fn an_operator_retries_one_entry_now_and_cancels_another() {
    let world = World::new();
    let (mut vendor, mut client) = world.pair();
    trusted(&client);
    vendor.set_env("BTPS_DELIVERY_RETRY_SCHEDULE_MS", "600000");
    vendor.start();
    let mut admin = vendor.admin();
    let first = vendor.queue_invoice(&mut admin, VENDOR, CLIENT, "Retried");
    let second = vendor.queue_invoice(&mut admin, VENDOR, CLIENT, "Cancelled");
    // The first fails once and waits ten minutes; the second waits behind it.
    let id = first["id"].to_string();
    let waiting = eventually(Duration::from_secs(20), "a failed attempt", || {
        let shown = vendor.json(&["outbox", "show", &id]);
        (shown["state"] == "retry_wait").then_some(shown)
    });
    assert_eq!(waiting["attempts"], 1);
    let cancelled = vendor.json(&["outbox", "cancel", &second["id"].to_string()]);
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["mailbox"], "trash");
    let again = vendor.btps(&["outbox", "cancel", &second["id"].to_string()]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a cancelled entry is not in the outbox"
    );

    client.start();
    let retried = vendor.json(&["outbox", "retry", &id]);
    assert_eq!(retried["attempts"], 1, "attempts unchanged");
    eventually(
        Duration::from_secs(20),
        "delivered right after the retry",
        || {
            let sent = list(&vendor, &["sentbox", "list", VENDOR]);
            (sent.len() == 1).then_some(())
        },
    );
    assert_eq!(
        inbox_ids(&client, CLIENT),
        [first["artifactId"].as_str().unwrap()]
    );
    assert!(list(&vendor, &["outbox", "list"]).is_empty());
    vendor.stop();
    client.stop();
}
