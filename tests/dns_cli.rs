//! `btps dns records` and `btps dns serve` as real processes: the records of every
//! hosted identity each name once, with or without a running server; a responder
//! that answers exactly those, follows the server without a restart, refuses to
//! listen beyond loopback and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use btps::identity::dns::{DnsError, HickoryTxtResolver, ResolverOptions, TxtResolver};
use serde_json::Value;

/// `btps ARGS --data-dir DATA`, from the data directory's parent, with nothing
/// from the environment choosing another.
fn btps(data: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_btps"));
    command
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .current_dir(data.parent().unwrap())
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_CONFIG")
        .env_remove("BTPS_ADMIN_SOCKET")
        .env("RUST_LOG", "warn");
    command
}

/// Runs `btps ARGS --data-dir DATA` to completion.
fn run(data: &Path, args: &[&str]) -> Output {
    btps(data, args).output().unwrap()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `btps dns records --json`: (name, value) of each record, and the warnings.
fn records(data: &Path, extra: &[&str]) -> (Vec<(String, String)>, Vec<String>) {
    let mut args = vec!["dns", "records", "--json"];
    args.extend_from_slice(extra);
    let printed: Value = serde_json::from_str(&ok(&run(data, &args))).unwrap();
    let records = printed["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| {
            assert_eq!(record["type"], "TXT");
            assert!(record["purpose"].as_str().is_some_and(|p| !p.is_empty()));
            (
                record["name"].as_str().unwrap().to_owned(),
                record["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let warnings = printed["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|warning| warning.as_str().unwrap().to_owned())
        .collect();
    (records, warnings)
}

/// A background `btps` process whose standard output is read line by line.
struct Background {
    child: Child,
    lines: Receiver<String>,
}

impl Background {
    fn spawn(mut command: Command) -> Background {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Background { child, lines }
    }

    /// The next line satisfying `wanted` (within 60 s).
    fn line_where(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(remaining)
                .expect("the process printed the line awaited");
            if wanted(&line) {
                return line;
            }
        }
    }

    /// The next JSON event of `btps dns serve --json` named `event`.
    fn event(&self, event: &str) -> Value {
        let line = self.line_where(|line| {
            serde_json::from_str::<Value>(line).is_ok_and(|value| value["event"] == event)
        });
        serde_json::from_str(&line).unwrap()
    }

    /// SIGTERM, then a clean exit within 20 s.
    fn terminate(&mut self) {
        let Some(status) = crate::util::sigterm_and_wait(&mut self.child, Duration::from_secs(20))
        else {
            panic!("did not stop within 20 s of SIGTERM");
        };
        assert!(status.success(), "exited with {status} after SIGTERM");
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `btps serve` on `data` on ephemeral ports, its keys looked up at `dns`;
/// returns it once it listens, with the address it bound.
fn start_server(data: &Path, dns: SocketAddr) -> (Background, SocketAddr) {
    let dns = dns.to_string();
    let server = Background::spawn(btps(
        data,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
            "--dns-server",
            &dns,
        ],
    ));
    let line = server.line_where(|line| line.starts_with("btps listening on "));
    let address = line
        .trim_start_matches("btps listening on ")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (server, address)
}

/// The TXT value at `name` as `dns` answers it (character-strings joined), or
/// `None` for "no such record".
fn lookup(dns: SocketAddr, name: &str) -> Option<String> {
    let resolver = HickoryTxtResolver::with_name_servers(
        &[dns],
        ResolverOptions {
            timeout: Duration::from_secs(3),
            attempts: 2,
        },
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(resolver.lookup_txt(name)) {
        Ok(answer) => {
            assert_eq!(answer.records.len(), 1, "{name}: one record per name");
            Some(String::from_utf8(answer.records[0].concat()).unwrap())
        }
        Err(DnsError::NotFound { .. }) => None,
        Err(error) => panic!("{name}: {error}"),
    }
}

fn identity_add(data: &Path, identity: &str) {
    let keys = data.parent().unwrap().join("keys");
    ok(&run(
        data,
        &[
            "identity",
            "add",
            identity,
            "--key-out",
            keys.to_str().unwrap(),
            "--create",
        ],
    ));
}

#[test]
fn dns_serve_answers_exactly_the_records_and_follows_the_server() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("appliance");

    let mut responder = Background::spawn(btps(
        &data,
        &["dns", "serve", "--json", "--listen", "127.0.0.1:0"],
    ));
    let listening = responder.event("listening");
    let dns: SocketAddr = listening["address"].as_str().unwrap().parse().unwrap();
    assert_ne!(dns.port(), 0);
    assert_eq!(listening["ttl"], 5);
    // No server yet: it says so, and answers "no such name".
    let waiting = responder.event("waiting");
    assert!(
        waiting["reason"]
            .as_str()
            .unwrap()
            .contains("no server answers"),
        "{waiting}"
    );
    assert_eq!(lookup(dns, "_btps.host.client.test"), None);

    let (mut server, address) = start_server(&data, dns);
    identity_add(&data, "finance$client.test");
    identity_add(&data, "pay$client.test");
    let (published, _) = records(&data, &[]);
    // Two keys, one host record and one lookup-signer record for the one domain.
    assert_eq!(published.len(), 4, "{published:?}");
    assert!(published.contains(&(
        String::from("_btps.host.client.test"),
        format!("v=1.0.0; u={address}; s=btps1")
    )));
    for (name, value) in &published {
        assert_eq!(lookup(dns, name).as_deref(), Some(value.as_str()), "{name}");
    }
    assert_eq!(lookup(dns, "btps1._btps.identity.other.client.test"), None);
    assert_eq!(lookup(dns, "_btps.host.vendor.test"), None);
    let served = responder.event("records");
    let served: Vec<&str> = served["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        served,
        published
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
    );

    // An identity added now is answered by the next query, without a restart.
    identity_add(&data, "billing$vendor.test");
    assert!(lookup(dns, "btps1._btps.identity.billing.vendor.test").is_some());
    assert!(lookup(dns, "_btps.host.vendor.test").is_some());

    // Once the server stops, the responder keeps answering what it last had.
    server.terminate();
    assert!(lookup(dns, "btps1._btps.identity.finance.client.test").is_some());

    responder.terminate();
    let stopped = responder.event("stopped");
    assert_eq!(stopped["event"], "stopped");
}

#[test]
fn dns_serve_only_listens_on_loopback() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("appliance");
    let output = run(&data, &["dns", "serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("btps dns records"),
        "{stderr}"
    );
}

#[test]
fn dns_records_without_a_server_read_the_database() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("appliance");

    // No data directory yet: the command names the path instead of creating it.
    let output = run(&data, &["dns", "records"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{} does not exist", data.display()))
            && stderr.contains("--data-dir"),
        "{stderr}"
    );

    identity_add(&data, "finance$client.test");
    identity_add(&data, "billing$vendor.test");
    let (all, warnings) = records(&data, &[]);
    // A key and a host record each; no lookup-signer record before the server
    // has ever run and created its key, and a warning saying so.
    let names: Vec<&str> = all.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "btps1._btps.identity.billing.vendor.test",
            "_btps.host.vendor.test",
            "btps1._btps.identity.finance.client.test",
            "_btps.host.client.test",
        ]
    );
    assert!(
        warnings
            .iter()
            .any(|warning| warning.contains("start btps serve once")),
        "{warnings:?}"
    );

    // One identity's records only; the text form is zone-file lines.
    let (one, _) = records(&data, &["finance$client.test"]);
    assert_eq!(one, all[2..]);
    let text = ok(&run(&data, &["dns", "records", "finance$client.test"]));
    assert!(
        text.lines()
            .any(|line| line.starts_with("_btps.host.client.test. IN TXT \"v=1.0.0; u=")),
        "{text}"
    );

    let output = run(&data, &["dns", "records", "nobody$client.test"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nobody$client.test"));
    let output = run(&data, &["dns", "records", "not-an-identity"]);
    assert_eq!(output.status.code(), Some(2));
}
