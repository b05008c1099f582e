//! `btps bench` as a real process in a short configuration: it starts its own
//! server, sends signed (partly encrypted) documents over TLS, and every artifact
//! must be accepted and found in the receiver's inbox. Correctness, not speed.

use std::path::Path;
use std::process::Command;

/// Runs `btps bench` with `args` (and a key directory of its own) and returns the
/// parsed JSON line.
fn bench(args: &[&str], keys: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_btps"))
        .arg("bench")
        .args(args)
        .arg("--keys")
        .arg(keys)
        .arg("--work-dir")
        .arg(keys.parent().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "btps bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

fn assert_all_accepted_and_stored(report: &serde_json::Value, artifacts: u64) {
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["accepted"], artifacts, "{report}");
    assert_eq!(report["inbox_entries"], artifacts, "{report}");
    assert_eq!(report["inbox_missing"], 0, "{report}");
    assert!(report["inbox_checked"].as_u64().unwrap() > 0, "{report}");
    for field in ["accepted_per_s", "p50_ms", "p99_ms", "max_ms"] {
        assert!(report[field].as_f64().unwrap() > 0.0, "{field}: {report}");
    }
}

#[test]
fn bench_sends_pipelined_documents_and_finds_them_all_in_the_inbox() {
    let temp = tempfile::tempdir().unwrap();
    let keys = temp.path().join("keys");
    let report = bench(
        &[
            "--connections",
            "4",
            "--artifacts",
            "1200",
            "--senders",
            "5",
            "--encrypted-share",
            "0.2",
            "--window",
            "4",
            "--check-sample",
            "2000",
        ],
        &keys,
    );
    assert_all_accepted_and_stored(&report, 1200);
    assert_eq!(report["inbox_checked"], 1200, "every artifact looked up");
    assert_eq!(report["mode"], "pipelined");
    assert_eq!(report["keys_generated"], 6, "five senders and the receiver");
    // The server was a child process: its resources were measured.
    for field in [
        "server_idle_rss_mb",
        "server_peak_rss_mb",
        "server_cpu_s",
        "client_cpu_s",
    ] {
        assert!(report[field].as_f64().unwrap() > 0.0, "{field}: {report}");
    }
    // Sharing the machine with its server, the generator keeps to one thread, and
    // (with two CPUs or more) to the last CPU; the server may use every CPU.
    assert_eq!(report["client_threads"], 1, "{report}");
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(report["server_cpus"], cpus, "{report}");
    if cpus >= 2 {
        assert!(report["generator_cpu"].as_u64().is_some(), "{report}");
    } else {
        assert!(report["generator_cpu"].is_null(), "{report}");
    }
    // Encrypted artifacts are larger: with a 20 % share the average is above a
    // plain invoice's size.
    assert!(report["artifact_bytes_avg"].as_f64().unwrap() > 2000.0);
}

#[test]
fn bench_opens_a_connection_per_artifact_and_holds_idle_connections() {
    let temp = tempfile::tempdir().unwrap();
    let keys = temp.path().join("keys");
    let report = bench(
        &[
            "--connections",
            "4",
            "--artifacts",
            "300",
            "--senders",
            "3",
            "--encrypted-share",
            "0.5",
            "--new-connection-per-artifact",
            "--idle-connections",
            "50",
        ],
        &keys,
    );
    assert_all_accepted_and_stored(&report, 300);
    assert_eq!(report["mode"], "new-connection-per-artifact");
    assert!(report["connections_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(report["idle_connections_opened"], 50, "{report}");
    assert!(report["idle_connections_rss_mb"].as_f64().unwrap() > 0.0);

    // A second run reuses the kept keys instead of generating new ones.
    let again = bench(
        &[
            "--connections",
            "2",
            "--artifacts",
            "20",
            "--senders",
            "3",
            "--client-threads",
            "3",
            "--no-pin",
        ],
        &keys,
    );
    assert_all_accepted_and_stored(&again, 20);
    assert_eq!(again["keys_generated"], 0, "{again}");
    assert_eq!(again["client_threads"], 3, "{again}");
    assert!(again["generator_cpu"].is_null(), "--no-pin: {again}");
}

#[test]
fn bench_measures_a_prepared_target_server() {
    let temp = tempfile::tempdir().unwrap();
    let keys = temp.path().join("keys");
    let data = temp.path().join("target-data");
    let prepared = Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(["bench", "--senders", "2", "--prepare"])
        .arg(&data)
        .arg("--keys")
        .arg(&keys)
        .output()
        .unwrap();
    assert!(prepared.status.success(), "{prepared:?}");

    // The operator's server resolves keys from the benchmark's DNS responder, at a
    // fixed address chosen here from a port that was free a moment ago, for UDP and
    // TCP both: the responder binds both.
    let dns = loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = udp.local_addr().unwrap();
        if std::net::TcpListener::bind(address).is_ok() {
            break address;
        }
    };
    let mut server = Command::new(env!("CARGO_BIN_EXE_btps"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--dns-server", &dns.to_string()])
        // Not the endpoint's fixed default port, which a developer's server may hold.
        .env("BTPS_HTTP_LISTEN", "off")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let address = loop {
        let line = lines
            .next()
            .expect("btps serve printed its address")
            .unwrap();
        if let Some(address) = btps::bench::child::listening_address(&line) {
            break address;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let report = bench(
        &[
            "--connections",
            "2",
            "--artifacts",
            "100",
            "--senders",
            "2",
            "--target",
            &address.to_string(),
            "--dns-listen",
            &dns.to_string(),
        ],
        &keys,
    );
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["accepted"], 100, "{report}");
    // A target is neither inspected nor its database opened.
    for field in ["server_peak_rss_mb", "server_cpu_s", "inbox_checked"] {
        assert!(report[field].is_null(), "{field}: {report}");
    }
}

#[test]
fn bench_agents_answers_every_query_and_reuses_its_store() {
    let temp = tempfile::tempdir().unwrap();
    let keys = temp.path().join("keys");
    let args = [
        "--agents",
        "--agent-identities",
        "4",
        "--agent-entries",
        "60",
        "--agent-requests",
        "80",
        "--agent-limit",
        "25",
        "--connections",
        "3",
    ];
    let report = bench(&args, &keys);
    assert_eq!(report["mode"], "agents", "{report}");
    assert_eq!(report["entries"], 240, "{report}");
    assert_eq!(report["answered"], 80, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    for field in ["requests_per_second", "p50_ms", "p99_ms"] {
        assert!(report[field].as_f64().unwrap() > 0.0, "{field}: {report}");
    }
    // The second run finds the store prepared.
    let again = bench(&args, &keys);
    assert_eq!(again["prepare_s"], 0.0, "{again}");
    assert_eq!(again["answered"], 80, "{again}");
}
