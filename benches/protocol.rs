//! Micro-benchmarks of the hot path of an inbound BTPS_DOC: canonical JSON, one
//! RSA-2048 verification, the full parse + classify + validate + verify of a line, and
//! the encoding of its inbox entry.
//!
//! Run with `cargo bench --bench protocol`. The artifact is a 2 KB invoice signed with
//! the reference vectors' `billing` key (`../shared/vectors`, or `$BTPS_VECTORS`).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::semicolon_if_nothing_returned
)]

#[path = "support/line.rs"]
mod line;

use btps::crypto;
use btps::identity::Identity;
use btps::protocol::{self, Artifact, json};
use btps::signing::{self, StaticKeys};
use btps::store::{NewInboxEntry, Timestamp};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn benchmarks(c: &mut Criterion) {
    let private = line::billing_key();
    let key = private.public_key().clone();
    let mut keys = StaticKeys::new();
    keys.insert(
        &Identity::parse("billing$vendor.test").unwrap(),
        "btps1",
        key.clone(),
    );
    let line = line::two_kilobyte_line(&private);

    let value = json::parse(&line).unwrap();
    let object = value.as_object().unwrap().clone();
    let mut group = c.benchmark_group("btps_doc_2kb");
    group.throughput(Throughput::Bytes(line.len() as u64));
    group.bench_function("json_parse", |b| {
        b.iter(|| json::parse(std::hint::black_box(&line)).unwrap())
    });
    group.bench_function("canonicalize_minus_signature", |b| {
        b.iter(|| std::hint::black_box(&object).to_canonical_without(&["signature"]))
    });
    group.bench_function("parse_classify_validate", |b| {
        b.iter(|| protocol::parse_line(std::hint::black_box(line.as_bytes())).unwrap())
    });
    let payload = object.to_canonical_without(&["signature"]);
    let signature = object.get("signature").unwrap().as_object().unwrap();
    let value = signature.str("value").unwrap().to_owned();
    let fingerprint = signature.str("fingerprint").unwrap().to_owned();
    group.bench_function("rsa2048_verify", |b| {
        b.iter(|| {
            crypto::verify_text(&key, std::hint::black_box(&payload), &value, &fingerprint).unwrap()
        })
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    group.bench_function("full_line_to_verified", |b| {
        b.iter(|| {
            let Some(Artifact::Transporter(artifact)) =
                protocol::parse_line(line.as_bytes()).unwrap()
            else {
                unreachable!()
            };
            runtime
                .block_on(signing::verify_transporter(&artifact, &keys))
                .unwrap()
        })
    });
    // What the connection does with a verified document before handing it to the
    // group commit: encode the inbox entry (LZ4) and compute its index keys.
    let entry = NewInboxEntry {
        owner: "finance$client.test".to_owned(),
        artifact_id: object.str("id").unwrap().to_owned(),
        artifact_type: "BTPS_DOC".to_owned(),
        from: "billing$vendor.test".to_owned(),
        to: "finance$client.test".to_owned(),
        title: Some("Invoice INV-2025-0001".to_owned()),
        raw: line.as_bytes().to_vec(),
        received_at: Timestamp::now(),
        remote_address: Some("127.0.0.1:40000".to_owned()),
    };
    group.bench_function("prepare_inbox_entry", |b| {
        b.iter(|| std::hint::black_box(&entry).clone().prepare().unwrap())
    });
    group.finish();
}

criterion_group!(benches, benchmarks);
criterion_main!(benches);
