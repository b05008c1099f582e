//! Modes: whatever a command creates in a data directory is private to its owner
//! (directories 0700, the database, private keys and tokens 0600), keys go into
//! the data directory's `keys/` unless another directory is named, and `btps serve`
//! takes other users' access away from the private files it finds open.

use super::{Serve, btps, mode, ok, ok_json, set_mode};
use crate::util::vectors_dir;

#[test]
fn what_the_commands_create_is_private() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    // identity add: the data directory, the database, keys/ and the private key,
    // which goes into the data directory, not the working directory.
    let added = ok_json(&btps(
        dir,
        &[
            "identity",
            "add",
            "finance$client.test",
            "--data-dir",
            "data",
            "--create",
            "--json",
        ],
    ));
    let key = dir.join(added["privateKeyFile"].as_str().unwrap());
    assert_eq!(key, dir.join("data/keys/finance.client.test.btps1.key.pem"));
    assert_eq!(mode(&dir.join("data")), 0o700);
    assert_eq!(mode(&dir.join("data/btps.redb")), 0o600);
    assert_eq!(mode(&dir.join("data/keys")), 0o700);
    assert_eq!(mode(&key), 0o600);
    let cwd: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        cwd,
        ["data"],
        "nothing is written into the working directory"
    );

    // rotate-key: the same place.
    let rotated = ok_json(&btps(
        dir,
        &[
            "identity",
            "rotate-key",
            "finance$client.test",
            "--data-dir",
            "data",
            "--json",
        ],
    ));
    let rotated_key = dir.join(rotated["privateKeyFile"].as_str().unwrap());
    assert!(rotated_key.starts_with(dir.join("data/keys")));
    assert_eq!(mode(&rotated_key), 0o600);

    // keygen: into the data directory's keys/ by default, or an explicit --out
    // (created 0700).
    ok(&btps(
        dir,
        &["keygen", "--name", "billing", "--data-dir", "data"],
    ));
    assert_eq!(mode(&dir.join("data/keys/billing.key.pem")), 0o600);
    ok(&btps(dir, &["keygen", "--name", "own", "--out", "mine"]));
    assert_eq!(mode(&dir.join("mine")), 0o700);
    assert_eq!(mode(&dir.join("mine/own.key.pem")), 0o600);

    // import --create: a new data directory and database.
    let stores = vectors_dir().join("json-stores");
    ok(&btps(
        dir,
        &[
            "import",
            "--data-dir",
            "imported",
            "--create",
            "--trust",
            stores.join("trust.json").to_str().unwrap(),
            "--identities",
            stores.join("identities.json").to_str().unwrap(),
        ],
    ));
    assert_eq!(mode(&dir.join("imported")), 0o700);
    assert_eq!(mode(&dir.join("imported/btps.redb")), 0o600);

    // backup and export: private copies.
    ok(&btps(
        dir,
        &["backup", "--data-dir", "imported", "--out", "copy.redb"],
    ));
    assert_eq!(mode(&dir.join("copy.redb")), 0o600);
    ok(&btps(
        dir,
        &[
            "export",
            "--data-dir",
            "imported",
            "--trust",
            "trust.json",
            "--identities",
            "identities.json",
        ],
    ));
    assert_eq!(mode(&dir.join("trust.json")), 0o600);
    assert_eq!(mode(&dir.join("identities.json")), 0o600);
}

#[test]
fn serve_tightens_what_it_finds_open_and_says_so() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    // A first start creates keys, certificate, token and database.
    Serve::start(dir, "data", &[]).stop();
    ok(&btps(
        dir,
        &[
            "identity",
            "add",
            "finance$client.test",
            "--data-dir",
            "data",
        ],
    ));
    let data = dir.join("data");
    let open = [
        ("", 0o755),
        ("btps.redb", 0o644),
        ("keys", 0o755),
        ("keys/server.key.pem", 0o640),
        ("keys/finance.client.test.btps1.key.pem", 0o644),
        ("tls", 0o711),
        ("tls/key.pem", 0o604),
        ("http.token", 0o644),
    ];
    let relative = |path: &str| {
        if path.is_empty() {
            String::from("data")
        } else {
            format!("data/{path}")
        }
    };
    for (path, wide) in open {
        set_mode(&dir.join(relative(path)), wide);
    }
    // Public files keep their modes.
    set_mode(&data.join("keys/server.pub.pem"), 0o644);

    let server = Serve::start(dir, "data", &[]);
    for (path, wide) in open {
        let path = relative(path);
        let tight = wide & 0o700;
        assert_eq!(mode(&dir.join(&path)), tight, "{path}");
        let line = format!("tightened the mode of {path} from {wide:04o} to {tight:04o}");
        assert!(
            server.printed(&line),
            "{line:?} not in {:?}",
            server.printed
        );
    }
    assert_eq!(mode(&data.join("keys/server.pub.pem")), 0o644);
    server.stop();
    // Nothing to say the next time.
    let server = Serve::start(dir, "data", &[]);
    assert!(!server.printed("tightened"), "{:?}", server.printed);
    server.stop();
}

#[test]
fn stray_private_keys_are_ignored_by_git() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ignored = |path: &str| {
        std::process::Command::new("git")
            .args(["check-ignore", "--no-index", "-q", path])
            .current_dir(root)
            .status()
            .ok()
            .and_then(|status| status.code())
    };
    match ignored("finance.client.test.btps1.key.pem") {
        // Exit 128: not a git checkout; None: no git. The pattern is read instead.
        Some(128) | None => {
            let patterns = std::fs::read_to_string(root.join(".gitignore")).unwrap();
            assert!(patterns.lines().any(|line| line.trim() == "*.key.pem"));
        }
        Some(code) => {
            // `--key-out .` or `keygen --out DIR` inside a checkout.
            assert_eq!(code, 0, "a private key in the checkout is not ignored");
            assert_eq!(ignored("mine/own.key.pem"), Some(0));
            // The spec's test key is a fixture and stays tracked.
            assert_eq!(ignored("tests/fixtures/spec-test-key.key.pem"), Some(1));
            assert_eq!(ignored("keys/server.pub.pem"), Some(1));
        }
    }
}

#[test]
fn keys_created_by_root_leave_the_data_directory_to_its_owner() {
    use std::os::unix::fs::MetadataExt;
    if !btps::server::permissions::running_as_root() {
        eprintln!("not root: the change of owner is not tried");
        return;
    }
    // A user and group that are not root (`nobody` on Debian).
    const SERVICE_ID: u32 = 65534;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    set_mode(&data, 0o700);
    std::os::unix::fs::chown(&data, Some(SERVICE_ID), Some(SERVICE_ID)).unwrap();
    // As `sudo btps identity add` on a data directory whose server has not made
    // keys/ yet: keys/ is the service's (its own key goes there), the database too,
    // and the private key stays root's, for the operator to hand over.
    let added = ok_json(&btps(
        dir,
        &[
            "identity",
            "add",
            "finance$client.test",
            "--data-dir",
            "data",
            "--json",
        ],
    ));
    let owner = |path: &std::path::Path| {
        let metadata = std::fs::metadata(path).unwrap();
        (metadata.uid(), metadata.gid())
    };
    assert_eq!(owner(&data.join("keys")), (SERVICE_ID, SERVICE_ID));
    assert_eq!(mode(&data.join("keys")), 0o700);
    assert_eq!(owner(&data.join("btps.redb")), (SERVICE_ID, SERVICE_ID));
    let key = dir.join(added["privateKeyFile"].as_str().unwrap());
    assert_eq!(owner(&key), (0, 0));
    assert_eq!(mode(&key), 0o600);
}
