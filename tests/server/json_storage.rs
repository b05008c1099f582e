//! `STORAGE_TYPE=json`: trust and identity records in the reference's JSON files,
//! inboxes in the redb file.

use btps::identity::compute_trust_id;
use btps::protocol::TransporterType;
use btps::store::{
    IdentityRecord, JsonIdentityStore, JsonTrustStore, Mailbox, PublicKeyRecord, Timestamp,
    TrustPatch, TrustStatus,
};

use crate::util::server::{TRUST_REQUEST, TestOptions, TestServer, artifact, invoice, vector_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trust_flow_with_the_reference_files() {
    let files = tempfile::tempdir().unwrap();
    let trust_path = files.path().join("trust.json");
    let identity_path = files.path().join("identities.json");
    let trust = JsonTrustStore::open(&trust_path, Some("trusted_senders")).unwrap();
    let identities = JsonIdentityStore::open(&identity_path, Some("identity_records")).unwrap();
    let key = PublicKeyRecord {
        selector: "btps1".into(),
        public_key: vector_key("finance").public_key().to_pem() + "\n",
        key_type: "rsa".into(),
        version: "1.0.0".into(),
        created_at: Timestamp::now(),
        source: None,
    };
    identities
        .create_sync(IdentityRecord::new(
            "finance$client.test",
            key,
            Timestamp::now(),
        ))
        .unwrap();
    let options = TestOptions {
        hosted: vec![],
        json_records: Some((trust.clone(), identities)),
        ..TestOptions::default()
    };
    let server = TestServer::start(options).await;

    let request = artifact(
        TransporterType::TrustRequest,
        "billing$vendor.test",
        "billing",
        "finance$client.test",
        TRUST_REQUEST,
    );
    assert!(server.send(&request).await.ok);
    let id = compute_trust_id("billing$vendor.test", "finance$client.test");
    // The pending record is in the reference's file, readable by a fresh store.
    let reread = JsonTrustStore::open(&trust_path, Some("trusted_senders")).unwrap();
    assert_eq!(reread.get_sync(&id).unwrap().status, TrustStatus::Pending);
    assert!(
        std::fs::read_to_string(&trust_path)
            .unwrap()
            .starts_with("{\n  \"trusted_senders\": [")
    );

    // Not hosted in the files: refused even though nothing is in the redb file either way.
    let stranger = artifact(
        TransporterType::TrustRequest,
        "billing$vendor.test",
        "billing",
        "other$client.test",
        TRUST_REQUEST,
    );
    assert_eq!(
        server.send(&stranger).await.message.as_deref(),
        Some("Identity not found")
    );

    let accepted = TrustPatch {
        status: Some(TrustStatus::Accepted),
        retry_after_date: Some(None),
        ..TrustPatch::default()
    };
    trust.update_sync(&id, accepted).unwrap();
    let document = artifact(
        TransporterType::Document,
        "billing$vendor.test",
        "billing",
        "finance$client.test",
        &invoice("J-1"),
    );
    assert!(server.send(&document).await.ok);
    let inbox = server
        .store
        .read(|snapshot| snapshot.mailbox_count("finance$client.test", Mailbox::Inbox))
        .unwrap();
    assert_eq!(inbox, 2, "inboxes stay in the redb file");
    server.stop().await;
}
