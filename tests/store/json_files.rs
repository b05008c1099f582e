//! The reference's JSON store files: import into redb and export back, losslessly;
//! the JSON stores themselves; and the `btps import`/`export` commands.

use std::path::{Path, PathBuf};

use btps::identity::{compute_id, compute_trust_id};
use btps::store::transfer::{self, ImportOptions};
use btps::store::{
    IdentityStore, JsonIdentityStore, JsonTrustStore, PageRequest, Perspective, RedbOptions,
    RedbStore, StoreError, TrustPatch, TrustStatus,
};

use super::new_trust;
use crate::util::{vector_json, vector_text, vectors_dir};

fn store_file(name: &str) -> PathBuf {
    vectors_dir().join("json-stores").join(name)
}

fn round_trip(trust: &str, identities: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(&dir.path().join("data"), &RedbOptions::default()).unwrap();
    let first = transfer::import(
        &store,
        Some(&store_file(trust)),
        Some(&store_file(identities)),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(first.identities_inserted, 3);
    // Records between two hosted identities are stored in both perspectives.
    assert!(first.trust_inserted >= 7);
    let second = transfer::import(
        &store,
        Some(&store_file(trust)),
        Some(&store_file(identities)),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (second.trust_inserted, second.identities_inserted),
        (0, 0),
        "second import changed something"
    );
    assert_eq!(second.trust_unchanged, first.trust_inserted);

    let out_trust = dir.path().join("trust.out.json");
    let out_identities = dir.path().join("identities.out.json");
    transfer::export(&store, Some(&out_trust), Some(&out_identities)).unwrap();
    for (original, exported) in [(trust, &out_trust), (identities, &out_identities)] {
        let exported_text = std::fs::read_to_string(exported).unwrap();
        let exported_value: serde_json::Value = serde_json::from_str(&exported_text).unwrap();
        let original_value = vector_json(&format!("json-stores/{original}"));
        // Field by field (serde_json with preserve_order also compares key order) …
        assert_eq!(exported_value, original_value, "{original}");
        // … and byte for byte.
        assert_eq!(
            exported_text,
            vector_text(&format!("json-stores/{original}")),
            "{original}"
        );
    }
}

#[test]
fn reference_files_round_trip_through_the_database() {
    round_trip("trust.json", "identities.json");
    round_trip("trust.no-entity.json", "identities.no-entity.json");
}

#[test]
fn imported_records_answer_the_reference_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
    transfer::import(
        &store,
        Some(&store_file("trust.json")),
        Some(&store_file("identities.json")),
        &ImportOptions::default(),
    )
    .unwrap();
    let facts = vector_json("json-stores/trust.expected.json");
    for fact in facts["records"].as_array().unwrap() {
        let sender = fact["senderId"].as_str().unwrap();
        let receiver = fact["receiverId"].as_str().unwrap();
        let id = fact["id"].as_str().unwrap();
        assert_eq!(
            compute_trust_id(sender, receiver) == id,
            fact["idMatches"].as_bool().unwrap()
        );
        let record = store.trust(Perspective::Inbound, id).unwrap().unwrap();
        assert_eq!(record.status.as_str(), fact["status"].as_str().unwrap());
    }
    let facts = vector_json("json-stores/identities.expected.json");
    for fact in facts["records"].as_array().unwrap() {
        assert_eq!(
            compute_id(fact["identity"].as_str().unwrap()),
            fact["id"].as_str().unwrap()
        );
    }
    for lookup in facts["lookups"].as_array().unwrap() {
        let identity = lookup["identity"].as_str().unwrap();
        let selector = lookup["selector"].as_str();
        let found = store.read(|s| s.public_key(identity, selector)).unwrap();
        assert_eq!(
            found.is_some(),
            lookup["found"].as_bool().unwrap(),
            "{lookup}"
        );
        if let Some(key) = found {
            assert_eq!(key.selector, lookup["selectorFound"].as_str().unwrap());
            let pem = vector_text(&format!(
                "keys/{}",
                lookup["publicKeyFile"].as_str().unwrap()
            ));
            assert_eq!(key.public_key, pem);
        }
    }
    // finance$client.test hosts and billing$vendor.test hosts: the finance → billing
    // record exists in both perspectives.
    let both = compute_trust_id("finance$client.test", "billing$vendor.test");
    assert!(store.trust(Perspective::Outbound, &both).unwrap().is_some());
    let accepted = store
        .read(|s| {
            s.list_by_status(
                Perspective::Inbound,
                &TrustStatus::Accepted,
                &PageRequest::first(100),
            )
        })
        .unwrap();
    assert_eq!(accepted.items.len(), 3);
}

#[test]
fn invalid_records_are_reported_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let mut value = vector_json("json-stores/trust.json");
    let records = value["trusted_senders"].as_array_mut().unwrap();
    records[1]["id"] = serde_json::json!("admin$vendor.test:finance$client.test");
    records[3]["status"] = serde_json::json!("maybe");
    records[4]["expiresAt"] = serde_json::json!("next tuesday");
    let bad = dir.path().join("bad-trust.json");
    std::fs::write(&bad, serde_json::to_string_pretty(&value).unwrap()).unwrap();

    let store = RedbStore::open_dir(&dir.path().join("data"), &RedbOptions::default()).unwrap();
    let error = transfer::import(
        &store,
        Some(&bad),
        Some(&store_file("identities.json")),
        &ImportOptions::default(),
    )
    .unwrap_err();
    let StoreError::InvalidRecords { problems } = &error else {
        panic!("{error:?}")
    };
    let positions: Vec<usize> = problems.iter().map(|problem| problem.index).collect();
    assert_eq!(positions, [1, 3, 4], "{error}");
    assert!(problems.iter().all(|problem| problem.file == bad));
    // Not even the valid identity file was imported.
    assert_eq!(store.read(|s| s.identity_count()).unwrap(), 0);
}

#[test]
fn conflicting_content_aborts_the_whole_import() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(&dir.path().join("data"), &RedbOptions::default()).unwrap();
    transfer::import(
        &store,
        Some(&store_file("trust.json")),
        Some(&store_file("identities.json")),
        &ImportOptions::default(),
    )
    .unwrap();
    let id = compute_trust_id("billing$vendor.test", "finance$client.test");
    store
        .update_trust(
            Perspective::Inbound,
            &id,
            TrustPatch {
                status: Some(TrustStatus::Revoked),
                ..TrustPatch::default()
            },
        )
        .unwrap();
    let error = transfer::import(
        &store,
        Some(&store_file("trust.json")),
        None,
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidRecords { .. }),
        "{error}"
    );
    assert_eq!(
        store
            .trust(Perspective::Inbound, &id)
            .unwrap()
            .unwrap()
            .status,
        TrustStatus::Revoked
    );
    let options = ImportOptions {
        overwrite: true,
        ..ImportOptions::default()
    };
    let report = transfer::import(&store, Some(&store_file("trust.json")), None, &options).unwrap();
    assert_eq!(report.trust_replaced, 1);
    assert_eq!(
        store
            .trust(Perspective::Inbound, &id)
            .unwrap()
            .unwrap()
            .status,
        TrustStatus::Accepted
    );
}

fn copy_vector(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(store_file(name), &path).unwrap();
    path
}

#[test]
fn json_stores_write_through_in_the_reference_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_vector(dir.path(), "trust.json");
    let store = JsonTrustStore::open(&path, Some("trusted_senders")).unwrap();
    let id = compute_trust_id("billing$vendor.test", "finance$client.test");
    let updated = store
        .update_sync(
            &id.to_uppercase(),
            TrustPatch {
                status: Some(TrustStatus::Revoked),
                ..TrustPatch::default()
            },
        )
        .unwrap();
    store
        .create_sync(
            new_trust(
                "new$vendor.test",
                "finance$client.test",
                TrustStatus::Pending,
                None,
            ),
            None,
        )
        .unwrap();

    let written = std::fs::read_to_string(&path).unwrap();
    assert!(!written.ends_with('\n'));
    let value: serde_json::Value = serde_json::from_str(&written).unwrap();
    let records = value["trusted_senders"].as_array().unwrap();
    assert_eq!(records.len(), 8);
    // The updated record keeps its key order; updatedAt is appended.
    let first = records[0].as_object().unwrap();
    let original = vector_json("json-stores/trust.json");
    let original_keys: Vec<&String> = original["trusted_senders"][0]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let keys: Vec<&String> = first.keys().collect();
    assert_eq!(&keys[..original_keys.len()], &original_keys[..]);
    assert_eq!(keys.last().unwrap().as_str(), "updatedAt");
    assert_eq!(
        first["updatedAt"].as_str(),
        updated.updated_at.as_ref().map(|t| t.as_str())
    );
    assert_eq!(first["status"], "revoked");
    // Untouched records are unchanged.
    assert_eq!(
        records[1..7],
        original["trusted_senders"].as_array().unwrap()[1..7]
    );
    assert_eq!(records[7]["senderId"], "new$vendor.test");

    // Reopening reads back what was written.
    let reopened = JsonTrustStore::open(&path, None).unwrap();
    let as_json = |records: Vec<btps::store::TrustRecord>| {
        records
            .iter()
            .map(btps::wire::trust_to_json)
            .collect::<Vec<_>>()
    };
    assert_eq!(as_json(reopened.records()), as_json(store.records()));
}

#[test]
fn two_writers_in_one_process_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.json");
    let store = JsonTrustStore::open(&path, Some("trusted_senders")).unwrap();
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            let store = store.clone();
            std::thread::spawn(move || {
                for n in 0..20 {
                    let sender = format!("w{writer}-{n}$x.test");
                    store
                        .create_sync(
                            new_trust(&sender, "r$x.test", TrustStatus::Pending, None),
                            None,
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(
        JsonTrustStore::open(&path, None).unwrap().records().len(),
        40
    );
    assert!(!dir.path().join("trust.json.tmp").exists());
}

#[tokio::test]
async fn json_identity_store_answers_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_vector(dir.path(), "identities.no-entity.json");
    let store = JsonIdentityStore::open(&path, None).unwrap();
    let key = store
        .public_key("FINANCE$client.test", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(key.selector, "btps1");
    assert_eq!(key.public_key, vector_text("keys/finance.pub.pem"));
    assert!(
        store
            .public_key("finance$client.test", Some("btps9"))
            .await
            .unwrap()
            .is_none()
    );
}

#[test]
fn cli_import_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let btps = env!("CARGO_BIN_EXE_btps");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(btps)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let trust = store_file("trust.json");
    let identities = store_file("identities.json");
    let data_arg = data.to_str().unwrap();
    run(&[
        "import",
        "--data-dir",
        data_arg,
        "--create",
        "--trust",
        trust.to_str().unwrap(),
        "--identities",
        identities.to_str().unwrap(),
    ]);
    let again = run(&[
        "import",
        "--data-dir",
        data_arg,
        "--trust",
        trust.to_str().unwrap(),
        "--identities",
        identities.to_str().unwrap(),
    ]);
    assert!(again.contains("identities: 0 imported"), "{again}");
    assert!(data.join("btps.redb").exists());
    let out_trust = dir.path().join("t.json");
    let out_identities = dir.path().join("i.json");
    run(&[
        "export",
        "--data-dir",
        data_arg,
        "--trust",
        out_trust.to_str().unwrap(),
        "--identities",
        out_identities.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&out_trust).unwrap(),
        std::fs::read(&trust).unwrap()
    );
    assert_eq!(
        std::fs::read(&out_identities).unwrap(),
        std::fs::read(&identities).unwrap()
    );
}

#[test]
fn keys_that_do_not_parse_are_warnings_or_with_strict_errors() {
    let dir = tempfile::tempdir().unwrap();
    // The reference's own vector files carry real keys: no key warnings.
    let store = RedbStore::open_dir(&dir.path().join("clean"), &RedbOptions::default()).unwrap();
    let report = transfer::import(
        &store,
        Some(&store_file("trust.json")),
        Some(&store_file("identities.json")),
        &ImportOptions::default(),
    )
    .unwrap();
    assert!(
        report.warnings.iter().all(|w| w.reason.contains("hosted")),
        "{:?}",
        report.warnings
    );

    let mut trust = vector_json("json-stores/trust.json");
    let records = trust["trusted_senders"].as_array_mut().unwrap();
    records[0]["publicKeyFingerprint"] = serde_json::json!("test-fingerprint");
    records[2]["publicKeyBase64"] = serde_json::json!("test-key");
    let trust_file = dir.path().join("trust.json");
    std::fs::write(&trust_file, serde_json::to_string_pretty(&trust).unwrap()).unwrap();
    let mut identities = vector_json("json-stores/identities.json");
    let records = identities["identity_records"].as_array_mut().unwrap();
    records[1]["publicKeys"][0]["publicKey"] =
        serde_json::json!("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
    let identity_file = dir.path().join("identities.json");
    std::fs::write(
        &identity_file,
        serde_json::to_string_pretty(&identities).unwrap(),
    )
    .unwrap();

    let strict = RedbStore::open_dir(&dir.path().join("strict"), &RedbOptions::default()).unwrap();
    let options = ImportOptions {
        strict: true,
        ..ImportOptions::default()
    };
    let error =
        transfer::import(&strict, Some(&trust_file), Some(&identity_file), &options).unwrap_err();
    let StoreError::InvalidRecords { problems } = &error else {
        panic!("{error:?}")
    };
    let found: Vec<(&Path, usize)> = problems
        .iter()
        .map(|problem| (problem.file.as_path(), problem.index))
        .collect();
    assert_eq!(
        found,
        [
            (identity_file.as_path(), 1),
            (trust_file.as_path(), 0),
            (trust_file.as_path(), 2)
        ],
        "{error}"
    );
    assert!(problems[0].reason.contains("publicKeys[0]"), "{error}");
    assert!(problems[1].reason.contains("test-fingerprint"), "{error}");
    assert!(problems[2].reason.contains("publicKeyBase64"), "{error}");
    assert_eq!(strict.read(|s| s.identity_count()).unwrap(), 0);

    // Without --strict the same files import, the problems reported as warnings,
    // and the placeholders come back unchanged on export.
    let lenient =
        RedbStore::open_dir(&dir.path().join("lenient"), &RedbOptions::default()).unwrap();
    let report = transfer::import(
        &lenient,
        Some(&trust_file),
        Some(&identity_file),
        &ImportOptions::default(),
    )
    .unwrap();
    let warned: Vec<(&Path, usize)> = report
        .warnings
        .iter()
        .filter(|w| !w.reason.contains("hosted"))
        .map(|w| (w.file.as_path(), w.index))
        .collect();
    assert_eq!(warned, found);
    let exported = dir.path().join("exported.json");
    transfer::export(&lenient, Some(&exported), None).unwrap();
    assert_eq!(
        std::fs::read_to_string(&exported).unwrap(),
        std::fs::read_to_string(&trust_file).unwrap()
    );
}
