//! Interoperability with the reference: every signed vector verifies (and decrypts),
//! every tampered vector fails at the step it names, and what btps signs verifies and
//! re-serialises to the bytes that were signed.

use btps::crypto::{EncryptionMode, PrivateKey, PublicKey};
use btps::identity::Identity;
use btps::protocol::json::{self, Value};
use btps::protocol::response::parse_response;
use btps::protocol::{self, Artifact, ErrorCode, ProtocolError, TransporterType};
use btps::signing::{self, KeySource, StaticKeys, TransporterDraft};

use crate::util::{vector_files, vector_json, vector_text};

/// The keys the vectors' DNS publishes (`keys/index.json`, `dns: true`).
pub(crate) fn vector_dns_keys() -> StaticKeys {
    let index = vector_json("keys/index.json");
    let mut keys = StaticKeys::new();
    for entry in index["keys"].as_object().unwrap().values() {
        if entry["dns"] != true {
            continue;
        }
        let identity = Identity::parse(entry["identity"].as_str().unwrap()).unwrap();
        let pem = vector_text(&format!("keys/{}", entry["publicKey"].as_str().unwrap()));
        keys.insert(
            &identity,
            entry["selector"].as_str().unwrap(),
            PublicKey::from_pem(&pem).unwrap(),
        );
    }
    keys
}

fn vector_public_key(file: &str) -> PublicKey {
    PublicKey::from_pem(&vector_text(&format!("keys/{file}"))).unwrap()
}

fn vector_private_key(file: &str) -> PrivateKey {
    PrivateKey::from_pem(&vector_text(&format!("keys/{file}"))).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Verifies one vector's `artifact` line the way a receiving server (or, for a server
/// response, a client) does. Agents use the vector's `signerPublicKey` as their stored
/// agent-record key.
fn verify_line(vector: &serde_json::Value, keys: &dyn KeySource) -> Result<(), ProtocolError> {
    let line = vector["artifact"].as_str().unwrap();
    if vector["kind"] == "serverResponse"
        || vector["base"]
            .as_str()
            .is_some_and(|base| base.contains("response"))
    {
        let response = parse_response(line)?;
        return runtime()
            .block_on(signing::verify_response(&response, keys))
            .map(drop);
    }
    let artifact = protocol::parse_line(line.as_bytes())?.expect("not blank");
    match artifact {
        Artifact::Transporter(transporter) => runtime()
            .block_on(signing::verify_transporter(&transporter, keys))
            .map(drop),
        Artifact::Agent(agent) => {
            let stored = vector["signerPublicKey"].as_str().map(vector_public_key);
            signing::verify_agent(&agent, stored.as_ref()).map(drop)
        }
        Artifact::Control(_) | Artifact::IdentityLookup(_) => Ok(()),
    }
}

#[test]
fn every_signed_vector_verifies() {
    let keys = vector_dns_keys();
    for (name, vector) in vector_files("signed") {
        assert_eq!(vector["expect"], "valid");
        verify_line(&vector, &keys).unwrap_or_else(|error| panic!("{name}: {error}"));
    }
}

#[test]
fn canonical_text_equals_the_signed_payload() {
    for (name, vector) in vector_files("signed") {
        let Some(payload) = vector["signedPayload"].as_str() else {
            continue;
        };
        let parsed = json::parse(vector["artifact"].as_str().unwrap()).unwrap();
        let object = parsed.as_object().unwrap();
        assert_eq!(
            object.to_canonical_without(&["signature"]),
            payload,
            "{name}"
        );
    }
    for (name, vector) in vector_files("signed") {
        let Some(payloads) = vector["signedPayloads"].as_object() else {
            continue;
        };
        let parsed = json::parse(vector["artifact"].as_str().unwrap()).unwrap();
        let object = parsed.as_object().unwrap();
        assert_eq!(
            object.to_canonical_without(&["delegation", "signature"]),
            payloads["artifact"].as_str().unwrap(),
            "{name}: agent payload"
        );
    }
}

#[test]
fn encrypted_vector_decrypts_to_the_plaintext() {
    let vector = vector_json("signed/btps-doc-encrypted.json");
    let decrypt = &vector["decrypt"];
    let key = vector_private_key(decrypt["receiverPrivateKey"].as_str().unwrap());
    let Some(Artifact::Transporter(artifact)) =
        protocol::parse_line(vector["artifact"].as_str().unwrap().as_bytes()).unwrap()
    else {
        panic!("not a transporter")
    };
    runtime()
        .block_on(signing::verify_transporter(&artifact, &vector_dns_keys()))
        .unwrap();
    let encryption = artifact.encryption.as_ref().unwrap();
    let document =
        signing::decrypt_document(artifact.document().as_str().unwrap(), encryption, &key).unwrap();
    assert_eq!(
        document.to_canonical(),
        decrypt["plaintext"].as_str().unwrap()
    );
    let expected =
        json::parse(&serde_json::to_string(&decrypt["plaintextDocument"]).unwrap()).unwrap();
    assert_eq!(document.to_canonical(), expected.to_canonical());
}

/// The precise error a tampered vector must produce, derived from what the reference
/// said about it (`referenceVerify`, `referenceDecrypt`).
fn expected_code(vector: &serde_json::Value) -> ErrorCode {
    let reference = &vector["referenceVerify"];
    if vector["failsAt"] == "decrypt" {
        return match vector["referenceDecrypt"]["error"].as_str() {
            Some("BTP_ERROR_DECRYPTION_UNINTENDED") => ErrorCode::DecryptionUnintended,
            _ => ErrorCode::Unknown,
        };
    }
    if let Some(error) = reference["error"].as_str() {
        return if error == "BTP_ERROR_SIG_MISMATCH" {
            ErrorCode::SigMismatch
        } else {
            ErrorCode::SigVerification
        };
    }
    if let Some(error) = reference["artifactWithDnsKeyOfFrom"]["error"].as_str() {
        assert_eq!(error, "BTP_ERROR_SIG_MISMATCH");
        return ErrorCode::SigMismatch;
    }
    if reference["delegationAllowed"] == false {
        return ErrorCode::DelegationInvalid;
    }
    if reference["attestation"]["isValid"] == false {
        let error = reference["attestation"]["error"].as_str().unwrap();
        return if error.starts_with("BTP_ERROR_DELEGATION_INVALID") {
            ErrorCode::DelegationInvalid
        } else {
            ErrorCode::AttestationVerification
        };
    }
    assert!(
        reference["delegation"]["isValid"] == false || reference["artifact"]["isValid"] == false
    );
    ErrorCode::DelegationSigVerification
}

#[test]
fn every_tampered_vector_fails_where_it_says() {
    let keys = vector_dns_keys();
    for (name, vector) in vector_files("tampered") {
        assert_eq!(vector["expect"], "invalid");
        let expected = expected_code(&vector);
        match vector["failsAt"].as_str().unwrap() {
            "signature" => {
                let error = verify_line(&vector, &keys).expect_err(&name);
                assert_eq!(error.code, expected, "{name}: {error}");
                assert_eq!(
                    error.wire_message(),
                    " Signature verification failed",
                    "{name}"
                );
            }
            "decrypt" => {
                // The signature is valid: the sender signed the bad values.
                verify_line(&vector, &keys).unwrap_or_else(|error| panic!("{name}: {error}"));
                let key =
                    vector_private_key(vector["decrypt"]["receiverPrivateKey"].as_str().unwrap());
                let Some(Artifact::Transporter(artifact)) =
                    protocol::parse_line(vector["artifact"].as_str().unwrap().as_bytes()).unwrap()
                else {
                    panic!("{name}: not a transporter")
                };
                let error = signing::decrypt_document(
                    artifact.document().as_str().unwrap(),
                    artifact.encryption.as_ref().unwrap(),
                    &key,
                )
                .expect_err(&name);
                assert_eq!(error.code, expected, "{name}: {error}");
            }
            other => panic!("{name}: unknown failsAt {other}"),
        }
    }
}

#[test]
fn what_btps_signs_verifies_and_round_trips() {
    let billing = vector_private_key("billing.key.pem");
    let finance = vector_private_key("finance.key.pem");
    let keys = vector_dns_keys();
    let documents = [
        // Unicode, escapes, odd numbers, index-like keys in rows.
        r#"{"title":"Rechnung Ü — \"q\" \\ 東京 😀 \u2028","id":"INV-1","issuedAt":"2025-06-01T10:00:00.000Z","status":"unpaid","totalAmount":{"value":0.30000000000000004,"currency":"EUR"},"lineItems":{"columns":["Description","Amount"],"rows":[{"2":"b","1":"a","Amount":1e21,"Tiny":1e-7,"Neg":-0}]},"template":{"name":"t","data":{"\u0000ctl":"\u001f","big":123456789012345678901}}}"#,
        r#"{"title":"x","id":"2","issuedAt":"2025-06-01T10:00:00Z","status":"paid","totalAmount":{"value":5e-324,"currency":"AUD"},"lineItems":{"columns":[],"rows":[]}}"#,
    ];
    for (position, document) in documents.iter().enumerate() {
        for encrypt in [false, true] {
            let draft = TransporterDraft {
                kind: TransporterType::Document,
                from: Identity::parse("billing$vendor.test").unwrap(),
                to: Identity::parse("finance$client.test").unwrap(),
                selector: "btps1".to_owned(),
                document: json::parse(document).unwrap(),
                id: Some(format!("doc-{position}")),
                issued_at: None,
            };
            let receiver = finance.public_key().clone();
            let encrypt_to = encrypt.then_some((&receiver, EncryptionMode::Standard));
            let object = signing::build_transporter(draft, &billing, encrypt_to).unwrap();
            let line = object.to_canonical();
            let Some(Artifact::Transporter(artifact)) =
                protocol::parse_line(line.as_bytes()).unwrap()
            else {
                panic!("not a transporter")
            };
            // Re-serialising what arrived gives exactly the bytes that were sent.
            assert_eq!(artifact.raw.to_canonical(), line);
            runtime()
                .block_on(signing::verify_transporter(&artifact, &keys))
                .unwrap();
            if encrypt {
                let plain = signing::decrypt_document(
                    artifact.document().as_str().unwrap(),
                    artifact.encryption.as_ref().unwrap(),
                    &finance,
                )
                .unwrap();
                assert_eq!(
                    plain.to_canonical(),
                    json::parse(document).unwrap().to_canonical()
                );
            }
        }
    }
}

#[test]
fn delegation_and_attestation_made_by_btps_verify() {
    let keys = vector_dns_keys();
    let agent = vector_private_key("agent-device.key.pem");
    let draft = |from: &str| {
        TransporterDraft {
        kind: TransporterType::Document,
        from: Identity::parse(from).unwrap(),
        to: Identity::parse("finance$client.test").unwrap(),
        selector: "btps1".to_owned(),
        document: json::parse(r#"{"title":"t","id":"1","issuedAt":"2025-06-01T10:00:00.000Z","status":"paid","totalAmount":{"value":1,"currency":"USD"},"lineItems":{"columns":[],"rows":[]}}"#).unwrap(),
        id: None,
        issued_at: None,
    }
    };
    // Same-domain delegator, no attestation.
    let mut object =
        signing::build_transporter(draft("billing$vendor.test"), &agent, None).unwrap();
    let admin = Identity::parse("admin$vendor.test").unwrap();
    signing::delegate(
        &mut object,
        "agent-1",
        agent.public_key(),
        &admin,
        &vector_private_key("admin-vendor.key.pem"),
        "btps1",
        None,
    );
    let verify = |object: &json::Object| {
        let Some(Artifact::Transporter(artifact)) =
            protocol::parse_line(object.to_canonical().as_bytes()).unwrap()
        else {
            panic!()
        };
        runtime().block_on(signing::verify_transporter(&artifact, &keys))
    };
    verify(&object).unwrap();

    // A user delegating for itself needs an attestation.
    let mut object =
        signing::build_transporter(draft("billing$vendor.test"), &agent, None).unwrap();
    let billing = Identity::parse("billing$vendor.test").unwrap();
    signing::delegate(
        &mut object,
        "agent-1",
        agent.public_key(),
        &billing,
        &vector_private_key("billing.key.pem"),
        "btps1",
        None,
    );
    assert_eq!(
        verify(&object).unwrap_err().code,
        ErrorCode::DelegationInvalid
    );
    let attestor = Identity::parse("attest$notary.test").unwrap();
    signing::attest(
        &mut object,
        &attestor,
        &vector_private_key("attestor.key.pem"),
        "btps1",
        None,
    )
    .unwrap();
    verify(&object).unwrap();

    // The attestation covers the delegation: changing the delegation's date breaks it.
    if let Some(Value::Object(delegation)) = object.get_mut("delegation") {
        delegation.insert("issuedAt", "2030-01-01T00:00:00.000Z");
    }
    assert!(verify(&object).is_err());
}

#[test]
fn unknown_and_temporary_keys_are_told_apart() {
    struct Failing;
    impl KeySource for Failing {
        fn public_key<'a>(
            &'a self,
            identity: &'a Identity,
            selector: &'a str,
        ) -> btps::BoxFuture<'a, Result<PublicKey, signing::KeyLookupFailure>> {
            Box::pin(async move {
                Err(signing::KeyLookupFailure::Temporary {
                    name: identity.key_record_name(selector),
                    reason: "timeout".into(),
                })
            })
        }
    }
    let vector = vector_json("signed/btps-doc.json");
    let error = verify_line(&vector, &Failing).unwrap_err();
    assert!(error.wire_message().starts_with(
        "Temporary DNS failure while resolving btps1._btps.identity.billing.vendor.test"
    ));
    let error = verify_line(&vector, &StaticKeys::new()).unwrap_err();
    assert_eq!(error.code, ErrorCode::ResolvePubkey);
    assert_eq!(error.wire_message(), " Signature verification failed");
}
