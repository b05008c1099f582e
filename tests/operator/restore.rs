//! `btps restore` run by root keeps the owner and mode of the database it
//! replaces, so that the service user can still open it; run by another user it
//! refuses to leave a database its owner could not read.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{btps, mode, ok, ok_json, set_mode, stderr};

/// A user and group that are not root (`nobody` on Debian).
const SERVICE_ID: u32 = 65534;

/// `dir/data` with one identity, and its backup `dir/backup.redb`.
fn a_data_directory_and_its_backup(dir: &Path) {
    ok(&btps(
        dir,
        &[
            "identity",
            "add",
            "finance$client.test",
            "--data-dir",
            "data",
            "--create",
        ],
    ));
    ok(&btps(
        dir,
        &["backup", "--data-dir", "data", "--out", "backup.redb"],
    ));
}

#[test]
fn restore_keeps_the_owner_and_mode_of_the_database() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    a_data_directory_and_its_backup(dir);
    ok(&btps(
        dir,
        &["identity", "add", "later$client.test", "--data-dir", "data"],
    ));
    let data = dir.join("data");
    let database = data.join("btps.redb");

    if !btps::server::permissions::running_as_root() {
        // Not root: the restored database is the restoring user's own, as the one
        // it replaces, with mode 0600.
        set_mode(&database, 0o640);
        let restored = ok_json(&btps(
            dir,
            &["restore", "backup.redb", "--data-dir", "data", "--json"],
        ));
        assert_eq!(restored["mode"], "0600");
        assert_eq!(mode(&database), 0o600);
        eprintln!("not root: the change of owner is not tried");
        return;
    }

    // As the service user's data would be: owned by it, mode 0700/0600.
    for path in [&data, &database] {
        std::os::unix::fs::chown(path, Some(SERVICE_ID), Some(SERVICE_ID)).unwrap();
    }
    let restored = ok_json(&btps(
        dir,
        &["restore", "backup.redb", "--data-dir", "data", "--json"],
    ));
    assert_eq!(restored["owner"], format!("{SERVICE_ID}:{SERVICE_ID}"));
    assert_eq!(restored["mode"], "0600");
    let metadata = std::fs::metadata(&database).unwrap();
    assert_eq!((metadata.uid(), metadata.gid()), (SERVICE_ID, SERVICE_ID));
    assert_eq!(mode(&database), 0o600);
    // It is the backup: the identity added after it is gone.
    let listed = ok_json(&btps(
        dir,
        &["identity", "list", "--data-dir", "data", "--json"],
    ));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    // The replaced database is kept, with its owner.
    let kept = std::path::PathBuf::from(restored["previous"].as_str().unwrap());
    let kept = dir.join(kept);
    assert_eq!(std::fs::metadata(&kept).unwrap().uid(), SERVICE_ID);

    // Into a data directory without a database: the directory's owner.
    let fresh = dir.join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::os::unix::fs::chown(&fresh, Some(SERVICE_ID), Some(SERVICE_ID)).unwrap();
    let restored = ok_json(&btps(
        dir,
        &["restore", "backup.redb", "--data-dir", "fresh", "--json"],
    ));
    assert_eq!(restored["owner"], format!("{SERVICE_ID}:{SERVICE_ID}"));
    assert_eq!(
        std::fs::metadata(fresh.join("btps.redb")).unwrap().uid(),
        SERVICE_ID
    );

    // The service user itself can open what was restored.
    set_mode(dir, 0o711);
    let output = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={SERVICE_ID}"),
            &format!("--regid={SERVICE_ID}"),
            "--clear-groups",
            env!("CARGO_BIN_EXE_btps"),
            "check",
            "--data-dir",
        ])
        .arg(&data)
        .current_dir("/")
        .env_remove("BTPS_CONFIG")
        .env_remove("BTPS_DATA_DIR")
        .output();
    match output {
        Ok(output) if stderr(&output).contains("failed to execute") => {
            eprintln!(
                "the service user cannot run the test binary: {}",
                stderr(&output)
            );
        }
        Ok(output) => assert!(output.status.success(), "{}", stderr(&output)),
        Err(error) => eprintln!("setpriv not run: {error}"),
    }
}

#[test]
fn restore_is_refused_while_a_server_holds_the_database() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    a_data_directory_and_its_backup(dir);
    let database = dir.join("data/btps.redb");
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("data"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };

    // The admin socket turned off: the lock on the database is what gives the
    // server away.
    let server = super::Serve::start(dir, "data", &[("BTPS_ADMIN", "false")]);
    let before = listing();
    let inode = std::fs::metadata(&database).unwrap().ino();
    let refused = btps(
        dir,
        &["restore", "backup.redb", "--data-dir", "data", "--json"],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("in use by another process"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(listing(), before, "nothing was put in the data directory");
    assert_eq!(std::fs::metadata(&database).unwrap().ino(), inode);
    server.stop();

    // Stopped, the same command replaces the file by a rename: a new file under
    // the database's name, the old one kept under its second name, no scratch
    // file left behind.
    let restored = ok_json(&btps(
        dir,
        &["restore", "backup.redb", "--data-dir", "data", "--json"],
    ));
    assert_eq!(restored["ok"], true);
    assert_eq!(restored["report"]["identities"], 1);
    assert_ne!(std::fs::metadata(&database).unwrap().ino(), inode);
    let kept = dir.join(restored["previous"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&kept).unwrap().ino(), inode);
    let after = listing();
    assert!(
        after
            .iter()
            .all(|name| !name.contains(".restore") && !name.contains("tmp")),
        "{after:?}"
    );
}
