//! Storage: the redb store against a model, under crashes and concurrent readers,
//! with bad files, and the reference's JSON files through import/export.

// Test helpers outside `#[test]` functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod agents;
mod bad_input;
mod check;
mod concurrency;
mod contract;
mod crash;
mod json_files;
mod mailbox;
mod model;
mod outbox;

use btps::store::{NewTrustRecord, PrivacyType, Timestamp, TrustStatus};

/// A trust record between `sender` and `receiver` with a fixed key and dates.
pub(crate) fn new_trust(
    sender: &str,
    receiver: &str,
    status: TrustStatus,
    expires_millis: Option<i64>,
) -> NewTrustRecord {
    let created = Timestamp::parse("2025-06-01T10:00:00.000Z").unwrap();
    NewTrustRecord {
        sender_id: sender.to_owned(),
        receiver_id: receiver.to_owned(),
        status,
        created_at: created.clone(),
        decided_by: String::from("test"),
        decided_at: created,
        expires_at: expires_millis.map(|millis| Timestamp::from_millis(millis).unwrap()),
        public_key_base64: String::from("MIIB"),
        public_key_fingerprint: String::from("fp="),
        key_history: vec![],
        privacy_type: PrivacyType::Encrypted,
        retry_after_date: None,
        metadata: None,
    }
}
