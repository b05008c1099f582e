//! The outbox part of the storage contract, one suite over every backend: queueing
//! inside a transaction, claims in per-pair queue order, leases that run out,
//! releasing claims at start, moving an entry on, and rollback.

use std::sync::Arc;

use btps::store::{
    Mailbox, MailboxEntry, NewOutboxEntry, OutboxState, PageRequest, Perspective, RedbOptions,
    RedbStore, Storage, StoreError, StoreResult, StoreTransaction, Timestamp, TrustStatus,
};

use super::contract::backends;
use super::new_trust;

const OWNER: &str = "billing$vendor.test";

fn at(millis: i64) -> Timestamp {
    Timestamp::from_millis(millis).unwrap()
}

/// 2025-01-01T00:00:00Z and what follows it, so that due times are exact.
const T0: i64 = 1_735_689_600_000;

fn outbound(to: &str, artifact_id: &str, queued: i64) -> NewOutboxEntry {
    NewOutboxEntry {
        owner: OWNER.to_owned(),
        artifact_id: artifact_id.to_owned(),
        artifact_type: "BTPS_DOC".to_owned(),
        from: OWNER.to_owned(),
        to: to.to_owned(),
        title: None,
        raw: format!(r#"{{"id":"{artifact_id}"}}"#).into_bytes(),
        queued_at: at(queued),
        agent_artifact_id: None,
        agent_id: None,
    }
}

fn transact<T>(
    storage: &dyn Storage,
    mut work: impl FnMut(&mut dyn StoreTransaction) -> StoreResult<T>,
) -> StoreResult<T> {
    let mut out = None;
    storage.transact(OWNER, &mut |transaction| {
        out = Some(work(transaction)?);
        Ok(())
    })?;
    Ok(out.expect("the work ran"))
}

fn enqueue(storage: &dyn Storage, to: &str, artifact_id: &str, queued: i64) -> MailboxEntry {
    transact(storage, |tx| tx.enqueue(outbound(to, artifact_id, queued))).unwrap()
}

async fn claim(storage: &dyn Storage, now: i64, limit: u32) -> Vec<String> {
    let claimed = storage
        .outbox()
        .claim_due(at(now), at(now + 60_000), limit)
        .await
        .unwrap();
    claimed.into_iter().map(|entry| entry.artifact_id).collect()
}

/// Moves a claimed entry to the sentbox, as a delivery does.
fn deliver(storage: &dyn Storage, entry_id: u64, now: i64) {
    transact(storage, |tx| {
        let mut entry = tx.entry(entry_id)?.expect("the entry is there");
        entry.mailbox = Mailbox::Sentbox;
        entry.at_millis = now;
        entry.meta.in_flight_until = None;
        entry.meta.delivered_at = Some(at(now));
        tx.update_entry(&entry)
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pair_is_attempted_in_queue_order_and_pairs_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    for (name, storage) in backends(dir.path()) {
        let storage = storage.as_ref();
        let a1 = enqueue(storage, "pay$a.test", "a1", T0);
        let _a2 = enqueue(storage, "pay$a.test", "a2", T0 + 1);
        let b1 = enqueue(storage, "pay$b.test", "b1", T0 + 2);
        assert_eq!(a1.mailbox, Mailbox::Outbox, "{name}");
        assert_eq!(a1.outbox_state(T0), Some(OutboxState::Queued), "{name}");

        // Nothing is due before it was queued.
        assert!(claim(storage, T0 - 1, 10).await.is_empty(), "{name}");
        // One entry per pair: a1 and b1, not a2 behind a1.
        assert_eq!(claim(storage, T0 + 10, 10).await, ["a1", "b1"], "{name}");
        // Claimed entries are not offered again while the claim lasts.
        assert!(claim(storage, T0 + 20, 10).await.is_empty(), "{name}");
        let listed = storage.outbox().list(None, PageRequest::first(10)).await;
        let listed = listed.unwrap().items;
        let states: Vec<_> = listed
            .iter()
            .map(|entry| entry.outbox_state(T0 + 20).unwrap())
            .collect();
        assert_eq!(
            states,
            [
                OutboxState::InFlight,
                OutboxState::Queued,
                OutboxState::InFlight
            ],
            "{name}"
        );

        // Once a1 has left the outbox, a2 heads its queue and is due at once.
        deliver(storage, a1.entry_id, T0 + 30);
        assert_eq!(claim(storage, T0 + 40, 10).await, ["a2"], "{name}");
        deliver(storage, b1.entry_id, T0 + 50);
        let sent = storage
            .mailboxes()
            .list(OWNER, Mailbox::Sentbox, PageRequest::first(10), false)
            .await
            .unwrap();
        let sent: Vec<_> = sent.items.iter().map(|e| e.artifact_id.as_str()).collect();
        assert_eq!(sent, ["a1", "b1"], "{name}");
        let stats = storage.outbox().stats().await.unwrap();
        assert_eq!(stats.entries, 1, "{name}: a2 is left");
        assert_eq!(stats.oldest_queued_at, Some(at(T0 + 1)), "{name}");
        assert_eq!(
            storage
                .mailboxes()
                .count(OWNER, Mailbox::Outbox)
                .await
                .unwrap(),
            1,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_run_out_retries_wait_and_a_restart_releases_claims() {
    let dir = tempfile::tempdir().unwrap();
    for (name, storage) in backends(dir.path()) {
        let storage = storage.as_ref();
        let first = enqueue(storage, "pay$a.test", "x1", T0);
        assert_eq!(claim(storage, T0, 10).await, ["x1"], "{name}");
        // The claim lasts a minute: after it, the entry is due again.
        assert!(claim(storage, T0 + 59_999, 10).await.is_empty(), "{name}");
        assert_eq!(claim(storage, T0 + 60_000, 10).await, ["x1"], "{name}");

        // A failed attempt: back in the queue, due in two minutes.
        transact(storage, |tx| {
            let mut entry = tx.entry(first.entry_id)?.unwrap();
            entry.meta.in_flight_until = None;
            entry.meta.attempts += 1;
            entry.meta.next_attempt_at = Some(at(T0 + 180_000));
            tx.update_entry(&entry)
        })
        .unwrap();
        let waiting = storage.mailboxes().entry(first.entry_id).await.unwrap();
        let waiting = waiting.unwrap();
        assert_eq!(
            waiting.outbox_state(T0 + 61_000),
            Some(OutboxState::RetryWait),
            "{name}"
        );
        assert_eq!(
            storage.outbox().next_due().await.unwrap(),
            Some(T0 + 180_000),
            "{name}"
        );
        assert!(claim(storage, T0 + 179_999, 10).await.is_empty(), "{name}");
        assert_eq!(claim(storage, T0 + 180_000, 10).await, ["x1"], "{name}");

        // A restart ends the claim: due at once, attempts unchanged.
        let released = storage.outbox().release_claims(at(T0 + 181_000)).await;
        assert_eq!(released.unwrap(), 1, "{name}");
        let entry = storage.mailboxes().entry(first.entry_id).await.unwrap();
        let entry = entry.unwrap();
        assert_eq!(entry.meta.attempts, 1, "{name}");
        assert_eq!(entry.meta.in_flight_until, None, "{name}");
        assert_eq!(claim(storage, T0 + 181_000, 10).await, ["x1"], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_leaves_neither_the_trust_change_nor_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    for (name, storage) in backends(dir.path()) {
        let storage = storage.as_ref();
        let record = new_trust(OWNER, "pay$a.test", TrustStatus::Pending, None);
        let outcome = transact(storage, |tx| {
            tx.create_trust(Perspective::Outbound, record.clone())?;
            tx.enqueue(outbound("pay$a.test", "req-1", T0))?;
            Err::<(), _>(StoreError::TaskFailed("the work fails".to_owned()))
        });
        assert!(outcome.is_err(), "{name}");
        assert_eq!(storage.outbox().stats().await.unwrap().entries, 0, "{name}");
        assert!(claim(storage, T0 + 1, 10).await.is_empty(), "{name}");
        let stored = storage
            .trust()
            .get_pair(Perspective::Outbound, OWNER, "pay$a.test")
            .await
            .unwrap();
        // The reference's JSON files are written as changes are made, like a group's.
        if name != "json files" {
            assert_eq!(stored, None, "{name}");
        }

        // The same work that succeeds keeps both.
        let entry = transact(storage, |tx| {
            if tx.trust(Perspective::Outbound, &record_id())?.is_none() {
                tx.create_trust(Perspective::Outbound, record.clone())?;
            }
            tx.enqueue(outbound("pay$a.test", "req-1", T0))
        })
        .unwrap();
        assert!(entry.entry_id > 0, "{name}");
        assert_eq!(claim(storage, T0 + 1, 10).await, ["req-1"], "{name}");
    }
}

fn record_id() -> String {
    btps::identity::compute_trust_id(OWNER, "pay$a.test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_must_belong_to_its_sender() {
    let dir = tempfile::tempdir().unwrap();
    for (name, storage) in backends(dir.path()) {
        let mut entry = outbound("pay$a.test", "bad", T0);
        entry.owner = "other$vendor.test".to_owned();
        let refused = transact(storage.as_ref(), |tx| tx.enqueue(entry.clone()));
        assert!(
            matches!(refused, Err(StoreError::Invalid { .. })),
            "{name}: {refused:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("btps.redb");
    {
        let store = RedbStore::open(&path, &RedbOptions::default()).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(store);
        for index in 0..5 {
            enqueue(
                storage.as_ref(),
                "pay$a.test",
                &format!("q{index}"),
                T0 + index,
            );
        }
        assert_eq!(claim(storage.as_ref(), T0 + 10, 10).await, ["q0"]);
    }
    let storage: Arc<dyn Storage> =
        Arc::new(RedbStore::open(&path, &RedbOptions::default()).unwrap());
    let listed = storage
        .outbox()
        .list(Some(OWNER), PageRequest::first(3))
        .await;
    let listed = listed.unwrap();
    let ids: Vec<_> = listed
        .items
        .iter()
        .map(|e| e.artifact_id.as_str())
        .collect();
    assert_eq!(ids, ["q0", "q1", "q2"]);
    let rest = storage
        .outbox()
        .list(Some(OWNER), PageRequest::after(listed.next.unwrap(), 3))
        .await
        .unwrap();
    let ids: Vec<_> = rest.items.iter().map(|e| e.artifact_id.as_str()).collect();
    assert_eq!(ids, ["q3", "q4"]);
    assert_eq!(rest.next, None);
    // q0 is still held by the claim made before; the start releases it.
    assert_eq!(
        storage.outbox().release_claims(at(T0 + 20)).await.unwrap(),
        1
    );
    assert_eq!(claim(storage.as_ref(), T0 + 20, 10).await, ["q0"]);
}
