//! `btps agent` as real processes against a running `btps serve`: the operator's
//! token and agent commands through the admin socket, and an agent enrolled with
//! the command line doing its work — every command with `--json`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use btps::client::{BtpsClient, ClientOptions};
use btps::identity::Identity;
use btps::identity::responder::DnsResponder;
use btps::protocol::TransporterType;
use btps::server::bootstrap;
use btps::store::{Perspective, RedbOptions, RedbStore, TrustStatus};
use serde_json::Value;

use super::{BILLING, FINANCE};
use crate::util::server::{
    TRUST_REQUEST, artifact_with_id, config_for, host, invoice, trust_record, vector_dns,
};

const PARTNER: &str = "pay$other.test";

struct Serve {
    child: Child,
    address: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        // A failed test must not leave the server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path, dns: &DnsResponder) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--dns-server"])
        .arg(dns.local_addr().to_string())
        .current_dir(data.parent().unwrap())
        .env("RUST_LOG", "warn")
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_CONFIG")
        .env_remove("BTPS_ADMIN_SOCKET")
        .env("BTPS_HTTP_LISTEN", "off")
        .env("BTPS_DELIVERY_ENABLED", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("btps serve printed its address")
            .unwrap();
        if let Some(rest) = line.strip_prefix("btps listening on ") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Serve { child, address }
}

fn btps(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(args)
        .current_dir(cwd)
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_CONFIG")
        .env_remove("BTPS_ADMIN_SOCKET")
        .env_remove("BTPS_AGENT_STATE")
        .output()
        .unwrap()
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn send(address: SocketAddr, line: &str) {
    let options = ClientOptions {
        insecure: true,
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let mut client = BtpsClient::connect("127.0.0.1", address.port(), &options)
        .await
        .unwrap();
    let response = client.request(line).await.unwrap();
    assert!(response.ok, "{:?}", response.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_and_agent_commands_against_a_running_server() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let work = temp.path().join("agent");
    std::fs::create_dir(&work).unwrap();
    // The data directory: its server key (published as finance's domain delegator),
    // finance hosted, billing trusted by finance, finance trusted by a partner.
    let prepared = bootstrap::prepare(&config_for(&data)).unwrap();
    let dns = vector_dns();
    let server_key = prepared.server_key.public_key().to_base64();
    dns.publish_key(
        &Identity::parse("admin$client.test").unwrap(),
        "btps1",
        &server_key,
    );
    dns.publish_host("client.test", "127.0.0.1:1", "btps1");
    {
        let store = RedbStore::open_dir(&data, &RedbOptions::default()).unwrap();
        host(&store, FINANCE, "finance");
        store
            .create_trust(
                Perspective::Inbound,
                trust_record(BILLING, FINANCE, TrustStatus::Accepted, Some("billing")),
                None,
            )
            .unwrap();
        store
            .create_trust(
                Perspective::Outbound,
                trust_record(FINANCE, PARTNER, TrustStatus::Accepted, None),
                None,
            )
            .unwrap();
    }
    let server = serve(&data, &dns);
    let data_arg = data.to_str().unwrap();
    let operator = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--data-dir", data_arg, "--json"]);
        btps(temp.path(), &all)
    };

    // The operator issues a token (through the admin socket: the server holds the file).
    let issued = json_of(&operator(&[
        "agent", "token", "issue", FINANCE, "--ttl", "10m",
    ]));
    let token = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 12);
    assert_eq!(issued["identity"], FINANCE);
    assert!(issued["expiresAt"].as_str().is_some());
    let listed = json_of(&operator(&["agent", "token", "list"]));
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 1);
    assert!(
        !listed.to_string().contains(&token),
        "tokens are never shown again"
    );

    // The agent enrolls: key and state private to it.
    let server_arg = format!("127.0.0.1:{}", server.address.port());
    let agent = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--state", "state.json", "--json"]);
        btps(&work, &all)
    };
    let enrolled = json_of(&agent(&[
        "agent",
        "enroll",
        "--server",
        &server_arg,
        "--identity",
        FINANCE,
        "--token",
        &token,
        "--insecure",
        "--device-name",
        "test desk",
    ]));
    let agent_id = enrolled["agentId"].as_str().unwrap().to_owned();
    assert!(btps::model::is_agent_id(&agent_id));
    assert_eq!(mode(&work.join("state.json")), 0o600);
    assert_eq!(mode(&work.join("state.json.key.pem")), 0o600);
    // The token is spent: a second enrollment elsewhere is refused (exit 1).
    let again = btps(
        &work,
        &[
            "agent",
            "enroll",
            "--server",
            &server_arg,
            "--identity",
            FINANCE,
            "--token",
            &token,
            "--insecure",
            "--state",
            "other.json",
            "--json",
        ],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(!work.join("other.json").exists());
    assert!(!work.join("other.json.key.pem").exists());

    // Three documents arrive; the agent pages through them.
    for index in 0..3 {
        let line = artifact_with_id(
            TransporterType::Document,
            BILLING,
            "billing",
            FINANCE,
            &invoice(&format!("doc-{index}")),
            Some(&format!("doc-{index}")),
        );
        send(server.address, &line).await;
    }
    let first = json_of(&agent(&["agent", "inbox", "--limit", "2"]));
    assert_eq!(first["results"].as_array().unwrap().len(), 2);
    assert_eq!(first["total"], 3);
    assert_eq!(first["hasNext"], true);
    let cursor = first["cursor"].as_str().unwrap();
    let second = json_of(&agent(&[
        "agent", "inbox", "--limit", "2", "--cursor", cursor,
    ]));
    assert_eq!(second["results"][0]["artifact"]["id"], "doc-0");
    assert_eq!(second["hasNext"], false);
    let seen = json_of(&agent(&["agent", "seen", "doc-0"]));
    assert_eq!(seen["updated"][0], "doc-0");
    let deleted = json_of(&agent(&["agent", "delete", "doc-1"]));
    assert_eq!(deleted["updated"][0], "doc-1");
    let trash = json_of(&agent(&["agent", "inbox", "--mailbox", "trash"]));
    assert_eq!(trash["results"][0]["artifact"]["id"], "doc-1");

    // It sends an invoice; it answers billing's trust request.
    std::fs::write(work.join("invoice.json"), invoice("INV-CLI")).unwrap();
    let sent = json_of(&agent(&[
        "agent",
        "send",
        "--to",
        PARTNER,
        "--document",
        "invoice.json",
    ]));
    assert_eq!(sent["status"], "queued");
    let outbox = json_of(&agent(&["agent", "inbox", "--mailbox", "outbox"]));
    assert_eq!(outbox["results"][0]["artifact"]["id"], sent["artifactId"]);
    {
        // A new request from billing (its earlier trust withdrawn by the operator).
        let withdrawn = operator(&["trust", "delete", BILLING, FINANCE]);
        assert!(withdrawn.status.success(), "{withdrawn:?}");
        let request = artifact_with_id(
            TransporterType::TrustRequest,
            BILLING,
            "billing",
            FINANCE,
            TRUST_REQUEST,
            None,
        );
        send(server.address, &request).await;
    }
    let records = json_of(&agent(&["agent", "trust", "list"]));
    assert!(records["results"].as_array().unwrap().len() >= 2);
    let answered = json_of(&agent(&[
        "agent",
        "trust",
        "respond",
        "--to",
        BILLING,
        "--decision",
        "accepted",
    ]));
    assert_eq!(answered["status"], "queued");

    // A refresh replaces the refresh token in the state file.
    let before: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("state.json")).unwrap()).unwrap();
    json_of(&agent(&["agent", "refresh"]));
    let after: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("state.json")).unwrap()).unwrap();
    assert_ne!(before["refreshToken"], after["refreshToken"]);
    assert_eq!(mode(&work.join("state.json")), 0o600);
    json_of(&agent(&["agent", "ping"]));

    // The operator sees the agent and revokes it; its next request is refused.
    let agents = json_of(&operator(&["agent", "list", FINANCE]));
    assert_eq!(agents["agents"][0]["agentId"], agent_id.as_str());
    assert_eq!(agents["agents"][0]["agentInfo"]["deviceName"], "test desk");
    let revoked = json_of(&operator(&["agent", "revoke", &agent_id]));
    assert_eq!(revoked["revoked"], true);
    let refused = agent(&["agent", "ping"]);
    assert_eq!(refused.status.code(), Some(1));
    let refusal: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(refusal["ok"], false);

    // An unused token is revoked by its id.
    json_of(&operator(&["agent", "token", "issue", FINANCE]));
    let listed = json_of(&operator(&["agent", "token", "list", FINANCE]));
    let token_id = listed["tokens"][0]["tokenId"].as_str().unwrap().to_owned();
    let gone = json_of(&operator(&["agent", "token", "revoke", &token_id]));
    assert_eq!(gone["revoked"], true);
    let listed = json_of(&operator(&["agent", "token", "list", FINANCE]));
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 0);
    // Mistakes are errors, not panics: an unknown identity, a malformed id.
    assert_eq!(
        operator(&["agent", "token", "issue", "nobody$client.test"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        operator(&["agent", "token", "revoke", "xyz"]).status.code(),
        Some(2)
    );
    assert_eq!(
        operator(&["agent", "revoke", "not-an-agent"]).status.code(),
        Some(2)
    );
    let mut server = server;
    let status = crate::util::sigterm_and_wait(&mut server.child, Duration::from_secs(10))
        .expect("btps serve stops on SIGTERM");
    assert!(status.success(), "btps serve exited with {status}");
}
