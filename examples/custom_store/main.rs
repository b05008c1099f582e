//! A storage of your own: a multi-tenant router that gives every hosted domain its
//! own database file, behind the one [`Storage`] handle the server runs on.
//!
//! The reference's guide ("Multi-Tenant Storage Configuration") routes by a tenant
//! id it extracts from the record id (`extractTenantId(computedId)`, the part before
//! a `:`). That cannot work here or there: ids are SHA-256 hashes (`computeId`,
//! `computeTrustId`), 64 hex digits with no tenant in them. `TenantRouter`
//! (`router.rs`, and the record traits in `records.rs`) routes by what does name
//! the tenant — the domain of the hosted identity — and asks every tenant when all
//! it has is an id. Nothing in the server knows it is talking to a router: it is
//! written against the public `btps::store` traits only.
//!
//! Two tenants, `client-a.example` and `client-b.example`, each a `RedbStore` file
//! in a temporary directory. A vendor asks both for trust, the example accepts both
//! requests as an operator would (through the router, by record id), and the vendor
//! sends each an invoice. After the server stopped, the example opens each tenant's
//! file on its own and checks that its request and invoice are there, the invoice
//! byte for byte, and that nothing of the other tenant is.
//!
//! Run it with `cargo run --example custom_store`; the last line is JSON:
//! `{"ok": true, "checked": [...]}` (exit 0) or `{"ok": false, "error": "..."}`.

mod outbox;
mod records;
mod router;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use btps::client::{BtpsClient, ClientOptions};
use btps::crypto::PrivateKey;
use btps::identity::{Identity, compute_trust_id};
use btps::protocol::response::ServerResponse;
use btps::protocol::{TransporterType, json};
use btps::server::{Server, tls};
use btps::signing::{StaticKeys, TransporterDraft, build_transporter};
use btps::store::{
    IdentityRecord, Mailbox, PageRequest, Perspective, PublicKeyRecord, RedbOptions, RedbStore,
    Storage, Timestamp, TrustPatch, TrustStatus,
};

use router::{Tenant, TenantRouter, split_entry_id};

/// Every failure is carried to `main` and printed as the JSON line.
type Error = Box<dyn std::error::Error + Send + Sync>;

const VENDOR: &str = "billing$vendor.example";
const SELECTOR: &str = "btps1";
/// The trust request document: who asks, and why (all five fields are required).
const TRUST_REQUEST: &str = r#"{"id":"req-1","name":"Vendor Ltd","email":"billing@vendor.example","reason":"Monthly invoices","phone":"+61 2 5550 0100"}"#;
const TENANTS: [(&str, &str); 2] = [
    ("client-a.example", "finance$client-a.example"),
    ("client-b.example", "finance$client-b.example"),
];

#[tokio::main]
async fn main() -> ExitCode {
    let mut checked = Vec::new();
    // The tenants' files live in a directory removed when `dir` is dropped.
    let outcome = match tempfile::tempdir() {
        Ok(dir) => run(dir.path(), &mut checked).await,
        Err(error) => Err(error.into()),
    };
    match outcome {
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

async fn run(dir: &Path, checked: &mut Vec<String>) -> Result<(), Error> {
    // One redb file per tenant. Any `Storage` would do for either: a JSON-files
    // tenant, a PostgreSQL client of your own.
    let file = |domain: &str| dir.join(format!("{domain}.redb"));
    let mut tenants = Vec::new();
    for (domain, _) in TENANTS {
        let store = RedbStore::open(&file(domain), &RedbOptions::default())?;
        let (domain, store) = (domain.to_owned(), Arc::new(store));
        tenants.push(Tenant { domain, store });
    }
    let router = Arc::new(TenantRouter::new(tenants)?);
    println!("tenants: {}", TENANTS.map(|(domain, _)| domain).join(", "));

    println!("generating keys");
    let vendor_key = PrivateKey::generate(2048)?;
    let vendor = Identity::parse(VENDOR)?;
    for (_, identity) in TENANTS {
        // Created through the router: the record goes to its domain's tenant.
        let key = PublicKeyRecord {
            selector: SELECTOR.to_owned(),
            public_key: PrivateKey::generate(2048)?.public_key().to_pem(),
            key_type: "rsa".to_owned(),
            version: "1.0.0".to_owned(),
            created_at: Timestamp::now(),
            source: None,
        };
        let record = IdentityRecord::new(identity, key, Timestamp::now());
        router.identities().create(record).await?;
    }
    // The vendor's key as DNS would publish it (see `embed_minimal`).
    let mut keys = StaticKeys::new();
    keys.insert(&vendor, SELECTOR, vendor_key.public_key().clone());

    // The server sees one `Storage`; that it is a router is none of its business.
    let server = Server::builder()
        .storage(router.clone())
        .server_key(PrivateKey::generate(2048)?)
        .tls(tls::self_signed(&["localhost", "127.0.0.1"])?)
        .key_source(Arc::new(keys))
        .on_error(|event| {
            eprintln!(
                "server answered an error: {}: {}",
                event.code(),
                event.error
            );
        })
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    println!("listening on 127.0.0.1:{port}");
    // Stop and await the server whether the round succeeded or not.
    let sent = vendor_round(&router, port, &vendor, &vendor_key, checked).await;
    let _ = stop.send(());
    running.await??;
    let sent = sent?;
    println!("server stopped");

    // The server released its handle when `run` returned; drop ours too, so that
    // each tenant's file can be opened on its own, as that tenant's backup or
    // export would see it.
    drop(router);
    for (tenant, (domain, identity)) in TENANTS.iter().enumerate() {
        let store = RedbStore::open(&file(domain), &RedbOptions::default())?;
        let inbox = store.mailboxes();
        let own = inbox.list(identity, Mailbox::Inbox, PageRequest::first(10), true);
        let own = own.await?.items;
        let types: Vec<&str> = own
            .iter()
            .map(|entry| entry.artifact_type.as_str())
            .collect();
        if types != ["BTPS_DOC", "TRUST_REQ"] || own[0].raw != sent[tenant].as_bytes() {
            let problem = "not the request and the invoice sent";
            return Err(format!("{domain}: the inbox holds {types:?}, {problem}").into());
        }
        // `Storage::trust`: `RedbStore` has an inherent `trust` method too.
        let trust = Storage::trust(&store);
        let accepted = trust
            .get_pair(Perspective::Inbound, VENDOR, identity)
            .await?;
        if accepted.is_none_or(|record| record.status != TrustStatus::Accepted) {
            return Err(format!("{domain}: no accepted trust for {identity}").into());
        }
        let (_, other) = TENANTS[1 - tenant];
        if inbox.count(other, Mailbox::Inbox).await? != 0
            || trust
                .get_pair(Perspective::Inbound, VENDOR, other)
                .await?
                .is_some()
        {
            return Err(format!("{domain}'s file holds entries or trust of {other}").into());
        }
        println!("{domain}.redb: its own trust, request and invoice; nothing of {other}");
        checked.push(format!(
            "{domain}.redb opened alone: accepted trust, TRUST_REQ and BTPS_DOC (byte for byte) of {identity}; no entry or trust of {other}"
        ));
    }
    Ok(())
}

/// The vendor asks each tenant for trust, the operator accepts through the router,
/// the vendor sends each an invoice. Returns the invoice lines, by tenant.
async fn vendor_round(
    router: &TenantRouter,
    port: u16,
    vendor: &Identity,
    key: &PrivateKey,
    checked: &mut Vec<String>,
) -> Result<Vec<String>, Error> {
    let options = ClientOptions {
        insecure: true,
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let mut client = BtpsClient::connect("127.0.0.1", port, &options).await?;
    let mut invoices = Vec::new();
    for (tenant, (domain, identity)) in TENANTS.iter().enumerate() {
        let to = Identity::parse(identity)?;
        let request = signed(
            TransporterType::TrustRequest,
            vendor,
            &to,
            key,
            TRUST_REQUEST,
        )?;
        expect_ok("TRUST_REQ", identity, &client.request(&request).await?)?;

        // The operator has only the record id (a hash): the router asks each
        // tenant, and the accepting update goes to whichever holds the record.
        let id = compute_trust_id(VENDOR, identity);
        match router.trust().get(Perspective::Inbound, &id).await? {
            Some(record) if record.status == TrustStatus::Pending => {}
            other => return Err(format!("{identity}: no pending record but {other:?}").into()),
        }
        let accept = TrustPatch {
            status: Some(TrustStatus::Accepted),
            decided_by: Some(format!("operator@{domain}")),
            decided_at: Some(Timestamp::now()),
            retry_after_date: Some(None),
            ..TrustPatch::default()
        };
        router
            .trust()
            .update(Perspective::Inbound, &id, accept)
            .await?;
        println!("{identity}: trust requested (pending), accepted by the operator");

        let invoice = format!(
            r#"{{"title":"Invoice {tenant}","id":"INV-{tenant}","issuedAt":"2025-02-01T00:00:00.000Z","status":"unpaid","totalAmount":{{"value":100,"currency":"AUD"}},"lineItems":{{"columns":["Description","Amount"],"rows":[{{"Description":"Hosting","Amount":100}}]}}}}"#
        );
        let line = signed(TransporterType::Document, vendor, &to, key, &invoice)?;
        expect_ok("BTPS_DOC", identity, &client.request(&line).await?)?;

        // Read back through the router. Both tenants numbered the invoice 2 (after
        // the request); the router's id says which tenant's 2 it is, and finds it.
        let page = router
            .mailboxes()
            .list(identity, Mailbox::Inbox, PageRequest::first(10), true);
        let page = page.await?;
        let stored = page.items.first().ok_or("empty inbox")?;
        let found = router.mailboxes().entry(stored.entry_id).await?;
        if stored.raw != line.as_bytes()
            || split_entry_id(stored.entry_id) != (tenant, 2)
            || found.as_ref() != Some(stored)
        {
            return Err(format!("{identity}: the router does not show the invoice as sent").into());
        }
        println!(
            "{identity}: invoice stored, router entry id {:#x}",
            stored.entry_id
        );
        checked.push(format!(
            "{identity}: TRUST_REQ pending, accepted through the router by id, BTPS_DOC stored as router entry {:#x} (tenant {tenant}, entry 2)",
            stored.entry_id
        ));
        invoices.push(line);
    }
    client.close().await?;

    // The vendor is no tenant's: a listing by it goes over every tenant, here one
    // record a page, the router's cursor naming the tenant to continue in.
    let (mut page, mut receivers) = (PageRequest::first(1), Vec::new());
    loop {
        let listing = router
            .trust()
            .list_by_sender(Perspective::Inbound, VENDOR, page);
        let listing = listing.await?;
        receivers.extend(listing.items.into_iter().map(|record| record.receiver_id));
        let Some(next) = listing.next else { break };
        page = PageRequest::after(next, 1);
    }
    if receivers != TENANTS.map(|(_, identity)| identity) {
        return Err(format!("the vendor's trust records, listed: {receivers:?}").into());
    }
    checked.push("the vendor's trust records listed across both tenants, a page each".into());
    Ok(invoices)
}

/// A signed, unencrypted transporter artifact: the one line sent on the wire.
fn signed(
    kind: TransporterType,
    from: &Identity,
    to: &Identity,
    key: &PrivateKey,
    document: &str,
) -> Result<String, Error> {
    let document = json::parse(document)?;
    let (from, to, selector) = (from.clone(), to.clone(), SELECTOR.to_owned());
    let draft = TransporterDraft {
        kind,
        from,
        to,
        selector,
        document,
        id: None,
        issued_at: None,
    };
    Ok(build_transporter(draft, key, None)?.to_canonical())
}

/// Fails unless the server answered `ok`.
fn expect_ok(what: &str, to: &str, response: &ServerResponse) -> Result<(), Error> {
    if response.ok {
        return Ok(());
    }
    let message = response.message.as_deref().unwrap_or("no message");
    Err(format!("{what} to {to} refused: {message} ({:?})", response.reason).into())
}
