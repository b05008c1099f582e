//! Storage benchmarks over 100,000 trust records: lookup by id, create, and index
//! queries, for the redb store and the JSON file store.

// A benchmark is test code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used, missing_docs)] // missing_docs: the criterion macros generate undocumented fns

use std::time::Duration;

use btps::identity::compute_trust_id;
use btps::protocol::json::Value;
use btps::store::{
    JsonTrustStore, NewTrustRecord, PageRequest, Perspective, PrivacyType, RedbOptions, RedbStore,
    Timestamp, TrustRecord, TrustStatus, TrustStore,
};
use btps::wire;
use criterion::{Criterion, criterion_group, criterion_main};

const RECORDS: u64 = 100_000;
/// 1,000 receivers with 100 senders each.
const SENDERS_PER_RECEIVER: u64 = 100;

fn record(n: u64) -> NewTrustRecord {
    let created = Timestamp::from_millis(1_700_000_000_000).unwrap();
    let statuses = [
        TrustStatus::Accepted,
        TrustStatus::Pending,
        TrustStatus::Rejected,
        TrustStatus::Revoked,
        TrustStatus::Blocked,
    ];
    NewTrustRecord {
        sender_id: format!("sender{n}$vendor{}.test", n % 37),
        receiver_id: format!("receiver{}$client.test", n / SENDERS_PER_RECEIVER),
        status: statuses[usize::try_from(n % 5).unwrap()].clone(),
        created_at: created.clone(),
        decided_by: String::from("admin@client.test"),
        decided_at: created,
        expires_at: Some(
            Timestamp::from_millis(
                1_750_000_000_000 + i64::try_from(n * 7919 % 1_000_000).unwrap() * 1000,
            )
            .unwrap(),
        ),
        public_key_base64: "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA".repeat(8),
        public_key_fingerprint: String::from("8uqi12U3w3F76oHOKmxTgWkeRgUQWvM05Xi5/TWqyPY="),
        key_history: vec![],
        privacy_type: PrivacyType::Encrypted,
        retry_after_date: None,
        metadata: None,
    }
}

fn ids() -> Vec<String> {
    (0..RECORDS)
        .map(|n| {
            let r = record(n);
            compute_trust_id(&r.sender_id, &r.receiver_id)
        })
        .collect()
}

fn bench_redb(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(10_000) {
        store
            .write(|batch| {
                for &n in chunk {
                    batch.create_trust(Perspective::Inbound, record(n), None)?;
                }
                Ok(())
            })
            .unwrap();
    }
    let ids = ids();
    let mut group = c.benchmark_group("redb");
    let mut i = 0usize;
    group.bench_function("trust get by id (100k records)", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            store.trust(Perspective::Inbound, &ids[i]).unwrap().unwrap()
        });
    });
    let mut next = RECORDS;
    group.bench_function("trust create, durable commit (100k records)", |b| {
        b.iter(|| {
            next += 1;
            store
                .create_trust(Perspective::Inbound, record(next), None)
                .unwrap()
        });
    });
    let mut receiver = 0u64;
    group.bench_function("list_by_receiver, 50 of 100 (100k records)", |b| {
        b.iter(|| {
            receiver = (receiver + 13) % (RECORDS / SENDERS_PER_RECEIVER);
            let page = store
                .read(|s| {
                    s.list_by_receiver(
                        Perspective::Inbound,
                        &format!("receiver{receiver}$client.test"),
                        &PageRequest::first(50),
                    )
                })
                .unwrap();
            assert_eq!(page.items.len(), 50);
            page
        });
    });
    group.bench_function("list_expiring_before accepted, 100 (100k records)", |b| {
        b.iter(|| {
            store
                .read(|s| {
                    s.list_expiring_before(
                        Perspective::Inbound,
                        1_750_500_000_000,
                        Some(&TrustStatus::Accepted),
                        &PageRequest::first(100),
                    )
                })
                .unwrap()
        });
    });
    group.finish();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let shared: std::sync::Arc<dyn TrustStore> = std::sync::Arc::new(store.clone());
    c.bench_function(
        "redb/async trait get by id via spawn_blocking (100k records)",
        |b| {
            b.iter(|| {
                i = (i + 7919) % ids.len();
                runtime
                    .block_on(shared.get(Perspective::Inbound, &ids[i]))
                    .unwrap()
                    .unwrap()
            });
        },
    );
}

fn bench_json(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.json");
    let records: Vec<Value> = (0..RECORDS)
        .map(|n| {
            let new = record(n);
            let id = compute_trust_id(&new.sender_id, &new.receiver_id);
            Value::Object(wire::trust_to_json(&TrustRecord::from_new(id, new)))
        })
        .collect();
    let mut file = btps::protocol::json::Object::new();
    file.insert("trusted_senders", Value::Array(records));
    std::fs::write(&path, wire::to_pretty(&Value::Object(file))).unwrap();
    let store = JsonTrustStore::open(&path, Some("trusted_senders")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ids = ids();
    let mut group = c.benchmark_group("json");
    let mut i = 0usize;
    group.bench_function("trust get by id (100k records)", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            runtime
                .block_on(store.get(Perspective::Inbound, &ids[i]))
                .unwrap()
                .unwrap()
        });
    });
    let mut receiver = 0u64;
    group.bench_function("list_by_receiver, 50 of 100 (100k records)", |b| {
        b.iter(|| {
            receiver = (receiver + 13) % (RECORDS / SENDERS_PER_RECEIVER);
            let name = format!("receiver{receiver}$client.test");
            runtime
                .block_on(store.list_by_receiver(
                    Perspective::Inbound,
                    &name,
                    PageRequest::first(50),
                ))
                .unwrap()
        });
    });
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    let mut next = RECORDS;
    group.bench_function("trust create, whole file rewritten (100k records)", |b| {
        b.iter(|| {
            next += 1;
            store.create_sync(record(next), None).unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, bench_redb, bench_json);
criterion_main!(benches);
