//! `btps serve` as a real process: the embedded default, graceful shutdown on SIGTERM,
//! and a restart that keeps every record and inbox entry.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use btps::client::{BtpsClient, ClientOptions};
use btps::identity::compute_trust_id;
use btps::protocol::TransporterType;
use btps::store::{Mailbox, PageRequest, Perspective, RedbOptions, RedbStore, TrustStatus};

use crate::util::server::{TRUST_REQUEST, TestOptions, TestServer, artifact, host, vector_dns};
use crate::util::sigterm_and_wait;

/// A running `btps serve` and the lines it printed up to "listening".
pub(super) struct Process {
    pub(super) child: Child,
    pub(super) address: SocketAddr,
    printed: Vec<String>,
}

fn spawn(args: &[&str], cwd: &Path) -> Process {
    spawn_with_env(args, cwd, &[])
}

pub(super) fn spawn_with_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_btps"))
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_CONFIG")
        // No test binds a fixed port: a developer's server may hold the default
        // addresses, and parallel processes would contend for
        // them. A --listen among `args` overrides this.
        .env("BTPS_LISTEN", "127.0.0.1:0")
        .env("BTPS_HTTP_LISTEN", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let address = loop {
        let line = lines
            .next()
            .expect("btps serve printed its address")
            .unwrap();
        printed.push(line.clone());
        if let Some(rest) = line.strip_prefix("btps listening on ") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Process {
        child,
        address,
        printed,
    }
}

pub(super) fn terminate(mut process: Process) {
    let Some(status) = sigterm_and_wait(&mut process.child, Duration::from_secs(10)) else {
        panic!("btps serve did not stop within 10 s of SIGTERM");
    };
    assert!(status.success(), "btps serve exited with {status}");
}

async fn client(address: SocketAddr) -> BtpsClient {
    let options = ClientOptions {
        insecure: true,
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    BtpsClient::connect(&address.ip().to_string(), address.port(), &options)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_shuts_down_cleanly_and_restarts_with_its_data() {
    let dns = vector_dns();
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    {
        let store = RedbStore::open_dir(&data, &RedbOptions::default()).unwrap();
        host(&store, "finance$client.test", "finance");
    }
    let args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--dns-server",
        &dns.local_addr().to_string(),
    ];
    let process = spawn(&args, temp.path());
    let request = artifact(
        TransporterType::TrustRequest,
        "billing$vendor.test",
        "billing",
        "finance$client.test",
        TRUST_REQUEST,
    );
    let mut connection = client(process.address).await;
    assert!(connection.request(&request).await.unwrap().ok);
    drop(connection);
    terminate(process);

    // The database closed cleanly: it opens and holds what was acknowledged.
    assert!(RedbStore::check_file_integrity(&data.join(btps::store::DATABASE_FILE_NAME)).unwrap());
    {
        let store = RedbStore::open_dir(&data, &RedbOptions::default()).unwrap();
        let id = compute_trust_id("billing$vendor.test", "finance$client.test");
        assert_eq!(
            store
                .trust(Perspective::Inbound, &id)
                .unwrap()
                .unwrap()
                .status,
            TrustStatus::Pending
        );
        let inbox = store
            .read(|snapshot| {
                snapshot.list_mailbox(
                    "finance$client.test",
                    Mailbox::Inbox,
                    &PageRequest::first(10),
                    true,
                )
            })
            .unwrap();
        assert_eq!(inbox.items.len(), 1);
        assert_eq!(inbox.items[0].raw, request.as_bytes());
    }

    // Restarted, it still knows the request: a re-delivery is a duplicate, not a new entry.
    let process = spawn(&args, temp.path());
    let mut connection = client(process.address).await;
    assert!(connection.request(&request).await.unwrap().ok);
    drop(connection);
    terminate(process);
    let store = RedbStore::open_dir(&data, &RedbOptions::default()).unwrap();
    let count = store
        .read(|snapshot| snapshot.mailbox_count("finance$client.test", Mailbox::Inbox))
        .unwrap();
    assert_eq!(count, 1);
}

/// `btps serve` arguments for the data directory `data`, listening on any free port.
fn any_port_args(data: &Path) -> [&str; 4] {
    [
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]
}

/// A SIGTERM that arrives as soon as the server says it is listening (a service
/// stopped right after it started) still stops it cleanly: the handler is in place
/// before readiness is reported.
#[test]
fn a_sigterm_right_after_listening_stops_the_server_cleanly() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let args = any_port_args(&data);
    for _ in 0..10 {
        terminate(spawn(&args, temp.path()));
    }
}

/// The nice value of each thread of process `pid`, by thread name.
fn thread_nice_values(pid: u32) -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // Fields after the parenthesised name: state is field 3, nice field 19.
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        let nice = after_name
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap();
        threads.push((name.trim().to_owned(), nice));
    }
    threads
}

/// The group-commit thread's nice value minus the main thread's, once it has set it.
fn committer_nice_step(process: &Process, expected: i32) -> i32 {
    let pid = process.child.id();
    let mut step = None;
    for _ in 0..50 {
        let threads = thread_nice_values(pid);
        let main = threads.iter().find(|(name, _)| name == "btps").map(|t| t.1);
        let committer = threads
            .iter()
            .find(|(name, _)| name == "btps-committer")
            .map(|t| t.1);
        step = main
            .zip(committer)
            .map(|(main, committer)| committer - main);
        if step == Some(expected) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    step.expect("the process has a main and a btps-committer thread")
}

#[test]
fn the_committer_thread_runs_at_the_configured_lower_priority() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let args = any_port_args(&data);
    let own_nice = thread_nice_values(std::process::id())
        .first()
        .map_or(0, |thread| thread.1);
    // Capped at 19 when the test itself already runs niced.
    let expected = |step: i32| (own_nice + step).min(19) - own_nice;

    let process = spawn(&args, temp.path());
    assert_eq!(committer_nice_step(&process, expected(10)), expected(10));
    terminate(process);

    let process = spawn_with_env(&args, temp.path(), &[("BTPS_COMMITTER_NICE", "3")]);
    assert_eq!(committer_nice_step(&process, expected(3)), expected(3));
    terminate(process);

    let process = spawn_with_env(&args, temp.path(), &[("BTPS_COMMITTER_NICE", "0")]);
    assert_eq!(committer_nice_step(&process, 0), 0);
    terminate(process);
}

/// With no configuration file and no options, `btps serve` prepares `./btps-data`
/// and serves. The listen addresses it would use are checked without binding them
/// (a developer's server may hold them): `check-config` loads the configuration
/// exactly as `serve` does; the server itself is moved to ephemeral ports through
/// the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_configuration_prepares_its_data_directory() {
    let temp = tempfile::tempdir().unwrap();
    let defaults = Command::new(env!("CARGO_BIN_EXE_btps"))
        .arg("check-config")
        .current_dir(temp.path())
        .env_remove("BTPS_CONFIG")
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_LISTEN")
        .env_remove("PORT")
        .env_remove("BTPS_HTTP_LISTEN")
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&defaults.stdout);
    assert!(defaults.status.success(), "{summary}");
    for expected in [
        String::from("data dir:        ./btps-data (will be created)"),
        format!("listen:          {}", btps::config::DEFAULT_LISTEN),
        format!("HTTP endpoint:   {}", btps::config::DEFAULT_HTTP_LISTEN),
    ] {
        assert!(
            summary.contains(expected.as_str()),
            "{expected:?} in {summary}"
        );
    }

    let process = spawn(&[], temp.path());
    assert!(process.address.ip().is_loopback());
    assert_ne!(process.address.port(), btps::config::DEFAULT_LISTEN.port());
    let data = temp.path().join("btps-data");
    for file in [
        "keys/server.key.pem",
        "keys/server.pub.pem",
        "tls/cert.pem",
        "tls/key.pem",
        btps::store::DATABASE_FILE_NAME,
    ] {
        assert!(data.join(file).exists(), "{file} created");
    }
    assert!(
        process
            .printed
            .iter()
            .any(|line| line.contains("server.key.pem")),
        "{:?}",
        process.printed
    );
    let mut connection = client(process.address).await;
    let ping =
        r#"{"version":"1.0.0","id":"p","issuedAt":"2025-01-15T10:30:00.000Z","action":"PING"}"#;
    assert!(connection.request(ping).await.unwrap().ok);
    drop(connection);
    terminate(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_restart_keeps_records_and_inbox() {
    let server = TestServer::start(TestOptions::default()).await;
    let request = artifact(
        TransporterType::TrustRequest,
        "billing$vendor.test",
        "billing",
        "finance$client.test",
        TRUST_REQUEST,
    );
    assert!(server.send(&request).await.ok);
    let dns = Arc::clone(&server.dns);
    let data_dir = server.data_dir.clone();
    let temp = server.stop().await;
    let server = TestServer::start_in(&data_dir, dns, TestOptions::default()).await;
    let id = compute_trust_id("billing$vendor.test", "finance$client.test");
    assert!(
        server
            .store
            .trust(Perspective::Inbound, &id)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        server
            .store
            .read(|snapshot| snapshot.mailbox_count("finance$client.test", Mailbox::Inbox))
            .unwrap(),
        1
    );
    server.stop().await;
    drop(temp);
}
