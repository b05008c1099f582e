//! The storage contract (`store::Storage`), one suite run against every backend:
//! the redb file, the in-memory store, the reference's JSON files beside redb
//! mailboxes, and PostgreSQL (a fresh schema of the test cluster, see
//! `tests/postgres/`).

use std::sync::Arc;

use btps::identity::compute_trust_id;
use btps::store::{
    InboundGroup, InboundTransaction, JsonFilesStorage, JsonIdentityStore, JsonTrustStore, Mailbox,
    MemoryStorage, NewInboxEntry, PageRequest, Perspective, PreparedInboxEntry, RedbOptions,
    RedbStore, Storage, StoreError, StoreResult, Timestamp, TrustPatch, TrustStatus,
};

use super::new_trust;

const RECEIVER: &str = "finance$client.test";

/// Every backend, each in its own temporary directory.
pub(super) fn backends(dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn Storage>)> {
    let redb = RedbStore::open(&dir.join("btps.redb"), &RedbOptions::default()).unwrap();
    let files_mailboxes =
        RedbStore::open(&dir.join("mailboxes.redb"), &RedbOptions::default()).unwrap();
    let files = JsonFilesStorage::new(
        JsonTrustStore::open(&dir.join("trust.json"), None).unwrap(),
        JsonIdentityStore::open(&dir.join("identities.json"), None).unwrap(),
        Arc::new(files_mailboxes),
    );
    #[allow(unused_mut)]
    let mut backends = vec![
        ("redb", Arc::new(redb) as Arc<dyn Storage>),
        ("memory", Arc::new(MemoryStorage::new())),
        ("json files", Arc::new(files)),
    ];
    #[cfg(feature = "postgres")]
    if let Some(postgres) = crate::postgres::storage() {
        backends.push(("postgres", postgres as Arc<dyn Storage>));
    }
    backends
}

fn entry(sender: &str, artifact_id: &str) -> PreparedInboxEntry {
    NewInboxEntry {
        owner: RECEIVER.to_owned(),
        artifact_id: artifact_id.to_owned(),
        artifact_type: "BTPS_DOC".to_owned(),
        from: sender.to_owned(),
        to: RECEIVER.to_owned(),
        title: Some(format!("Invoice {artifact_id}")),
        raw: format!(r#"{{"id":"{artifact_id}"}}"#).into_bytes(),
        received_at: Timestamp::now(),
        remote_address: None,
    }
    .prepare()
    .unwrap()
}

/// What each artifact of a test group does inside the transaction.
enum Step {
    /// Creates the inbound trust record of (sender, RECEIVER) and stores an entry.
    TrustAndEntry(&'static str, &'static str),
    /// Stores an entry unless it is a duplicate; records what it found.
    Entry(&'static str, &'static str),
    /// Fails the transaction.
    Fail,
}

struct TestGroup {
    steps: Vec<Step>,
    entries: Vec<PreparedInboxEntry>,
    found: Vec<Option<u64>>,
}

impl TestGroup {
    fn new(steps: Vec<Step>) -> Self {
        let entries = steps
            .iter()
            .map(|step| match step {
                Step::TrustAndEntry(sender, id) | Step::Entry(sender, id) => entry(sender, id),
                Step::Fail => entry("x$fail.test", "fail"),
            })
            .collect();
        let found = vec![None; steps.len()];
        TestGroup {
            steps,
            entries,
            found,
        }
    }
}

impl InboundGroup for TestGroup {
    fn len(&self) -> usize {
        self.steps.len()
    }

    fn receiver(&self, _index: usize) -> &str {
        RECEIVER
    }

    fn apply(&mut self, index: usize, txn: &mut dyn InboundTransaction) -> StoreResult<bool> {
        match self.steps[index] {
            Step::TrustAndEntry(sender, _) => {
                txn.create_trust(
                    Perspective::Inbound,
                    new_trust(sender, RECEIVER, TrustStatus::Pending, None),
                )?;
                let id = txn.insert_inbox(&self.entries[index])?;
                self.found[index] = Some(id);
                Ok(true)
            }
            Step::Entry(_, _) => {
                if let Some(existing) = txn.duplicate_of(&self.entries[index])? {
                    self.found[index] = Some(existing);
                    return Ok(false);
                }
                let id = txn.insert_inbox(&self.entries[index])?;
                self.found[index] = Some(id);
                Ok(true)
            }
            Step::Fail => Err(StoreError::TaskFailed("the test fails the group".into())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commits_whole_or_not_at_all_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    for (name, storage) in backends(dir.path()) {
        let trust_id = compute_trust_id("a$vendor.test", RECEIVER);
        // A group that fails after its first artifact leaves nothing behind.
        let mut failing = TestGroup::new(vec![
            Step::TrustAndEntry("a$vendor.test", "inv-1"),
            Step::Fail,
        ]);
        let outcome = tokio::task::block_in_place(|| storage.commit_inbound(&mut failing));
        if name == "json files" {
            // The files are written as the group goes (docs/embedding.md): the record
            // stays, the mailbox entry does not.
            assert!(outcome.is_err());
            let entries = storage
                .mailboxes()
                .count(RECEIVER, Mailbox::Inbox)
                .await
                .unwrap();
            assert_eq!(entries, 0, "{name}");
            storage
                .trust()
                .delete(Perspective::Inbound, &trust_id)
                .await
                .unwrap();
        } else {
            assert!(outcome.is_err(), "{name}");
            assert_eq!(
                storage
                    .trust()
                    .get(Perspective::Inbound, &trust_id)
                    .await
                    .unwrap(),
                None,
                "{name}: the record of a failed group is gone"
            );
            assert_eq!(
                storage
                    .mailboxes()
                    .count(RECEIVER, Mailbox::Inbox)
                    .await
                    .unwrap(),
                0,
                "{name}: the entry of a failed group is gone"
            );
        }

        // The same artifact again, then others: committed, in order, de-duplicated.
        let mut group = TestGroup::new(vec![
            Step::TrustAndEntry("a$vendor.test", "inv-1"),
            Step::Entry("b$vendor.test", "inv-1"),
            Step::Entry("A$Vendor.test", "inv-1"),
            Step::Entry("a$vendor.test", "inv-2"),
        ]);
        tokio::task::block_in_place(|| storage.commit_inbound(&mut group)).unwrap();
        let ids: Vec<u64> = group.found.iter().map(|id| id.unwrap()).collect();
        assert_eq!(
            ids[2], ids[0],
            "{name}: same receiver, sender (any case) and id"
        );
        assert!(ids[0] < ids[1] && ids[1] < ids[3], "{name}: {ids:?}");
        let record = storage
            .trust()
            .get(Perspective::Inbound, &trust_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, TrustStatus::Pending, "{name}");
        let updated = storage
            .trust()
            .update(
                Perspective::Inbound,
                &trust_id,
                TrustPatch {
                    status: Some(TrustStatus::Accepted),
                    ..TrustPatch::default()
                },
            )
            .await
            .unwrap();
        assert!(updated.updated_at.is_some(), "{name}");

        // Listing, counting, the feed and its cursor.
        let page = storage
            .mailboxes()
            .list(RECEIVER, Mailbox::Inbox, PageRequest::first(2), false)
            .await
            .unwrap();
        assert_eq!(
            page.items.iter().map(|e| e.entry_id).collect::<Vec<_>>(),
            vec![ids[0], ids[1]],
            "{name}"
        );
        let rest = storage
            .mailboxes()
            .list(
                RECEIVER,
                Mailbox::Inbox,
                PageRequest::after(page.next.clone().unwrap(), 2),
                false,
            )
            .await
            .unwrap();
        assert_eq!(
            rest.items.iter().map(|e| e.entry_id).collect::<Vec<_>>(),
            vec![ids[3]],
            "{name}"
        );
        assert_eq!(rest.next, None, "{name}");
        let newest = storage
            .mailboxes()
            .list(RECEIVER, Mailbox::Inbox, PageRequest::first(1), true)
            .await
            .unwrap();
        assert_eq!(newest.items[0].entry_id, ids[3], "{name}");
        assert_eq!(
            storage
                .mailboxes()
                .count(RECEIVER, Mailbox::Inbox)
                .await
                .unwrap(),
            3,
            "{name}"
        );
        let feed = storage.mailboxes().inbox_after(ids[0], 10).await.unwrap();
        assert_eq!(
            feed.iter().map(|e| e.entry_id).collect::<Vec<_>>(),
            vec![ids[1], ids[3]],
            "{name}"
        );
        let stored = storage.mailboxes().entry(ids[1]).await.unwrap().unwrap();
        assert_eq!(stored.raw, br#"{"id":"inv-1"}"#, "{name}");
        assert_eq!(stored.from, "b$vendor.test", "{name}");
        assert_eq!(
            storage.mailboxes().cursor("erp").await.unwrap(),
            0,
            "{name}"
        );
        storage.mailboxes().set_cursor("erp", ids[1]).await.unwrap();
        assert_eq!(
            storage.mailboxes().cursor("erp").await.unwrap(),
            ids[1],
            "{name}"
        );
        tokio::task::block_in_place(|| storage.check_ready()).unwrap();
    }
}
