//! Delivery figures between two appliances on this machine (ignored: a load run,
//! not a check; run it on a release build and read what it prints):
//!
//! ```text
//! cargo test --release --test main -- --ignored delivery_figures --nocapture
//! ```
//!
//! 1. Throughput: 10,000 invoices queued while delivery is off, then the server
//!    restarted with delivery on; documents per second until the outbox is empty.
//! 2. Queue to sentbox: 2,000 invoices queued while delivery runs; p50/p99 of
//!    `deliveredAt − queuedAt`.
//! 3. Recovery: 1,000 invoices queued with the receiver down (retries every second),
//!    then the receiver started; time until all are delivered.
//!
//! The vendor sends to 100 identities of the client, so that 100 (sender, receiver)
//! queues run side by side, as when one biller invoices many customers.

use std::time::{Duration, Instant};

use btps::store::{Perspective, PrivacyType, RedbOptions, RedbStore, Timestamp, TrustStatus};
use serde_json::Value;

use super::{Appliance, VENDOR, World, eventually};
use crate::store::new_trust;
use crate::util::server::host;

const RECEIVERS: usize = 100;

fn receiver(index: usize) -> String {
    format!("finance{index}$client.test")
}

/// The client hosts `RECEIVERS` identities, each trusting the vendor.
fn many_receivers(client: &Appliance) {
    let store = RedbStore::open_dir(&client.data, &RedbOptions::default()).unwrap();
    for index in 0..RECEIVERS {
        host(&store, &receiver(index), "finance");
        let mut record = new_trust(VENDOR, &receiver(index), TrustStatus::Accepted, None);
        record.privacy_type = PrivacyType::Mixed;
        store
            .create_trust(Perspective::Inbound, record, None)
            .unwrap();
    }
}

/// Queues `count` invoices round-robin over the receivers, from two admin
/// connections at once.
fn queue(vendor: &Appliance, count: usize, tag: &str) {
    std::thread::scope(|scope| {
        for half in 0..2 {
            scope.spawn(move || {
                let mut admin = vendor.admin();
                for serial in (half..count).step_by(2) {
                    vendor.queue_invoice(
                        &mut admin,
                        VENDOR,
                        &receiver(serial % RECEIVERS),
                        &format!("{tag} {serial}"),
                    );
                }
            });
        }
    });
}

fn outbox_empty(vendor: &Appliance) -> bool {
    let listed = vendor.json(&["outbox", "list", "--limit", "1"]);
    listed.as_array().unwrap().is_empty()
}

fn sentbox(vendor: &Appliance) -> Vec<Value> {
    let listed = vendor.json(&["sentbox", "list", VENDOR, "--limit", "20000"]);
    listed.as_array().unwrap().clone()
}

fn millis(value: &Value) -> i64 {
    Timestamp::parse(value.as_str().unwrap()).unwrap().millis()
}

fn percentile(sorted: &[i64], fraction: f64) -> i64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[test]
#[ignore = "a load run: prints delivery figures"]
fn delivery_figures() {
    let world = World::new();
    let (mut vendor, mut client) = world.pair();
    many_receivers(&client);
    client.start();

    // 1. Throughput from a full outbox: the default 2 connections to the
    //    receiving host, then 16.
    for connections in ["2", "16"] {
        vendor.set_env("BTPS_DELIVERY_ENABLED", "false");
        vendor.start();
        let started = Instant::now();
        queue(&vendor, 10_000, &format!("Throughput {connections}"));
        println!(
            "queued 10000 in {:.1} s ({:.0}/s through the admin socket)",
            started.elapsed().as_secs_f64(),
            10_000.0 / started.elapsed().as_secs_f64()
        );
        vendor.stop();
        vendor.set_env("BTPS_DELIVERY_ENABLED", "true");
        vendor.set_env("BTPS_DELIVERY_CONNECTIONS_PER_HOST", connections);
        vendor.start();
        let started = Instant::now();
        eventually(Duration::from_secs(600), "the outbox drains", || {
            std::thread::sleep(Duration::from_millis(100));
            outbox_empty(&vendor).then_some(())
        });
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "throughput ({connections} connections per host): 10000 delivered in {elapsed:.1} s = {:.0} documents/s",
            10_000.0 / elapsed
        );
        vendor.stop();
    }
    vendor.set_env("BTPS_DELIVERY_CONNECTIONS_PER_HOST", "2");
    vendor.start();

    // 2. Queue to sentbox while delivery runs.
    queue(&vendor, 2_000, "Latency");
    eventually(Duration::from_secs(300), "2000 more delivered", || {
        std::thread::sleep(Duration::from_millis(100));
        outbox_empty(&vendor).then_some(())
    });
    let mut latencies: Vec<i64> = sentbox(&vendor)
        .iter()
        .filter(|entry| entry["title"].as_str().unwrap_or("").starts_with("Latency"))
        .map(|entry| millis(&entry["deliveredAt"]) - millis(&entry["queuedAt"]))
        .collect();
    latencies.sort_unstable();
    println!(
        "queue to sentbox over {} documents: p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0)
    );

    // 3. Recovery after the receiver restarts.
    client.stop();
    vendor.stop();
    vendor.set_env(
        "BTPS_DELIVERY_RETRY_SCHEDULE_MS",
        &vec!["1000"; 600].join(","),
    );
    vendor.start();
    queue(&vendor, 1_000, "Recovery");
    std::thread::sleep(Duration::from_secs(3));
    client.start();
    let back = Instant::now();
    eventually(
        Duration::from_secs(300),
        "1000 delivered after the restart",
        || {
            std::thread::sleep(Duration::from_millis(50));
            outbox_empty(&vendor).then_some(())
        },
    );
    println!(
        "recovery: 1000 queued behind a receiver that was down delivered {:.2} s after it was back (retries every 1 s)",
        back.elapsed().as_secs_f64()
    );
    vendor.stop();
    client.stop();
}
