//! Readers see consistent snapshots while a writer commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use btps::store::{PageRequest, Perspective, RedbOptions, RedbStore, TrustStatus};

use super::new_trust;

const BATCH: u64 = 5;
const COMMITS: u64 = 60;

#[test]
fn readers_see_whole_transactions_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut last = 0;
                let mut snapshots = 0u64;
                while !done.load(Ordering::Acquire) {
                    let seen = store
                        .read(|snapshot| {
                            let all = snapshot
                                .list_all(Perspective::Inbound, &PageRequest::first(u32::MAX))?
                                .items
                                .len() as u64;
                            // A write may commit between these queries; the snapshot must not see it.
                            std::thread::yield_now();
                            let receiver = snapshot
                                .list_by_receiver(
                                    Perspective::Inbound,
                                    "r$c.test",
                                    &PageRequest::first(u32::MAX),
                                )?
                                .items
                                .len() as u64;
                            let pending = snapshot
                                .list_by_status(
                                    Perspective::Inbound,
                                    &TrustStatus::Pending,
                                    &PageRequest::first(u32::MAX),
                                )?
                                .items
                                .len() as u64;
                            let counted: u64 = snapshot
                                .count_by_status(Perspective::Inbound)?
                                .values()
                                .sum();
                            assert_eq!((receiver, pending, counted), (all, all, all));
                            Ok(all)
                        })
                        .unwrap();
                    assert_eq!(seen % BATCH, 0, "saw part of a transaction");
                    assert!(seen >= last, "snapshots went back in time");
                    last = seen;
                    snapshots += 1;
                }
                snapshots
            })
        })
        .collect();
    for commit in 0..COMMITS {
        store
            .write(|batch| {
                for n in 0..BATCH {
                    let sender = format!("s{commit}-{n}$c.test");
                    batch.create_trust(
                        Perspective::Inbound,
                        new_trust(&sender, "r$c.test", TrustStatus::Pending, None),
                        None,
                    )?;
                }
                Ok(())
            })
            .unwrap();
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    let total = store.read(|s| s.trust_count(Perspective::Inbound)).unwrap();
    assert_eq!(total, BATCH * COMMITS);
}
