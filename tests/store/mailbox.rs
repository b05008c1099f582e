//! Mailboxes: random inbound deliveries against the redb store and a model, one per
//! transaction or several through one `WriteBatch::with_inbox` (group commit); after every
//! transaction the listings (both directions, paged), counts, entry lookups and the
//! de-duplication index equal the model's.

use std::collections::BTreeMap;

use btps::store::{
    EntryKind, Mailbox, MailboxEntry, NewInboxEntry, PageRequest, RedbOptions, RedbStore, Snapshot,
    StoreError, Timestamp,
};
use proptest::prelude::*;

const OWNERS: [&str; 3] = ["Finance$Client.test", "ops$client.test", "x$y.test"];
const SENDERS: [&str; 3] = [
    "billing$vendor.test",
    "Billing$VENDOR.test",
    "other$vendor.test",
];
const ARTIFACTS: [&str; 3] = ["a-1", "A-1", "b-2"];
/// Few distinct instants, so that equal `at` values are ordered by entry id.
const TIMES: [i64; 3] = [1_750_000_000_000, 1_750_000_000_000, 1_750_000_500_000];

#[derive(Clone, Debug)]
struct Delivery {
    owner: usize,
    /// Deliver to the owner written in another case.
    upper: bool,
    sender: usize,
    artifact: usize,
    time: usize,
    title: bool,
    /// The transaction ends after this delivery (otherwise the next one joins it).
    ends_group: bool,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (
        0..OWNERS.len(),
        any::<bool>(),
        0..SENDERS.len(),
        0..ARTIFACTS.len(),
        0..TIMES.len(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(owner, upper, sender, artifact, time, title, ends_group)| Delivery {
                owner,
                upper,
                sender,
                artifact,
                time,
                title,
                ends_group,
            },
        )
}

fn new_entry(delivery: &Delivery, serial: usize) -> NewInboxEntry {
    let to = if delivery.upper {
        OWNERS[delivery.owner].to_uppercase()
    } else {
        OWNERS[delivery.owner].to_owned()
    };
    NewInboxEntry {
        owner: to.clone(),
        artifact_id: ARTIFACTS[delivery.artifact].to_owned(),
        artifact_type: String::from("BTPS_DOC"),
        from: SENDERS[delivery.sender].to_owned(),
        to,
        title: delivery.title.then(|| format!("Invoice {serial}")),
        // Bytes that are not even UTF-8 survive: the store never interprets them.
        raw: format!("{{\"n\":{serial}}}\u{0}\u{ff}").into_bytes(),
        received_at: Timestamp::from_millis(TIMES[delivery.time]).unwrap(),
        remote_address: Some(format!("192.0.2.{serial}")),
    }
}

#[derive(Default)]
struct Model {
    entries: Vec<MailboxEntry>,
    dedup: BTreeMap<(String, String, String), u64>,
}

fn all_pages(
    snapshot: &Snapshot<'_>,
    owner: &str,
    mailbox: Mailbox,
    newest_first: bool,
    limit: u32,
) -> Vec<MailboxEntry> {
    let mut out = Vec::new();
    let mut request = PageRequest::first(limit);
    loop {
        let page = snapshot
            .list_mailbox(owner, mailbox, &request, newest_first)
            .unwrap();
        assert!(page.items.len() <= limit as usize);
        out.extend(page.items);
        match page.next {
            Some(cursor) => {
                request = PageRequest::after(cursor.to_string().parse().unwrap(), limit);
            }
            None => return out,
        }
    }
}

fn check(snapshot: &Snapshot<'_>, model: &Model) {
    for owner in OWNERS {
        let mut expected: Vec<MailboxEntry> = model
            .entries
            .iter()
            .filter(|entry| entry.owner.to_lowercase() == owner.to_lowercase())
            .cloned()
            .collect();
        expected.sort_by_key(|entry| (entry.at_millis, entry.entry_id));
        let query = owner.to_uppercase();
        assert_eq!(
            all_pages(snapshot, &query, Mailbox::Inbox, false, 2),
            expected
        );
        expected.reverse();
        assert_eq!(
            all_pages(snapshot, owner, Mailbox::Inbox, true, 3),
            expected
        );
        assert_eq!(
            snapshot.mailbox_count(owner, Mailbox::Inbox).unwrap(),
            expected.len() as u64
        );
        for mailbox in [
            Mailbox::Outbox,
            Mailbox::Sentbox,
            Mailbox::Draft,
            Mailbox::Trash,
        ] {
            assert!(all_pages(snapshot, owner, mailbox, true, 2).is_empty());
            assert_eq!(snapshot.mailbox_count(owner, mailbox).unwrap(), 0);
        }
        for artifact in ARTIFACTS {
            let mut wanted: Vec<MailboxEntry> = model
                .entries
                .iter()
                .filter(|e| e.owner.to_lowercase() == owner.to_lowercase())
                .filter(|e| e.artifact_id == artifact)
                .cloned()
                .collect();
            wanted.sort_by_key(|e| e.entry_id);
            assert_eq!(
                snapshot
                    .mailbox_entries_by_artifact(owner, Mailbox::Inbox, artifact)
                    .unwrap(),
                wanted
            );
        }
        for sender in SENDERS {
            for artifact in ARTIFACTS {
                let key = (
                    owner.to_lowercase(),
                    sender.to_lowercase(),
                    artifact.to_owned(),
                );
                assert_eq!(
                    snapshot
                        .inbound_duplicate(&owner.to_uppercase(), sender, artifact)
                        .unwrap(),
                    model.dedup.get(&key).copied()
                );
            }
        }
    }
    for entry in &model.entries {
        assert_eq!(
            snapshot.mailbox_entry(entry.entry_id).unwrap().as_ref(),
            Some(entry)
        );
    }
    let unused = model.entries.len() as u64 + 1;
    assert_eq!(snapshot.mailbox_entry(unused).unwrap(), None);
}

/// What the store said of one delivery: stored with this id, or a duplicate of the
/// stored entry (and what inserting it anyway answered).
type Outcome = Result<u64, (u64, Option<StoreError>)>;

/// Delivers `group` in one transaction, the server's way: look the artifact up, store
/// it only if it is new. One delivery goes through the batch's own methods, several
/// through one `WriteBatch::with_inbox`.
fn deliver(store: &RedbStore, group: &[NewInboxEntry]) -> Vec<Outcome> {
    if let [new] = group {
        let outcome = store
            .write(
                |batch| match batch.inbound_duplicate(&new.to, &new.from, &new.artifact_id)? {
                    Some(existing) => Ok(Err(existing)),
                    None => batch.insert_inbox(new.clone()).map(Ok),
                },
            )
            .unwrap();
        return vec![outcome.map_err(|existing| (existing, store.insert_inbox(new.clone()).err()))];
    }
    store
        .write(|batch| {
            batch.with_inbox(|_, writer| {
                let mut outcomes = Vec::new();
                for new in group {
                    outcomes.push(
                        match writer.duplicate(&new.to, &new.from, &new.artifact_id)? {
                            Some(existing) => Err((existing, writer.insert(new.clone()).err())),
                            None => Ok(writer.insert(new.clone())?),
                        },
                    );
                }
                Ok(outcomes)
            })
        })
        .unwrap()
}

fn run(deliveries: &[Delivery]) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
    let mut model = Model::default();
    let mut group = Vec::new();
    for (serial, delivery) in deliveries.iter().enumerate() {
        group.push(new_entry(delivery, serial));
        if !delivery.ends_group && serial + 1 < deliveries.len() {
            continue;
        }
        let outcomes = deliver(&store, &group);
        assert_eq!(outcomes.len(), group.len());
        for (new, outcome) in group.drain(..).zip(outcomes) {
            apply(&mut model, new, outcome);
        }
        store
            .read(|snapshot| {
                check(snapshot, &model);
                Ok(())
            })
            .unwrap();
    }
}

/// Checks one outcome against the model and records a stored entry in it.
fn apply(model: &mut Model, new: NewInboxEntry, outcome: Outcome) {
    let key = (
        new.to.to_lowercase(),
        new.from.to_lowercase(),
        new.artifact_id.clone(),
    );
    match (outcome, model.dedup.get(&key)) {
        (Err((existing, refusal)), Some(expected)) => {
            assert_eq!(existing, *expected);
            // Inserting anyway is refused and names the stored entry.
            let error = refusal.expect("a duplicate insert must be refused");
            assert!(
                matches!(&error, StoreError::AlreadyExists { id, .. } if *id == expected.to_string()),
                "{error}"
            );
        }
        (Ok(entry_id), None) => {
            // Ids count up from 1 without gaps: refused inserts consume none.
            assert_eq!(entry_id, model.entries.len() as u64 + 1);
            model.dedup.insert(key, entry_id);
            model.entries.push(MailboxEntry {
                entry_id,
                owner: new.owner,
                mailbox: Mailbox::Inbox,
                origin: None,
                at_millis: new.received_at.millis(),
                kind: EntryKind::Transporter,
                artifact_id: new.artifact_id,
                artifact_type: new.artifact_type,
                from: new.from,
                to: new.to,
                title: new.title,
                raw: new.raw,
                meta: btps::store::EntryMeta {
                    received_at: Some(new.received_at),
                    remote_address: new.remote_address,
                    ..Default::default()
                },
            });
        }
        (outcome, expected) => panic!("store said {outcome:?}, model {expected:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn mailbox_indexes_always_match_the_model(deliveries in proptest::collection::vec(delivery(), 1..30)) {
        run(&deliveries);
    }
}

fn inbound(to: &str, from: &str, artifact_id: &str, raw: &[u8]) -> NewInboxEntry {
    NewInboxEntry {
        owner: to.to_owned(),
        artifact_id: artifact_id.to_owned(),
        artifact_type: String::from("TRUST_REQ"),
        from: from.to_owned(),
        to: to.to_owned(),
        title: None,
        raw: raw.to_vec(),
        received_at: Timestamp::now(),
        remote_address: None,
    }
}

#[test]
fn a_redelivery_is_stored_once_but_another_senders_same_id_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
    let deliver = |entry: NewInboxEntry| {
        store
            .write(|batch| {
                match batch.inbound_duplicate(&entry.to, &entry.from, &entry.artifact_id)? {
                    Some(existing) => Ok((existing, false)),
                    None => Ok((batch.insert_inbox(entry)?, true)),
                }
            })
            .unwrap()
    };
    let first = deliver(inbound(
        "pay$client.test",
        "bill$vendor.test",
        "doc-1",
        b"one",
    ));
    // The same artifact again, identities in another case: the stored entry answers.
    let again = deliver(inbound(
        "PAY$client.test",
        "Bill$Vendor.test",
        "doc-1",
        b"one",
    ));
    // Another sender reusing the id cannot suppress its own delivery.
    let other = deliver(inbound(
        "pay$client.test",
        "mallory$evil.test",
        "doc-1",
        b"two",
    ));
    // The artifact id is compared exactly.
    let case = deliver(inbound(
        "pay$client.test",
        "bill$vendor.test",
        "DOC-1",
        b"three",
    ));
    assert_eq!(first, (1, true));
    assert_eq!(again, (1, false));
    assert_eq!(other, (2, true));
    assert_eq!(case, (3, true));
    store
        .read(|snapshot| {
            assert_eq!(
                snapshot.mailbox_count("pay$client.test", Mailbox::Inbox)?,
                3
            );
            let stored =
                snapshot.mailbox_entries_by_artifact("pay$client.test", Mailbox::Inbox, "doc-1")?;
            let raws: Vec<&[u8]> = stored.iter().map(|e| e.raw.as_slice()).collect();
            assert_eq!(raws, [b"one".as_slice(), b"two".as_slice()]);
            assert!(stored.iter().all(|e| !e.meta.seen));
            Ok(())
        })
        .unwrap();
}

#[test]
fn entries_survive_reopening_and_ids_keep_counting() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
    let raw = b"{\"id\":\"x\",  \"weird\" : [1,2 ] }\n";
    let first = store
        .insert_inbox(inbound("a$b.test", "c$d.test", "x", raw))
        .unwrap();
    drop(store);
    let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
    assert_eq!(store.mailbox_entry(first).unwrap().unwrap().raw, raw);
    let second = store
        .insert_inbox(inbound("a$b.test", "c$d.test", "y", b"{}"))
        .unwrap();
    assert!(second > first);
    let error = store
        .insert_inbox(inbound("", "c$d.test", "z", b"{}"))
        .unwrap_err();
    assert!(matches!(error, StoreError::Invalid { .. }), "{error}");
    // An inbox entry belongs to the artifact's `to` (any case): the de-duplication
    // check looks there.
    let mut elsewhere = inbound("a$b.test", "c$d.test", "w", b"{}");
    elsewhere.owner = String::from("other$b.test");
    let error = store.insert_inbox(elsewhere).unwrap_err();
    assert!(matches!(error, StoreError::Invalid { .. }), "{error}");
    let mut upper = inbound("a$b.test", "c$d.test", "w", b"{}");
    upper.owner = String::from("A$B.TEST");
    store.insert_inbox(upper).unwrap();
    let error = store
        .read(|snapshot| {
            snapshot.list_mailbox(
                "a$b.test",
                Mailbox::Inbox,
                &PageRequest::after("00ff".parse().unwrap(), 5),
                true,
            )
        })
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidCursor), "{error}");
}

#[test]
fn a_prepared_entry_is_checked_again_once_its_check_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
    let prepared = inbound("a$b.test", "c$d.test", "doc", b"{}")
        .prepare()
        .unwrap();
    // Checked in one writer, which then stores the same artifact (from a second,
    // identical entry): the check is stale, so inserting the prepared entry must
    // look again and find the duplicate.
    let outcome = store.write(|batch| {
        batch.with_inbox(|_, inbox| {
            assert_eq!(inbox.duplicate_of(&prepared)?, None);
            let first = inbox.insert(inbound("A$B.test", "C$d.test", "doc", b"{}"))?;
            Ok((first, inbox.insert_prepared(&prepared)))
        })
    });
    let (first, second) = outcome.unwrap();
    assert!(
        matches!(second, Err(StoreError::AlreadyExists { ref id, .. }) if *id == first.to_string()),
        "{second:?}"
    );
    // A check made by a writer whose transaction was aborted does not carry over
    // to another writer whose entry counter has reached the same value.
    let later = inbound("a$b.test", "c$d.test", "doc-2", b"{}")
        .prepare()
        .unwrap();
    let aborted: Result<(), StoreError> = store.write(|batch| {
        batch.with_inbox(|_, inbox| {
            inbox.insert(inbound("a$b.test", "c$d.test", "other", b"{}"))?;
            assert_eq!(inbox.duplicate_of(&later)?, None);
            Err(StoreError::TaskFailed(String::from("abort")))
        })
    });
    assert!(aborted.is_err());
    let again = store
        .write(|batch| {
            batch.with_inbox(|_, inbox| {
                let stored = inbox.insert(inbound("a$b.test", "c$d.test", "doc-2", b"{}"))?;
                Ok((stored, inbox.insert_prepared(&later)))
            })
        })
        .unwrap();
    assert!(
        matches!(again.1, Err(StoreError::AlreadyExists { ref id, .. }) if *id == again.0.to_string()),
        "{again:?}"
    );
    // A fresh check followed directly by the insert stores it once.
    let fresh = inbound("a$b.test", "c$d.test", "doc-3", b"{}")
        .prepare()
        .unwrap();
    let stored = store
        .write(|batch| {
            batch.with_inbox(|_, inbox| {
                assert_eq!(inbox.duplicate_of(&fresh)?, None);
                inbox.insert_prepared(&fresh)
            })
        })
        .unwrap();
    assert_eq!(
        store
            .read(|s| s.inbound_duplicate("a$b.test", "c$d.test", "doc-3"))
            .unwrap(),
        Some(stored)
    );
}
