//! Crash test: a child process commits records in a loop and prints each id once
//! its commit returned; it is killed with SIGKILL at random moments. Every printed
//! id must survive, nothing may be duplicated or half-written, and the file must
//! pass redb's integrity check.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use btps::store::{PageRequest, Perspective, RedbOptions, RedbStore, TrustStatus};
use rand::Rng;

use super::new_trust;

const CHILD_DB: &str = "BTPS_CRASH_CHILD_DB";
const CHILD_ROUND: &str = "BTPS_CRASH_CHILD_ROUND";
const RECEIVER: &str = "sink$crash.test";

/// The child: runs only when re-executed by the crash test with `BTPS_CRASH_CHILD_DB`.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let store = RedbStore::open(Path::new(&path), &RedbOptions::default()).unwrap();
    let stdout = std::io::stdout();
    for step in 0u64.. {
        // Alternate single commits and batches of several records in one transaction.
        let batch = if step % 3 == 0 { 4 } else { 1 };
        let ids = store
            .write(|txn| {
                (0..batch)
                    .map(|n| {
                        let sender = format!("s{round}-{step}-{n}$crash.test");
                        let status = if n % 2 == 0 {
                            TrustStatus::Accepted
                        } else {
                            TrustStatus::Pending
                        };
                        let expiry = Some(1_700_000_000_000 + i64::try_from(step).unwrap());
                        txn.create_trust(
                            Perspective::Inbound,
                            new_trust(&sender, RECEIVER, status, expiry),
                            None,
                        )
                        .map(|record| record.id)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        let mut out = stdout.lock();
        for id in ids {
            writeln!(out, "committed {id}").unwrap();
        }
        out.flush().unwrap();
    }
}

fn crash_rounds(rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("btps.redb");
    let mut promised = BTreeSet::new();
    let mut rng = rand::thread_rng();
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::crash::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &path)
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..150)));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let stdout = child.stdout.take().unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(id) = line.strip_prefix("committed ") {
                // A line cut by the kill is not a promise.
                if id.len() == 64 {
                    assert!(promised.insert(id.to_owned()), "id printed twice: {id}");
                }
            }
        }
        if !path.exists() {
            continue; // killed before the file was created
        }
        verify(&path, &promised);
    }
    assert!(
        RedbStore::check_file_integrity(&path).unwrap(),
        "integrity check had to repair"
    );
    assert!(!promised.is_empty(), "the child never committed anything");
}

fn verify(path: &Path, promised: &BTreeSet<String>) {
    let store = RedbStore::open(path, &RedbOptions::default()).unwrap();
    store
        .read(|snapshot| {
            let all = snapshot
                .list_all(Perspective::Inbound, &PageRequest::first(u32::MAX))?
                .items;
            let ids: BTreeSet<String> = all.iter().map(|record| record.id.clone()).collect();
            assert_eq!(ids.len(), all.len(), "duplicated records");
            for id in promised {
                assert!(ids.contains(id), "committed record {id} is lost");
            }
            // Every index agrees with the primary table: no half-written mutation.
            let by_receiver = snapshot
                .list_by_receiver(
                    Perspective::Inbound,
                    RECEIVER,
                    &PageRequest::first(u32::MAX),
                )?
                .items;
            assert_eq!(by_receiver, all);
            let expiring = snapshot
                .list_expiring_before(
                    Perspective::Inbound,
                    i64::MAX,
                    None,
                    &PageRequest::first(u32::MAX),
                )?
                .items;
            assert_eq!(expiring.len(), all.len());
            let counted: u64 = snapshot
                .count_by_status(Perspective::Inbound)?
                .values()
                .sum();
            assert_eq!(counted, all.len() as u64);
            for record in &all {
                let expected_status = if record.sender_id.ends_with("-0$crash.test")
                    || record.sender_id.ends_with("-2$crash.test")
                {
                    TrustStatus::Accepted
                } else {
                    TrustStatus::Pending
                };
                assert_eq!(record.status, expected_status, "{}", record.sender_id);
            }
            Ok(())
        })
        .unwrap();
    drop(store);
    assert!(
        RedbStore::check_file_integrity(path).unwrap(),
        "integrity check had to repair"
    );
}

#[test]
fn committed_records_survive_sigkill() {
    crash_rounds(50);
}

#[test]
#[ignore = "long: 500 kill rounds"]
fn committed_records_survive_sigkill_long() {
    crash_rounds(500);
}
