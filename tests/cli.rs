//! The `btps` command line, run as a real process: `keygen`, `fingerprint`, and
//! `verify` over every vector file with keys served by a real DNS server on loopback.

use std::path::Path;
use std::process::{Command, Output};

use btps::identity::responder::DnsResponder;

use crate::util::server::vector_dns;
use crate::util::{vector_files, vector_json, vectors_dir};

fn btps(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(args)
        .output()
        .expect("btps runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `btps verify` on one vector file the way an operator would.
fn verify_vector(file: &Path, vector: &serde_json::Value, dns: &DnsResponder) -> Output {
    let address = dns.local_addr().to_string();
    let mut args = vec![
        "verify".to_owned(),
        file.display().to_string(),
        "--dns-server".to_owned(),
        address,
    ];
    // An agent artifact is verified with the key of its agent record.
    let is_agent = vector["kind"] == "agent"
        || file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("agent-");
    if is_agent && let Some(key) = vector["signerPublicKey"].as_str() {
        args.push("--key".to_owned());
        args.push(vectors_dir().join("keys").join(key).display().to_string());
    }
    if let Some(key) = vector["decrypt"]["receiverPrivateKey"].as_str() {
        args.push("--decrypt-key".to_owned());
        args.push(vectors_dir().join("keys").join(key).display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    btps(&args)
}

#[test]
fn verify_accepts_every_signed_vector() {
    let dns = vector_dns();
    for (name, vector) in vector_files("signed") {
        let output = verify_vector(&vectors_dir().join("signed").join(&name), &vector, &dns);
        assert!(
            output.status.success(),
            "{name}: {}{}",
            stdout(&output),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout(&output).starts_with("valid: "),
            "{name}: {}",
            stdout(&output)
        );
        if let Some(plaintext) = vector["decrypt"]["plaintext"].as_str() {
            assert_eq!(
                stdout(&output).lines().nth(1),
                Some(plaintext),
                "{name}: decrypted document"
            );
        }
    }
}

#[test]
fn verify_refuses_every_tampered_vector() {
    let dns = vector_dns();
    for (name, vector) in vector_files("tampered") {
        let output = verify_vector(&vectors_dir().join("tampered").join(&name), &vector, &dns);
        assert_eq!(output.status.code(), Some(1), "{name}: {}", stdout(&output));
        let expected = match vector["failsAt"].as_str().unwrap() {
            "signature" => "invalid: BTP_ERROR_SIG_VERIFICATION: Signature verification failed",
            _ => "invalid: ",
        };
        assert!(
            stdout(&output).starts_with(expected),
            "{name}: {}",
            stdout(&output)
        );
    }
}

#[test]
fn verify_reports_a_missing_key_and_an_unreachable_dns() {
    let dns = vector_dns();
    let file = vectors_dir().join("signed/btps-doc.json");
    dns.remove("btps1._btps.identity.billing.vendor.test");
    let output = btps(&[
        "verify",
        &file.display().to_string(),
        "--dns-server",
        &dns.local_addr().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("[BTP_ERROR_RESOLVE_PUBKEY]"),
        "{}",
        stdout(&output)
    );

    dns.set_failure(
        "btps1._btps.identity.billing.vendor.test",
        btps::identity::responder::Failure::ServFail,
    );
    let output = btps(&[
        "verify",
        &file.display().to_string(),
        "--dns-server",
        &dns.local_addr().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("Temporary DNS failure while resolving btps1._btps.identity.billing.vendor.test, retry later"),
        "{}",
        stdout(&output)
    );

    // With --key the signer's key needs no DNS at all.
    let key = vectors_dir().join("keys/billing.pub.pem");
    let output = btps(&[
        "verify",
        &file.display().to_string(),
        "--key",
        &key.display().to_string(),
        "--dns-server",
        &dns.local_addr().to_string(),
    ]);
    assert!(output.status.success(), "{}", stdout(&output));
}

#[test]
fn keygen_writes_a_usable_key_pair() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let output = btps(&[
        "keygen",
        "--out",
        &out.display().to_string(),
        "--name",
        "billing",
        "--identity",
        "billing$vendor.example",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = stdout(&output);
    let private = out.join("billing.key.pem");
    let public = out.join("billing.pub.pem");
    let key =
        btps::crypto::PrivateKey::from_pem(&std::fs::read_to_string(&private).unwrap()).unwrap();
    assert!(text.contains(&format!("fingerprint: {}", key.public_key().fingerprint())));
    assert!(text.contains(&format!(
        "btps1._btps.identity.billing.vendor.example. IN TXT \"v=1.0.0; k=rsa; p={}\"",
        key.public_key().to_base64()
    )));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // The fingerprint command agrees, and keygen never overwrites a key.
    let output = btps(&["fingerprint", &public.display().to_string()]);
    assert_eq!(stdout(&output).trim(), key.public_key().fingerprint());
    let again = btps(&[
        "keygen",
        "--out",
        &out.display().to_string(),
        "--name",
        "billing",
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
}

#[test]
fn fingerprint_of_every_vector_key() {
    let fingerprints = vector_json("fingerprints.json");
    for (file, expected) in fingerprints["fingerprints"].as_object().unwrap() {
        let output = btps(&[
            "fingerprint",
            &vectors_dir().join("keys").join(file).display().to_string(),
        ]);
        assert_eq!(stdout(&output).trim(), expected.as_str().unwrap(), "{file}");
    }
    let output = btps(&["fingerprint", "/nonexistent.pem"]);
    assert_eq!(output.status.code(), Some(2));
}
