//! The operator commands against a running `btps serve`: both are real processes on
//! the same data directory. The server holds the database (redb allows one process
//! per file), so every command that succeeds went through the admin socket, and
//! what it changes is what the running server acts on.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use btps::client::{BtpsClient, ClientOptions};
use btps::crypto::PublicKey;
use btps::identity::dns::key_record_text;
use btps::identity::responder::DnsResponder;
use btps::protocol::TransporterType;
use btps::store::{NewInboxEntry, Perspective, RedbOptions, RedbStore, Timestamp, TrustStatus};
use serde_json::Value;

use crate::store::new_trust;
use crate::util::server::{TRUST_REQUEST, artifact, host, invoice, vector_dns, vector_key};

const SENDER: &str = "billing$vendor.test";
const RECEIVER: &str = "finance$client.test";

/// A running `btps serve`.
struct Server {
    child: Child,
    address: SocketAddr,
}

fn serve_command(data: &Path, dns: &DnsResponder, cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_btps"));
    command
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--dns-server"])
        .arg(dns.local_addr().to_string())
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_CONFIG")
        .env_remove("BTPS_ADMIN_SOCKET")
        // Tests run servers in parallel: none may take the fixed default HTTP port.
        .env("BTPS_HTTP_LISTEN", "off");
    command
}

fn start(data: &Path, dns: &DnsResponder) -> Server {
    let mut child = serve_command(data, dns, data.parent().unwrap())
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
    Server { child, address }
}

impl Server {
    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        let Some(status) = crate::util::sigterm_and_wait(&mut self.child, Duration::from_secs(10))
        else {
            panic!("btps serve did not stop within 10 s of SIGTERM");
        };
        assert!(status.success(), "btps serve exited with {status}");
    }

    async fn send(&self, line: &str) -> btps::protocol::response::ServerResponse {
        let options = ClientOptions {
            insecure: true,
            timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        };
        let mut client = BtpsClient::connect("127.0.0.1", self.address.port(), &options)
            .await
            .unwrap();
        client.request(line).await.unwrap()
    }
}

/// Runs the CLI on `data`, from `data`'s parent directory.
fn btps(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .current_dir(data.parent().unwrap())
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_CONFIG")
        .env_remove("BTPS_ADMIN_SOCKET")
        .output()
        .unwrap()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn ok_json(output: &Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}

fn fails(output: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

/// A data directory with `finance$client.test` hosted, an outbound trust record
/// and two inbox entries.
fn prepared(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let store = RedbStore::open_dir(&data, &RedbOptions::default()).unwrap();
    host(&store, RECEIVER, "finance");
    store
        .create_trust(
            Perspective::Outbound,
            new_trust(RECEIVER, "ops$partner.test", TrustStatus::Pending, None),
            None,
        )
        .unwrap();
    for serial in 0..2 {
        store
            .insert_inbox(NewInboxEntry {
                owner: RECEIVER.to_owned(),
                artifact_id: format!("note-{serial}"),
                artifact_type: String::from("BTPS_DOC"),
                from: String::from("someone$else.test"),
                to: RECEIVER.to_owned(),
                title: Some(format!("Note {serial}")),
                raw: format!("{{\"id\":\"note-{serial}\",  \"x\":1}}").into_bytes(),
                received_at: Timestamp::from_millis(1_750_000_000_000 + serial).unwrap(),
                remote_address: None,
            })
            .unwrap();
    }
    data
}

fn senders(listing: &Value) -> Vec<String> {
    let mut senders: Vec<String> = listing["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["senderId"].as_str().unwrap().to_owned())
        .collect();
    senders.sort();
    senders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_command_works_against_a_running_server() {
    let dns = vector_dns();
    let temp = tempfile::tempdir().unwrap();
    let data = prepared(temp.path());
    let server = start(&data, &dns);

    // The socket is the owner's only.
    let socket = data.join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The server holds the database: nothing else can open it.
    assert!(RedbStore::held_by_another_process(
        &data.join(btps::store::DATABASE_FILE_NAME)
    ));

    // A trust request reaches the server; the operator sees it and accepts it
    // through the socket; the server then takes documents from the sender.
    let request = artifact(
        TransporterType::TrustRequest,
        SENDER,
        "billing",
        RECEIVER,
        TRUST_REQUEST,
    );
    assert!(server.send(&request).await.ok);
    let pending = ok_json(&btps(
        &data,
        &["trust", "list", "--status", "pending", "--json"],
    ));
    assert_eq!(senders(&pending), [SENDER]);
    let document = artifact(
        TransporterType::Document,
        SENDER,
        "billing",
        RECEIVER,
        &invoice("INV-9"),
    );
    assert!(
        !server.send(&document).await.ok,
        "refused before acceptance"
    );
    let accepted = ok_json(&btps(
        &data,
        &[
            "trust",
            "accept",
            SENDER,
            RECEIVER,
            "--expires-at",
            "2099-01-01T00:00:00Z",
            "--json",
        ],
    ));
    assert_eq!(accepted["status"], "accepted");
    let delivered = server.send(&document).await;
    assert!(delivered.ok, "{:?}", delivered.raw);

    // Every trust index, and the other decisions.
    for args in [
        &["--receiver", RECEIVER][..],
        &["--sender", SENDER][..],
        &["--status", "accepted"][..],
        &["--expiring-before", "2100-01-01T00:00:00Z"][..],
    ] {
        let mut all = vec!["trust", "list", "--json"];
        all.extend(args);
        assert_eq!(senders(&ok_json(&btps(&data, &all))), [SENDER], "{args:?}");
    }
    let outbound = ok_json(&btps(&data, &["trust", "list", "--outbound", "--json"]));
    assert_eq!(senders(&outbound), [RECEIVER]);
    let table = ok(&btps(&data, &["trust", "list"]));
    assert!(table.starts_with("SENDER"), "{table}");
    for (command, status) in [
        ("reject", "rejected"),
        ("block", "blocked"),
        ("revoke", "revoked"),
    ] {
        let decided = ok_json(&btps(
            &data,
            &["trust", command, SENDER, RECEIVER, "--json"],
        ));
        assert_eq!(decided["status"], status, "{command}");
    }
    let shown = ok_json(&btps(&data, &["trust", "show", SENDER, RECEIVER, "--json"]));
    assert_eq!(shown["inbound"]["status"], "revoked");
    let another = artifact(
        TransporterType::Document,
        SENDER,
        "billing",
        RECEIVER,
        &invoice("INV-10"),
    );
    assert!(!server.send(&another).await.ok, "refused after revocation");
    ok(&btps(&data, &["trust", "delete", SENDER, RECEIVER]));
    // Errors come back from the server with what was wrong, and a non-zero exit.
    fails(
        &btps(&data, &["trust", "accept", SENDER, RECEIVER]),
        2,
        "nothing to decide on",
    );
    fails(
        &btps(&data, &["trust", "list", "--status", "paused"]),
        2,
        "invalid --status \"paused\"",
    );

    // Inbox: the trust request, the document and the two prepared entries.
    let inbox = ok_json(&btps(&data, &["inbox", "list", RECEIVER, "--json"]));
    assert_eq!(inbox["total"], 4);
    let entries = inbox["entries"].as_array().unwrap();
    let first = entries
        .iter()
        .find(|entry| entry["artifactId"] == "note-0")
        .unwrap();
    let shown = btps(
        &data,
        &[
            "inbox",
            "show",
            &first["entryId"].as_u64().unwrap().to_string(),
        ],
    );
    assert_eq!(ok(&shown), "{\"id\":\"note-0\",  \"x\":1}");
    assert!(ok(&btps(&data, &["inbox", "list", RECEIVER])).contains("4 entries"));
    fails(
        &btps(&data, &["inbox", "show", "999"]),
        2,
        "no mailbox entry 999",
    );

    // Identities: add, list, show, rotate, DNS records.
    let added = ok_json(&btps(
        &data,
        &[
            "identity",
            "add",
            "pay$client.test",
            "--key-out",
            "keys",
            "--json",
        ],
    ));
    let key_file = temp.path().join(added["privateKeyFile"].as_str().unwrap());
    assert!(key_file.exists());
    let listed = ok_json(&btps(&data, &["identity", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 2);
    fails(
        &btps(&data, &["identity", "add", "pay$client.test"]),
        2,
        "already exists",
    );
    let rotated = ok_json(&btps(
        &data,
        &[
            "identity",
            "rotate-key",
            "pay$client.test",
            "--key-out",
            "keys",
            "--json",
        ],
    ));
    assert_eq!(rotated["selector"], "btps2");
    assert_eq!(rotated["previousSelector"], "btps1");
    assert_eq!(
        rotated["dns"][1]["value"],
        format!("v=1.0.0; u={}; s=btps2", server.address)
    );
    let shown = ok_json(&btps(
        &data,
        &["identity", "show", "pay$client.test", "--json"],
    ));
    assert_eq!(shown["currentSelector"], "btps2");
    assert_eq!(shown["publicKeys"].as_array().unwrap().len(), 2);
    let records = ok_json(&btps(
        &data,
        &[
            "identity",
            "dns-records",
            RECEIVER,
            "--host",
            "btps.client.test:4443",
            "--json",
        ],
    ));
    let finance = vector_key("finance").public_key().to_base64();
    assert_eq!(
        records["records"][0]["name"],
        "btps1._btps.identity.finance.client.test"
    );
    assert_eq!(records["records"][0]["value"], key_record_text(&finance));
    assert_eq!(
        records["records"][1]["value"],
        "v=1.0.0; u=btps.client.test:4443; s=btps1"
    );
    let server_key =
        PublicKey::from_pem(&std::fs::read_to_string(data.join("keys/server.pub.pem")).unwrap())
            .unwrap();
    assert_eq!(
        records["records"][2]["name"],
        "btps1._btps.identity.admin.client.test"
    );
    assert_eq!(
        records["records"][2]["value"],
        key_record_text(&server_key.to_base64())
    );

    // Check and backup of the live database; restore is refused.
    let checked = ok_json(&btps(&data, &["check", "--json"]));
    assert_eq!(checked["report"]["live"], true);
    assert_eq!(checked["report"]["identities"], 2);
    let backup = temp.path().join("backup.redb");
    let written = ok_json(&btps(
        &data,
        &["backup", "--out", backup.to_str().unwrap(), "--json"],
    ));
    assert_eq!(written["from"], "running server");
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing(&data);
    fails(
        &btps(&data, &["restore", backup.to_str().unwrap()]),
        2,
        "the server is running",
    );
    assert_eq!(
        listing(&data),
        before,
        "nothing was put in the data directory"
    );

    server.stop();
    assert!(!socket.exists(), "the socket file is removed at shutdown");
    // The backup holds what the running server had.
    let checked = ok_json(&btps(&data, &["check", backup.to_str().unwrap(), "--json"]));
    assert_eq!(checked["report"]["identities"], 2);
    assert_eq!(checked["report"]["trustOutbound"], 1);
    let store = RedbStore::open(&backup, &RedbOptions::default()).unwrap();
    let rotated = store
        .read(|s| s.identity_by_name("pay$client.test"))
        .unwrap()
        .unwrap();
    assert_eq!(rotated.current_selector, "btps2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_is_what_the_next_server_serves() {
    let dns = vector_dns();
    let temp = tempfile::tempdir().unwrap();
    let first = prepared(temp.path());
    let server = start(&first, &dns);
    let request = artifact(
        TransporterType::TrustRequest,
        SENDER,
        "billing",
        RECEIVER,
        TRUST_REQUEST,
    );
    assert!(server.send(&request).await.ok);
    ok(&btps(&first, &["trust", "accept", SENDER, RECEIVER]));
    let backup = temp.path().join("accepted.redb");
    ok(&btps(
        &first,
        &["backup", "--out", backup.to_str().unwrap()],
    ));
    server.stop();

    // A new machine: a data directory whose database knows nothing of the sender.
    let second = temp.path().join("second");
    let fresh = RedbStore::open_dir(&second, &RedbOptions::default()).unwrap();
    host(&fresh, RECEIVER, "finance");
    drop(fresh);
    let restored = ok(&btps(&second, &["restore", backup.to_str().unwrap()]));
    assert!(restored.contains("before-restore"), "{restored}");
    let kept: Vec<_> = std::fs::read_dir(&second)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("btps.redb.before-restore-"))
        .collect();
    assert_eq!(kept.len(), 1, "the replaced database is kept");

    let server = start(&second, &dns);
    let document = artifact(
        TransporterType::Document,
        SENDER,
        "billing",
        RECEIVER,
        &invoice("INV-R"),
    );
    let response = server.send(&document).await;
    assert!(
        response.ok,
        "the restored trust is honoured: {:?}",
        response.raw
    );
    let shown = ok_json(&btps(
        &second,
        &["trust", "show", SENDER, RECEIVER, "--json"],
    ));
    assert_eq!(shown["inbound"]["status"], "accepted");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced_and_a_live_one_is_never_taken_over() {
    let dns = vector_dns();
    let temp = tempfile::tempdir().unwrap();
    let data = prepared(temp.path());
    // A crashed server leaves its socket file behind: nobody answers on it.
    let socket = data.join("admin.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let server = start(&data, &dns);
    let listed = ok_json(&btps(&data, &["identity", "list", "--json"]));
    assert_eq!(listed[0]["identity"], RECEIVER);

    // A second server configured with the same socket refuses to start.
    let other = temp.path().join("other");
    let mut second = serve_command(&other, &dns, temp.path())
        .env("BTPS_ADMIN_SOCKET", &socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = (0..100)
        .find_map(|_| {
            let status = second.try_wait().unwrap();
            if status.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            status
        })
        .unwrap_or_else(|| {
            let _ = second.kill();
            panic!("the second server started on a live socket");
        });
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("another btps server answers"), "{stderr}");
    // The first server still answers on it.
    ok(&btps(&data, &["identity", "show", RECEIVER]));

    // A file that is not a socket is never replaced.
    let blocked = temp.path().join("blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join("admin.sock"), "keep me").unwrap();
    let output = serve_command(&blocked, &dns, temp.path())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a socket"));
    assert_eq!(
        std::fs::read_to_string(blocked.join("admin.sock")).unwrap(),
        "keep me"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_database_without_a_socket_is_explained() {
    let dns = vector_dns();
    let temp = tempfile::tempdir().unwrap();
    let data = prepared(temp.path());
    let server = start(&data, &dns);
    // The operator's configuration names another socket than the server's.
    let output = Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(["trust", "list", "--data-dir"])
        .arg(&data)
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_CONFIG")
        .env("BTPS_ADMIN_SOCKET", temp.path().join("elsewhere.sock"))
        .output()
        .unwrap();
    fails(
        &output,
        2,
        "the database is in use (is btps serve running?), and there is no admin socket at",
    );
    // A live database that cannot be reached is not checked, and says so.
    let output = Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(["check", "--data-dir"])
        .arg(&data)
        .env_remove("BTPS_CONFIG")
        .env("BTPS_ADMIN_SOCKET", temp.path().join("elsewhere.sock"))
        .output()
        .unwrap();
    fails(&output, 2, "it is in use by another process");
    server.stop();
}

/// One reply line read from a raw connection.
fn reply_line(reader: &mut impl BufRead) -> Value {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.ends_with('\n'), "{line:?}");
    serde_json::from_str(&line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_speaks_json_lines_and_refuses_what_is_not_a_request() {
    use btps::admin::operations::{AdminContext, AdminRequest, AdminResponse, execute};
    use btps::admin::socket::{AdminClient, AdminSocket, MAX_REQUEST_BYTES};
    use std::io::Write;

    let temp = tempfile::tempdir().unwrap();
    let data = prepared(temp.path());
    let store = RedbStore::open_dir(&data, &RedbOptions::default()).unwrap();
    let context = AdminContext::for_redb(store, btps::config::Config::defaults_under(&data));
    let path = data.join("admin.sock");
    let socket = AdminSocket::bind(&path, 0o640).unwrap();
    assert!(!socket.replaced_stale());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(socket.run(context.clone(), async move {
        let _ = stopped.await;
    }));

    let socket_path = path.clone();
    let direct = context.clone();
    tokio::task::spawn_blocking(move || {
        // Several requests on one connection, answered in order.
        let stream = std::os::unix::net::UnixStream::connect(&socket_path).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        writer
            .write_all(
                b"{\"op\":\"ping\"}\n{\"op\":\"identityShow\",\"identity\":\"FINANCE$client.test\"}\n",
            )
            .unwrap();
        let pong = reply_line(&mut reader);
        assert_eq!(pong["ok"], true);
        assert_eq!(pong["response"]["type"], "pong");
        let shown = reply_line(&mut reader);
        assert_eq!(shown["response"]["record"]["identity"], RECEIVER);
        // An error names what was wrong; the connection stays usable.
        writer
            .write_all(b"{\"op\":\"inboxShow\",\"entryId\":777}\n")
            .unwrap();
        let missing = reply_line(&mut reader);
        assert_eq!(missing["ok"], false);
        assert_eq!(missing["error"]["kind"], "notFound");
        assert_eq!(missing["error"]["message"], "no mailbox entry 777");
        // Not a request: a protocol error, then the server hangs up.
        writer.write_all(b"DROP TABLE trust\n").unwrap();
        let refused = reply_line(&mut reader);
        assert_eq!(refused["error"]["kind"], "protocol");
        let mut rest = String::new();
        assert_eq!(reader.read_line(&mut rest).unwrap(), 0);

        // An endless line is cut off at the limit.
        let stream = std::os::unix::net::UnixStream::connect(&socket_path).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let _ = writer.write_all(&vec![b'x'; MAX_REQUEST_BYTES + 10]);
        let long = reply_line(&mut reader);
        assert!(
            long["error"]["message"]
                .as_str()
                .unwrap()
                .contains("longer than"),
            "{long}"
        );

        // The client gets exactly what the direct call gets.
        let mut client = AdminClient::connect(&socket_path).unwrap();
        let request = AdminRequest::TrustList {
            outbound: true,
            receiver: None,
            sender: None,
            status: None,
            expiring_before: None,
            limit: 10,
            cursor: None,
        };
        let remote = client.call(&request).unwrap();
        assert!(matches!(remote, AdminResponse::TrustRecords { .. }));
        assert_eq!(remote, execute(&direct, request).unwrap());
        let mut copy = Vec::new();
        let bytes = client.backup(&mut copy).unwrap();
        assert_eq!(bytes, u64::try_from(copy.len()).unwrap());
        let file = socket_path.with_file_name("streamed.redb");
        std::fs::write(&file, &copy).unwrap();
        let report = btps::admin::operations::check_file(&file).unwrap();
        assert_eq!(report.identities, 1);
    })
    .await
    .unwrap();

    stop.send(()).unwrap();
    task.await.unwrap();
    assert!(!path.exists(), "removed at shutdown");
    // No copies are left in the data directory.
    let leftovers: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
