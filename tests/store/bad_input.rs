//! A truncated, corrupted or foreign file given as the database is refused with an
//! error naming the file, and is never modified.

use std::path::Path;

use btps::store::{Perspective, RedbOptions, RedbStore, StoreError, TrustStatus};

use super::new_trust;

/// A real database file with some records in it.
fn valid_database(dir: &Path) -> Vec<u8> {
    let path = dir.join("good.redb");
    let store = RedbStore::open(&path, &RedbOptions::default()).unwrap();
    store
        .write(|batch| {
            for n in 0..300 {
                let sender = format!("s{n}$bad.test");
                batch.create_trust(
                    Perspective::Inbound,
                    new_trust(&sender, "r$bad.test", TrustStatus::Accepted, Some(n)),
                    None,
                )?;
            }
            Ok(())
        })
        .unwrap();
    drop(store);
    std::fs::read(&path).unwrap()
}

fn assert_refused(dir: &Path, name: &str, content: &[u8]) {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    let error = RedbStore::open(&path, &RedbOptions::default()).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "{name}: {message}"
    );
    assert!(
        matches!(error, StoreError::Corrupted { .. }),
        "{name}: unexpected error kind: {error:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        content,
        "{name} was modified"
    );
}

#[test]
fn bad_files_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let good = valid_database(dir.path());
    assert!(good.len() > 64 * 1024, "the fixture should span many pages");

    assert_refused(dir.path(), "text.redb", b"this is not a database\n");
    assert_refused(dir.path(), "empty.redb", b"");
    assert_refused(dir.path(), "truncated.redb", &good[..good.len() / 3]);
    assert_refused(dir.path(), "header-only.redb", &good[..512]);

    let mut corrupted = good.clone();
    for byte in &mut corrupted[4096..good.len() - 4096] {
        *byte ^= 0x5a;
    }
    assert_refused(dir.path(), "corrupted.redb", &corrupted);

    let mut bad_magic = good;
    bad_magic[0] ^= 0xff;
    assert_refused(dir.path(), "bad-magic.redb", &bad_magic);
}

#[test]
fn another_applications_redb_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    let database = redb::Database::create(&path).unwrap();
    let txn = database.begin_write().unwrap();
    txn.open_table(redb::TableDefinition::<&str, u64>::new("theirs"))
        .unwrap()
        .insert("x", 1)
        .unwrap();
    txn.commit().unwrap();
    drop(database);
    let before = std::fs::read(&path).unwrap();
    let error = RedbStore::open(&path, &RedbOptions::default()).unwrap_err();
    assert!(matches!(error, StoreError::Corrupted { .. }), "{error:?}");
    assert!(error.to_string().contains("other.redb"));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
