//! Model-based test: random create/update/delete sequences against the redb store
//! and a `BTreeMap` model; after every step every index query equals the model.

use std::collections::BTreeMap;

use btps::identity::compute_trust_id;
use btps::store::{
    Page, PageRequest, Perspective, RedbOptions, RedbStore, Snapshot, StoreError, Timestamp,
    TrustPatch, TrustRecord, TrustStatus,
};
use proptest::prelude::*;

use super::new_trust;

const PARTIES: [&str; 4] = ["alice$x.test", "Bob$X.test", "carol$y.test", "dave$Y.TEST"];
const STATUSES: [&str; 6] = [
    "pending", "accepted", "rejected", "revoked", "blocked", "paused",
];
const EXPIRIES: [i64; 4] = [-1_000, 0, 1_750_000_000_000, 1_750_000_000_001];

#[derive(Clone, Debug)]
enum Op {
    Create {
        perspective: bool,
        sender: usize,
        receiver: usize,
        status: usize,
        expiry: Option<usize>,
    },
    Update {
        perspective: bool,
        sender: usize,
        receiver: usize,
        status: Option<usize>,
        expiry: Option<Option<usize>>,
    },
    Delete {
        perspective: bool,
        sender: usize,
        receiver: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let party = 0..PARTIES.len();
    prop_oneof![
        3 => (any::<bool>(), party.clone(), party.clone(), 0..STATUSES.len(), proptest::option::of(0..EXPIRIES.len()))
            .prop_map(|(perspective, sender, receiver, status, expiry)| Op::Create { perspective, sender, receiver, status, expiry }),
        2 => (any::<bool>(), party.clone(), party.clone(), proptest::option::of(0..STATUSES.len()), proptest::option::of(proptest::option::of(0..EXPIRIES.len())))
            .prop_map(|(perspective, sender, receiver, status, expiry)| Op::Update { perspective, sender, receiver, status, expiry }),
        1 => (any::<bool>(), party.clone(), party)
            .prop_map(|(perspective, sender, receiver)| Op::Delete { perspective, sender, receiver }),
    ]
}

fn perspective(flag: bool) -> Perspective {
    if flag {
        Perspective::Inbound
    } else {
        Perspective::Outbound
    }
}

type Model = BTreeMap<(Perspective, String), TrustRecord>;

/// Collects every page of a listing, checking that pages respect the limit.
fn all_pages(
    limit: u32,
    mut list: impl FnMut(&PageRequest) -> Result<Page<TrustRecord>, StoreError>,
) -> Vec<TrustRecord> {
    let mut out = Vec::new();
    let mut request = PageRequest::first(limit);
    loop {
        let page = list(&request).unwrap();
        assert!(page.items.len() <= limit as usize);
        out.extend(page.items);
        match page.next {
            Some(cursor) => {
                // Cursors survive their text form.
                request = PageRequest::after(cursor.to_string().parse().unwrap(), limit);
            }
            None => return out,
        }
    }
}

fn expected(
    model: &Model,
    p: Perspective,
    keep: impl Fn(&TrustRecord) -> bool,
) -> Vec<TrustRecord> {
    model
        .iter()
        .filter(|((perspective, _), record)| *perspective == p && keep(record))
        .map(|(_, record)| record.clone())
        .collect()
}

fn check(snapshot: &Snapshot<'_>, model: &Model) {
    for p in Perspective::ALL {
        assert_eq!(
            all_pages(2, |r| snapshot.list_all(p, r)),
            expected(model, p, |_| true)
        );
        for party in PARTIES {
            let query = party.to_uppercase();
            assert_eq!(
                all_pages(2, |r| snapshot.list_by_receiver(p, &query, r)),
                expected(model, p, |t| t.receiver_id.to_lowercase()
                    == party.to_lowercase())
            );
            assert_eq!(
                all_pages(3, |r| snapshot.list_by_sender(p, party, r)),
                expected(model, p, |t| t.sender_id.to_lowercase()
                    == party.to_lowercase())
            );
        }
        let mut counts = BTreeMap::new();
        for status in STATUSES {
            let status = TrustStatus::from_wire(status);
            let listed = all_pages(2, |r| snapshot.list_by_status(p, &status, r));
            assert_eq!(listed, expected(model, p, |t| t.status == status));
            if !listed.is_empty() {
                counts.insert(status, listed.len() as u64);
            }
        }
        assert_eq!(snapshot.count_by_status(p).unwrap(), counts);
        for before in [-1_000, 1, 1_750_000_000_001, i64::MAX] {
            for status in [None, Some(TrustStatus::Accepted)] {
                let mut wanted = expected(model, p, |t| {
                    t.expires_at.as_ref().is_some_and(|e| e.millis() < before)
                        && status.as_ref().is_none_or(|s| *s == t.status)
                });
                wanted
                    .sort_by_key(|t| (t.expires_at.as_ref().map(Timestamp::millis), t.id.clone()));
                assert_eq!(
                    all_pages(2, |r| snapshot.list_expiring_before(
                        p,
                        before,
                        status.as_ref(),
                        r
                    )),
                    wanted
                );
            }
        }
    }
    for ((p, id), record) in model {
        assert_eq!(
            snapshot.trust(*p, &id.to_uppercase()).unwrap().as_ref(),
            Some(record)
        );
    }
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Create {
                perspective: flag,
                sender,
                receiver,
                status,
                expiry,
            } => {
                let p = perspective(flag);
                let record = new_trust(
                    PARTIES[sender],
                    PARTIES[receiver],
                    TrustStatus::from_wire(STATUSES[status]),
                    expiry.map(|e| EXPIRIES[e]),
                );
                let id = compute_trust_id(PARTIES[sender], PARTIES[receiver]);
                let given = (sender % 2 == 0).then(|| id.to_uppercase());
                let outcome = store.create_trust(p, record, given.as_deref());
                if STATUSES[status] == "paused" {
                    // Statuses outside the spec are representable but refused on write.
                    assert!(matches!(outcome, Err(StoreError::Invalid { .. })));
                    continue;
                }
                match model.get(&(p, id.clone())) {
                    Some(_) => assert!(matches!(outcome, Err(StoreError::AlreadyExists { .. }))),
                    None => {
                        let stored = outcome.unwrap();
                        assert_eq!(stored.id, id);
                        model.insert((p, id), stored);
                    }
                }
            }
            Op::Update {
                perspective: flag,
                sender,
                receiver,
                status,
                expiry,
            } => {
                let p = perspective(flag);
                let id = compute_trust_id(PARTIES[sender], PARTIES[receiver]);
                let patch = TrustPatch {
                    status: status.map(|s| TrustStatus::from_wire(STATUSES[s])),
                    expires_at: expiry
                        .map(|e| e.map(|e| Timestamp::from_millis(EXPIRIES[e]).unwrap())),
                    ..TrustPatch::default()
                };
                let outcome = store.update_trust(p, &id, patch.clone());
                let exists = model.contains_key(&(p, id.clone()));
                if exists && status.is_some_and(|s| STATUSES[s] == "paused") {
                    assert!(matches!(outcome, Err(StoreError::Invalid { .. })));
                    continue;
                }
                match model.get_mut(&(p, id)) {
                    Some(record) => {
                        let stored = outcome.unwrap();
                        record.apply(patch);
                        assert!(stored.updated_at.is_some());
                        record.updated_at = stored.updated_at.clone();
                        assert_eq!(&stored, record);
                    }
                    None => assert!(matches!(outcome, Err(StoreError::NotFound { .. }))),
                }
            }
            Op::Delete {
                perspective: flag,
                sender,
                receiver,
            } => {
                let p = perspective(flag);
                let id = compute_trust_id(PARTIES[sender], PARTIES[receiver]);
                let existed = store.delete_trust(p, &id).unwrap();
                assert_eq!(existed, model.remove(&(p, id)).is_some());
            }
        }
        store
            .read(|snapshot| {
                check(snapshot, &model);
                Ok(())
            })
            .unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn indexes_always_match_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops);
    }
}

#[test]
fn given_ids_must_be_the_computed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
    let record = new_trust("a$b.test", "c$d.test", TrustStatus::Pending, None);
    let wrong = compute_trust_id("c$d.test", "a$b.test");
    let error = store
        .create_trust(Perspective::Inbound, record, Some(&wrong))
        .unwrap_err();
    assert!(matches!(error, StoreError::Invalid { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traits_work_as_shared_objects() {
    use btps::store::{IdentityStore, PublicKeyRecord, TrustStore};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
    let trust: Arc<dyn TrustStore> = Arc::new(store.clone());
    let identities: Arc<dyn IdentityStore> = Arc::new(store);

    let created = trust
        .create(
            Perspective::Inbound,
            new_trust(
                "Billing$Vendor.test",
                "pay$client.test",
                TrustStatus::Accepted,
                None,
            ),
            None,
        )
        .await
        .unwrap();
    let found = trust
        .get_pair(
            Perspective::Inbound,
            "billing$vendor.test",
            "PAY$client.test",
        )
        .await
        .unwrap();
    assert_eq!(found, Some(created.clone()));
    assert_eq!(
        trust.get(Perspective::Outbound, &created.id).await.unwrap(),
        None
    );

    let key = |selector: &str| PublicKeyRecord {
        selector: selector.to_owned(),
        public_key: String::from("-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n"),
        key_type: String::from("rsa"),
        version: String::from("1.0.0"),
        created_at: Timestamp::now(),
        source: None,
    };
    identities
        .put_public_key("Alice$SaaS.test", key("btps1"), true)
        .await
        .unwrap();
    identities
        .put_public_key("alice$saas.test", key("btps2"), false)
        .await
        .unwrap();
    let current = identities
        .public_key("ALICE$saas.test", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.selector, "btps1");
    assert_eq!(
        identities
            .public_key("alice$saas.test", Some("btps2"))
            .await
            .unwrap()
            .unwrap()
            .selector,
        "btps2"
    );
    assert_eq!(
        identities
            .public_key("alice$saas.test", Some("BTPS2"))
            .await
            .unwrap(),
        None
    );
    let record = identities
        .get_by_identity("alice$SAAS.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.identity, "Alice$SaaS.test");
    assert!(record.updated_at.is_some());
    assert_eq!(
        identities
            .list(PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(identities.delete(&record.id).await.unwrap());
    assert_eq!(
        identities
            .public_key("alice$saas.test", Some("btps2"))
            .await
            .unwrap(),
        None
    );
}
