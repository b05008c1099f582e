//! The cryptography layer against the reference's vectors and the spec's test key:
//! fingerprints, signatures, envelope decryption, key generation, hostile input.

use btps::crypto::{
    self, DecryptError, EncryptionMode, KeyError, PrivateKey, PublicKey, SignatureError,
    decode_base64_lenient, decrypt, encode_base64, encrypt, fingerprint_pem, sign_text,
    verify_text,
};
use proptest::prelude::*;
use serde_json::Value;

use crate::util::{vector_files, vector_json, vector_text};

/// The spec's test key (03-crypto.md §12), kept as fixtures beside the tests.
fn spec_private_key_pem() -> String {
    fixture("spec-test-key.key.pem")
}

fn spec_public_key_pem() -> String {
    fixture("spec-test-key.pub.pem")
}

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn vector_public_key(file: &str) -> PublicKey {
    PublicKey::from_pem(&vector_text(&format!("keys/{file}")))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn vector_private_key(file: &str) -> PrivateKey {
    PrivateKey::from_pem(&vector_text(&format!("keys/{file}")))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn str_field<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer}"))
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

// ---------------------------------------------------------------- fingerprints

#[test]
fn fingerprints_of_every_vector_key_file() {
    let vectors = vector_json("fingerprints.json");
    let fingerprints = vectors["fingerprints"].as_object().unwrap();
    assert!(!fingerprints.is_empty());
    for (file, expected) in fingerprints {
        let pem = vector_text(&format!("keys/{file}"));
        assert_eq!(
            fingerprint_pem(&pem).unwrap(),
            expected.as_str().unwrap(),
            "{file}"
        );
    }
}

#[test]
fn fingerprints_of_pem_spelling_variants() {
    let vectors = vector_json("fingerprints.json");
    let variants = vectors["pemVariants"].as_array().unwrap();
    let mut rejected = 0;
    for variant in variants {
        let description = str_field(variant, "/description");
        let pem = str_field(variant, "/pem");
        match variant["fingerprint"].as_str() {
            Some(expected) => {
                let key = PublicKey::from_pem(pem).unwrap_or_else(|e| panic!("{description}: {e}"));
                assert_eq!(key.fingerprint(), expected, "{description}");
            }
            None => {
                assert!(
                    variant["error"].is_string(),
                    "{description}: neither fingerprint nor error"
                );
                assert_eq!(
                    PublicKey::from_pem(pem).unwrap_err(),
                    KeyError::Pkcs1PublicKey,
                    "{description}"
                );
                rejected += 1;
            }
        }
    }
    assert_eq!(rejected, 1, "the PKCS#1 variant must be among the vectors");
}

#[test]
fn key_index_fingerprints_and_private_halves() {
    let index = vector_json("keys/index.json");
    for (name, entry) in index["keys"].as_object().unwrap() {
        let expected = str_field(entry, "/fingerprint");
        let public = vector_public_key(str_field(entry, "/publicKey"));
        assert_eq!(public.fingerprint(), expected, "{name}");
        assert_eq!(public.bits(), 2048, "{name}");
        let private = vector_private_key(str_field(entry, "/privateKey"));
        assert_eq!(
            private.public_key(),
            &public,
            "{name}: private and public files disagree"
        );
        // The DNS form: base64 SPKI without padding for RSA-2048, back to the same key.
        let b64 = public.to_base64();
        assert!(!b64.ends_with('='), "{name}");
        assert_eq!(PublicKey::from_base64_spki(&b64).unwrap(), public, "{name}");
    }
}

#[test]
fn spec_v1_fingerprint_of_the_test_key() {
    let public = PublicKey::from_pem(&spec_public_key_pem()).unwrap();
    assert_eq!(
        public.fingerprint(),
        "E1xL0z65S0tX+wQNjqd1djZLFO/SxkCnXAzZR40HEEI="
    );
    let private = PrivateKey::from_pem(&spec_private_key_pem()).unwrap();
    assert_eq!(private.public_key().fingerprint(), public.fingerprint());
}

#[test]
fn pem_conversions_follow_the_reference_rules() {
    let text = vector_text("keys/billing.pub.pem");
    let key = PublicKey::from_pem(&text).unwrap();
    // base64 -> PEM: 64-column lines, no trailing newline; the file has one.
    assert_eq!(key.to_pem(), text.trim_end());
    assert_eq!(PublicKey::from_pem(&key.to_pem()).unwrap(), key);
    // PEM -> base64: armour and line breaks removed.
    let body: String = text
        .replace("-----BEGIN PUBLIC KEY-----", "")
        .replace("-----END PUBLIC KEY-----", "")
        .replace('\n', "");
    assert_eq!(key.to_base64(), body);
    assert_eq!(key.spki_der(), decode_base64_lenient(&body).unwrap());
}

#[test]
fn pkcs1_private_key_files_load_too() {
    use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
    use rsa::pkcs8::DecodePrivateKey;
    let pkcs8 = spec_private_key_pem();
    let parsed = rsa::RsaPrivateKey::from_pkcs8_pem(&pkcs8).unwrap();
    let pkcs1 = parsed.to_pkcs1_pem(LineEnding::CRLF).unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let from_pkcs1 = PrivateKey::from_pem(&pkcs1).unwrap();
    let from_pkcs8 = PrivateKey::from_pem(&pkcs8).unwrap();
    assert_eq!(from_pkcs1.public_key(), from_pkcs8.public_key());
    assert_eq!(from_pkcs1.sign(b"x"), from_pkcs8.sign(b"x"));
    // Re-exported as PKCS#8, it is the reference's own file, byte for byte.
    assert_eq!(from_pkcs1.to_pkcs8_pem(), pkcs8);
}

#[test]
fn private_key_pem_round_trips_byte_for_byte() {
    for file in ["billing.key.pem", "finance.key.pem", "rogue.key.pem"] {
        let text = vector_text(&format!("keys/{file}"));
        let key = PrivateKey::from_pem(&text).unwrap();
        assert_eq!(key.to_pkcs8_pem(), text, "{file}");
    }
}

// ---------------------------------------------------------------- signatures

/// `canon` of the worked example of spec §4.6.
const SPEC_CANON: &str = r#"{"version":"1.0.0","issuedAt":"2025-01-15T10:30:00.000Z","id":"a1b2c3","type":"TRUST_REQ","from":"billing$vendor.com","to":"pay$client.com","document":{"2":2,"10":1.5,"id":"tr-1","name":"Vendor \"Co\" / Ltd","email":"billing@vendor.com","reason":"Invoices é","phone":"+1 555 0100"},"selector":"btps1","encryption":null}"#;

#[test]
fn spec_v2_signature_of_the_worked_example() {
    let digest = ring::digest::digest(&ring::digest::SHA256, SPEC_CANON.as_bytes());
    assert_eq!(
        digest.as_ref(),
        hex("ad1f8e2dc9e6de5d9746b11807c0056b02594d47dcd99b4317e7c793ed807ba0")
    );
    let key = PrivateKey::from_pem(&spec_private_key_pem()).unwrap();
    let signature = sign_text(&key, SPEC_CANON);
    assert_eq!(
        signature.value,
        "n934muNDM4FdCNIEV7TZlglmnzJpBmxpy1EakSjt/KgCvOjhlPqEsSnyTB0xoaFxdbh7iYZvihFVreiljzJJTBH8SS6dK6w3t4wa0PY5EONbru26Hm+SQQYa8X4vsRgH08HGNZ4AMkwCMjSKvzFuDu8BAJdHXXjlVhJnFvjSyxJIOM8kxd+wO0OSSqJ4qb79p48TpFeDLcvIhV3gOCV3g4aV+kwXISnL2ZhhHnsg+qtS5zcSnCxKBTf2+aaC85zUJV4+vJ1EySyUHiddXqbfxx0TJeLraGGRXc6kNk/50sc4LjU4sokx6rcxAVnFGbBH3zk2qOVoovKh9/8oyK6Teg=="
    );
    assert_eq!(
        signature.fingerprint,
        "E1xL0z65S0tX+wQNjqd1djZLFO/SxkCnXAzZR40HEEI="
    );
    let public = key.public_key();
    verify_text(public, SPEC_CANON, &signature.value, &signature.fingerprint).unwrap();
    // One changed character of the text breaks it.
    let altered = SPEC_CANON.replace("1.5", "1.6");
    assert_eq!(
        verify_text(public, &altered, &signature.value, &signature.fingerprint),
        Err(SignatureError::Invalid)
    );
}

/// Verifies one signature of a vector: `signature` is the JSON object carrying
/// `value` and `fingerprint`.
fn check_vector_signature(name: &str, key: &PublicKey, payload: &str, signature: &Value) {
    let value = str_field(signature, "/value");
    let fingerprint = str_field(signature, "/fingerprint");
    assert_eq!(
        str_field(signature, "/algorithmHash"),
        crypto::ALGORITHM_HASH,
        "{name}"
    );
    verify_text(key, payload, value, fingerprint).unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn signed_payloads_of_every_signed_vector_verify() {
    let mut checked = 0;
    for (name, vector) in vector_files("signed") {
        let Some(signer) = vector["signerPublicKey"].as_str() else {
            continue;
        };
        let artifact: Value = serde_json::from_str(str_field(&vector, "/artifact")).unwrap();
        let key = vector_public_key(signer);
        if let Some(payload) = vector["signedPayload"].as_str() {
            check_vector_signature(&name, &key, payload, &artifact["signature"]);
            // Any other key fails at the fingerprint, before RSA.
            let rogue = vector_public_key("rogue.pub.pem");
            let value = str_field(&artifact, "/signature/value");
            let fingerprint = str_field(&artifact, "/signature/fingerprint");
            assert_eq!(
                verify_text(&rogue, payload, value, fingerprint),
                Err(SignatureError::FingerprintMismatch),
                "{name}"
            );
            checked += 1;
        }
        if let Some(payloads) = vector.get("signedPayloads") {
            // Delegated artifacts: the artifact is signed by the inline agent key.
            let agent =
                PublicKey::from_pem(str_field(&artifact, "/delegation/agentPubKey")).unwrap();
            assert_eq!(agent, key, "{name}");
            check_vector_signature(
                &name,
                &agent,
                str_field(payloads, "/artifact"),
                &artifact["signature"],
            );
            let delegator = vector_public_key(str_field(&vector, "/delegation/delegatorPublicKey"));
            check_vector_signature(
                &name,
                &delegator,
                str_field(payloads, "/delegation"),
                &artifact["delegation"]["signature"],
            );
            if let Some(attestation) = payloads.get("attestation") {
                let attestor =
                    vector_public_key(str_field(&vector, "/delegation/attestorPublicKey"));
                check_vector_signature(
                    &name,
                    &attestor,
                    attestation.as_str().unwrap(),
                    &artifact["delegation"]["attestation"]["signature"],
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} signed vectors checked");
}

#[test]
fn signature_value_spellings_and_garbage() {
    let key = PrivateKey::from_pem(&spec_private_key_pem()).unwrap();
    let public = key.public_key();
    let signature = sign_text(&key, "text");
    let fingerprint = signature.fingerprint.as_str();
    // URL-safe, unpadded and line-wrapped spellings of the same bytes still verify.
    let url_safe = signature
        .value
        .replace('+', "-")
        .replace('/', "_")
        .replace('=', "");
    verify_text(public, "text", &url_safe, fingerprint).unwrap();
    let wrapped = format!("{}\n{}", &signature.value[..100], &signature.value[100..]);
    verify_text(public, "text", &wrapped, fingerprint).unwrap();
    for garbage in ["", "***", "AAAA", &signature.value[4..]] {
        assert_eq!(
            verify_text(public, "text", garbage, fingerprint),
            Err(SignatureError::Invalid)
        );
    }
    // The fingerprint comparison is exact: the same value in URL-safe form is not it.
    let other_spelling = fingerprint.replace('+', "-").replace('/', "_");
    if other_spelling != fingerprint {
        assert_eq!(
            verify_text(public, "text", &signature.value, &other_spelling),
            Err(SignatureError::FingerprintMismatch)
        );
    }
    assert_eq!(
        verify_text(public, "text", &signature.value, ""),
        Err(SignatureError::FingerprintMismatch)
    );
}

#[test]
fn rsa_1024_keys_load_but_do_not_verify() {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let small = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
    let spki = small.to_public_key().to_public_key_der().unwrap();
    let public = PublicKey::from_spki_der(spki.as_bytes()).unwrap();
    assert_eq!(public.bits(), 1024);
    assert_eq!(public.spki_der(), spki.as_bytes());
    assert_eq!(public.fingerprint().len(), 44);
    let message = b"message";
    let signature = small
        .sign(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &<sha2::Sha256 as sha2::Digest>::digest(message),
        )
        .unwrap();
    assert_eq!(
        public.verify(message, &signature),
        Err(SignatureError::UnsupportedKeySize { bits: 1024 })
    );
    let pem = small.to_pkcs8_pem(LineEnding::LF).unwrap();
    assert!(matches!(
        PrivateKey::from_pem(&pem),
        Err(KeyError::UnsupportedKeySize { bits: 1024, .. })
    ));
}

// ---------------------------------------------------------------- encryption

#[test]
fn spec_v3_deterministic_encryption_and_unwrap() {
    let content_key: [u8; 32] =
        hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
            .try_into()
            .unwrap();
    let iv: [u8; 12] = hex("000102030405060708090a0b").try_into().unwrap();
    let plaintext = br#"{"id":"x","amount":12.5}"#;
    let (ciphertext, tag) = crypto::seal_with(&content_key, &iv, plaintext).unwrap();
    assert_eq!(
        encode_base64(&ciphertext),
        "PCC/f+ff4GOvbbXq3IYNA/f0vQXCVWoB"
    );
    assert_eq!(encode_base64(&tag), "NBQmfj/gDXY2ZzHbilnZbQ==");
    assert_eq!(encode_base64(&iv), "AAECAwQFBgcICQoL");

    let public = PublicKey::from_pem(&spec_public_key_pem()).unwrap();
    let envelope = crypto::encrypt_with(
        plaintext,
        &public,
        EncryptionMode::Standard,
        &content_key,
        &iv,
    )
    .unwrap();
    assert_eq!(envelope.document, "PCC/f+ff4GOvbbXq3IYNA/f0vQXCVWoB");
    assert_eq!(envelope.auth_tag, "NBQmfj/gDXY2ZzHbilnZbQ==");
    assert_eq!(envelope.iv, "AAECAwQFBgcICQoL");

    // The reference's wrapped key for the test key.
    let encrypted_key = "bAQ9dubqCr87KGjT6O2WfBnnVI9htJ/aoeMJE3LxF2YZ48qI5FidR2jwi8zC7XGo9rVq+svks3FByj0Q/w+CvcNYkaSrguyvpq5ljibqYKSPFbGiXz8QsSD6Qa4FmOUsUUaX3ElI5emLHfHTV9wOWyKmp6XJU9qMgSjygz76K/MeOZ+kmeQ1itkB6utNw1QfNdwpQxUl16PqsjH9NB4y19XqSF8EOoHoUZCNzCWaUA4b6ry7clJ6xN0QfzXkTu9JmukyzlLwW6iLTVoVmZh1ifGqA0ejK3lzAn8HY0we4lbK/Hs8PbpBTMKd1MOPk9IJQ+M5cHvTqCo9WF2SnQ/Osw==";
    let private = PrivateKey::from_pem(&spec_private_key_pem()).unwrap();
    let wrapped = decode_base64_lenient(encrypted_key).unwrap();
    assert_eq!(private.unwrap_key(&wrapped).unwrap(), content_key);
    let opened = decrypt(
        &private,
        "aes-256-gcm",
        &envelope.document,
        encrypted_key,
        &envelope.iv,
        &envelope.auth_tag,
    )
    .unwrap();
    assert_eq!(opened, plaintext);
    // Our own wrapping (randomised) unwraps to the same key.
    let ours = decode_base64_lenient(&envelope.encrypted_key).unwrap();
    assert_eq!(ours.len(), 256);
    assert_eq!(private.unwrap_key(&ours).unwrap(), content_key);
}

#[test]
fn spec_v3_unwrap_with_mgf1_sha1_fails() {
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&spec_private_key_pem()).unwrap();
    let wrapped = decode_base64_lenient("bAQ9dubqCr87KGjT6O2WfBnnVI9htJ/aoeMJE3LxF2YZ48qI5FidR2jwi8zC7XGo9rVq+svks3FByj0Q/w+CvcNYkaSrguyvpq5ljibqYKSPFbGiXz8QsSD6Qa4FmOUsUUaX3ElI5emLHfHTV9wOWyKmp6XJU9qMgSjygz76K/MeOZ+kmeQ1itkB6utNw1QfNdwpQxUl16PqsjH9NB4y19XqSF8EOoHoUZCNzCWaUA4b6ry7clJ6xN0QfzXkTu9JmukyzlLwW6iLTVoVmZh1ifGqA0ejK3lzAn8HY0we4lbK/Hs8PbpBTMKd1MOPk9IJQ+M5cHvTqCo9WF2SnQ/Osw==").unwrap();
    let sha256 = rsa::Oaep::new_with_mgf_hash::<sha2::Sha256, sha2::Sha256>();
    assert_eq!(key.decrypt(sha256, &wrapped).unwrap().len(), 32);
    let mgf1_sha1 = rsa::Oaep::new_with_mgf_hash::<sha2::Sha256, sha1::Sha1>();
    assert!(key.decrypt(mgf1_sha1, &wrapped).is_err());
    let all_sha1 = rsa::Oaep::new::<sha1::Sha1>();
    assert!(key.decrypt(all_sha1, &wrapped).is_err());
}

/// `decrypt` over an artifact line's `document` and `encryption` fields.
fn decrypt_artifact(key: &PrivateKey, artifact_line: &str) -> Result<Vec<u8>, DecryptError> {
    let artifact: Value = serde_json::from_str(artifact_line).unwrap();
    decrypt(
        key,
        str_field(&artifact, "/encryption/algorithm"),
        str_field(&artifact, "/document"),
        str_field(&artifact, "/encryption/encryptedKey"),
        str_field(&artifact, "/encryption/iv"),
        str_field(&artifact, "/encryption/authTag"),
    )
}

#[test]
fn encrypted_vector_decrypts_to_the_reference_plaintext() {
    let vector = vector_json("signed/btps-doc-encrypted.json");
    let key = vector_private_key(str_field(&vector, "/decrypt/receiverPrivateKey"));
    let plaintext = decrypt_artifact(&key, str_field(&vector, "/artifact")).unwrap();
    assert_eq!(
        String::from_utf8(plaintext).unwrap(),
        str_field(&vector, "/decrypt/plaintext")
    );
}

#[test]
fn tampered_encrypted_vectors_fail_to_decrypt() {
    let base = vector_json("signed/btps-doc-encrypted.json");
    let receiver = str_field(&base, "/decrypt/receiverPrivateKey");
    let mut checked = 0;
    for (name, vector) in vector_files("tampered") {
        if !name.starts_with("btps-doc-encrypted-") {
            continue;
        }
        let artifact = str_field(&vector, "/artifact");
        // `failsAt: decrypt` vectors name the key to try; the others were encrypted
        // to the base vector's receiver and must not decrypt either.
        let key_file = vector
            .pointer("/decrypt/receiverPrivateKey")
            .and_then(Value::as_str)
            .unwrap_or(receiver);
        let result = decrypt_artifact(&vector_private_key(key_file), artifact);
        let error = result.expect_err(&name);
        match vector
            .pointer("/referenceDecrypt/error")
            .and_then(Value::as_str)
        {
            Some("BTP_ERROR_DECRYPTION_UNINTENDED") => {
                assert_eq!(error, DecryptError::NotForThisReceiver, "{name}");
            }
            Some(_) => {
                assert_eq!(str_field(&vector, "/failsAt"), "decrypt", "{name}");
                assert_eq!(error, DecryptError::AuthenticationFailed, "{name}");
            }
            None => {
                assert_eq!(str_field(&vector, "/failsAt"), "signature", "{name}");
                assert!(
                    matches!(
                        error,
                        DecryptError::AuthenticationFailed | DecryptError::Malformed(_)
                    ),
                    "{name}: {error:?}"
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn decrypt_rejects_malformed_fields() {
    let vector = vector_json("signed/btps-doc-encrypted.json");
    let key = vector_private_key(str_field(&vector, "/decrypt/receiverPrivateKey"));
    let artifact: Value = serde_json::from_str(str_field(&vector, "/artifact")).unwrap();
    let document = str_field(&artifact, "/document");
    let wrapped = str_field(&artifact, "/encryption/encryptedKey");
    let iv = str_field(&artifact, "/encryption/iv");
    let tag = str_field(&artifact, "/encryption/authTag");
    decrypt(&key, "aes-256-gcm", document, wrapped, iv, tag).unwrap();

    assert_eq!(
        decrypt(&key, "aes-256-cbc", document, wrapped, iv, tag),
        Err(DecryptError::UnsupportedAlgorithm {
            algorithm: "aes-256-cbc".to_owned()
        })
    );
    let short_tag = encode_base64(&decode_base64_lenient(tag).unwrap()[..12]);
    let long_iv = encode_base64(&[0u8; 16]);
    for (label, result) in [
        (
            "document",
            decrypt(&key, "aes-256-gcm", "%%", wrapped, iv, tag),
        ),
        (
            "encryptedKey",
            decrypt(&key, "aes-256-gcm", document, "not base64!", iv, tag),
        ),
        (
            "iv",
            decrypt(&key, "aes-256-gcm", document, wrapped, &long_iv, tag),
        ),
        (
            "authTag",
            decrypt(&key, "aes-256-gcm", document, wrapped, iv, &short_tag),
        ),
    ] {
        match result {
            Err(DecryptError::Malformed(what)) => {
                assert!(what.starts_with(label), "{label}: {what}");
            }
            other => panic!("{label}: {other:?}"),
        }
    }
    // A wrapped key of the wrong size is just not for us.
    assert_eq!(
        decrypt(&key, "aes-256-gcm", document, "AAAA", iv, tag),
        Err(DecryptError::NotForThisReceiver)
    );
    // A 32-byte key wrapped correctly, but not the one the document was sealed with.
    let other = crypto::encrypt(b"{}", key.public_key(), EncryptionMode::None).unwrap();
    assert_eq!(
        decrypt(&key, "aes-256-gcm", document, &other.encrypted_key, iv, tag),
        Err(DecryptError::AuthenticationFailed)
    );
    // A wrapped 16-byte key unwraps but is not an AES-256 key.
    let public = key.public_key().clone();
    let wrapped_short = {
        let rsa_key = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&hex_modulus(&public)),
            rsa::BigUint::from(65537u32),
        )
        .unwrap();
        rsa_key
            .encrypt(
                &mut rand::rngs::OsRng,
                rsa::Oaep::new::<sha2::Sha256>(),
                &[7u8; 16],
            )
            .unwrap()
    };
    assert!(matches!(
        decrypt(&key, "aes-256-gcm", document, &encode_base64(&wrapped_short), iv, tag),
        Err(DecryptError::Malformed(what)) if what.starts_with("encryptedKey")
    ));
}

/// The modulus of a key, read back from its SPKI with the `rsa` crate.
fn hex_modulus(key: &PublicKey) -> Vec<u8> {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    rsa::RsaPublicKey::from_public_key_der(key.spki_der())
        .unwrap()
        .n()
        .to_bytes_be()
}

#[test]
fn encrypt_decrypt_round_trip_with_vector_keys() {
    let receiver = vector_private_key("finance.key.pem");
    let plaintext = "{\"invoice\":\"Ünïcödé \u{2028}\",\"n\":1}".as_bytes();
    for mode in [
        EncryptionMode::Standard,
        EncryptionMode::TwoFactor,
        EncryptionMode::None,
    ] {
        let envelope = encrypt(plaintext, receiver.public_key(), mode).unwrap();
        assert_eq!(envelope.mode, mode);
        let opened = decrypt(
            &receiver,
            crypto::ENCRYPTION_ALGORITHM,
            &envelope.document,
            &envelope.encrypted_key,
            &envelope.iv,
            &envelope.auth_tag,
        )
        .unwrap();
        assert_eq!(opened, plaintext);
        let wrong = vector_private_key("billing.key.pem");
        assert_eq!(
            decrypt(
                &wrong,
                "aes-256-gcm",
                &envelope.document,
                &envelope.encrypted_key,
                &envelope.iv,
                &envelope.auth_tag
            ),
            Err(DecryptError::NotForThisReceiver)
        );
    }
    // Fresh key and nonce every time.
    let a = encrypt(plaintext, receiver.public_key(), EncryptionMode::Standard).unwrap();
    let b = encrypt(plaintext, receiver.public_key(), EncryptionMode::Standard).unwrap();
    assert_ne!(a.iv, b.iv);
    assert_ne!(a.document, b.document);
    // An empty document round-trips too.
    let empty = encrypt(b"", receiver.public_key(), EncryptionMode::Standard).unwrap();
    assert_eq!(empty.document, "");
    assert_eq!(
        decrypt(
            &receiver,
            "aes-256-gcm",
            &empty.document,
            &empty.encrypted_key,
            &empty.iv,
            &empty.auth_tag
        )
        .unwrap(),
        b""
    );
}

// ---------------------------------------------------------------- key generation

fn exercise_generated_key(bits: usize) {
    let key = PrivateKey::generate(bits).unwrap();
    let public = key.public_key();
    assert_eq!(public.bits(), bits);
    let signature = sign_text(&key, "generated");
    assert_eq!(
        decode_base64_lenient(&signature.value).unwrap().len(),
        bits / 8
    );
    verify_text(
        public,
        "generated",
        &signature.value,
        &signature.fingerprint,
    )
    .unwrap();
    assert_eq!(
        sign_text(&key, "generated"),
        signature,
        "PKCS#1 v1.5 is deterministic"
    );

    let reloaded = PrivateKey::from_pem(&key.to_pkcs8_pem()).unwrap();
    assert_eq!(reloaded.public_key(), public);
    assert_eq!(reloaded.sign(b"generated"), key.sign(b"generated"));
    let public_again = PublicKey::from_pem(&public.to_pem()).unwrap();
    assert_eq!(public_again.fingerprint(), public.fingerprint());
    assert_eq!(
        fingerprint_pem(&public.to_pem()).unwrap(),
        signature.fingerprint
    );
    assert_eq!(
        PublicKey::from_base64_spki(&public.to_base64()).unwrap(),
        *public
    );

    let envelope = encrypt(b"{\"a\":1}", public, EncryptionMode::Standard).unwrap();
    assert_eq!(
        decode_base64_lenient(&envelope.encrypted_key)
            .unwrap()
            .len(),
        bits / 8
    );
    let opened = decrypt(
        &reloaded,
        "aes-256-gcm",
        &envelope.document,
        &envelope.encrypted_key,
        &envelope.iv,
        &envelope.auth_tag,
    );
    assert_eq!(opened.unwrap(), b"{\"a\":1}");
}

#[test]
fn generated_2048_bit_key_works_end_to_end() {
    exercise_generated_key(2048);
}

#[test]
fn generated_3072_bit_key_works_end_to_end() {
    exercise_generated_key(3072);
}

#[test]
fn generated_4096_bit_key_works_end_to_end() {
    exercise_generated_key(4096);
}

#[test]
fn debug_output_shows_no_key_material() {
    let key = vector_private_key("billing.key.pem");
    let text = format!("{key:?}");
    assert!(text.contains(key.public_key().fingerprint()), "{text}");
    let body = key.to_pkcs8_pem();
    let first_line = body.lines().nth(1).unwrap();
    assert!(!text.contains(&first_line[..20]), "{text}");
    let public_text = format!("{:?}", key.public_key());
    assert!(
        !public_text.contains(&key.public_key().to_base64()[..40]),
        "{public_text}"
    );
}

// ---------------------------------------------------------------- hostile input

#[test]
fn bad_pem_inputs_are_errors() {
    let good = vector_text("keys/billing.pub.pem");
    let body_start = good.find('\n').unwrap() + 1;
    type Expectation = fn(&KeyError) -> bool;
    let cases: Vec<(String, Expectation)> = vec![
        (String::new(), |e| *e == KeyError::NotPublicKeyPem),
        ("hello".to_owned(), |e| *e == KeyError::NotPublicKeyPem),
        (good.replace("-----END PUBLIC KEY-----", ""), |e| {
            *e == KeyError::NotPublicKeyPem
        }),
        (
            good.replace("-----BEGIN PUBLIC KEY-----", "-----BEGIN KEY-----"),
            |e| *e == KeyError::NotPublicKeyPem,
        ),
        (format!("x{good}"), |e| *e == KeyError::NotPublicKeyPem),
        (
            "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----".to_owned(),
            |e| matches!(e, KeyError::MalformedPublicKey(_)),
        ),
        (
            "-----BEGIN PUBLIC KEY-----\n*not base64*\n-----END PUBLIC KEY-----".to_owned(),
            |e| matches!(e, KeyError::Base64(_)),
        ),
        // Truncated body.
        (
            format!("{}\n-----END PUBLIC KEY-----", &good[..body_start + 100]),
            |e| matches!(e, KeyError::MalformedPublicKey(_)),
        ),
        // A private key where a public one is expected.
        (vector_text("keys/billing.key.pem"), |e| {
            *e == KeyError::NotPublicKeyPem
        }),
    ];
    for (text, expected) in cases {
        let error = PublicKey::from_pem(&text).unwrap_err();
        assert!(expected(&error), "{text:?}: {error:?}");
        // Every message is readable and free of the input.
        assert!(!error.to_string().is_empty());
    }
    assert!(matches!(
        PrivateKey::from_pem(""),
        Err(KeyError::NotPrivateKeyPem)
    ));
    assert!(matches!(
        PrivateKey::from_pem(&good),
        Err(KeyError::UnsupportedPemLabel { .. })
    ));
    let key_text = vector_text("keys/billing.key.pem");
    assert!(matches!(
        PrivateKey::from_pem(&key_text.replace("-----END PRIVATE KEY-----", "")),
        Err(KeyError::UnterminatedPem { .. })
    ));
    let truncated = format!("{}\n-----END PRIVATE KEY-----\n", &key_text[..400]);
    assert!(matches!(
        PrivateKey::from_pem(&truncated),
        Err(KeyError::MalformedPrivateKey(_))
    ));
}

#[test]
fn lenient_base64_cases() {
    let bytes: Vec<u8> = (0..=255).collect();
    let standard = encode_base64(&bytes);
    assert_eq!(decode_base64_lenient(&standard).unwrap(), bytes);
    let url = standard.replace('+', "-").replace('/', "_");
    assert_eq!(decode_base64_lenient(&url).unwrap(), bytes);
    assert_eq!(
        decode_base64_lenient(url.trim_end_matches('=')).unwrap(),
        bytes
    );
    let wrapped: String = standard
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n");
    assert_eq!(decode_base64_lenient(&wrapped).unwrap(), bytes);
    for garbage in ["a", "ab=c", "ab$c", "ab\u{a0}c", "ab==="] {
        assert!(decode_base64_lenient(garbage).is_err(), "{garbage:?}");
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in ".*") {
        let _ = PublicKey::from_pem(&text);
        let _ = PrivateKey::from_pem(&text);
        let _ = PublicKey::from_base64_spki(&text);
        let _ = decode_base64_lenient(&text);
    }

    #[test]
    fn pem_shaped_text_never_panics(body in "[A-Za-z0-9+/=\\-_ \r\n]{0,600}", label in "(PUBLIC KEY|PRIVATE KEY|RSA PRIVATE KEY)") {
        let text = format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n");
        let _ = PublicKey::from_pem(&text);
        let _ = PrivateKey::from_pem(&text);
    }

    #[test]
    fn arbitrary_der_never_panics(der in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = PublicKey::from_spki_der(&der);
    }

    #[test]
    fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assert_eq!(decode_base64_lenient(&encode_base64(&bytes)).unwrap(), bytes);
    }
}
