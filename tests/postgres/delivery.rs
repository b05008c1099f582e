//! Outbound delivery from two nodes on one database: 1,000 queued documents
//! (five senders, so five queues) reach the receiving appliance once each while
//! both nodes claim from the same outbox — also when one node is killed half-way
//! and the other takes its claims over once their lease runs out.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use btps::admin::operations::{AdminRequest, AdminResponse, SendRequest};
use btps::admin::socket::AdminClient;
use btps::identity::Identity;
use btps::store::{Mailbox, PgStorage, PrivacyType, RedbOptions, RedbStore, Storage, TrustStatus};

use super::nodes::{Node, NodeSpec, host};
use super::{fresh_schema, options, uri};
use crate::delivery::{Appliance, CLIENT, World, free_port, invoice_document};
use crate::store::new_trust;
use crate::util::server::vector_key;

const SENDERS: [&str; 5] = [
    "billing$vendor.test",
    "sales$vendor.test",
    "ops$vendor.test",
    "support$vendor.test",
    "accounts$vendor.test",
];
const DOCUMENTS: usize = 1000;

fn write_private(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Watches which nodes hold outbox claims, until stopped.
struct ClaimWatcher {
    seen: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClaimWatcher {
    fn start(uri: &str) -> ClaimWatcher {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (uri, into, until) = (uri.to_owned(), Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&uri, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let driver = tokio::spawn(connection);
                while !until.load(Ordering::SeqCst) {
                    let rows = client
                        .query(
                            "SELECT DISTINCT claimed_by FROM btps_entries WHERE claimed_by IS NOT NULL",
                            &[],
                        )
                        .await
                        .unwrap();
                    for row in rows {
                        into.lock().unwrap().insert(row.get::<_, String>(0));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                drop(client);
                let _ = driver.await;
            });
        });
        ClaimWatcher {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

async fn sent(storage: &PgStorage) -> u64 {
    let mut total = 0;
    for sender in SENDERS {
        total += storage
            .mailboxes()
            .count(sender, Mailbox::Sentbox)
            .await
            .unwrap();
    }
    total
}

async fn run(kill_one: bool) {
    let Some(base) = uri() else { return };
    let (_, database) = fresh_schema(&base);
    let world = World::new();

    // The receiving appliance (redb) trusts the five senders.
    let mut client = Appliance::prepare(&world, "client.test", &[(CLIENT, "finance")], "server");
    {
        let store = RedbStore::open_dir(&client.data, &RedbOptions::default()).unwrap();
        for sender in SENDERS {
            let mut record = new_trust(sender, CLIENT, TrustStatus::Accepted, None);
            record.privacy_type = PrivacyType::Mixed;
            store
                .create_trust(btps::store::Perspective::Inbound, record, None)
                .unwrap();
        }
    }
    client.start();

    // The sending side: vendor.test on PostgreSQL, one server key for both nodes
    // (published as the domain's delegator).
    let storage = Arc::new(PgStorage::connect(&options(&database, "test")).unwrap());
    for sender in SENDERS {
        host(storage.as_ref(), sender, "billing").await;
    }
    let server_key = vector_key("admin-vendor");
    world.dns.publish_key(
        &Identity::parse("admin$vendor.test").unwrap(),
        "btps1",
        &server_key.public_key().to_base64(),
    );
    let data = |name: &str| {
        let dir = world.dir.join(name);
        write_private(&dir.join("keys/server.key.pem"), &server_key.to_pkcs8_pem());
        write_private(
            &dir.join("keys/server.pub.pem"),
            &server_key.public_key().to_pem(),
        );
        let (certificate, key) = world.ca.leaf();
        write_private(&dir.join("tls/cert.pem"), &certificate);
        write_private(&dir.join("tls/key.pem"), &key);
        dir
    };
    let (one_dir, two_dir) = (data("node-1"), data("node-2"));
    // The domain's host record names node 1 (a balancer's address in production).
    let one_listen = format!("127.0.0.1:{}", free_port());
    world.dns.publish_host("vendor.test", &one_listen, "btps1");
    let env = |delivery: bool| {
        vec![
            ("BTPS_DELIVERY_ENABLED", delivery.to_string()),
            ("BTPS_HOSTED_DOMAINS", "vendor.test".to_owned()),
            (
                "BTPS_DELIVERY_CA_FILE",
                world.ca.pem_path.display().to_string(),
            ),
            ("BTPS_DNS_CACHE_NEGATIVE_TTL_MS", "1".to_owned()),
            ("BTPS_DELIVERY_CONNECT_TIMEOUT_MS", "1000".to_owned()),
            ("BTPS_DELIVERY_RESPONSE_TIMEOUT_MS", "2000".to_owned()),
            ("BTPS_DELIVERY_RETRY_SCHEDULE_MS", vec!["300"; 30].join(",")),
            // Fewer attempts at once than there are queues, so that a node that
            // starts first cannot hold every queue's head and the other must claim.
            ("BTPS_DELIVERY_MAX_IN_FLIGHT", "2".to_owned()),
        ]
    };
    let start = |name: &str, dir: &Path, delivery: bool| {
        let listen = if name == "node-1" {
            one_listen.as_str()
        } else {
            "127.0.0.1:0"
        };
        Node::start(&NodeSpec {
            name,
            data: dir,
            uri: &database,
            dns: world.dns.local_addr(),
            listen,
            http: false,
            env: &env(delivery),
        })
    };

    // 1,000 documents queued through node 1's admin socket, nothing delivered yet.
    let mut queuer = start("node-1", &one_dir, false);
    let mut admin = AdminClient::connect(&one_dir.join("admin.sock")).unwrap();
    for index in 0..DOCUMENTS {
        let response = admin
            .call(&AdminRequest::Send(SendRequest {
                from: SENDERS[index % SENDERS.len()].to_owned(),
                to: CLIENT.to_owned(),
                kind: "BTPS_DOC".to_owned(),
                document: Some(invoice_document(&format!("inv-{index:04}"))),
                encrypt: false,
                artifact: None,
            }))
            .unwrap();
        assert!(
            matches!(response, AdminResponse::OutboxEntry { .. }),
            "{response:?}"
        );
    }
    drop(admin);
    queuer.stop();
    assert_eq!(
        storage.outbox().stats().await.unwrap().entries,
        u64::try_from(DOCUMENTS).unwrap()
    );

    // Both nodes deliver.
    let watcher = ClaimWatcher::start(&database);
    let mut one = start("node-1", &one_dir, true);
    let mut two = start("node-2", &two_dir, true);
    let started = Instant::now();
    let mut killed = false;
    loop {
        let delivered = sent(&storage).await;
        if kill_one && !killed && delivered >= 300 {
            one.kill();
            killed = true;
            eprintln!("node 1 killed after {delivered} deliveries");
        }
        if storage.outbox().stats().await.unwrap().entries == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "not delivered within 180 s: {delivered} sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{DOCUMENTS} documents delivered by two nodes in {:?} (node 1 killed: {killed})",
        started.elapsed()
    );
    let claimers = watcher.finish();
    assert!(
        claimers.contains("node-1") && claimers.contains("node-2"),
        "both nodes claimed entries: {claimers:?}"
    );
    assert_eq!(sent(&storage).await, u64::try_from(DOCUMENTS).unwrap());
    if !killed {
        one.stop();
    }
    two.stop();
    client.stop();

    // The receiver holds each document exactly once.
    let store = RedbStore::open_dir(&client.data, &RedbOptions::default()).unwrap();
    let received = store
        .read(|snapshot| snapshot.mailbox_count(CLIENT, Mailbox::Inbox))
        .unwrap();
    assert_eq!(received, u64::try_from(DOCUMENTS).unwrap());
    let titles: BTreeSet<String> = store
        .read(|snapshot| snapshot.inbox_after(0, DOCUMENTS + 10))
        .unwrap()
        .into_iter()
        .filter_map(|entry| entry.title)
        .collect();
    let expected: BTreeSet<String> = (0..DOCUMENTS).map(|i| format!("inv-{i:04}")).collect();
    assert_eq!(titles, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_a_thousand_queued_documents_once_each() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_node_finishes_the_queue_when_one_is_killed_half_way() {
    run(true).await;
}
