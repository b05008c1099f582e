//! The smallest embedded BTPS server, and one full trust round through it.
//!
//! A BTPS server is a library value: [`Server::builder`] takes a storage, the
//! server's own key pair, a TLS configuration and a source of senders' public keys,
//! and [`Server::run`] serves on a listener until a shutdown future completes. This
//! example assembles one entirely in memory — [`MemoryStorage`], a generated key, a
//! self-signed certificate, keys from a [`StaticKeys`] table instead of DNS — and
//! then plays both sides of the protocol over real TLS on loopback:
//!
//! 1. the vendor `billing$vendor.example` sends a `TRUST_REQ` to the hosted
//!    identity `finance$client.example`; the server stores a *pending* trust record;
//! 2. a `BTPS_DOC` sent now is refused: nobody has decided yet;
//! 3. the example accepts the request as an operator would (`btps trust accept`),
//!    by updating the record through `storage.trust()`;
//! 4. the vendor sends an invoice; it lands in the identity's inbox as the exact
//!    bytes of the line sent (the signature stays verifiable end to end);
//! 5. the server is stopped through its shutdown future, and `run` returns.
//!
//! Run it with `cargo run --example embed_minimal`. It prints progress lines, then
//! one JSON line: `{"ok": true, "checked": [...]}` (exit 0), or `{"ok": false,
//! "error": "..."}` (exit 1).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use btps::client::{BtpsClient, ClientOptions};
use btps::crypto::PrivateKey;
use btps::identity::{Identity, compute_trust_id};
use btps::protocol::TransporterType;
use btps::protocol::json;
use btps::protocol::response::ServerResponse;
use btps::server::{Server, tls};
use btps::signing::{StaticKeys, TransporterDraft, build_transporter};
use btps::store::{
    IdentityRecord, Mailbox, MemoryStorage, PageRequest, Perspective, PublicKeyRecord, Storage,
    Timestamp, TrustPatch, TrustStatus,
};

/// Every failure is carried to `main` and printed as the JSON line.
type Error = Box<dyn std::error::Error + Send + Sync>;

const VENDOR: &str = "billing$vendor.example";
const FINANCE: &str = "finance$client.example";
/// The selector both keys are "published" under (in DNS it would be
/// `btps1._btps.identity.<account>.<domain>`).
const SELECTOR: &str = "btps1";

#[tokio::main]
async fn main() -> ExitCode {
    let mut checked = Vec::new();
    // Printed by hand so that the line reads `"ok": true` as CI looks for it.
    match run(&mut checked).await {
        Ok(()) => {
            let checked = serde_json::Value::from(checked);
            println!(r#"{{"ok": true, "checked": {checked}}}"#);
            ExitCode::SUCCESS
        }
        Err(error) => {
            let error = serde_json::Value::from(error.to_string());
            println!(r#"{{"ok": false, "error": {error}}}"#);
            ExitCode::FAILURE
        }
    }
}

async fn run(checked: &mut Vec<String>) -> Result<(), Error> {
    // RSA key generation is the slow part of this example (well under a second
    // each with the optimised `rsa` crate of the dev profile).
    println!("generating keys");
    let server_key = PrivateKey::generate(2048)?;
    let vendor_key = PrivateKey::generate(2048)?;
    let finance_key = PrivateKey::generate(2048)?;
    let vendor = Identity::parse(VENDOR)?;
    let finance = Identity::parse(FINANCE)?;

    // The storage is shared: the server gets one handle, the example keeps another
    // to act as the operator and to look at the inbox. `MemoryStorage` implements
    // the same contract as the redb file the appliance uses.
    let storage = MemoryStorage::new();

    // An identity with a record is hosted here. Its public key is what it would
    // publish; the server never holds its users' private keys.
    let key_record = PublicKeyRecord {
        selector: SELECTOR.to_owned(),
        public_key: finance_key.public_key().to_pem(),
        key_type: "rsa".to_owned(),
        version: "1.0.0".to_owned(),
        created_at: Timestamp::now(),
        source: None,
    };
    storage
        .identities()
        .create(IdentityRecord::new(FINANCE, key_record, Timestamp::now()))
        .await?;
    println!("hosting {FINANCE}");

    // Senders' keys normally come from DNS TXT records; a fixed table keeps the
    // example self-contained (and is what an application with its own key registry
    // would implement as a `KeySource`).
    let mut keys = StaticKeys::new();
    keys.insert(&vendor, SELECTOR, vendor_key.public_key().clone());

    let server = Server::builder()
        .storage(Arc::new(storage.clone()))
        .server_key(server_key)
        .tls(tls::self_signed(&["localhost", "127.0.0.1"])?)
        .key_source(Arc::new(keys))
        // The error callback sees every error answered; the refusal in step 2 is one.
        .on_error(|event| {
            eprintln!(
                "server answered an error: {}: {}",
                event.code(),
                event.error
            );
        })
        .build()?;

    // Port 0: the system picks a free port, so the example never collides with a
    // running appliance.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(listener, async move {
        // A dropped sender also stops the server: an early `?` below never leaves
        // it running.
        let _ = stopped.await;
    }));
    println!("listening on 127.0.0.1:{port}");

    // Everything the vendor does goes through the separate async function, so that
    // the server is stopped and awaited whether the round succeeded or not.
    let round = vendor_round(&storage, port, &vendor, &vendor_key, &finance, checked).await;

    let _ = stop.send(());
    running.await??;
    println!("server stopped");
    checked.push("server stopped through its shutdown future".to_owned());
    round
}

/// The vendor's side and the operator's decision, checked step by step.
async fn vendor_round(
    storage: &MemoryStorage,
    port: u16,
    vendor: &Identity,
    vendor_key: &PrivateKey,
    finance: &Identity,
    checked: &mut Vec<String>,
) -> Result<(), Error> {
    // The certificate is self-signed: accept it (handshake signatures are still
    // checked). Production clients verify against trusted CAs instead.
    let options = ClientOptions {
        insecure: true,
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let mut client = BtpsClient::connect("127.0.0.1", port, &options).await?;

    // 1. The trust request: who the vendor is and why it wants to send.
    let request = signed(
        TransporterType::TrustRequest,
        vendor,
        finance,
        vendor_key,
        r#"{"id":"req-1","name":"Vendor Ltd","email":"billing@vendor.example","reason":"Monthly invoices","phone":"+61 2 5550 0100"}"#,
    )?;
    expect_ok("TRUST_REQ", &client.request(&request).await?)?;
    let trust_id = compute_trust_id(vendor.as_str(), finance.as_str());
    let record = storage
        .trust()
        .get(Perspective::Inbound, &trust_id)
        .await?
        .ok_or("no trust record after the trust request")?;
    if record.status != TrustStatus::Pending {
        return Err(format!("the new record is {}, not pending", record.status).into());
    }
    println!("trust request stored: record {trust_id} is pending");
    checked.push("TRUST_REQ accepted over TLS; trust record pending".to_owned());

    // 2. An invoice before any decision is refused (and stored nowhere).
    let invoice = signed(
        TransporterType::Document,
        vendor,
        finance,
        vendor_key,
        r#"{"title":"Invoice INV-1","id":"INV-1","issuedAt":"2025-02-01T00:00:00.000Z","status":"unpaid","totalAmount":{"value":1500.5,"currency":"AUD"},"lineItems":{"columns":["Description","Amount"],"rows":[{"Description":"Consulting","Amount":1500.5}]}}"#,
    )?;
    let early = client.request(&invoice).await?;
    if early.ok {
        return Err("a document was accepted before the trust was".into());
    }
    println!("document before acceptance refused: {:?}", early.reason);
    checked.push("BTPS_DOC refused while the trust is pending".to_owned());

    // 3. The operator's decision. `retry_after_date: Some(None)` clears the
    // cooling-off date the request set: it only matters for pending requests.
    let patch = TrustPatch {
        status: Some(TrustStatus::Accepted),
        decided_by: Some("operator@client.example".to_owned()),
        decided_at: Some(Timestamp::now()),
        retry_after_date: Some(None),
        ..TrustPatch::default()
    };
    storage
        .trust()
        .update(Perspective::Inbound, &trust_id, patch)
        .await?;
    println!("operator accepted the trust");
    checked.push("trust record updated to accepted through storage.trust()".to_owned());

    // 4. The same invoice again: now it is stored. The response is sent only once
    // the entry is committed, so the inbox can be read right away.
    expect_ok("BTPS_DOC", &client.request(&invoice).await?)?;
    client.close().await?;
    let inbox = storage
        .mailboxes()
        .list(
            finance.as_str(),
            Mailbox::Inbox,
            PageRequest::first(10),
            true,
        )
        .await?;
    let stored = inbox
        .items
        .iter()
        .find(|entry| entry.artifact_type == "BTPS_DOC")
        .ok_or("the invoice is not in the inbox")?;
    if stored.raw != invoice.as_bytes() {
        return Err("the stored invoice differs from the line sent".into());
    }
    println!(
        "invoice stored as inbox entry {} ({} bytes, identical to the line sent)",
        stored.entry_id,
        stored.raw.len()
    );
    checked.push("BTPS_DOC in the identity's inbox, byte for byte the line sent".to_owned());
    // The trust request itself is in the inbox too (the owner reads it to decide);
    // the refused early attempt is not.
    let types: Vec<&str> = inbox
        .items
        .iter()
        .map(|entry| entry.artifact_type.as_str())
        .collect();
    if types != ["BTPS_DOC", "TRUST_REQ"] {
        return Err(format!("the inbox holds {types:?}, not the invoice and the request").into());
    }
    checked.push("inbox holds exactly the TRUST_REQ and the BTPS_DOC".to_owned());
    Ok(())
}

/// A signed, unencrypted transporter artifact as the one line sent on the wire.
fn signed(
    kind: TransporterType,
    from: &Identity,
    to: &Identity,
    key: &PrivateKey,
    document: &str,
) -> Result<String, Error> {
    let draft = TransporterDraft {
        kind,
        from: from.clone(),
        to: to.clone(),
        selector: SELECTOR.to_owned(),
        document: json::parse(document)?,
        // A fresh UUID and the current time.
        id: None,
        issued_at: None,
    };
    Ok(build_transporter(draft, key, None)?.to_canonical())
}

/// Fails unless the server answered `ok`.
fn expect_ok(what: &str, response: &ServerResponse) -> Result<(), Error> {
    if response.ok {
        println!("{what}: server answered ok");
        Ok(())
    } else {
        Err(format!(
            "{what} refused: {} ({})",
            response.message.as_deref().unwrap_or("no message"),
            response.reason.as_deref().unwrap_or("no reason")
        )
        .into())
    }
}
