//! Operations, with `btps serve` as a real process: the systemd notifications a
//! `Type=notify` unit relies on (readiness only once the listener accepts, stopping
//! on SIGTERM, watchdog keep-alives), and the logs (JSON lines, the level from the
//! configuration or `RUST_LOG`, one line per refusal, no secrets).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use btps::client::{BtpsClient, ClientOptions};
use btps::protocol::TransporterType;
use btps::protocol::response::{ServerResponse, parse_response};
use btps::store::{RedbOptions, RedbStore};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};

use crate::util::server::{TRUST_REQUEST, artifact, host, vector_dns};
use crate::util::vector_json;

/// Environment a developer's shell or a CI runner may set that would change what is
/// tested here.
const INHERITED: [&str; 8] = [
    "RUST_LOG",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "BTPS_DATA_DIR",
    "BTPS_LOG_LEVEL",
    "BTPS_LOG_FORMAT",
];

/// `btps serve` on a loopback port with a data directory under `temp`, resolving keys
/// from `dns`, configured by `temp/btps.toml` (created empty if absent, so that an
/// installed /etc/btps/btps.toml is never read).
fn serve_command(temp: &Path, dns: SocketAddr) -> Command {
    let config = temp.join("btps.toml");
    if !config.exists() {
        std::fs::write(&config, "").unwrap();
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_btps"));
    command
        .arg("serve")
        .args(["--data-dir", temp.join("data").to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .args(["--dns-server", &dns.to_string()])
        .current_dir(temp)
        .env("BTPS_CONFIG", &config)
        // Tests run servers in parallel: none may take the fixed default HTTP port.
        .env("BTPS_HTTP_LISTEN", "off")
        .stdin(Stdio::null());
    for name in INHERITED {
        command.env_remove(name);
    }
    command
}

/// Sends SIGTERM and waits (at most 10 s) for a successful exit.
fn terminate(child: &mut Child) {
    let Some(status) = crate::util::sigterm_and_wait(child, Duration::from_secs(10)) else {
        panic!("btps serve did not stop within 10 s of SIGTERM");
    };
    assert!(status.success(), "btps serve exited with {status}");
}

fn client_options() -> ClientOptions {
    ClientOptions {
        insecure: true,
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

/// Receives one notification, or `None` after `timeout`.
fn receive(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buffer = [0u8; 4096];
    match socket.recv(&mut buffer) {
        Ok(length) => Some(String::from_utf8(buffer[..length].to_vec()).unwrap()),
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(error) => panic!("receiving a notification: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_after_the_listener_is_bound_then_watchdog_then_stopping() {
    let dns = vector_dns();
    let temp = tempfile::tempdir().unwrap();
    let socket_path = temp.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut child = serve_command(temp.path(), dns.local_addr())
        .env("NOTIFY_SOCKET", &socket_path)
        // 200 ms: a keep-alive every 100 ms.
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", std::process::id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // WATCHDOG_PID names another process (this one): no keep-alives may come from
    // the server, whose first and only message before SIGTERM is READY=1.
    let ready = receive(&socket, Duration::from_secs(60)).expect("READY=1 within 60 s");
    let mut lines = ready.lines();
    assert_eq!(lines.next(), Some("READY=1"), "{ready:?}");
    let address: SocketAddr = lines
        .find_map(|line| line.strip_prefix("STATUS=Listening on "))
        .unwrap_or_else(|| panic!("no listening address in {ready:?}"))
        .parse()
        .unwrap();
    // Ready means ready: the database exists and a client connecting right now is served.
    assert!(
        temp.path()
            .join("data")
            .join(btps::store::DATABASE_FILE_NAME)
            .exists()
    );
    let mut client = BtpsClient::connect("127.0.0.1", address.port(), &client_options())
        .await
        .unwrap();
    let ping =
        r#"{"version":"1.0.0","id":"p","issuedAt":"2025-01-15T10:30:00.000Z","action":"PING"}"#;
    assert!(client.request(ping).await.unwrap().ok);
    drop(client);
    assert_eq!(receive(&socket, Duration::from_millis(600)), None);
    terminate(&mut child);
    let stopping = receive(&socket, Duration::from_secs(1)).expect("STOPPING=1 after SIGTERM");
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_is_kept_alive_at_half_its_timeout() {
    let dns = vector_dns();
    let temp = tempfile::tempdir().unwrap();
    let socket_path = temp.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut child = serve_command(temp.path(), dns.local_addr())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = receive(&socket, Duration::from_secs(60)).expect("READY=1 within 60 s");
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    // For one second: keep-alives about every 100 ms, nothing else.
    let start = Instant::now();
    let mut keep_alives = 0;
    while let Some(message) = receive(&socket, Duration::from_millis(500)) {
        assert_eq!(message, "WATCHDOG=1");
        keep_alives += 1;
        if start.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    let elapsed = start.elapsed();
    assert!(
        keep_alives >= 5,
        "{keep_alives} keep-alives in {elapsed:?} with a 200 ms watchdog"
    );
    terminate(&mut child);
    // Keep-alives may still arrive during the graceful shutdown, then STOPPING=1.
    let stopping = std::iter::from_fn(|| receive(&socket, Duration::from_secs(2)))
        .find(|message| message != "WATCHDOG=1")
        .expect("STOPPING=1 after SIGTERM");
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
}

/// A `btps serve` whose standard error is collected line by line.
struct LoggedServer {
    child: Child,
    address: SocketAddr,
    data_dir: PathBuf,
    stderr: JoinHandle<Vec<String>>,
}

impl LoggedServer {
    fn start(temp: &Path, dns: SocketAddr, configured_level: &str, rust_log: Option<&str>) -> Self {
        let data_dir = temp.join("data");
        if !data_dir.exists() {
            let store = RedbStore::open_dir(&data_dir, &RedbOptions::default()).unwrap();
            host(&store, "finance$client.test", "finance");
        }
        // Format left at "auto": JOURNAL_STREAM, as systemd sets it, selects JSON.
        let config = temp.join("btps.toml");
        std::fs::write(&config, format!("[log]\nlevel = {configured_level:?}\n")).unwrap();
        let mut command = serve_command(temp, dns);
        command
            .env("JOURNAL_STREAM", "8:4242")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        });
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
        LoggedServer {
            child,
            address,
            data_dir,
            stderr,
        }
    }

    /// Sends one line on a new TLS connection; returns the response and the client's
    /// own address (what the server logs as `remote`).
    async fn send(&self, line: &str) -> (ServerResponse, SocketAddr) {
        let config = btps::client::client_config(&client_options()).unwrap();
        let tcp = tokio::net::TcpStream::connect(self.address).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        let (reader, mut writer) = tokio::io::split(tls);
        writer.write_all(line.as_bytes()).await.unwrap();
        writer.write_all(b"\n").await.unwrap();
        writer.flush().await.unwrap();
        let mut response = String::new();
        AsyncBufReader::new(reader)
            .read_line(&mut response)
            .await
            .unwrap();
        (parse_response(response.trim_end()).unwrap(), local)
    }

    /// Stops the server and returns every line it wrote to standard error.
    fn stop(mut self) -> Vec<String> {
        terminate(&mut self.child);
        self.stderr.join().unwrap()
    }
}

/// Lines that are log events for refused artifacts.
fn refusals(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|error| panic!("not a JSON log line ({error}): {line}"))
        })
        .filter(|event| event["message"] == "artifact refused")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_is_logged_once_with_its_parties_and_no_secret() {
    let dns = vector_dns();
    let temp = tempfile::tempdir().unwrap();
    // The vendor's request signed with the client's key: the signature does not verify.
    let forged = artifact(
        TransporterType::TrustRequest,
        "billing$vendor.test",
        "finance",
        "finance$client.test",
        TRUST_REQUEST,
    );
    let accepted = artifact(
        TransporterType::TrustRequest,
        "billing$vendor.test",
        "billing",
        "finance$client.test",
        TRUST_REQUEST,
    );
    let onboarding = vector_json("signed/agent-auth-request.json");
    let onboarding = onboarding["artifact"].as_str().unwrap();

    // Configured at warn, RUST_LOG unset: a refusal (logged at info) is not written.
    let server = LoggedServer::start(temp.path(), dns.local_addr(), "warn", None);
    let (response, _) = server.send(&forged).await;
    assert!(!response.ok);
    let quiet = server.stop();
    assert_eq!(
        refusals(&quiet),
        Vec::<serde_json::Value>::new(),
        "{quiet:#?}"
    );

    // RUST_LOG wins over the configured level.
    let server = LoggedServer::start(temp.path(), dns.local_addr(), "warn", Some("info"));
    let (refused, remote) = server.send(&forged).await;
    assert!(!refused.ok);
    let (response, _) = server.send(&accepted).await;
    assert!(response.ok, "{:?}", response.message);
    let _ = server.send(onboarding).await;
    let secrets = [
        std::fs::read_to_string(server.data_dir.join("keys/server.key.pem")).unwrap(),
        std::fs::read_to_string(server.data_dir.join("tls/key.pem")).unwrap(),
        crate::util::vector_text("keys/billing.key.pem"),
        crate::util::vector_text("keys/finance.key.pem"),
    ];
    let logged = server.stop();
    assert!(!logged.is_empty());

    let refusals = refusals(&logged);
    let forged_refusals: Vec<_> = refusals
        .iter()
        .filter(|event| event["sender"] == "billing$vendor.test")
        .collect();
    assert_eq!(forged_refusals.len(), 1, "{logged:#?}");
    let event = forged_refusals[0];
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["code"], "BTP_ERROR_SIG_MISMATCH", "{event}");
    assert_eq!(refused.code, 500.0);
    assert_eq!(event["receiver"], "finance$client.test");
    assert_eq!(event["remote"], remote.to_string());

    for line in &logged {
        // Document content: the trust request's free text and phone number.
        for content in ["Monthly invoices", "+61 2 5550 0100", "Vendor Ltd"] {
            assert!(!line.contains(content), "document content logged: {line}");
        }
        // The onboarding token and any line of any private key.
        assert!(!line.contains("INTEROPAUTHTOKEN1"), "token logged: {line}");
        assert!(!line.contains("PRIVATE KEY"), "key logged: {line}");
        for pem in &secrets {
            for key_line in pem.lines().filter(|text| !text.starts_with("-----")) {
                assert!(!line.contains(key_line), "private key logged: {line}");
            }
        }
    }
}
