//! The JSON Schema documents of `schema/`: they are valid draft 2020-12, compile with
//! their cross-file `$ref`s, accept every artifact, response and store record of the
//! shared vectors, and reject the hand-made invalid shapes below. The Rust validator is
//! authoritative; these tests pin the schemas to the same rules where JSON Schema can
//! express them (see `schema/README.md` for where it cannot).

// Test helpers read fixed files of the repository: a failure is a broken checkout, and a
// panic naming it is the clearest report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use jsonschema::{Resource, Validator};
use serde_json::{Value, json};

use crate::util::{vector_files, vector_json, vectors_dir};

/// The `$id` prefix every schema file lives under.
const BASE: &str = "https://btps.invalid/schema/";

/// The wire kinds of `signed/*.json` mapped to the schema that must accept them.
const KIND_SCHEMAS: &[(&str, &str)] = &[
    ("transporter", "transporter.json"),
    ("transporter-delegated", "transporter.json"),
    ("agent", "agent.json"),
    ("identityLookup", "identity-lookup.json"),
    ("control", "control.json"),
    ("serverResponse", "response.json"),
];

/// The four artifact kinds a server classifies a line into, plus the response envelope:
/// a vector of one kind must fail the schemas of all the others.
const WIRE_SCHEMAS: &[&str] = &[
    "transporter.json",
    "agent.json",
    "identity-lookup.json",
    "control.json",
    "response.json",
];

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema")
}

/// Every `schema/*.json` file by file name.
fn schema_documents() -> BTreeMap<String, Value> {
    let mut documents = BTreeMap::new();
    for entry in std::fs::read_dir(schema_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            documents.insert(name, value);
        }
    }
    documents
}

/// One compiled validator per schema file, each built with every file registered so
/// that the relative `$ref`s between them resolve without any retrieval.
fn validators() -> &'static BTreeMap<String, Validator> {
    static VALIDATORS: OnceLock<BTreeMap<String, Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let documents = schema_documents();
        let resources: Vec<(String, Resource)> = documents
            .iter()
            .map(|(name, doc)| {
                (
                    format!("{BASE}{name}"),
                    Resource::from_contents(doc.clone()).unwrap(),
                )
            })
            .collect();
        documents
            .iter()
            .map(|(name, doc)| {
                let validator = jsonschema::options()
                    .with_resources(resources.clone().into_iter())
                    .build(doc)
                    .unwrap_or_else(|e| panic!("{name} does not compile: {e}"));
                (name.clone(), validator)
            })
            .collect()
    })
}

/// Validates `instance` against the schema file `schema`; the error lists every
/// violation with its location.
fn check(schema: &str, instance: &Value) -> Result<(), String> {
    let validator = validators()
        .get(schema)
        .unwrap_or_else(|| panic!("no schema file {schema}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn assert_valid(schema: &str, instance: &Value, what: &str) {
    if let Err(e) = check(schema, instance) {
        panic!("{what}: {schema} rejected a valid instance: {e}");
    }
}

fn assert_invalid(schema: &str, instance: &Value, what: &str) {
    assert!(
        check(schema, instance).is_err(),
        "{what}: {schema} accepted an invalid instance: {instance}"
    );
}

/// The parsed wire line of a `signed/` vector.
fn signed_artifact(file: &str) -> Value {
    let vector = vector_json(&format!("signed/{file}"));
    serde_json::from_str(vector["artifact"].as_str().unwrap()).unwrap()
}

fn schema_for_kind(kind: &str) -> &'static str {
    KIND_SCHEMAS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, schema)| *schema)
        .unwrap_or_else(|| panic!("unknown vector kind {kind}"))
}

#[test]
fn every_schema_is_valid_draft_2020_12_with_its_own_id() {
    let documents = schema_documents();
    assert!(
        documents.len() >= 9,
        "schema files missing: {:?}",
        documents.keys()
    );
    for (name, doc) in &documents {
        assert_eq!(
            doc["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
        assert_eq!(doc["$id"], format!("{BASE}{name}"), "{name}");
        if let Err(e) = jsonschema::draft202012::meta::validate(doc) {
            panic!("{name} is not a valid 2020-12 schema: {e}");
        }
    }
    assert_eq!(validators().len(), documents.len());
}

#[test]
fn readme_describes_every_schema_file() {
    let readme = std::fs::read_to_string(schema_dir().join("README.md")).unwrap();
    for name in schema_documents().keys() {
        let described = readme
            .lines()
            .any(|line| line.starts_with("| `") && line.contains(&format!("`{name}`")));
        assert!(described, "schema/README.md has no line for {name}");
    }
}

#[test]
fn no_schema_forbids_unknown_keys() {
    // Unknown keys are allowed at every level (02-artifacts.md §0.1); only the store
    // wrapper uses additionalProperties, and there as the type of the entity array.
    fn walk(value: &Value, path: &str, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if map.get("additionalProperties") == Some(&Value::Bool(false))
                    || map.get("unevaluatedProperties") == Some(&Value::Bool(false))
                {
                    found.push(path.to_owned());
                }
                for (key, child) in map {
                    walk(child, &format!("{path}/{key}"), found);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}/{i}"), found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    for (name, doc) in schema_documents() {
        walk(&doc, &name, &mut found);
    }
    assert!(found.is_empty(), "closed objects: {found:?}");
}

#[test]
fn currency_enum_is_the_160_codes_of_the_spec() {
    let common = &schema_documents()["common.json"];
    let codes = common["$defs"]["currency"]["enum"].as_array().unwrap();
    assert_eq!(codes.len(), 160);
    // The spec sits beside the vectors in the shared folder. Its §2.6 table: the
    // backquoted three-letter codes between the heading and the paragraph after it.
    let spec_path = vectors_dir().join("../spec/02-artifacts.md");
    let spec = std::fs::read_to_string(&spec_path)
        .unwrap_or_else(|e| panic!("{}: {e}", spec_path.display()));
    let start = spec.find("### 2.6").unwrap();
    let end = start + spec[start..].find("It is the ISO").unwrap();
    let listed: Vec<&str> = spec[start..end]
        .split('`')
        .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()))
        .collect();
    let ours: Vec<&str> = codes.iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(ours, listed);
}

#[test]
fn every_signed_vector_passes_its_kind_and_no_other() {
    let mut checked = 0;
    for (file, vector) in vector_files("signed") {
        assert_eq!(vector["expect"], "valid", "{file}");
        let kind = vector["kind"].as_str().unwrap();
        let own = schema_for_kind(kind);
        let artifact: Value = serde_json::from_str(vector["artifact"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_valid(own, &artifact, &file);
        for other in WIRE_SCHEMAS.iter().filter(|s| **s != own) {
            assert_invalid(other, &artifact, &format!("{file} as {other}"));
        }
        checked += 1;
    }
    assert!(checked >= 17, "only {checked} signed vectors");
}

#[test]
fn agent_artifact_send_inner_artifact_is_a_transporter_and_a_valid_wrapper() {
    let vector = vector_json("signed/agent-artifact-send.json");
    let inner: Value =
        serde_json::from_str(vector["innerArtifact"]["artifact"].as_str().unwrap()).unwrap();
    assert_valid("transporter.json", &inner, "innerArtifact");
    let outer = signed_artifact("agent-artifact-send.json");
    assert_eq!(
        outer["document"], inner,
        "the agent document is the inner artifact"
    );
}

/// Every `referenceServer.line` of the signed and tampered vectors.
fn reference_response_lines() -> Vec<(String, Value)> {
    let mut lines = Vec::new();
    for folder in ["signed", "tampered"] {
        for (file, vector) in vector_files(folder) {
            if let Some(line) = vector["referenceServer"]["line"].as_str() {
                let response = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{folder}/{file} referenceServer.line: {e}"));
                lines.push((format!("{folder}/{file}"), response));
            }
        }
    }
    lines
}

#[test]
fn every_reference_server_line_is_a_valid_response() {
    let lines = reference_response_lines();
    assert!(lines.len() >= 30, "only {} response lines", lines.len());
    let (mut successes, mut errors) = (0, 0);
    for (file, response) in &lines {
        assert_valid("response.json", response, file);
        match response["type"].as_str() {
            Some("btps_response") => successes += 1,
            Some("btps_error") => errors += 1,
            other => panic!("{file}: type {other:?}"),
        }
    }
    assert!(
        successes > 0 && errors > 0,
        "{successes} successes, {errors} errors"
    );
}

#[test]
fn json_store_files_and_their_records_are_valid() {
    let stores = [
        ("trust.json", "trust-store.json", "trust-record.json"),
        (
            "trust.no-entity.json",
            "trust-store.json",
            "trust-record.json",
        ),
        (
            "identities.json",
            "identity-store.json",
            "identity-record.json",
        ),
        (
            "identities.no-entity.json",
            "identity-store.json",
            "identity-record.json",
        ),
    ];
    for (file, store_schema, record_schema) in stores {
        let store = vector_json(&format!("json-stores/{file}"));
        assert_valid(store_schema, &store, file);
        let records = match &store {
            Value::Array(records) => records.clone(),
            Value::Object(map) => {
                assert_eq!(map.len(), 1, "{file}");
                map.values().next().unwrap().as_array().unwrap().clone()
            }
            other => panic!("{file}: {other}"),
        };
        assert!(!records.is_empty(), "{file}");
        for (i, record) in records.iter().enumerate() {
            assert_valid(record_schema, record, &format!("{file}[{i}]"));
        }
        // A trust file is not an identity file and the other way round.
        let wrong = if store_schema == "trust-store.json" {
            "identity-store.json"
        } else {
            "trust-store.json"
        };
        assert_invalid(wrong, &store, &format!("{file} as {wrong}"));
    }
}

/// The tampered vectors whose change is visible to a schema. Every other tampered
/// vector changes only signed bytes (values, order, keys the schema allows to be
/// absent or extra) and must still pass its schema; the verifier catches it.
const TAMPERED_SCHEMA_REJECTS: &[(&str, &str)] = &[(
    "server-identity-lookup-response-encryption-null-added.json",
    "encryption on a response is optional: null is rejected",
)];

#[test]
fn tampered_vectors_pass_or_fail_the_schema_as_decided() {
    let mut rejected = Vec::new();
    for (file, vector) in vector_files("tampered") {
        assert_eq!(vector["expect"], "invalid", "{file}");
        let base = vector_json(vector["base"].as_str().unwrap());
        let schema = schema_for_kind(base["kind"].as_str().unwrap());
        let artifact: Value = serde_json::from_str(vector["artifact"].as_str().unwrap()).unwrap();
        let expected_reject = TAMPERED_SCHEMA_REJECTS.iter().any(|(f, _)| *f == file);
        match check(schema, &artifact) {
            Ok(()) => assert!(!expected_reject, "{file}: the schema should see the change"),
            Err(e) => {
                assert!(
                    expected_reject,
                    "{file}: {schema} rejected a signature-level change: {e}"
                );
                rejected.push(file);
            }
        }
    }
    assert_eq!(
        rejected.len(),
        TAMPERED_SCHEMA_REJECTS.len(),
        "{rejected:?}"
    );
}

/// A change to a JSON value: set (or add) the member at a JSON pointer, or remove it.
enum Edit {
    Set(&'static str, Value),
    Remove(&'static str),
}

fn edited(base: &Value, edits: &[Edit]) -> Value {
    let mut value = base.clone();
    for edit in edits {
        let pointer = match edit {
            Edit::Set(p, _) | Edit::Remove(p) => *p,
        };
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = value
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("no {parent} in {base}"));
        match (edit, target) {
            (Edit::Set(_, v), Value::Object(map)) => {
                map.insert(key.to_owned(), v.clone());
            }
            (Edit::Set(_, v), Value::Array(items)) => {
                items[key.parse::<usize>().unwrap()] = v.clone();
            }
            (Edit::Remove(_), Value::Object(map)) => {
                assert!(map.remove(key).is_some(), "nothing at {pointer}");
            }
            _ => panic!("cannot edit {pointer}"),
        }
    }
    value
}

use Edit::{Remove, Set};

/// One row of the shape tables: a base instance, edits, and the expected verdict.
struct Case {
    what: &'static str,
    schema: &'static str,
    base: Value,
    edits: Vec<Edit>,
    valid: bool,
}

fn run(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let instance = edited(&case.base, &case.edits);
        match (check(case.schema, &instance), case.valid) {
            (Ok(()), true) | (Err(_), false) => {}
            (Ok(()), false) => failures.push(format!("{}: accepted", case.what)),
            (Err(e), true) => failures.push(format!("{}: rejected: {e}", case.what)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn case(
    what: &'static str,
    schema: &'static str,
    base: &Value,
    edits: Vec<Edit>,
    valid: bool,
) -> Case {
    Case {
        what,
        schema,
        base: base.clone(),
        edits,
        valid,
    }
}

// A table reads best one case per line.
#[rustfmt::skip]
#[test]
fn formats_accept_and_reject_exactly_the_spec_examples() {
    let base = signed_artifact("trust-req.json");
    let t = "transporter.json";
    let at = |what, value: &str, valid| case(what, t, &base, vec![Set("/issuedAt", json!(value))], valid);
    let from = |what, value: &str, valid| case(what, t, &base, vec![Set("/from", json!(value))], valid);
    let email = |what, value: &str, valid| case(what, t, &base, vec![Set("/document/email", json!(value))], valid);
    let url = |what, value: &str, valid| case(what, t, &base, vec![Set("/document/websiteUrl", json!(value))], valid);
    run(&[
        at("datetime with ms", "2025-01-15T10:30:00.000Z", true),
        at("datetime without seconds", "2025-01-15T10:30Z", true),
        at("datetime with 9 fraction digits", "2025-01-01T00:00:00.123456789Z", true),
        at("leap day of a leap year", "2024-02-29T00:00:00Z", true),
        at("leap day of 2000", "2000-02-29T00:00:00Z", true),
        at("leap day of a common year", "2025-02-29T00:00:00Z", false),
        at("leap day of 1900", "1900-02-29T00:00:00Z", false),
        at("April 31", "2025-04-31T00:00:00Z", false),
        at("offset instead of Z", "2025-01-15T10:30:00+00:00", false),
        at("lower-case z", "2025-01-15T10:30:00z", false),
        at("space instead of T", "2025-01-15 10:30:00Z", false),
        at("single-digit month", "2025-1-01T00:00:00Z", false),
        at("fraction without seconds", "2025-01-15T10:30.5Z", false),
        at("empty fraction", "2025-01-15T10:30:00.Z", false),
        at("leap second", "2025-01-15T23:59:60Z", false),
        at("hour 24", "2025-01-15T24:00:00Z", false),
        at("trailing newline", "2025-01-15T10:30:00Z\n", false),
        at("Unicode digits", "２０２５-01-15T10:30:00Z", false),
        from("plain identity", "billing$vendor.example", true),
        from("several dollars", "a$$b.c", true),
        from("U+0085 is not JavaScript whitespace", "a\u{85}b$c.d", true),
        from("space", "a b$c.d", false),
        from("tab", "a\tb$c.d", false),
        from("no-break space", "a\u{a0}b$c.d", false),
        from("en quad", "a$b\u{2000}c.d", false),
        from("line separator", "a$b.c\u{2028}d", false),
        from("byte-order mark", "\u{feff}a$b.c", false),
        from("ideographic space", "a$b.c\u{3000}", false),
        from("trailing newline", "a$b.c\n", false),
        from("no dot after the dollar", "a$bc", false),
        from("no dollar", "a.b.c", false),
        from("empty account", "$b.c", false),
        email("email mixed case", "Billing.Team@Vendor.Example", true),
        email("email with apostrophe inside", "o'neil@x.io", true),
        email("email with plus", "a+b@x.io", true),
        email("email leading dot", ".a@x.io", false),
        email("email double dot", "a..b@x.io", false),
        email("email ends with dot", "a.@x.io", false),
        email("email ends with apostrophe", "a'@x.io", false),
        email("email one-letter TLD", "a@x.i", false),
        email("email label starting with hyphen", "a@-x.io", false),
        email("email no domain dot", "a@localhost", false),
        email("email two at signs", "a@b@x.io", false),
        url("https URL", "https://x.example/a", true),
        url("mailto URL", "mailto:a@b.c", true),
        url("urn", "urn:x", true),
        url("URL with leading space", "  https://x.example", true),
        url("relative reference", "/a/b", false),
        url("no scheme", "vendor.example", false),
        url("scheme starting with a digit", "1http://x", false),
    ]);
}

// A table reads best one case per line.
#[rustfmt::skip]
#[test]
fn transporter_shapes() {
    let t = "transporter.json";
    let req = signed_artifact("trust-req.json");
    let res = signed_artifact("trust-res.json");
    let doc = signed_artifact("btps-doc.json");
    let enc = signed_artifact("btps-doc-encrypted.json");
    let del = signed_artifact("delegated-attested.json");
    let invoice = doc["document"].clone();
    run(&[
        case("unknown keys at every level", t, &doc, vec![
            Set("/x", json!(1)),
            Set("/document/x", json!({"y": null})),
            Set("/document/totalAmount/x", json!([])),
            Set("/signature/x", json!(true)),
        ], true),
        case("empty strings", t, &req, vec![Set("/id", json!("")), Set("/selector", json!("")), Set("/version", json!(""))], true),
        case("missing selector", t, &req, vec![Remove("/selector")], false),
        case("missing encryption", t, &req, vec![Remove("/encryption")], false),
        case("missing document", t, &req, vec![Remove("/document")], false),
        case("missing signature", t, &req, vec![Remove("/signature")], false),
        case("null version", t, &req, vec![Set("/version", Value::Null)], false),
        case("null delegation", t, &req, vec![Set("/delegation", Value::Null)], false),
        case("wrong type", t, &req, vec![Set("/type", json!("TRUST_REQUEST"))], false),
        case("delivery failure type", t, &req, vec![Set("/type", json!("BTP_DELIVERY_FAILURE"))], false),
        case("bad to", t, &req, vec![Set("/to", json!("a b$c.d"))], false),
        case("sha512 signature", t, &req, vec![Set("/signature/algorithmHash", json!("sha512"))], false),
        case("signature without fingerprint", t, &req, vec![Remove("/signature/fingerprint")], false),
        case("encrypted with object document", t, &enc, vec![Set("/document", invoice.clone())], false),
        case("encrypted with empty string", t, &enc, vec![Set("/document", json!(""))], true),
        case("unencrypted with string document", t, &doc, vec![Set("/document", json!("abc"))], false),
        case("CBC encryption", t, &enc, vec![Set("/encryption/algorithm", json!("aes-256-cbc"))], false),
        case("unknown encryption mode", t, &enc, vec![Set("/encryption/type", json!("strong"))], false),
        case("2fa encryption mode", t, &enc, vec![Set("/encryption/type", json!("2faEncrypt"))], true),
        case("encryption without authTag", t, &enc, vec![Remove("/encryption/authTag")], false),
        case("TRUST_REQ carrying an invoice", t, &req, vec![Set("/document", invoice)], false),
        case("BTPS_DOC carrying a trust request", t, &doc, vec![Set("/document", req["document"].clone())], false),
        case("TRUST_RES with a trust request document", t, &res, vec![Set("/document", req["document"].clone())], false),
        case("trust request without phone", t, &req, vec![Remove("/document/phone")], false),
        case("trust request null optional", t, &req, vec![Set("/document/displayName", Value::Null)], false),
        case("trust request bad privacyType", t, &req, vec![Set("/document/privacyType", json!("secret"))], false),
        case("trust request bad expiresAt", t, &req, vec![Set("/document/expiresAt", json!("2026-13-01T00:00:00Z"))], false),
        case("trust response decision pending", t, &res, vec![Set("/document/decision", json!("pending"))], false),
        case("trust response retryAfterDate", t, &res, vec![Set("/document/retryAfterDate", json!("2025-07-01T00:00Z"))], true),
        case("unknown currency", t, &doc, vec![Set("/document/totalAmount/currency", json!("XDR"))], false),
        case("lower-case currency", t, &doc, vec![Set("/document/totalAmount/currency", json!("aud"))], false),
        case("withdrawn code of the list", t, &doc, vec![Set("/document/totalAmount/currency", json!("HRK"))], true),
        case("amount as string", t, &doc, vec![Set("/document/totalAmount/value", json!("10"))], false),
        case("invoice status overdue", t, &doc, vec![Set("/document/status", json!("overdue"))], false),
        case("invoice without lineItems", t, &doc, vec![Remove("/document/lineItems")], false),
        case("row with a boolean value", t, &doc, vec![Set("/document/lineItems/rows/0/Paid", json!(true))], false),
        case("row with a null value", t, &doc, vec![Set("/document/lineItems/rows/0/Note", Value::Null)], false),
        case("row with an array value", t, &doc, vec![Set("/document/lineItems/rows/0/Tags", json!(["a"]))], false),
        case("row with an object value", t, &doc, vec![Set("/document/lineItems/rows/0/Nested", json!({}))], false),
        case("row that is not an object", t, &doc, vec![Set("/document/lineItems/rows/0", json!("row"))], false),
        case("row with only strings and numbers", t, &doc, vec![Set("/document/lineItems/rows/0", json!({"1": 2, "a": "b"}))], true),
        case("numeric column name", t, &doc, vec![Set("/document/lineItems/columns/0", json!(1))], false),
        case("issuer without name", t, &doc, vec![Set("/document/issuer", json!({"email": "a@b.co"}))], false),
        case("issuer with bad email", t, &doc, vec![Set("/document/issuer", json!({"name": "n", "email": "a@b"}))], false),
        case("payment link", t, &doc, vec![Set("/document/paymentLink", json!({"linkText": "Pay", "url": "https://pay.example/1"}))], true),
        case("payment link relative", t, &doc, vec![Set("/document/paymentLink", json!({"linkText": "Pay", "url": "pay/1"}))], false),
        case("attachment gif", t, &doc, vec![Set("/document/attachment", json!({"content": "R0lG", "type": "image/gif"}))], false),
        case("attachment pdf", t, &doc, vec![Set("/document/attachment", json!({"content": "JVBE", "type": "application/pdf", "filename": "a.pdf"}))], true),
        case("template data array", t, &doc, vec![Set("/document/template", json!({"name": "t", "data": []}))], false),
        case("template data object", t, &doc, vec![Set("/document/template", json!({"name": "t", "data": {"k": [1]}}))], true),
        case("paidAt as offset", t, &doc, vec![Set("/document/paidAt", json!("2025-06-02T00:00:00+10:00"))], false),
        case("attestation null", t, &del, vec![Set("/delegation/attestation", Value::Null)], false),
        case("attestation absent", t, &del, vec![Remove("/delegation/attestation")], true),
        case("delegation without selector", t, &del, vec![Remove("/delegation/selector")], false),
        case("delegation bad signedBy", t, &del, vec![Set("/delegation/signedBy", json!("admin"))], false),
        case("attestation bad issuedAt", t, &del, vec![Set("/delegation/attestation/issuedAt", json!("2025-02-29T00:00:00Z"))], false),
        case("attestation without signature", t, &del, vec![Remove("/delegation/attestation/signature")], false),
    ]);
}

// A table reads best one case per line.
#[rustfmt::skip]
#[test]
fn control_and_identity_lookup_shapes() {
    let c = "control.json";
    let l = "identity-lookup.json";
    let quit = signed_artifact("control-quit.json");
    let lookup = signed_artifact("identity-lookup-request.json");
    run(&[
        case("control with to", c, &quit, vec![Set("/to", json!("a$b.c"))], false),
        case("control with agentId", c, &quit, vec![Set("/agentId", json!("x"))], false),
        case("control with null document", c, &quit, vec![Set("/document", Value::Null)], false),
        case("control with signature", c, &quit, vec![Set("/signature", json!({}))], false),
        case("control lower-case action", c, &quit, vec![Set("/action", json!("quit"))], false),
        case("control without version", c, &quit, vec![Remove("/version")], false),
        case("control bad issuedAt", c, &quit, vec![Set("/issuedAt", json!("2025-01-15T10:30:00+00:00"))], false),
        case("control with from and type", c, &quit, vec![Set("/from", json!("a$b.c")), Set("/type", json!("BTPS_DOC"))], true),
        case("lookup with identitySelector", l, &lookup, vec![Set("/identitySelector", json!("btps0"))], true),
        case("lookup null identitySelector", l, &lookup, vec![Set("/identitySelector", Value::Null)], false),
        case("lookup with signature", l, &lookup, vec![Set("/signature", json!({}))], false),
        case("lookup with document", l, &lookup, vec![Set("/document", json!("x"))], false),
        case("lookup with to", l, &lookup, vec![Set("/to", json!("a$b.c"))], false),
        case("lookup without hostSelector", l, &lookup, vec![Remove("/hostSelector")], false),
        case("lookup bad identity", l, &lookup, vec![Set("/identity", json!("finance"))], false),
        case("lookup bad from", l, &lookup, vec![Set("/from", json!("billing$vendor"))], false),
    ]);
}

// A table reads best one case per line.
#[rustfmt::skip]
#[test]
fn agent_shapes() {
    let a = "agent.json";
    let fetch = signed_artifact("agent-inbox-fetch.json");
    let auth = signed_artifact("agent-auth-request.json");
    let send = signed_artifact("agent-artifact-send.json");
    let wrapped = send["document"].clone();
    let invoice = wrapped["document"].clone();
    let trust_req = signed_artifact("trust-req.json");
    let trust_res = signed_artifact("trust-res.json");
    let encryption = signed_artifact("btps-doc-encrypted.json")["encryption"].clone();
    let ids = json!({"ids": ["a", "b"]});
    let mutation = json!({"id": "r-1", "document": trust_res["document"].clone()});
    let act = |what, action: &str, document: Option<Value>, valid| {
        let mut edits = vec![Set("/action", json!(action))];
        edits.push(match document {
            Some(d) => Set("/document", d),
            None => Remove("/document"),
        });
        case(what, a, &fetch, edits, valid)
    };
    let mut wrapped_encrypted = wrapped.clone();
    wrapped_encrypted["encryption"] = encryption.clone();
    wrapped_encrypted["document"] = json!("c2VjcmV0");
    let mut wrapped_ids = trust_res.clone();
    wrapped_ids["document"] = ids.clone();
    let mut wrapped_mutation = trust_res.clone();
    wrapped_mutation["document"] = mutation.clone();
    let mut wrapped_wrong_type = wrapped.clone();
    wrapped_wrong_type["type"] = json!("TRUST_RES");
    run(&[
        case("missing encryption", a, &fetch, vec![Remove("/encryption")], false),
        case("missing signature", a, &fetch, vec![Remove("/signature")], false),
        case("missing agentId", a, &fetch, vec![Remove("/agentId")], false),
        case("bad to", a, &fetch, vec![Set("/to", json!("finance"))], false),
        case("unknown action", a, &fetch, vec![Set("/action", json!("inbox.read"))], false),
        case("unknown key", a, &fetch, vec![Set("/x", json!(null))], true),
        act("sentbox.fetch is accepted", "sentbox.fetch", Some(json!({"limit": 5})), true),
        act("sentbox.delete is accepted", "sentbox.delete", Some(ids.clone()), true),
        act("fetch without document", "inbox.fetch", None, true),
        act("fetch with empty query", "outbox.fetch", Some(json!({})), false),
        act("fetch with only unknown keys", "draft.fetch", Some(json!({"page": 2})), false),
        act("fetch with a string filter", "trash.fetch", Some(json!({"query": {"title": {"like": "Inv", "notIn": ["x"]}}})), true),
        act("fetch with a bad filter", "trash.fetch", Some(json!({"query": {"from": {"in": "x"}}})), false),
        act("fetch with bad sort", "inbox.fetch", Some(json!({"sort": "up"})), false),
        act("fetch with string limit", "inbox.fetch", Some(json!({"limit": "10"})), false),
        act("fetch with bad since", "inbox.fetch", Some(json!({"since": "yesterday"})), false),
        act("fetch with null cursor", "inbox.fetch", Some(json!({"limit": 1, "cursor": null})), false),
        act("ping without document", "system.ping", None, true),
        act("ping with a string", "system.ping", Some(json!("hello")), true),
        act("ping with null document", "system.ping", Some(Value::Null), false),
        act("ping with a number", "system.ping", Some(json!(5)), false),
        act("trust.fetch with a query", "trust.fetch", Some(json!({"limit": 1})), true),
        act("seen with ids", "inbox.seen", Some(ids.clone()), true),
        act("seen without document", "inbox.seen", None, false),
        act("seen with empty string", "inbox.seen", Some(json!("")), false),
        act("seen with numeric ids", "inbox.seen", Some(json!({"ids": [1]})), false),
        act("delete with a single id", "inbox.delete", Some(json!({"id": "a"})), false),
        act("cancel with ids", "outbox.cancel", Some(ids.clone()), true),
        act("trust.delete bare", "trust.delete", Some(ids.clone()), true),
        act("trust.delete wrapped", "trust.delete", Some(wrapped_ids), true),
        act("trust.update bare", "trust.update", Some(mutation), true),
        act("trust.update wrapped", "trust.update", Some(wrapped_mutation.clone()), true),
        act("draft.update wrapped is not allowed", "draft.update", Some(wrapped_mutation), false),
        act("mutation without id", "draft.update", Some(json!({"document": invoice})), false),
        act("mutation with string document", "draft.update", Some(json!({"id": "d", "document": "x"})), false),
        act("draft.create", "draft.create", Some(json!({"type": "BTPS_DOC", "document": invoice})), true),
        act("draft.create bad type", "draft.create", Some(json!({"type": "INVOICE", "document": invoice})), false),
        act("draft.create with a bare invoice", "draft.create", Some(invoice.clone()), false),
        act("artifact.send wrapped", "artifact.send", Some(wrapped), true),
        act("artifact.send bare", "artifact.send", Some(invoice), true),
        act("artifact.send wrapped and encrypted", "artifact.send", Some(wrapped_encrypted), true),
        act("artifact.send wrapper of the wrong type", "artifact.send", Some(wrapped_wrong_type), false),
        act("artifact.send with a trust request", "artifact.send", Some(trust_req["document"].clone()), false),
        act("trust.request wrapped", "trust.request", Some(trust_req.clone()), true),
        act("trust.request bare", "trust.request", Some(trust_req["document"].clone()), true),
        act("trust.respond wrapped", "trust.respond", Some(trust_res), true),
        act("trust.respond with a request", "trust.respond", Some(trust_req.clone()), false),
        act("auth.refresh with an auth document", "auth.refresh", Some(auth["document"].clone()), true),
        act("auth.refresh with ids", "auth.refresh", Some(ids), false),
        case("encrypted fetch with a string", a, &fetch, vec![Set("/encryption", encryption.clone()), Set("/document", json!("c2VjcmV0"))], true),
        case("encrypted fetch with an object", a, &fetch, vec![Set("/encryption", encryption.clone())], false),
        case("encrypted seen with empty string", a, &fetch, vec![Set("/action", json!("inbox.seen")), Set("/encryption", encryption.clone()), Set("/document", json!(""))], false),
        case("encrypted auth.request", a, &auth, vec![Set("/encryption", encryption.clone()), Set("/document", json!("c2VjcmV0"))], false),
        case("encrypted auth.refresh", a, &auth, vec![Set("/action", json!("auth.refresh")), Set("/encryption", encryption), Set("/document", json!("c2VjcmV0"))], true),
        case("auth.request without document", a, &auth, vec![Remove("/document")], false),
        case("auth.request without authToken", a, &auth, vec![Remove("/document/authToken")], false),
        case("auth.request bad identity", a, &auth, vec![Set("/document/identity", json!("finance"))], false),
        case("agentInfo with a number", a, &auth, vec![Set("/document/agentInfo", json!({"n": 1}))], false),
        case("agentInfo with string list", a, &auth, vec![Set("/document/agentInfo", json!({"p": ["ios", "web"], "d": "phone"}))], true),
        case("agentInfo null", a, &auth, vec![Set("/document/agentInfo", Value::Null)], false),
    ]);
}

// A table reads best one case per line.
#[rustfmt::skip]
#[test]
fn response_and_delivery_failure_shapes() {
    let r = "response.json";
    let d = "delivery-failure.json";
    let lookup = signed_artifact("server-identity-lookup-response.json");
    let error = reference_response_lines()
        .into_iter()
        .map(|(_, line)| line)
        .find(|line| line["type"] == "btps_error")
        .unwrap();
    let transporter = signed_artifact("btps-doc.json");
    let delivery_failure = json!({
        "id": "df-1",
        "issuedAt": transporter["issuedAt"],
        "type": "BTP_DELIVERY_FAILURE",
        "from": transporter["from"],
        "to": transporter["from"],
        "document": {
            "id": "f-1",
            "reason": "Server not available",
            "failedAt": transporter["issuedAt"],
            "retryCount": 5,
            "document": transporter,
            "errorLog": {"code": "X", "message": "m"},
            "recipient": transporter["to"],
            "transportArtifactId": transporter["id"],
        }
    });
    let auth_result = json!({
        "agentId": "btps_ag_1", "refreshToken": "rt", "expiresAt": "2025-01-22T10:30:00.000Z",
        "decryptBy": lookup["signedBy"],
    });
    let query_result = json!({
        "results": [
            {"artifact": transporter, "meta": {"seen": true, "seenAt": "2025-01-22T10:30:00.000Z", "x": null}},
            {"artifact": delivery_failure},
        ],
        "cursor": "c", "total": 2, "hasNext": false,
    });
    let mut bad_result = query_result.clone();
    bad_result["results"][0]["artifact"]["document"]["status"] = json!("overdue");
    run(&[
        case("delivery failure", d, &delivery_failure, vec![], true),
        case("delivery failure without failed artifact", d, &delivery_failure, vec![Remove("/document/document")], true),
        case("delivery failure wrong type", d, &delivery_failure, vec![Set("/type", json!("BTPS_DOC"))], false),
        case("delivery failure bad recipient", d, &delivery_failure, vec![Set("/document/recipient", json!("x"))], false),
        case("delivery failure without transportArtifactId", d, &delivery_failure, vec![Remove("/document/transportArtifactId")], false),
        case("delivery failure string retryCount", d, &delivery_failure, vec![Set("/document/retryCount", json!("5"))], false),
        case("delivery failure invalid failed artifact", d, &delivery_failure, vec![Set("/document/document/document/status", json!("overdue"))], false),
        case("auth result", r, &lookup, vec![Set("/document", auth_result.clone())], true),
        case("auth result bad decryptBy", r, &lookup, vec![Set("/document", auth_result), Set("/document/decryptBy", json!("admin"))], false),
        case("query result", r, &lookup, vec![Set("/document", query_result.clone())], true),
        case("query result with an invalid artifact", r, &lookup, vec![Set("/document", bad_result)], false),
        case("query result with null seenAt", r, &lookup, vec![Set("/document", query_result.clone()), Set("/document/results/0/meta/seenAt", Value::Null)], false),
        case("query result without results", r, &lookup, vec![Set("/document", query_result), Remove("/document/results")], false),
        case("string document", r, &lookup, vec![Set("/document", json!("c2VjcmV0"))], true),
        case("empty object document", r, &lookup, vec![Set("/document", json!({}))], false),
        case("identity key with another keyType", r, &lookup, vec![Set("/document/keyType", json!("ec"))], false),
        case("old type name", r, &lookup, vec![Set("/type", json!("btp_response"))], false),
        case("success with ok false", r, &lookup, vec![Set("/status/ok", json!(false))], false),
        case("error with ok true", r, &error, vec![Set("/status/ok", json!(true))], false),
        case("error with reason", r, &error, vec![Set("/status/reason", json!("BTP_ERROR_SIG_MISMATCH"))], true),
        case("status code as string", r, &error, vec![Set("/status/code", json!("500"))], false),
        case("status without code", r, &error, vec![Remove("/status/code")], false),
        case("signature without signedBy", r, &lookup, vec![Remove("/signedBy")], false),
        case("signature without selector", r, &lookup, vec![Remove("/selector")], false),
        case("unsigned with signedBy", r, &lookup, vec![Remove("/signature")], true),
        case("encryption with object document", r, &lookup, vec![Set("/encryption", signed_artifact("btps-doc-encrypted.json")["encryption"].clone())], false),
        case("encryption with string document", r, &lookup, vec![Set("/encryption", signed_artifact("btps-doc-encrypted.json")["encryption"].clone()), Set("/document", json!("c2VjcmV0"))], true),
        case("encryption null", r, &lookup, vec![Set("/encryption", Value::Null)], false),
        case("version not semver", r, &error, vec![Set("/version", json!("1.0"))], false),
        case("id not a UUID", r, &error, vec![Set("/id", json!("resp-1"))], false),
        case("id upper-case UUID", r, &error, vec![Set("/id", json!("BC560D28-30DE-4BF8-86AA-3D818EFF450A"))], false),
        case("issuedAt without milliseconds", r, &error, vec![Set("/issuedAt", json!("2025-01-15T10:30:00Z"))], false),
        case("empty reqId", r, &error, vec![Set("/reqId", json!(""))], false),
        case("unknown top-level key", r, &error, vec![Set("/x", json!(1))], true),
    ]);
}

// A table reads best one case per line.
#[rustfmt::skip]
#[test]
fn record_and_store_shapes() {
    let tr = "trust-record.json";
    let ir = "identity-record.json";
    let ts = "trust-store.json";
    let trust_store = vector_json("json-stores/trust.no-entity.json");
    let identity_store = vector_json("json-stores/identities.no-entity.json");
    let trust = trust_store[0].clone();
    let identity = identity_store[0].clone();
    run(&[
        case("trust status active", tr, &trust, vec![Set("/status", json!("active"))], false),
        case("trust documentation-style id", tr, &trust, vec![Set("/id", json!("billing$vendor.test:finance$client.test"))], false),
        case("trust upper-case id", tr, &trust, vec![Set("/id", json!(trust["id"].as_str().unwrap().to_uppercase()))], false),
        case("trust without privacyType", tr, &trust, vec![Remove("/privacyType")], false),
        case("trust without keyHistory", tr, &trust, vec![Remove("/keyHistory")], false),
        case("trust history entry without lastSeen", tr, &trust, vec![Set("/keyHistory", json!([{"fingerprint": "f", "firstSeen": "2025-01-01T00:00:00.000Z"}]))], false),
        case("trust null optional fields", tr, &trust, vec![Set("/expiresAt", Value::Null), Set("/retryAfterDate", Value::Null), Set("/updatedAt", Value::Null), Set("/metadata", Value::Null)], true),
        case("trust null required field", tr, &trust, vec![Set("/decidedBy", Value::Null)], false),
        case("trust timestamp with offset", tr, &trust, vec![Set("/createdAt", json!("2025-06-01T12:00:00+02:00"))], true),
        case("trust date only", tr, &trust, vec![Set("/createdAt", json!("2025-06-01"))], false),
        case("trust impossible date", tr, &trust, vec![Set("/decidedAt", json!("2025-02-30T00:00:00Z"))], false),
        case("trust placeholder key", tr, &trust, vec![Set("/publicKeyBase64", json!("test-key")), Set("/publicKeyFingerprint", json!("test-fingerprint"))], true),
        case("trust metadata array", tr, &trust, vec![Set("/metadata", json!([]))], false),
        case("trust bad receiver", tr, &trust, vec![Set("/receiverId", json!("finance"))], false),
        case("identity keyType ec", ir, &identity, vec![Set("/publicKeys/0/keyType", json!("ec"))], false),
        case("identity key without createdAt", ir, &identity, vec![Remove("/publicKeys/0/createdAt")], false),
        case("identity without publicKeys", ir, &identity, vec![Remove("/publicKeys")], false),
        case("identity null updatedAt", ir, &identity, vec![Set("/updatedAt", Value::Null)], true),
        case("identity bad identity", ir, &identity, vec![Set("/identity", json!("finance"))], false),
        case("empty store", ts, &json!([]), vec![], true),
        case("empty entity store", ts, &json!({"trusted_senders": []}), vec![], true),
        case("two entities", ts, &json!({"a": [], "b": []}), vec![], false),
        case("object without entity", ts, &json!({}), vec![], false),
        case("entity that is not an array", ts, &json!({"a": {}}), vec![], false),
        case("store with a bad record", ts, &trust_store, vec![Set("/0/status", json!("active"))], false),
    ]);
}
