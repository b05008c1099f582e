//! The database restarted under load: a node on a cluster of this test's own
//! (started with `.ci/postgres`, so that the other tests' cluster stays up) keeps
//! answering while PostgreSQL is down — with temporary errors, never an
//! acknowledgement without a commit — and accepts documents again once it is
//! back, without being restarted. `/readyz` follows the database.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use btps::protocol::TransporterType;
use btps::store::{Mailbox, Perspective, PgStorage, Storage, TrustStatus};

use super::nodes::{Node, NodeSpec, RECEIVER, SENDER, host};
use super::{options, uri};
use crate::util::server::{artifact_with_id, invoice, trust_record, vector_dns};

/// A cluster of this test's own, removed when dropped.
struct OwnCluster {
    dir: PathBuf,
    uri: String,
}

fn helper(args: &[&str]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/postgres");
    Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .unwrap()
}

impl OwnCluster {
    fn start(parent: &Path) -> OwnCluster {
        let dir = parent.join("pg");
        let output = helper(&["start", dir.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "starting a cluster: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let uri = text
            .trim()
            .strip_prefix("export BTPS_TEST_POSTGRES_URI=")
            .unwrap()
            .to_owned();
        OwnCluster { dir, uri }
    }

    fn down(&self) {
        let output = helper(&["down", self.dir.to_str().unwrap()]);
        assert!(output.status.success(), "{output:?}");
    }

    fn up(&self) {
        let output = helper(&["up", self.dir.to_str().unwrap()]);
        assert!(output.status.success(), "{output:?}");
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = helper(&["stop", self.dir.to_str().unwrap()]);
    }
}

/// The status code of `GET /readyz`.
fn readyz(address: SocketAddr) -> u16 {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_loses_no_acknowledged_document() {
    // Runs where the tests' cluster runs (and fails under CI without it).
    if uri().is_none() {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let cluster = OwnCluster::start(temp.path());
    let storage = Arc::new(PgStorage::connect(&options(&cluster.uri, "test")).unwrap());
    host(storage.as_ref(), RECEIVER, "finance").await;
    storage
        .trust()
        .create(
            Perspective::Inbound,
            trust_record(SENDER, RECEIVER, TrustStatus::Accepted, Some("billing")),
            None,
        )
        .await
        .unwrap();
    let dns = vector_dns();
    let mut node = Node::start(&NodeSpec {
        name: "node-1",
        data: &temp.path().join("node-1"),
        uri: &cluster.uri,
        dns: dns.local_addr(),
        listen: "127.0.0.1:0",
        http: true,
        env: &[
            ("BTPS_DELIVERY_ENABLED", "false".to_owned()),
            ("BTPS_POSTGRES_CONNECT_TIMEOUT_MS", "1000".to_owned()),
        ],
    });
    let http = node.http.unwrap();
    assert_eq!(readyz(http), 200);

    // Four senders, each sending documents one after the other.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let acknowledged_after_restart = Arc::new(AtomicU64::new(0));
    let restarted = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..4 {
        let (acknowledged, refused, after, restarted, stop) = (
            Arc::clone(&acknowledged),
            Arc::clone(&refused),
            Arc::clone(&acknowledged_after_restart),
            Arc::clone(&restarted),
            Arc::clone(&stop),
        );
        let mut client = node.client().await;
        senders.push(tokio::spawn(async move {
            let mut index = 0;
            while !stop.load(Ordering::SeqCst) {
                index += 1;
                let id = format!("load-{sender}-{index}");
                let line = artifact_with_id(
                    TransporterType::Document,
                    SENDER,
                    "billing",
                    RECEIVER,
                    &invoice(&id),
                    Some(&id),
                );
                let answer = client.request(&line).await.unwrap();
                if answer.ok {
                    acknowledged.lock().unwrap().insert(id);
                    if restarted.load(Ordering::SeqCst) {
                        after.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    refused.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = acknowledged.lock().unwrap().len();
    assert!(before > 0, "documents are accepted before the restart");
    tokio::task::block_in_place(|| cluster.down());
    let outage = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let not_ready = tokio::task::block_in_place(|| readyz(http));
    assert_eq!(not_ready, 503, "/readyz reports the database gone");
    while outage.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::block_in_place(|| cluster.up());
    restarted.store(true, Ordering::SeqCst);
    let back = Instant::now();
    loop {
        if acknowledged_after_restart.load(Ordering::SeqCst) >= 50 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "the node did not recover within 30 s of the database's return"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "database down for {:?}; the node accepted documents again {:?} after it returned",
        back.duration_since(outage),
        back.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.await.unwrap();
    }
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "the outage was seen as refusals"
    );
    assert_eq!(tokio::task::block_in_place(|| readyz(http)), 200);

    // Every acknowledged document is stored (and nothing more than was sent).
    let acknowledged = acknowledged.lock().unwrap().clone();
    let mut stored = BTreeSet::new();
    let mut after = 0;
    loop {
        let page = storage.mailboxes().inbox_after(after, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.entry_id;
        stored.extend(page.into_iter().map(|entry| entry.artifact_id));
    }
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert!(
        storage
            .mailboxes()
            .count(RECEIVER, Mailbox::Inbox)
            .await
            .unwrap()
            >= u64::try_from(acknowledged.len()).unwrap()
    );
    node.stop();
}
