//! What only a shared database has: versioned migrations, several handles (nodes)
//! on one schema competing for outbox claims and receiving the same artifact, a
//! lost connection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};

use btps::store::{
    InboundGroup, InboundTransaction, Mailbox, NewInboxEntry, NewOutboxEntry, PgStorage,
    PreparedInboxEntry, Storage, StoreError, StoreResult, Timestamp,
};

use super::{admin_sql, fresh_schema, options, uri};

const OWNER: &str = "billing$vendor.test";
const RECEIVER: &str = "finance$client.test";
/// 2025-01-01T00:00:00Z.
const T0: i64 = 1_735_689_600_000;

fn at(millis: i64) -> Timestamp {
    Timestamp::from_millis(millis).unwrap()
}

/// Two nodes (handles with their own pools and names) on one fresh schema.
fn two_nodes() -> Option<(String, Arc<PgStorage>, Arc<PgStorage>)> {
    let base = uri()?;
    let (schema, uri) = fresh_schema(&base);
    let one = Arc::new(PgStorage::connect(&options(&uri, "node-1")).unwrap());
    let two = Arc::new(PgStorage::connect(&options(&uri, "node-2")).unwrap());
    Some((schema, one, two))
}

#[test]
fn a_database_of_a_newer_btps_is_refused_and_migration_runs_once() {
    let Some(base) = uri() else { return };
    let (schema, uri) = fresh_schema(&base);
    // Nodes starting together migrate once (the advisory lock), both succeed.
    let barrier = Arc::new(Barrier::new(3));
    let starters: Vec<_> = (0..3)
        .map(|index| {
            let uri = uri.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                PgStorage::connect(&options(&uri, &format!("n{index}"))).map(drop)
            })
        })
        .collect();
    for starter in starters {
        starter.join().unwrap().unwrap();
    }
    admin_sql(
        &base,
        &format!("UPDATE {schema}.btps_meta SET value = 99 WHERE name = 'schema_version'"),
    );
    match PgStorage::connect(&options(&uri, "late")) {
        Err(StoreError::NewerSchema {
            found, supported, ..
        }) => {
            assert_eq!(found, 99);
            assert_eq!(supported, btps::store::POSTGRES_SCHEMA_VERSION);
        }
        other => panic!("a newer schema must be refused: {other:?}"),
    }
}

/// A database of the first schema version (before the agent tables) is brought
/// up to date at the next start, and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_schema_is_migrated_at_start() {
    let Some(base) = uri() else { return };
    let (schema, uri) = fresh_schema(&base);
    drop(PgStorage::connect(&options(&uri, "n")).unwrap());
    admin_sql(
        &base,
        &format!(
            "SET search_path TO {schema};
             DROP TABLE btps_enrollment_tokens, btps_agent_sessions;
             DROP INDEX btps_entries_by_artifact;
             UPDATE btps_meta SET value = 1 WHERE name = 'schema_version'"
        ),
    );
    let storage = PgStorage::connect(&options(&uri, "n")).unwrap();
    let agents = storage.agents().unwrap();
    assert!(agents.sessions(None).await.unwrap().is_empty());
    assert_eq!(agents.sweep(0).unwrap(), (0, 0));
}

#[test]
fn a_changed_table_name_on_a_migrated_database_is_refused() {
    let Some(base) = uri() else { return };
    let (_, uri) = fresh_schema(&base);
    PgStorage::connect(&options(&uri, "n")).unwrap();
    let mut renamed = options(&uri, "n");
    renamed.trust_table = "other_trust".to_owned();
    let refused = PgStorage::connect(&renamed).unwrap_err().to_string();
    assert!(refused.contains("other_trust does not exist"), "{refused}");
}

#[test]
fn a_wrong_password_is_an_error_that_does_not_show_it() {
    let Some(base) = uri() else { return };
    let url = url::Url::parse(&base).unwrap();
    let wrong = format!(
        "postgres://{}:not-the-Password-123@{}:{}/postgres",
        url.username(),
        url.host_str().unwrap(),
        url.port().unwrap()
    );
    let error = PgStorage::connect(&options(&wrong, "n")).unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("not-the-Password-123"), "{shown}");
    assert!(shown.contains(":***@"), "{shown}");
}

fn outbound(to: &str, artifact_id: &str) -> NewOutboxEntry {
    NewOutboxEntry {
        owner: OWNER.to_owned(),
        artifact_id: artifact_id.to_owned(),
        artifact_type: "BTPS_DOC".to_owned(),
        from: OWNER.to_owned(),
        to: to.to_owned(),
        title: None,
        raw: format!(r#"{{"id":"{artifact_id}"}}"#).into_bytes(),
        queued_at: at(T0),
        agent_artifact_id: None,
        agent_id: None,
    }
}

/// Moves a claimed entry to the sentbox, as a delivery does.
fn deliver(storage: &dyn Storage, entry_id: u64, now: i64) {
    storage
        .transact(OWNER, &mut |tx| {
            let mut entry = tx.entry(entry_id)?.expect("a claimed entry is there");
            assert_eq!(entry.mailbox, Mailbox::Outbox, "delivered twice");
            entry.mailbox = Mailbox::Sentbox;
            entry.at_millis = now;
            entry.meta.in_flight_until = None;
            entry.meta.delivered_at = Some(at(now));
            tx.update_entry(&entry)
        })
        .unwrap();
}

/// 1,000 entries in 20 queues, two nodes claiming and delivering at once: each
/// entry is claimed once, and each queue is delivered in the order it was queued.
#[test]
fn two_nodes_claim_each_entry_once_in_queue_order() {
    let Some((_, one, two)) = two_nodes() else {
        return;
    };
    for index in 0..1000 {
        let to = format!("pay$p{}.test", index % 20);
        one.transact(OWNER, &mut |tx| {
            tx.enqueue(outbound(&to, &format!("a{index:04}"))).map(drop)
        })
        .unwrap();
    }
    // The order of claims across both nodes.
    let sequence = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = [one, two]
        .into_iter()
        .map(|node| {
            let sequence = Arc::clone(&sequence);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let mut delivered = Vec::new();
                let mut idle = 0;
                while idle < 3 {
                    let claimed = runtime
                        .block_on(node.outbox().claim_due(at(T0 + 1), at(T0 + 600_000), 7))
                        .unwrap();
                    if claimed.is_empty() {
                        idle += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    }
                    idle = 0;
                    for entry in claimed {
                        // Recorded before the delivery that lets the queue move on.
                        let order = sequence.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        delivered.push((order, entry.to.clone(), entry.artifact_id.clone()));
                        deliver(node.as_ref(), entry.entry_id, T0 + 2);
                    }
                }
                delivered
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut per_node = Vec::new();
    for worker in workers {
        let delivered = worker.join().unwrap();
        per_node.push(delivered.len());
        all.extend(delivered);
    }
    let unique: BTreeSet<_> = all.iter().map(|(_, _, id)| id.clone()).collect();
    assert_eq!(all.len(), 1000, "each entry delivered once: {per_node:?}");
    assert_eq!(unique.len(), 1000);
    assert!(per_node.iter().all(|count| *count > 0), "{per_node:?}");
    // Within a queue, claims follow the queue order across both nodes: a queue's
    // next entry is due only once the one before it has left the outbox.
    all.sort();
    let mut queues: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, to, id) in all {
        queues.entry(to).or_default().push(id);
    }
    for (to, ids) in queues {
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "{to}: claimed out of queue order");
        assert_eq!(ids.len(), 50, "{to}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_claims_are_taken_over_when_their_lease_runs_out() {
    let Some((_, one, two)) = two_nodes() else {
        return;
    };
    one.transact(OWNER, &mut |tx| {
        tx.enqueue(outbound("pay$a.test", "x1")).map(drop)
    })
    .unwrap();
    let claimed = one
        .outbox()
        .claim_due(at(T0), at(T0 + 30_000), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // Node 2 restarting releases its own claims only.
    assert_eq!(two.outbox().release_claims(at(T0 + 1)).await.unwrap(), 0);
    assert!(
        two.outbox()
            .claim_due(at(T0 + 29_999), at(T0 + 60_000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Node 1 dies: its lease runs out and node 2 takes the entry.
    drop(one);
    let taken = two
        .outbox()
        .claim_due(at(T0 + 30_000), at(T0 + 60_000), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].artifact_id, "x1");
    assert_eq!(
        two.outbox().release_claims(at(T0 + 30_001)).await.unwrap(),
        1
    );
}

/// One inbound artifact as a group of one.
struct OneArtifact {
    entry: PreparedInboxEntry,
    outcome: Option<(u64, bool)>,
}

impl InboundGroup for OneArtifact {
    fn len(&self) -> usize {
        1
    }

    fn receiver(&self, _index: usize) -> &str {
        RECEIVER
    }

    fn apply(&mut self, _index: usize, txn: &mut dyn InboundTransaction) -> StoreResult<bool> {
        if let Some(existing) = txn.duplicate_of(&self.entry)? {
            self.outcome = Some((existing, false));
            return Ok(false);
        }
        let id = txn.insert_inbox(&self.entry)?;
        self.outcome = Some((id, true));
        Ok(true)
    }
}

fn artifact(artifact_id: &str) -> PreparedInboxEntry {
    NewInboxEntry {
        owner: RECEIVER.to_owned(),
        artifact_id: artifact_id.to_owned(),
        artifact_type: "BTPS_DOC".to_owned(),
        from: OWNER.to_owned(),
        to: RECEIVER.to_owned(),
        title: None,
        raw: format!(r#"{{"id":"{artifact_id}"}}"#).into_bytes(),
        received_at: Timestamp::now(),
        remote_address: None,
    }
    .prepare()
    .unwrap()
}

/// The same artifacts reach both nodes at once: each is stored once, and both
/// nodes answer with its entry (the second as a duplicate).
#[test]
fn the_same_artifact_on_two_nodes_is_stored_once() {
    let Some((_, one, two)) = two_nodes() else {
        return;
    };
    for round in 0..50 {
        let id = format!("same-{round}");
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [Arc::clone(&one), Arc::clone(&two)]
            .into_iter()
            .map(|node| {
                let barrier = Arc::clone(&barrier);
                let id = id.clone();
                std::thread::spawn(move || {
                    let mut group = OneArtifact {
                        entry: artifact(&id),
                        outcome: None,
                    };
                    barrier.wait();
                    // A group that lost the race on the unique index fails; the
                    // server retries it alone, as here.
                    if node.commit_inbound(&mut group).is_err() {
                        group.outcome = None;
                        node.commit_inbound(&mut group).unwrap();
                    }
                    group.outcome.unwrap()
                })
            })
            .collect();
        let outcomes: Vec<(u64, bool)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(outcomes[0].0, outcomes[1].0, "round {round}: one entry");
        assert_eq!(
            outcomes.iter().filter(|(_, stored)| *stored).count(),
            1,
            "round {round}: stored by one node, a duplicate on the other"
        );
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let count = runtime
        .block_on(one.mailboxes().count(RECEIVER, Mailbox::Inbox))
        .unwrap();
    assert_eq!(count, 50);
    let feed = runtime
        .block_on(two.mailboxes().inbox_after(0, 100))
        .unwrap();
    let ids: Vec<u64> = feed.iter().map(|entry| entry.entry_id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
}

/// The server's connections are cut (a restart, a fail-over): calls fail as
/// temporarily unavailable — never anything that looks like success — and the
/// backend reconnects by itself.
#[test]
fn a_lost_connection_is_temporary_and_the_backend_recovers() {
    let Some(base) = uri() else { return };
    let (schema, uri) = fresh_schema(&base);
    let storage = PgStorage::connect(&options(&uri, "n")).unwrap();
    storage.check_ready().unwrap();
    // Every connection of this test's schema goes.
    super::cut_connections(&base, &schema);
    let mut failures = 0;
    let mut recovered = false;
    for _ in 0..20 {
        let mut group = OneArtifact {
            entry: artifact("after-cut"),
            outcome: None,
        };
        match storage.commit_inbound(&mut group) {
            Ok(()) => {
                recovered = true;
                break;
            }
            Err(StoreError::Unavailable { reason, path }) => {
                failures += 1;
                assert!(path.display().to_string().contains(":***@"), "{path:?}");
                assert!(reason.contains("database"), "{reason}");
            }
            Err(other) => panic!("a cut connection must be temporary: {other:?}"),
        }
    }
    assert!(
        recovered,
        "the backend did not reconnect ({failures} failures)"
    );
    storage.check_ready().unwrap();
}
