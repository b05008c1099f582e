//! Several `btps serve` nodes on one PostgreSQL database, as an organisation runs
//! them behind a TCP balancer: documents sent to either node land in one inbox,
//! the same artifact sent to both is stored once, a trust decision made on one
//! node applies on the other within a second.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use btps::client::{BtpsClient, ClientOptions};
use btps::protocol::TransporterType;
use btps::store::{
    IdentityRecord, Mailbox, PageRequest, Perspective, PgStorage, PublicKeyRecord, Storage,
    Timestamp, TrustStatus,
};

use super::{fresh_schema, options, uri};
use crate::util::server::{
    TRUST_REQUEST, artifact, artifact_with_id, invoice, trust_record, vector_dns, vector_key,
};

pub(crate) const SENDER: &str = "billing$vendor.test";
pub(crate) const RECEIVER: &str = "finance$client.test";

/// One `btps serve` process on the database.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) data: PathBuf,
    pub(crate) address: SocketAddr,
    /// The HTTP endpoint, when started with one.
    pub(crate) http: Option<SocketAddr>,
    child: Option<Child>,
}

/// How to start a node.
pub(crate) struct NodeSpec<'a> {
    pub(crate) name: &'a str,
    pub(crate) data: &'a Path,
    pub(crate) uri: &'a str,
    pub(crate) dns: SocketAddr,
    pub(crate) listen: &'a str,
    pub(crate) http: bool,
    pub(crate) env: &'a [(&'a str, String)],
}

impl Node {
    pub(crate) fn start(spec: &NodeSpec<'_>) -> Node {
        let mut command = Command::new(env!("CARGO_BIN_EXE_btps"));
        command
            .args(["serve", "--data-dir"])
            .arg(spec.data)
            .args(["--listen", spec.listen])
            .args(["--dns-server", &spec.dns.to_string()])
            .current_dir(spec.data.parent().unwrap())
            .env("RUST_LOG", "warn")
            .env_remove("BTPS_DATA_DIR")
            .env_remove("BTPS_CONFIG")
            .env_remove("BTPS_ADMIN_SOCKET")
            .env("STORAGE_TYPE", "postgres")
            .env("POSTGRES_URI", spec.uri)
            .env("BTPS_NODE_NAME", spec.name)
            .env("BTPS_POSTGRES_POOL_SIZE", "8")
            .env(
                "BTPS_HTTP_LISTEN",
                if spec.http { "127.0.0.1:0" } else { "off" },
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in spec.env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut http = None;
        let address = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("btps serve ({}) exited before listening", spec.name))
                .unwrap();
            if let Some(rest) = line.strip_prefix("btps http endpoint on http://") {
                http = Some(rest.trim().parse().unwrap());
            }
            if let Some(rest) = line.strip_prefix("btps listening on ") {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Node {
            name: spec.name.to_owned(),
            data: spec.data.to_owned(),
            address,
            http,
            child: Some(child),
        }
    }

    /// SIGTERM and a clean exit.
    pub(crate) fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let status = crate::util::sigterm_and_wait(&mut child, Duration::from_secs(20))
            .expect("btps serve stops within 20 s of SIGTERM");
        assert!(
            status.success(),
            "btps serve ({}) exited with {status}",
            self.name
        );
    }

    /// SIGKILL: no clean stop.
    pub(crate) fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Runs an operator command against this node (through its admin socket).
    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = Command::new(env!("CARGO_BIN_EXE_btps"))
            .args(args)
            .args(["--json", "--data-dir"])
            .arg(&self.data)
            .env_remove("BTPS_DATA_DIR")
            .env_remove("BTPS_CONFIG")
            .env_remove("BTPS_ADMIN_SOCKET")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "btps {args:?} on {}: {}\n{}",
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    pub(crate) async fn client(&self) -> BtpsClient {
        let options = ClientOptions {
            insecure: true,
            timeout: Duration::from_secs(20),
            ..ClientOptions::default()
        };
        BtpsClient::connect(
            &self.address.ip().to_string(),
            self.address.port(),
            &options,
        )
        .await
        .unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Hosts `identity` with the public key of the vectors' key `key`.
pub(crate) async fn host(storage: &dyn Storage, identity: &str, key: &str) {
    let record = PublicKeyRecord {
        selector: "btps1".to_owned(),
        public_key: vector_key(key).public_key().to_pem() + "\n",
        key_type: "rsa".to_owned(),
        version: "1.0.0".to_owned(),
        created_at: Timestamp::now(),
        source: None,
    };
    storage
        .identities()
        .create(IdentityRecord::new(identity, record, Timestamp::now()))
        .await
        .unwrap();
}

/// The receiver's inbox as a node's operator sees it: the artifact ids.
fn inbox_ids(node: &Node) -> Vec<String> {
    let listed = node.json(&["inbox", "list", RECEIVER, "--limit", "100"]);
    let mut ids: Vec<String> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["artifactId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Two nodes on a fresh schema hosting the receiver, with the vectors' DNS.
struct Cluster {
    storage: Arc<PgStorage>,
    one: Node,
    two: Node,
    _dns: btps::identity::responder::DnsResponder,
    _temp: tempfile::TempDir,
}

async fn cluster() -> Option<Cluster> {
    let base = uri()?;
    let (_, database) = fresh_schema(&base);
    let storage = Arc::new(PgStorage::connect(&options(&database, "test")).unwrap());
    host(storage.as_ref(), RECEIVER, "finance").await;
    let dns = vector_dns();
    let temp = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        let data = temp.path().join(name);
        Node::start(&NodeSpec {
            name,
            data: &data,
            uri: &database,
            dns: dns.local_addr(),
            listen: "127.0.0.1:0",
            http: false,
            env: &[("BTPS_DELIVERY_ENABLED", "false".to_owned())],
        })
    };
    let one = start("node-1");
    let two = start("node-2");
    Some(Cluster {
        storage,
        one,
        two,
        _dns: dns,
        _temp: temp,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_sent_to_either_node_share_one_inbox_and_a_duplicate_is_stored_once() {
    let Some(mut cluster) = cluster().await else {
        return;
    };
    cluster
        .storage
        .trust()
        .create(
            Perspective::Inbound,
            trust_record(SENDER, RECEIVER, TrustStatus::Accepted, Some("billing")),
            None,
        )
        .await
        .unwrap();
    let document = |id: &str| {
        artifact_with_id(
            TransporterType::Document,
            SENDER,
            "billing",
            RECEIVER,
            &invoice(id),
            Some(id),
        )
    };
    let mut to_one = cluster.one.client().await;
    let mut to_two = cluster.two.client().await;
    let answer = to_one.request(&document("doc-a")).await.unwrap();
    assert!(answer.ok, "{answer:?}");
    let answer = to_two.request(&document("doc-b")).await.unwrap();
    assert!(answer.ok, "{answer:?}");

    // The same artifact to both nodes at once, ten times: both acknowledge it,
    // it is stored once.
    for round in 0..10 {
        let line = document(&format!("doc-same-{round}"));
        let (first, second) = tokio::join!(to_one.request(&line), to_two.request(&line));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert!(first.ok && second.ok, "{first:?} {second:?}");
    }

    let mut expected = vec!["doc-a".to_owned(), "doc-b".to_owned()];
    expected.extend((0..10).map(|round| format!("doc-same-{round}")));
    expected.sort();
    assert_eq!(inbox_ids(&cluster.one), expected, "seen from node 1");
    assert_eq!(inbox_ids(&cluster.two), expected, "seen from node 2");
    let count = cluster
        .storage
        .mailboxes()
        .count(RECEIVER, Mailbox::Inbox)
        .await
        .unwrap();
    assert_eq!(count, 12);
    drop((to_one, to_two));
    cluster.one.stop();
    cluster.two.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_decision_on_one_node_applies_on_the_other_within_a_second() {
    let Some(mut cluster) = cluster().await else {
        return;
    };
    let mut to_two = cluster.two.client().await;
    let request = artifact(
        TransporterType::TrustRequest,
        SENDER,
        "billing",
        RECEIVER,
        TRUST_REQUEST,
    );
    let answer = to_two.request(&request).await.unwrap();
    assert!(answer.ok, "{answer:?}");
    let refused = to_two
        .request(&artifact(
            TransporterType::Document,
            SENDER,
            "billing",
            RECEIVER,
            &invoice("early"),
        ))
        .await
        .unwrap();
    assert!(
        !refused.ok,
        "a pending sender's document is refused: {refused:?}"
    );

    // The operator accepts on node 1 (its admin socket).
    let accepted = cluster.one.json(&["trust", "accept", SENDER, RECEIVER]);
    assert_eq!(accepted["status"], "accepted", "{accepted}");
    let decided = Instant::now();
    let mut attempts = 0;
    let visible_after = loop {
        attempts += 1;
        let answer = to_two
            .request(&artifact(
                TransporterType::Document,
                SENDER,
                "billing",
                RECEIVER,
                &invoice(&format!("after-{attempts}")),
            ))
            .await
            .unwrap();
        if answer.ok {
            break decided.elapsed();
        }
        assert!(
            decided.elapsed() < Duration::from_secs(1),
            "node 2 still refuses after {:?}: {answer:?}",
            decided.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "trust decision on node 1 applied on node 2 after {visible_after:?} ({attempts} attempt(s))"
    );
    assert!(visible_after < Duration::from_secs(1));
    let listed = cluster
        .storage
        .mailboxes()
        .list(RECEIVER, Mailbox::Inbox, PageRequest::first(10), false)
        .await
        .unwrap();
    assert_eq!(
        listed.items.len(),
        2,
        "the request and the accepted document"
    );
    drop(to_two);
    cluster.one.stop();
    cluster.two.stop();
}
