//! `btps migrate` from a redb file into PostgreSQL and back: every record, entry
//! and cursor arrives, the counts per table are reported, and the copy is
//! verified; a source in use and a destination that is not empty are refused.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use btps::store::{
    IdentityRecord, Mailbox, NewInboxEntry, NewOutboxEntry, PageRequest, Perspective,
    PublicKeyRecord, RedbOptions, RedbStore, Storage, Timestamp, TrustStatus,
};

use super::{fresh_schema, uri};
use crate::store::new_trust;

const OWNER: &str = "finance$client.test";

fn key() -> PublicKeyRecord {
    PublicKeyRecord {
        selector: "btps1".to_owned(),
        public_key: "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA".to_owned(),
        key_type: "rsa".to_owned(),
        version: "1.0.0".to_owned(),
        created_at: Timestamp::now(),
        source: None,
    }
}

/// A redb file with something in every table.
fn populated(path: &Path) {
    let store = RedbStore::open(path, &RedbOptions::default()).unwrap();
    store
        .create_identity(IdentityRecord::new(OWNER, key(), Timestamp::now()))
        .unwrap();
    for index in 0..30 {
        let sender = format!("s{index}$vendor.test");
        store
            .create_trust(
                Perspective::Inbound,
                new_trust(
                    &sender,
                    OWNER,
                    TrustStatus::Accepted,
                    Some(1_900_000_000_000),
                ),
                None,
            )
            .unwrap();
        store
            .insert_inbox(NewInboxEntry {
                owner: OWNER.to_owned(),
                artifact_id: format!("doc-{index}"),
                artifact_type: "BTPS_DOC".to_owned(),
                from: sender.clone(),
                to: OWNER.to_owned(),
                title: Some(format!("Invoice {index}")),
                raw: format!(r#"{{"id":"doc-{index}"}}"#).into_bytes(),
                received_at: Timestamp::now(),
                remote_address: Some("127.0.0.1".to_owned()),
            })
            .unwrap();
    }
    store
        .create_trust(
            Perspective::Outbound,
            new_trust(OWNER, "pay$a.test", TrustStatus::Pending, None),
            None,
        )
        .unwrap();
    for index in 0..1100 {
        store
            .transact(OWNER, &mut |tx| {
                tx.enqueue(NewOutboxEntry {
                    owner: OWNER.to_owned(),
                    artifact_id: format!("out-{index}"),
                    artifact_type: "BTPS_DOC".to_owned(),
                    from: OWNER.to_owned(),
                    to: format!("pay$p{}.test", index % 3),
                    title: None,
                    raw: format!(r#"{{"id":"out-{index}"}}"#).into_bytes(),
                    queued_at: Timestamp::now(),
                    agent_artifact_id: None,
                    agent_id: None,
                })
                .map(drop)
            })
            .unwrap();
    }
    // An enrolled agent and an enrollment token waiting for another.
    store
        .transact(OWNER, &mut |tx| {
            tx.put_enrollment_token(
                &btps::model::enrollment_token_key(OWNER, "ABCD2345"),
                &btps::store::EnrollmentToken {
                    identity: OWNER.to_owned(),
                    created_at: Timestamp::now(),
                    expires_at: Timestamp::from_millis(4_102_444_800_000).unwrap(),
                    decrypt_by: "admin$client.test".to_owned(),
                    issued_by: "test".to_owned(),
                    metadata: None,
                },
            )?;
            tx.put_session(&btps::store::AgentSession {
                agent_id: "btps_ag_1".to_owned(),
                owner: OWNER.to_owned(),
                created_at: Timestamp::now(),
                refresh_hash: btps::model::refresh_token_hash("refresh"),
                refresh_expires_at: Timestamp::from_millis(4_102_444_800_000).unwrap(),
                decrypt_by: "admin$client.test".to_owned(),
                agent_info: None,
                last_refresh_at: None,
                retired: vec![btps::model::refresh_token_hash("old")],
            })
        })
        .unwrap();
    // From any thread, inside a runtime or not.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(store.mailboxes().set_cursor("erp", 7))
                .unwrap();
        });
    });
}

fn migrate(from: &str, to: &str) -> (bool, serde_json::Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(["migrate", "--from", from, "--to", to, "--json"])
        .env_remove("POSTGRES_TABLE")
        .env_remove("POSTGRES_IDENTITY_TABLE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| {
        panic!(
            "not JSON: {text} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), value)
}

fn count(report: &serde_json::Value, table: &str) -> (u64, u64) {
    let row = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["table"] == table)
        .unwrap_or_else(|| panic!("no {table} in {report}"));
    (
        row["source"].as_u64().unwrap(),
        row["destination"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_to_postgres_and_back_keeps_everything() {
    let Some(base) = uri() else { return };
    let (_, database) = fresh_schema(&base);
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("btps.redb");
    populated(&source);

    let (ok, report) = migrate(
        &format!("redb:{}", source.display()),
        &format!("postgres:{database}"),
    );
    assert!(ok, "{report}");
    assert_eq!(report["verified"], true);
    let password = url::Url::parse(&base)
        .unwrap()
        .password()
        .unwrap()
        .to_owned();
    assert!(!report.to_string().contains(&password), "{report}");
    assert_eq!(count(&report, "identities"), (1, 1));
    assert_eq!(count(&report, "trust (inbound)"), (30, 30));
    assert_eq!(count(&report, "trust (outbound)"), (1, 1));
    assert_eq!(count(&report, "entries (inbox)"), (30, 30));
    assert_eq!(count(&report, "entries (outbox)"), (1100, 1100));
    assert_eq!(count(&report, "cursors"), (1, 1));
    assert_eq!(count(&report, "agent sessions"), (1, 1));
    assert_eq!(count(&report, "enrollment tokens"), (1, 1));

    // A destination that is not empty is refused.
    let (ok, refused) = migrate(
        &format!("redb:{}", source.display()),
        &format!("postgres:{database}"),
    );
    assert!(!ok);
    assert!(
        refused["error"].as_str().unwrap().contains("not empty"),
        "{refused}"
    );

    // And back into a new redb file, equal to the first.
    let back = temp.path().join("back.redb");
    let (ok, report) = migrate(
        &format!("postgres:{database}"),
        &format!("redb:{}", back.display()),
    );
    assert!(ok, "{report}");
    assert_eq!(count(&report, "entries (outbox)"), (1100, 1100));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&back).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The copy back equals the original.
    let first = RedbStore::open(&source, &RedbOptions::default()).unwrap();
    let second = RedbStore::open(&back, &RedbOptions::default()).unwrap();
    for after in [0, 500, 1000] {
        let a = first.read(|s| s.entries_after(after, 500)).unwrap();
        let b = second.read(|s| s.entries_after(after, 500)).unwrap();
        assert!(a == b, "the entries after {after} differ");
    }
    assert_eq!(
        first.read(|s| s.trust_in_insertion_order()).unwrap().len(),
        second.read(|s| s.trust_in_insertion_order()).unwrap().len()
    );

    // The PostgreSQL copy works as a store: the outbox's queue heads came along.
    let storage =
        Arc::new(btps::store::PgStorage::connect(&super::options(&database, "n")).unwrap());
    let claimed = storage
        .outbox()
        .claim_due(
            Timestamp::now(),
            Timestamp::from_millis(i64::from(i32::MAX) * 1000).unwrap(),
            10,
        )
        .await
        .unwrap();
    let mut claimed: Vec<_> = claimed.into_iter().map(|e| e.artifact_id).collect();
    claimed.sort();
    assert_eq!(claimed, ["out-0", "out-1", "out-2"]);
    let inbox = storage
        .mailboxes()
        .list(OWNER, Mailbox::Inbox, PageRequest::first(100), false)
        .await
        .unwrap();
    assert_eq!(inbox.items.len(), 30);
    assert_eq!(storage.mailboxes().cursor("erp").await.unwrap(), 7);
    drop(storage);
}

#[test]
fn a_source_in_use_is_refused() {
    let Some(base) = uri() else { return };
    let (_, database) = fresh_schema(&base);
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("btps.redb");
    populated(&source);
    let held = RedbStore::open(&source, &RedbOptions::default()).unwrap();
    let (ok, refused) = migrate(
        &format!("redb:{}", source.display()),
        &format!("postgres:{database}"),
    );
    assert!(!ok);
    assert!(
        refused["error"].as_str().unwrap().contains("in use"),
        "{refused}"
    );
    drop(held);
}
