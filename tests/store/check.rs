//! `btps check FILE` never writes to the file it checks: a sound file, a file a
//! crash left (which the check recovers only in memory) and a read-only copy keep
//! their bytes, size and modification time, and the check passes on each.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

use btps::store::{Perspective, RedbOptions, RedbStore, TrustStatus};

use super::new_trust;

/// The user an unprivileged check runs as when the tests run as root (root may
/// write a file of mode 0444, so only another user shows that nothing is written).
const NOBODY: u32 = 65534;

/// What must not change: the bytes, the size and the modification time.
fn fingerprint(path: &Path) -> (Vec<u8>, u64, SystemTime) {
    let metadata = std::fs::metadata(path).unwrap();
    (
        std::fs::read(path).unwrap(),
        metadata.len(),
        metadata.modified().unwrap(),
    )
}

/// Runs `btps check FILE --json` in `dir` (its own data directory), as `user` if given.
fn check(dir: &Path, file: &Path, user: Option<u32>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_btps"));
    command
        .args(["check", file.to_str().unwrap(), "--json", "--data-dir"])
        .arg(dir)
        .current_dir(dir)
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_CONFIG")
        .env_remove("BTPS_ADMIN_SOCKET");
    if let Some(user) = user {
        command.uid(user).gid(user);
    }
    command.output().expect("btps runs")
}

fn passes(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|metadata| std::os::unix::fs::MetadataExt::uid(&metadata) == 0)
        .unwrap_or(false)
}

fn add_records(store: &RedbStore, from: usize, count: usize) {
    store
        .write(|batch| {
            for n in from..from + count {
                batch.create_trust(
                    Perspective::Inbound,
                    new_trust(
                        &format!("s{n}$check.test"),
                        "r$check.test",
                        TrustStatus::Accepted,
                        None,
                    ),
                    None,
                )?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn check_never_writes_the_file_it_checks() {
    let dir = tempfile::tempdir().unwrap();
    // Readable by an unprivileged user (the read-only case below).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sound = dir.path().join("sound.redb");
    let crashed = dir.path().join("crashed.redb");
    {
        let store = RedbStore::open(&sound, &RedbOptions::default()).unwrap();
        add_records(&store, 0, 150);
        // A copy taken while the database is open is what a crash leaves: the
        // file says it was not closed cleanly.
        std::fs::copy(&sound, &crashed).unwrap();
        add_records(&store, 150, 50);
    }

    // A cleanly closed file: sound, nothing written.
    let before = fingerprint(&sound);
    let report = passes(&check(dir.path(), &sound, None));
    assert_eq!(report["report"]["trustInbound"], 200, "{report}");
    assert_eq!(report["report"]["recovered"], false, "{report}");
    assert!(
        fingerprint(&sound) == before,
        "btps check changed {sound:?}"
    );

    // A file a crash left: recovered in memory only, and said so.
    let before = fingerprint(&crashed);
    let report = passes(&check(dir.path(), &crashed, None));
    assert_eq!(report["report"]["trustInbound"], 150, "{report}");
    assert_eq!(report["report"]["recovered"], true, "{report}");
    assert!(
        fingerprint(&crashed) == before,
        "btps check changed {crashed:?}"
    );
    // The store-level check is read-only too.
    assert!(!RedbStore::check_file_integrity(&crashed).unwrap());
    assert!(RedbStore::check_file_integrity(&sound).unwrap());
    assert!(fingerprint(&crashed) == before);
    // It is still the crash's file: opening it recovers it as before.
    let store = RedbStore::open(&crashed, &RedbOptions::default()).unwrap();
    assert_eq!(
        store
            .read(|snapshot| snapshot.count_by_status(Perspective::Inbound))
            .unwrap()
            .values()
            .sum::<u64>(),
        150
    );
    drop(store);

    // A read-only copy (mode 0444), checked by a user who may only read it.
    let read_only = dir.path().join("read-only.redb");
    std::fs::copy(&sound, &read_only).unwrap();
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o444)).unwrap();
    let user = is_root().then_some(NOBODY);
    let before = fingerprint(&read_only);
    let report = passes(&check(dir.path(), &read_only, user));
    assert_eq!(report["report"]["trustInbound"], 200, "{report}");
    assert!(
        fingerprint(&read_only) == before,
        "btps check changed {read_only:?}"
    );
    assert!(RedbStore::check_file_integrity(&read_only).unwrap());
    assert!(fingerprint(&read_only) == before);
}

/// A check holds the file against writers while it runs, and a file a server holds
/// is refused as in use (the check of a live database goes through the server).
#[test]
fn a_file_in_use_is_refused_without_being_touched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.redb");
    let store = RedbStore::open(&path, &RedbOptions::default()).unwrap();
    add_records(&store, 0, 10);
    let before = std::fs::read(&path).unwrap();
    let output = check(dir.path(), &path, None);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    drop(store);

    // While a check's store is open, a server cannot open the file.
    let (checking, intact) = RedbStore::open_unwritten(&path, &RedbOptions::default()).unwrap();
    assert!(intact);
    assert!(matches!(
        RedbStore::open(&path, &RedbOptions::default()),
        Err(btps::store::StoreError::InUse { .. })
    ));
    drop(checking);
    RedbStore::open(&path, &RedbOptions::default()).unwrap();
}
