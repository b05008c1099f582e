//! The operator commands `btps identity`, `btps trust` and `btps inbox`, run as real
//! processes against databases in temporary directories: records are prepared
//! through the store API, the CLI changes or shows them, and the store is read
//! again to see what the CLI wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use btps::config::DEFAULT_LISTEN;
use btps::crypto::{PrivateKey, PublicKey};
use btps::identity::compute_trust_id;
use btps::identity::dns::key_record_text;
use btps::store::{
    IdentityRecord, NewInboxEntry, Perspective, PublicKeyRecord, RedbOptions, RedbStore, Timestamp,
    TrustStatus,
};
use serde_json::Value;

use crate::store::new_trust;
use crate::util::{vector_json, vectors_dir};

fn btps_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(args)
        .current_dir(dir)
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_CONFIG")
        .env_remove("BTPS_ADMIN_SOCKET")
        .output()
        .expect("btps runs")
}

/// Runs the CLI on the data directory `data` (relative to `dir`).
fn run(dir: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--data-dir", "data"]);
    btps_in(dir, &all)
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn ok_json(output: &Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}

/// Asserts exit code 2 and an error message containing `needle`.
fn fails(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

fn open(dir: &Path) -> RedbStore {
    RedbStore::open_dir(&dir.join("data"), &RedbOptions::default()).unwrap()
}

/// A vector key's public PEM file and its fingerprint.
fn vector_key(name: &str) -> (PathBuf, String) {
    let entry = &vector_json("keys/index.json")["keys"][name];
    let path = vectors_dir()
        .join("keys")
        .join(entry["publicKey"].as_str().unwrap());
    (path, entry["fingerprint"].as_str().unwrap().to_owned())
}

fn hosted(identity: &str) -> IdentityRecord {
    let (path, _) = vector_key("finance");
    IdentityRecord::new(
        identity,
        PublicKeyRecord {
            selector: String::from("btps1"),
            public_key: std::fs::read_to_string(path).unwrap(),
            key_type: String::from("rsa"),
            version: String::from("1.0.0"),
            created_at: Timestamp::now(),
            source: None,
        },
        Timestamp::now(),
    )
}

#[test]
fn identity_add_generates_a_key_pair_and_keeps_only_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let added = ok_json(&run(
        dir.path(),
        &[
            "identity",
            "add",
            "Alice$Example.test",
            "--key-out",
            "keys",
            "--create",
            "--json",
        ],
    ));
    let key_file = dir.path().join(added["privateKeyFile"].as_str().unwrap());
    assert!(key_file.starts_with(dir.path().join("keys")));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let private = PrivateKey::from_pem(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    let public = private.public_key();
    assert_eq!(added["fingerprint"], public.fingerprint());
    assert_eq!(added["selector"], "btps1");
    assert_eq!(
        added["dns"][0]["name"],
        "btps1._btps.identity.Alice.Example.test"
    );
    assert_eq!(
        added["dns"][0]["value"],
        key_record_text(&public.to_base64())
    );
    assert_eq!(added["dns"][1]["name"], "_btps.host.Example.test");

    let store = open(dir.path());
    let record = store
        .read(|s| s.identity_by_name("alice$example.test"))
        .unwrap()
        .unwrap();
    assert_eq!(record.identity, "Alice$Example.test");
    let stored = &record.public_keys[0];
    // The PEM as Node exports it: 64-character lines and a trailing newline.
    assert_eq!(stored.public_key, format!("{}\n", public.to_pem()));
    assert_eq!(
        PublicKey::from_pem(&stored.public_key)
            .unwrap()
            .fingerprint(),
        public.fingerprint()
    );
    drop(store);

    // Adding it again is refused and the owner's key file is left alone.
    let before = std::fs::read(&key_file).unwrap();
    fails(
        &run(
            dir.path(),
            &["identity", "add", "alice$example.test", "--key-out", "keys"],
        ),
        "already exists",
    );
    assert_eq!(std::fs::read(&key_file).unwrap(), before);
    // Bad syntax is named.
    fails(
        &run(dir.path(), &["identity", "add", "alice.example.test"]),
        "invalid identity \"alice.example.test\"",
    );
    fails(
        &run(
            dir.path(),
            &["identity", "add", "bob$example.test", "--selector", "a.b"],
        ),
        "invalid selector",
    );
}

#[test]
fn identity_add_with_a_given_key_writes_no_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, fingerprint) = vector_key("billing");
    let output = run(
        dir.path(),
        &[
            "identity",
            "add",
            "billing$vendor.test",
            "--selector",
            "s2025",
            "--public-key",
            pem.to_str().unwrap(),
            "--create",
        ],
    );
    let text = ok(&output);
    assert!(
        text.contains("s2025._btps.identity.billing.vendor.test. IN TXT \"v=1.0.0; k=rsa; p="),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "_btps.host.vendor.test. IN TXT \"v=1.0.0; u={DEFAULT_LISTEN}; s=s2025\""
        )),
        "{text}"
    );
    assert!(text.contains(&fingerprint), "{text}");
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["data"]);
    let key = open(dir.path())
        .read(|s| s.public_key("billing$vendor.test", Some("s2025")))
        .unwrap()
        .unwrap();
    assert_eq!(
        PublicKey::from_pem(&key.public_key).unwrap().fingerprint(),
        fingerprint
    );
}

#[test]
fn identity_list_and_show_as_tables_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_identity(hosted("pay$client.test")).unwrap();
    store.create_identity(hosted("Ops$Client.test")).unwrap();
    drop(store);
    let (_, fingerprint) = vector_key("finance");

    let table = ok(&run(dir.path(), &["identity", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("IDENTITY"), "{table}");
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].starts_with("Ops$Client.test"), "{table}");
    assert!(lines[2].starts_with("pay$client.test") && lines[2].contains(&fingerprint));

    let listed = ok_json(&run(dir.path(), &["identity", "list", "--json"]));
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["identity"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ops$Client.test", "pay$client.test"]);

    let shown = ok_json(&run(
        dir.path(),
        &["identity", "show", "PAY$client.test", "--json"],
    ));
    assert_eq!(shown["identity"], "pay$client.test");
    assert_eq!(shown["currentSelector"], "btps1");
    assert_eq!(shown["publicKeys"][0]["fingerprint"], fingerprint.as_str());
    let table = ok(&run(dir.path(), &["identity", "show", "pay$client.test"]));
    assert!(table.contains("btps1*"), "{table}");

    fails(
        &run(dir.path(), &["identity", "show", "nobody$client.test"]),
        "no identity record for nobody$client.test",
    );
    fails(
        &run(dir.path(), &["identity", "show", "not-an-identity"]),
        "invalid identity",
    );
    let empty = tempfile::tempdir().unwrap();
    fails(&run(empty.path(), &["identity", "list"]), "data directory");
    std::fs::create_dir(empty.path().join("data")).unwrap();
    fails(&run(empty.path(), &["identity", "list"]), "no database");
}

#[test]
fn trust_decisions_change_the_receiving_side_record() {
    let dir = tempfile::tempdir().unwrap();
    let (sender, receiver) = ("billing$vendor.test", "pay$client.test");
    let store = open(dir.path());
    store
        .create_trust(
            Perspective::Inbound,
            new_trust(sender, receiver, TrustStatus::Pending, None),
            None,
        )
        .unwrap();
    drop(store);
    let id = compute_trust_id(sender, receiver);
    let started = Timestamp::now().millis();

    let accepted = ok_json(&run(
        dir.path(),
        &[
            "trust",
            "accept",
            sender,
            "PAY$client.test",
            "--expires-at",
            "2030-01-01T00:00:00.000Z",
            "--json",
        ],
    ));
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["decidedBy"], "operator");
    assert_eq!(accepted["expiresAt"], "2030-01-01T00:00:00.000Z");
    let record = open(dir.path())
        .trust(Perspective::Inbound, &id)
        .unwrap()
        .unwrap();
    assert_eq!(record.status, TrustStatus::Accepted);
    assert!(record.decided_at.millis() >= started);
    assert!(record.is_active_at(started));

    let rejected = ok_json(&run(
        dir.path(),
        &[
            "trust",
            "reject",
            sender,
            receiver,
            "--retry-after",
            "2029-06-01T00:00:00Z",
            "--decided-by",
            "Finance Team",
            "--json",
        ],
    ));
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["decidedBy"], "Finance Team");
    assert_eq!(rejected["retryAfterDate"], "2029-06-01T00:00:00Z");
    // An expiry that was not given stays as it was.
    assert_eq!(rejected["expiresAt"], "2030-01-01T00:00:00.000Z");

    for (command, status) in [
        ("block", TrustStatus::Blocked),
        ("revoke", TrustStatus::Revoked),
    ] {
        let table = ok(&run(dir.path(), &["trust", command, sender, receiver]));
        assert!(table.contains(&format!("status:      {status}")), "{table}");
        let record = open(dir.path())
            .trust(Perspective::Inbound, &id)
            .unwrap()
            .unwrap();
        assert_eq!(record.status, status, "{command}");
        assert_eq!(record.decided_by, "operator");
    }

    let shown = ok_json(&run(
        dir.path(),
        &["trust", "show", sender, receiver, "--json"],
    ));
    assert_eq!(shown["inbound"]["status"], "revoked");
    assert_eq!(shown["outbound"], Value::Null);

    // Nothing to decide on: no record for this pair (nor the reversed one).
    fails(
        &run(dir.path(), &["trust", "accept", receiver, sender]),
        "nothing to decide on",
    );
    fails(
        &run(
            dir.path(),
            &["trust", "accept", sender, receiver, "--expires-at", "soon"],
        ),
        "invalid --expires-at \"soon\"",
    );
    fails(
        &run(dir.path(), &["trust", "accept", sender, "pay-client"]),
        "invalid identity \"pay-client\"",
    );

    let deleted = ok(&run(dir.path(), &["trust", "delete", sender, receiver]));
    assert!(deleted.contains(&id), "{deleted}");
    assert_eq!(
        open(dir.path()).trust(Perspective::Inbound, &id).unwrap(),
        None
    );
    fails(
        &run(dir.path(), &["trust", "delete", sender, receiver]),
        "no inbound trust record",
    );
    fails(
        &run(dir.path(), &["trust", "show", sender, receiver]),
        "no trust record",
    );
}

/// Senders of a `trust list --json` answer, in order.
fn senders(listing: &Value) -> Vec<String> {
    listing["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["senderId"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn trust_list_serves_each_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let year = |y: i64| {
        Timestamp::parse(&format!("{y}-01-01T00:00:00Z"))
            .unwrap()
            .millis()
    };
    let records = [
        ("s1$v.test", "r1$c.test", TrustStatus::Pending, None),
        (
            "s2$v.test",
            "r1$c.test",
            TrustStatus::Accepted,
            Some(year(2026)),
        ),
        ("s1$v.test", "r2$c.test", TrustStatus::Blocked, None),
        (
            "s3$v.test",
            "R2$c.test",
            TrustStatus::Accepted,
            Some(year(2030)),
        ),
    ];
    for (sender, receiver, status, expiry) in records {
        store
            .create_trust(
                Perspective::Inbound,
                new_trust(sender, receiver, status, expiry),
                None,
            )
            .unwrap();
    }
    store
        .create_trust(
            Perspective::Outbound,
            new_trust("r1$c.test", "s9$v.test", TrustStatus::Pending, None),
            None,
        )
        .unwrap();
    drop(store);
    let list = |args: &[&str]| {
        let mut all = vec!["trust", "list", "--json"];
        all.extend(args);
        ok_json(&run(dir.path(), &all))
    };
    let mut by_receiver = senders(&list(&["--receiver", "R1$C.test"]));
    by_receiver.sort();
    assert_eq!(by_receiver, ["s1$v.test", "s2$v.test"]);
    assert_eq!(senders(&list(&["--sender", "s1$v.test"])).len(), 2);
    let mut accepted = senders(&list(&["--status", "accepted"]));
    accepted.sort();
    assert_eq!(accepted, ["s2$v.test", "s3$v.test"]);
    assert_eq!(
        senders(&list(&["--expiring-before", "2027-01-01T00:00:00Z"])),
        ["s2$v.test"]
    );
    assert_eq!(
        senders(&list(&[
            "--expiring-before",
            "2031-01-01T00:00:00Z",
            "--status",
            "accepted"
        ])),
        ["s2$v.test", "s3$v.test"]
    );
    assert_eq!(senders(&list(&["--outbound"])), ["r1$c.test"]);
    assert_eq!(senders(&list(&[])).len(), 4);

    // Paging: one record per page until there is no cursor.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["--limit", "1"];
        if let Some(cursor) = &cursor {
            args.extend(["--cursor", cursor.as_str()]);
        }
        let page = list(&args);
        seen.extend(senders(&page));
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);

    let table = ok(&run(dir.path(), &["trust", "list", "--status", "blocked"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("SENDER"), "{table}");
    assert!(lines[1].starts_with("s1$v.test") && lines[1].contains("blocked"));
    assert_eq!(lines.len(), 2);

    fails(
        &run(dir.path(), &["trust", "list", "--status", "paused"]),
        "invalid --status \"paused\"",
    );
    fails(
        &run(dir.path(), &["trust", "list", "--cursor", "zz"]),
        "invalid --cursor",
    );
}

fn inbound(serial: u32, millis: i64, raw: &[u8]) -> NewInboxEntry {
    NewInboxEntry {
        owner: String::from("pay$client.test"),
        artifact_id: format!("artifact-{serial}"),
        artifact_type: String::from("BTPS_DOC"),
        from: String::from("billing$vendor.test"),
        to: String::from("pay$client.test"),
        title: Some(format!("Invoice {serial}")),
        raw: raw.to_vec(),
        received_at: Timestamp::from_millis(millis).unwrap(),
        remote_address: Some(String::from("192.0.2.7:50000")),
    }
}

#[test]
fn inbox_list_and_show_return_what_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_identity(hosted("pay$client.test")).unwrap();
    // Spacing and key order as a sender wrote them: shown back byte for byte.
    let raws: [&[u8]; 3] = [
        b"{\"id\":\"artifact-0\",  \"type\":\"BTPS_DOC\"}",
        b"{ \"type\" : \"BTPS_DOC\", \"id\":\"artifact-1\", \"x\":\"\\u00e9\xc3\xa9\" }",
        b"{\"id\":\"artifact-2\"}\n",
    ];
    let base = 1_750_000_000_000;
    let mut ids = Vec::new();
    for (serial, raw) in raws.iter().enumerate() {
        let serial = u32::try_from(serial).unwrap();
        ids.push(
            store
                .insert_inbox(inbound(serial, base + i64::from(serial) * 1000, raw))
                .unwrap(),
        );
    }
    drop(store);

    let listed = ok_json(&run(
        dir.path(),
        &["inbox", "list", "PAY$client.test", "--json"],
    ));
    assert_eq!(listed["total"], 3);
    let entries = listed["entries"].as_array().unwrap();
    let listed_ids: Vec<u64> = entries
        .iter()
        .map(|entry| entry["entryId"].as_u64().unwrap())
        .collect();
    // Newest first.
    assert_eq!(listed_ids, [ids[2], ids[1], ids[0]]);
    assert_eq!(entries[0]["title"], "Invoice 2");
    assert_eq!(entries[0]["meta"]["seen"], false);
    assert_eq!(listed["next"], Value::Null);

    let first = ok_json(&run(
        dir.path(),
        &["inbox", "list", "pay$client.test", "--limit", "2", "--json"],
    ));
    assert_eq!(first["entries"].as_array().unwrap().len(), 2);
    let cursor = first["next"].as_str().unwrap();
    let rest = ok_json(&run(
        dir.path(),
        &[
            "inbox",
            "list",
            "pay$client.test",
            "--limit",
            "2",
            "--cursor",
            cursor,
            "--json",
        ],
    ));
    assert_eq!(rest["entries"][0]["entryId"].as_u64(), Some(ids[0]));
    assert_eq!(rest["next"], Value::Null);

    let table = ok(&run(dir.path(), &["inbox", "list", "pay$client.test"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ENTRY"), "{table}");
    assert!(lines[1].starts_with(&ids[2].to_string()) && lines[1].contains("artifact-2"));
    assert!(table.contains("3 entries"), "{table}");

    for (id, raw) in ids.iter().zip(raws) {
        let output = run(dir.path(), &["inbox", "show", &id.to_string()]);
        ok(&output);
        assert_eq!(output.stdout, raw);
        let shown = ok_json(&run(
            dir.path(),
            &["inbox", "show", &id.to_string(), "--json"],
        ));
        assert_eq!(shown["artifact"].as_str().unwrap().as_bytes(), raw);
        assert_eq!(shown["meta"]["remoteAddress"], "192.0.2.7:50000");
        assert_eq!(shown["from"], "billing$vendor.test");
    }

    fails(
        &run(dir.path(), &["inbox", "show", "999"]),
        "no mailbox entry 999",
    );
    fails(
        &run(dir.path(), &["inbox", "list", "ghost$client.test"]),
        "ghost$client.test is not a hosted identity",
    );
    fails(
        &run(dir.path(), &["inbox", "list", "ghost"]),
        "invalid identity",
    );
}

#[test]
fn a_database_held_by_another_process_is_reported_as_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let held = open(dir.path());
    for args in [
        &["trust", "list"][..],
        &["identity", "add", "x$y.test"][..],
        &["identity", "rotate-key", "x$y.test"][..],
        &["identity", "dns-records", "x$y.test"][..],
        &["inbox", "show", "1"][..],
        &["backup", "--out", "copy.redb"][..],
    ] {
        fails(
            &run(dir.path(), args),
            "the database is in use (is btps serve running?)",
        );
    }
    std::fs::write(dir.path().join("backup.redb"), b"anything").unwrap();
    fails(
        &run(dir.path(), &["restore", "backup.redb"]),
        "in use by another process",
    );
    fails(&run(dir.path(), &["check"]), "in use by another process");
    drop(held);
    ok(&run(dir.path(), &["trust", "list"]));
}

#[test]
fn identity_rotate_key_adds_a_current_key_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_identity(hosted("pay$client.test")).unwrap();
    drop(store);
    let (_, finance) = vector_key("finance");
    let (billing_pem, billing) = vector_key("billing");

    let rotated = ok_json(&run(
        dir.path(),
        &[
            "identity",
            "rotate-key",
            "pay$client.test",
            "--public-key",
            billing_pem.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(rotated["selector"], "btps2");
    assert_eq!(rotated["previousSelector"], "btps1");
    assert_eq!(rotated["fingerprint"], billing.as_str());
    assert_eq!(rotated["privateKeyFile"], Value::Null);
    assert_eq!(
        rotated["dns"][0]["name"],
        "btps2._btps.identity.pay.client.test"
    );
    assert_eq!(
        rotated["dns"][1]["value"],
        format!("v=1.0.0; u={DEFAULT_LISTEN}; s=btps2")
    );
    let record = open(dir.path())
        .read(|s| s.identity_by_name("pay$client.test"))
        .unwrap()
        .unwrap();
    assert_eq!(record.current_selector, "btps2");
    let fingerprints: Vec<String> = record
        .public_keys
        .iter()
        .map(|key| {
            PublicKey::from_pem(&key.public_key)
                .unwrap()
                .fingerprint()
                .to_owned()
        })
        .collect();
    assert_eq!(fingerprints, [finance, billing]);

    // A generated key under a chosen selector; its private key goes to its owner.
    let table = ok(&run(
        dir.path(),
        &[
            "identity",
            "rotate-key",
            "pay$client.test",
            "--selector",
            "s2026",
            "--key-out",
            "keys",
        ],
    ));
    assert!(table.contains("new selector: s2026"), "{table}");
    assert!(
        table.contains(&format!(
            "_btps.host.client.test. IN TXT \"v=1.0.0; u={DEFAULT_LISTEN}; s=s2026\""
        )),
        "{table}"
    );
    let key_file = dir.path().join("keys/pay.client.test.s2026.key.pem");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let private = PrivateKey::from_pem(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    let key = open(dir.path())
        .read(|s| s.public_key("pay$client.test", None))
        .unwrap()
        .unwrap();
    assert_eq!(key.selector, "s2026");
    assert_eq!(
        PublicKey::from_pem(&key.public_key).unwrap().fingerprint(),
        private.public_key().fingerprint()
    );

    // A selector in use is refused, and no key file is left for it.
    fails(
        &run(
            dir.path(),
            &[
                "identity",
                "rotate-key",
                "pay$client.test",
                "--selector",
                "btps1",
                "--key-out",
                "keys",
            ],
        ),
        "already has a key with selector \"btps1\"",
    );
    assert!(
        !dir.path()
            .join("keys/pay.client.test.btps1.key.pem")
            .exists()
    );
    fails(
        &run(
            dir.path(),
            &[
                "identity",
                "rotate-key",
                "pay$client.test",
                "--selector",
                "a b",
            ],
        ),
        "invalid selector",
    );
    fails(
        &run(
            dir.path(),
            &["identity", "rotate-key", "nobody$client.test"],
        ),
        "no identity record for nobody$client.test",
    );
    // The default after btps1, btps2 and s2026 is btps3.
    let next = ok_json(&run(
        dir.path(),
        &[
            "identity",
            "rotate-key",
            "pay$client.test",
            "--key-out",
            "keys",
            "--json",
        ],
    ));
    assert_eq!(next["selector"], "btps3");
    assert_eq!(next["previousSelector"], "s2026");
}

#[test]
fn identity_dns_records_name_every_key_the_host_and_the_lookup_signer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_identity(hosted("pay$client.test")).unwrap();
    let (billing_pem, _) = vector_key("billing");
    let billing = PublicKey::from_pem(&std::fs::read_to_string(&billing_pem).unwrap()).unwrap();
    store
        .write(|batch| {
            batch.put_public_key(
                "pay$client.test",
                PublicKeyRecord {
                    selector: String::from("btps2"),
                    public_key: billing.to_pem(),
                    key_type: String::from("rsa"),
                    version: String::from("1.0.0"),
                    created_at: Timestamp::now(),
                    source: None,
                },
                true,
            )
        })
        .unwrap();
    drop(store);

    // No server key yet (the server never started): said, not invented.
    let records = ok_json(&run(
        dir.path(),
        &["identity", "dns-records", "pay$client.test", "--json"],
    ));
    let names: Vec<&str> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "btps1._btps.identity.pay.client.test",
            "btps2._btps.identity.pay.client.test",
            "_btps.host.client.test",
        ]
    );
    assert_eq!(
        records["records"][1]["value"],
        key_record_text(&billing.to_base64())
    );
    assert_eq!(
        records["records"][2]["value"],
        format!("v=1.0.0; u={DEFAULT_LISTEN}; s=btps2")
    );
    let warnings = records["warnings"].to_string();
    assert!(
        warnings.contains("other machines cannot reach"),
        "{warnings}"
    );
    assert!(warnings.contains("server.pub.pem"), "{warnings}");

    // With the server key in place and a configured signer and selector.
    let (server_pem, _) = vector_key("finance");
    std::fs::create_dir_all(dir.path().join("data/keys")).unwrap();
    std::fs::copy(&server_pem, dir.path().join("data/keys/server.pub.pem")).unwrap();
    let server_key = PublicKey::from_pem(&std::fs::read_to_string(&server_pem).unwrap()).unwrap();
    std::fs::write(
        dir.path().join("btps.toml"),
        "[server]\nselector = \"srv\"\n\n[[domains]]\nname = \"client.test\"\nsigner = \"lookup$client.test\"\n",
    )
    .unwrap();
    let output = run(
        dir.path(),
        &[
            "identity",
            "dns-records",
            "PAY$client.test",
            "--config",
            "btps.toml",
            "--host",
            "btps.client.test:4443",
        ],
    );
    let text = ok(&output);
    assert!(
        text.contains(
            "_btps.host.client.test. IN TXT \"v=1.0.0; u=btps.client.test:4443; s=btps2\""
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "srv._btps.identity.lookup.client.test. IN TXT \"{}\"",
            key_record_text(&server_key.to_base64())
        )),
        "{text}"
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    fails(
        &run(
            dir.path(),
            &[
                "identity",
                "dns-records",
                "pay$client.test",
                "--host",
                "a b",
            ],
        ),
        "invalid --host",
    );
    fails(
        &run(
            dir.path(),
            &["identity", "dns-records", "ghost$client.test"],
        ),
        "no identity record",
    );
}

/// Exit code and standard error of a command expected to fail with `code`.
fn fails_with(output: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

fn data_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("data"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn backup_check_and_restore_of_a_stopped_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_identity(hosted("pay$client.test")).unwrap();
    for n in 0..200 {
        store
            .create_trust(
                Perspective::Inbound,
                new_trust(
                    &format!("s{n}$vendor.test"),
                    "pay$client.test",
                    TrustStatus::Accepted,
                    None,
                ),
                None,
            )
            .unwrap();
    }
    drop(store);

    let written = ok_json(&run(
        dir.path(),
        &["backup", "--out", "backup.redb", "--json"],
    ));
    assert_eq!(written["from"], "database file");
    assert_eq!(written["report"]["trustInbound"], 200);
    let backup = dir.path().join("backup.redb");
    let good = std::fs::read(&backup).unwrap();
    // Only the backup was written: no temporary file is left beside it.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    fails(
        &run(dir.path(), &["backup", "--out", "data/btps.redb"]),
        "is the database itself",
    );

    // check: sound, damaged, not a database, missing.
    let checked = ok_json(&run(dir.path(), &["check", "backup.redb", "--json"]));
    assert_eq!(checked["report"]["identities"], 1);
    assert_eq!(checked["report"]["trustInbound"], 200);
    assert_eq!(checked["report"]["live"], false);
    let table = ok(&run(dir.path(), &["check"]));
    assert!(table.contains("trust (inbound):  200"), "{table}");
    let mut damaged = good.clone();
    for byte in &mut damaged[4096..good.len() - 4096] {
        *byte ^= 0x5a;
    }
    std::fs::write(dir.path().join("damaged.redb"), &damaged).unwrap();
    std::fs::write(dir.path().join("truncated.redb"), &good[..good.len() / 3]).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a database\n").unwrap();
    for name in ["damaged.redb", "truncated.redb", "notes.txt"] {
        fails_with(&run(dir.path(), &["check", name]), 1, "damaged: ");
    }
    assert_eq!(
        std::fs::read(dir.path().join("damaged.redb")).unwrap(),
        damaged,
        "check leaves a damaged file alone"
    );
    fails_with(
        &run(dir.path(), &["check", "missing.redb"]),
        2,
        "no such file",
    );

    // A change after the backup, then refused restores leave the database alone.
    let store = open(dir.path());
    store.create_identity(hosted("later$client.test")).unwrap();
    drop(store);
    let current = std::fs::read(dir.path().join("data/btps.redb")).unwrap();
    let files = data_files(dir.path());
    for name in ["damaged.redb", "truncated.redb", "notes.txt"] {
        fails_with(
            &run(dir.path(), &["restore", name]),
            1,
            "the current database is unchanged",
        );
        assert_eq!(
            std::fs::read(dir.path().join("data/btps.redb")).unwrap(),
            current,
            "{name}"
        );
        assert_eq!(data_files(dir.path()), files, "{name}");
    }
    fails_with(
        &run(dir.path(), &["restore", "missing.redb"]),
        2,
        "no such file",
    );

    // A good backup replaces it; the replaced database is kept beside it.
    let restored = ok_json(&run(dir.path(), &["restore", "backup.redb", "--json"]));
    let previous = PathBuf::from(restored["previous"].as_str().unwrap());
    assert!(
        previous
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("btps.redb.before-restore-")
    );
    assert_eq!(std::fs::read(dir.path().join(&previous)).unwrap(), current);
    let store = open(dir.path());
    assert!(
        store
            .read(|s| s.identity_by_name("later$client.test"))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.read(|s| s.trust_count(Perspective::Inbound)).unwrap(),
        200
    );
    drop(store);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("data/btps.redb"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Into a new data directory, created only when asked: nothing to keep.
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(&backup, empty.path().join("backup.redb")).unwrap();
    fails(&run(empty.path(), &["restore", "backup.redb"]), "--create");
    assert!(!empty.path().join("data").exists());
    let restored = ok_json(&run(
        empty.path(),
        &["restore", "backup.redb", "--create", "--json"],
    ));
    assert_eq!(restored["previous"], Value::Null);
    assert_eq!(data_files(empty.path()), ["btps.redb"]);
}
