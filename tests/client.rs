//! The listener TLS configuration (`server::tls`), the BTPS client and `btps send`,
//! against small loopback TLS servers built from `server_config` with the
//! certificate a fresh data directory gets, and a real DNS server on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use btps::client::{BtpsClient, ClientError, ClientOptions, discover};
use btps::config::{Config, DomainSettings, TlsVersion};
use btps::crypto::{PrivateKey, PublicKey};
use btps::identity::Identity;
use btps::identity::dns::{
    CacheConfig, CachingResolver, HickoryTxtResolver, KeyDirectory, KeyLookupError, ResolverOptions,
};
use btps::identity::responder::DnsResponder;
use btps::protocol::response::{error as error_response, success, to_line};
use btps::protocol::{Artifact, ErrorCode, ProtocolError};
use btps::server::{bootstrap, tls};
use btps::signing::{StaticKeys, decrypt_document, verify_transporter};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::util::server::vector_dns;
use crate::util::{vector_json, vector_text, vectors_dir};

/// A data directory prepared by the bootstrap: its certificate is what the test
/// servers present.
struct TlsFiles {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn tls_files() -> TlsFiles {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults_under(&dir.path().join("data"));
    config.domains.push(DomainSettings {
        name: "ebill.example".to_owned(),
        signer: Identity::parse("admin$ebill.example").unwrap(),
    });
    bootstrap::prepare(&config).unwrap();
    TlsFiles {
        cert: config.tls.cert_path.clone(),
        key: config.tls.key_path.clone(),
        _dir: dir,
    }
}

/// What a test server does with one received line.
enum Reply {
    /// Write these bytes.
    Bytes(Vec<u8>),
    /// Write nothing and keep reading.
    Nothing,
    /// Close the connection.
    Close,
    /// Write the first bytes, wait, then write the rest.
    Slowly(Vec<u8>, Duration, Vec<u8>),
}

type Behaviour = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// A loopback TLS server: every received line (without its LF) is recorded and
/// answered as `behaviour` says.
struct TestServer {
    address: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

async fn start_server(config: rustls::ServerConfig, behaviour: Behaviour) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(listener, config, behaviour)
}

fn serve(listener: TcpListener, config: rustls::ServerConfig, behaviour: Behaviour) -> TestServer {
    let address = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let recorded = lines.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let behaviour = behaviour.clone();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                // A failed handshake is what some tests expect; it just ends here.
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut stream = BufReader::new(stream);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match stream.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line))
                        .into_owned();
                    recorded.lock().unwrap().push(text.clone());
                    let writer = stream.get_mut();
                    match behaviour(&text) {
                        Reply::Bytes(bytes) => {
                            if writer.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        Reply::Nothing => {}
                        Reply::Close => {
                            let _ = writer.shutdown().await;
                            return;
                        }
                        Reply::Slowly(first, pause, rest) => {
                            let _ = writer.write_all(&first).await;
                            let _ = writer.flush().await;
                            tokio::time::sleep(pause).await;
                            let _ = writer.write_all(&rest).await;
                        }
                    }
                    let _ = writer.flush().await;
                }
            });
        }
    });
    TestServer { address, lines }
}

fn echo() -> Behaviour {
    Arc::new(|line| Reply::Bytes(format!("{line}\n").into_bytes()))
}

/// Answers every artifact line with a success response carrying its id.
fn canned_success() -> Behaviour {
    Arc::new(|line| {
        let id = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|value| value["id"].as_str().map(str::to_owned));
        Reply::Bytes(to_line(&success("success", id.as_deref())).into_bytes())
    })
}

fn options_trusting(files: &TlsFiles) -> ClientOptions {
    ClientOptions {
        ca_file: Some(files.cert.clone()),
        ..ClientOptions::default()
    }
}

async fn server_with(files: &TlsFiles, version: TlsVersion, behaviour: Behaviour) -> TestServer {
    start_server(
        tls::server_config(&files.cert, &files.key, version).unwrap(),
        behaviour,
    )
    .await
}

// ---------------------------------------------------------------------------------
// server::tls
// ---------------------------------------------------------------------------------

/// A client that speaks only TLS 1.2 and trusts the test certificate.
fn tls12_only_client(files: &TlsFiles) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in tls::load_certificates(&files.cert).unwrap() {
        roots.add(certificate).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn tls12_is_accepted_only_when_configured() {
    let files = tls_files();
    let name = || rustls::pki_types::ServerName::try_from("localhost").unwrap();

    let with_tls12 = server_with(&files, TlsVersion::Tls12, echo()).await;
    let tcp = TcpStream::connect(with_tls12.address).await.unwrap();
    let mut stream = tls12_only_client(&files)
        .connect(name(), tcp)
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    stream.write_all(b"over tls 1.2\n").await.unwrap();
    let mut answer = String::new();
    BufReader::new(&mut stream)
        .read_line(&mut answer)
        .await
        .unwrap();
    assert_eq!(answer, "over tls 1.2\n");

    // A modern client still gets TLS 1.3 from the same server.
    let mut client = BtpsClient::connect(
        "localhost",
        with_tls12.address.port(),
        &options_trusting(&files),
    )
    .await
    .unwrap();
    client.send_line("x").await.unwrap();
    assert_eq!(client.read_line().await.unwrap().as_deref(), Some("x"));

    let default = server_with(&files, TlsVersion::Tls13, echo()).await;
    let tcp = TcpStream::connect(default.address).await.unwrap();
    let refused = tls12_only_client(&files).connect(name(), tcp).await;
    assert!(
        refused.is_err(),
        "a TLS 1.3-only server accepted a TLS 1.2 client"
    );
    assert!(default.lines.lock().unwrap().is_empty());
}

#[test]
fn server_config_names_the_bad_file() {
    let files = tls_files();
    let missing = files.cert.with_file_name("missing.pem");
    let error = tls::server_config(&missing, &files.key, TlsVersion::Tls13).unwrap_err();
    assert!(error.to_string().contains("missing.pem"), "{error}");
    // A key that does not belong to the certificate.
    let dir = tempfile::tempdir().unwrap();
    let other_key = dir.path().join("other.key.pem");
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(&other_key, pair.serialize_pem()).unwrap();
    let error = tls::server_config(&files.cert, &other_key, TlsVersion::Tls13).unwrap_err();
    assert!(matches!(error, tls::TlsError::Rejected { .. }), "{error}");
    // The certificate file given as the key: no key in it.
    let error = tls::server_config(&files.cert, &files.cert, TlsVersion::Tls13).unwrap_err();
    assert!(matches!(error, tls::TlsError::PrivateKey { .. }), "{error}");
}

#[tokio::test]
async fn an_in_memory_self_signed_certificate_serves() {
    let config = tls::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let server = start_server(Arc::unwrap_or_clone(config), echo()).await;
    let port = server.address.port();
    // No CA vouches for it: a verifying client refuses it, an insecure one talks.
    let verifying = BtpsClient::connect("127.0.0.1", port, &ClientOptions::default()).await;
    assert!(verifying.is_err(), "a self-signed certificate was verified");
    let insecure = ClientOptions {
        insecure: true,
        ..ClientOptions::default()
    };
    let mut client = BtpsClient::connect("127.0.0.1", port, &insecure)
        .await
        .unwrap();
    client.send_line("hello").await.unwrap();
    assert_eq!(client.read_line().await.unwrap().as_deref(), Some("hello"));
}

// ---------------------------------------------------------------------------------
// BtpsClient
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn lines_go_out_and_come_back() {
    let files = tls_files();
    let server = server_with(&files, TlsVersion::Tls13, echo()).await;
    // Verified against the certificate, for its IP address name.
    let mut client = BtpsClient::connect(
        "127.0.0.1",
        server.address.port(),
        &options_trusting(&files),
    )
    .await
    .unwrap();
    client.send_line("first").await.unwrap();
    assert_eq!(client.read_line().await.unwrap().as_deref(), Some("first"));
    // Two lines in one write, one with CRLF: both come back, CR removed.
    client.send_raw(b"second\r\nthird\n").await.unwrap();
    assert_eq!(client.read_line().await.unwrap().as_deref(), Some("second"));
    assert_eq!(client.read_line().await.unwrap().as_deref(), Some("third"));
    client.close().await.unwrap();
    assert_eq!(
        *server.lines.lock().unwrap(),
        ["first", "second\r", "third"]
    );
}

#[tokio::test]
async fn the_certificate_is_verified_unless_insecure() {
    let files = tls_files();
    let server = server_with(&files, TlsVersion::Tls13, echo()).await;
    let port = server.address.port();

    // System roots only: the self-signed certificate is refused.
    let error = BtpsClient::connect("127.0.0.1", port, &ClientOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Handshake { .. } | ClientError::NoTrustedRoots
        ),
        "{error}"
    );
    // Trusted, but for a name the certificate does not carry.
    let wrong_name = ClientOptions {
        server_name: Some("other.example".to_owned()),
        ..options_trusting(&files)
    };
    let error = BtpsClient::connect("127.0.0.1", port, &wrong_name)
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Handshake { .. }), "{error}");
    // The hosted domain is one of its names.
    let hosted = ClientOptions {
        server_name: Some("ebill.example".to_owned()),
        ..options_trusting(&files)
    };
    BtpsClient::connect("127.0.0.1", port, &hosted)
        .await
        .unwrap();
    // --insecure accepts it as it is.
    let insecure = ClientOptions {
        insecure: true,
        ..ClientOptions::default()
    };
    let mut client = BtpsClient::connect("localhost", port, &insecure)
        .await
        .unwrap();
    client.send_line("ok").await.unwrap();
    assert_eq!(client.read_line().await.unwrap().as_deref(), Some("ok"));
}

#[tokio::test]
async fn reading_times_out_and_keeps_what_arrived() {
    let files = tls_files();
    let server = server_with(
        &files,
        TlsVersion::Tls13,
        Arc::new(|line| match line {
            "silent" => Reply::Nothing,
            _ => Reply::Slowly(
                b"par".to_vec(),
                // Far beyond the client's 300 ms, so that a loaded machine cannot
                // deliver the rest before the client's read times out.
                Duration::from_millis(2000),
                b"tial\n".to_vec(),
            ),
        }),
    )
    .await;
    let options = ClientOptions {
        timeout: Duration::from_millis(300),
        ..options_trusting(&files)
    };
    let mut client = BtpsClient::connect("127.0.0.1", server.address.port(), &options)
        .await
        .unwrap();
    client.send_line("silent").await.unwrap();
    let started = Instant::now();
    let error = client.read_line().await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(3));

    client.send_line("slow").await.unwrap();
    // "par" arrives, then the wait outlasts the timeout ...
    let error = client.read_line().await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    // ... and later reads finish the same line (more timeouts may come first while
    // the rest is still on its way).
    let mut finished = None;
    for _ in 0..30 {
        match client.read_line().await {
            Ok(line) => {
                finished = line;
                break;
            }
            Err(ClientError::Timeout { .. }) => continue,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(finished.as_deref(), Some("partial"));
}

#[tokio::test]
async fn end_of_stream_and_overlong_lines() {
    let files = tls_files();
    let server = server_with(
        &files,
        TlsVersion::Tls13,
        Arc::new(|line| match line {
            "long" => Reply::Bytes(vec![b'x'; 5000]),
            _ => Reply::Close,
        }),
    )
    .await;
    let options = ClientOptions {
        max_response_bytes: 1000,
        ..options_trusting(&files)
    };
    let mut client = BtpsClient::connect("127.0.0.1", server.address.port(), &options)
        .await
        .unwrap();
    client.send_line("long").await.unwrap();
    let error = client.read_line().await.unwrap_err();
    assert!(
        matches!(error, ClientError::LineTooLong { limit: 1000 }),
        "{error}"
    );

    let mut client = BtpsClient::connect("127.0.0.1", server.address.port(), &options)
        .await
        .unwrap();
    client.send_line("bye").await.unwrap();
    assert_eq!(client.read_line().await.unwrap(), None);

    let mut client = BtpsClient::connect("127.0.0.1", server.address.port(), &options)
        .await
        .unwrap();
    let error = client.request("bye").await.unwrap_err();
    assert!(matches!(error, ClientError::Closed), "{error}");
}

#[tokio::test]
async fn request_parses_the_response() {
    let files = tls_files();
    let server = server_with(&files, TlsVersion::Tls13, canned_success()).await;
    let mut client = BtpsClient::connect(
        "127.0.0.1",
        server.address.port(),
        &options_trusting(&files),
    )
    .await
    .unwrap();
    let response = client.request(r#"{"id":"r-1"}"#).await.unwrap();
    assert!(response.ok);
    assert_eq!(response.req_id.as_deref(), Some("r-1"));
    assert_eq!(response.message.as_deref(), Some("success"));
    // A line that is not a response.
    let echo_server = server_with(&files, TlsVersion::Tls13, echo()).await;
    let mut client = BtpsClient::connect(
        "127.0.0.1",
        echo_server.address.port(),
        &options_trusting(&files),
    )
    .await
    .unwrap();
    let error = client.request("{}").await.unwrap_err();
    assert!(matches!(error, ClientError::InvalidResponse(_)), "{error}");
}

/// Host records write IPv6 literals in brackets; the client connects to them and
/// verifies the certificate for the address.
#[tokio::test]
async fn an_ipv6_literal_in_brackets_is_reachable() {
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        eprintln!("no IPv6 loopback on this machine; skipped");
        return;
    };
    let files = tls_files();
    let config = tls::server_config(&files.cert, &files.key, TlsVersion::Tls13).unwrap();
    let server = serve(listener, config, echo());
    let mut client = BtpsClient::connect("[::1]", server.address.port(), &options_trusting(&files))
        .await
        .unwrap();
    client.send_line("v6").await.unwrap();
    assert_eq!(client.read_line().await.unwrap().as_deref(), Some("v6"));
}

#[tokio::test]
async fn connecting_to_a_closed_port_fails_quickly() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let error = BtpsClient::connect("127.0.0.1", port, &ClientOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Connect { .. }), "{error}");
}

// ---------------------------------------------------------------------------------
// discover
// ---------------------------------------------------------------------------------

fn directory(dns: &DnsResponder) -> KeyDirectory {
    let resolver = HickoryTxtResolver::with_name_servers(
        &[dns.local_addr()],
        ResolverOptions {
            timeout: Duration::from_millis(500),
            attempts: 1,
        },
    );
    KeyDirectory::new(Arc::new(CachingResolver::new(
        resolver,
        CacheConfig::default(),
    )))
}

#[tokio::test]
async fn discover_reads_the_receivers_host_record() {
    let dns = DnsResponder::start("127.0.0.1:0".parse().unwrap()).unwrap();
    dns.publish_host("client.test", "btps.client.test:4443", "btps2");
    dns.publish_host("plain.test", "btps://plain.test", "s1");
    let directory = directory(&dns);

    let receiver = Identity::parse("finance$client.test").unwrap();
    let host = discover(&directory, &receiver).await.unwrap();
    assert_eq!(host.host, "btps.client.test");
    assert_eq!(host.port, 4443);
    assert_eq!(host.selector, "btps2");

    let plain = discover(&directory, &Identity::parse("a$plain.test").unwrap())
        .await
        .unwrap();
    assert_eq!(
        (plain.host.as_str(), plain.port),
        ("plain.test", btps::identity::dns::DEFAULT_BTPS_PORT)
    );

    let missing = Identity::parse("x$nowhere.test").unwrap();
    match discover(&directory, &missing).await.unwrap_err() {
        ClientError::Discovery { identity, source } => {
            assert_eq!(identity, missing);
            assert!(
                matches!(source, KeyLookupError::NotFound { .. }),
                "{source}"
            );
        }
        other => panic!("{other}"),
    }
}

// ---------------------------------------------------------------------------------
// btps send
// ---------------------------------------------------------------------------------

/// The document of a vector artifact, written to a file.
fn vector_document(dir: &Path, vector: &str) -> PathBuf {
    let line = vector_json(vector)["artifact"].as_str().unwrap().to_owned();
    let artifact: serde_json::Value = serde_json::from_str(&line).unwrap();
    let path = dir.join("document.json");
    std::fs::write(&path, artifact["document"].to_string()).unwrap();
    path
}

async fn run_btps(args: &[String]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(args)
        .output()
        .await
        .unwrap()
}

fn key_file(name: &str) -> String {
    vectors_dir().join("keys").join(name).display().to_string()
}

/// Verifies a recorded line as a receiving server would, with the vector keys.
async fn verify_recorded(line: &str) -> btps::protocol::TransporterArtifact {
    let Some(Artifact::Transporter(artifact)) =
        btps::protocol::parse_line(line.as_bytes()).unwrap()
    else {
        panic!("not a transporter: {line}");
    };
    let mut keys = StaticKeys::new();
    for (identity, file) in [
        ("billing$vendor.test", "billing.pub.pem"),
        ("admin$vendor.test", "admin-vendor.pub.pem"),
    ] {
        keys.insert(
            &Identity::parse(identity).unwrap(),
            "btps1",
            PublicKey::from_pem(&vector_text(&format!("keys/{file}"))).unwrap(),
        );
    }
    verify_transporter(&artifact, &keys).await.unwrap();
    artifact
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btps_send_discovers_signs_and_prints_the_response() {
    let files = tls_files();
    let server = server_with(&files, TlsVersion::Tls13, canned_success()).await;
    let dns = vector_dns();
    dns.publish_host("client.test", &server.address.to_string(), "btps1");
    let dir = tempfile::tempdir().unwrap();
    let document = vector_document(dir.path(), "signed/btps-doc.json");

    let base = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "send",
            "--direct",
            "--from",
            "billing$vendor.test",
            "--key",
            &key_file("billing.key.pem"),
            "--to",
            "finance$client.test",
            "--type",
            "BTPS_DOC",
            "--document",
            &document.display().to_string(),
            "--dns-server",
            &dns.local_addr().to_string(),
            "--insecure",
        ]
        .iter()
        .map(|text| (*text).to_owned())
        .collect();
        args.extend(extra.iter().map(|text| (*text).to_owned()));
        args
    };

    // Plain: found through DNS, signed, answered.
    let output = run_btps(&base(&[])).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let recorded = server.lines.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1);
    let artifact = verify_recorded(&recorded[0]).await;
    assert!(artifact.encryption.is_none());
    let expected_document =
        btps::protocol::json::parse(&std::fs::read_to_string(&document).unwrap()).unwrap();
    assert_eq!(artifact.document(), &expected_document);
    // The printed line is the server's answer to this artifact.
    let response = btps::protocol::response::parse_response(stdout.trim_end()).unwrap();
    assert!(response.ok);
    assert_eq!(response.req_id.as_deref(), Some(artifact.id.as_str()));

    // Encrypted to the receiver's key from DNS: only finance's private key opens it.
    let output = run_btps(&base(&["--encrypt"])).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let recorded = server.lines.lock().unwrap()[1].clone();
    let artifact = verify_recorded(&recorded).await;
    let encryption = artifact.encryption.as_ref().expect("encrypted");
    let ciphertext = artifact.document().as_str().unwrap();
    let finance = PrivateKey::from_pem(&vector_text("keys/finance.key.pem")).unwrap();
    assert_eq!(
        decrypt_document(ciphertext, encryption, &finance).unwrap(),
        expected_document
    );
    let old_finance = PrivateKey::from_pem(&vector_text("keys/finance-old.key.pem")).unwrap();
    assert!(decrypt_document(ciphertext, encryption, &old_finance).is_err());

    // --receiver-selector picks another published key of the receiver.
    let output = run_btps(&base(&["--encrypt", "--receiver-selector", "btps0"])).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let recorded = server.lines.lock().unwrap()[2].clone();
    let artifact = verify_recorded(&recorded).await;
    let ciphertext = artifact.document().as_str().unwrap();
    let encryption = artifact.encryption.as_ref().unwrap();
    assert!(decrypt_document(ciphertext, encryption, &old_finance).is_ok());

    // Without --insecure the self-signed certificate is refused: exit 2, nothing sent.
    let mut args = base(&[]);
    args.retain(|arg| arg != "--insecure");
    let output = run_btps(&args).await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(server.lines.lock().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btps_send_with_a_fixed_host_and_a_refusal() {
    let files = tls_files();
    let refusing = server_with(
        &files,
        TlsVersion::Tls12,
        Arc::new(|line| {
            let id = serde_json::from_str::<serde_json::Value>(line).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let error = ProtocolError::new(ErrorCode::TrustNotAllowed, "test refusal");
            Reply::Bytes(to_line(&error_response(&error, Some(&id))).into_bytes())
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let document = vector_document(dir.path(), "signed/trust-req.json");
    let args: Vec<String> = [
        "send",
        "--from",
        "admin$vendor.test",
        "--key",
        &key_file("admin-vendor.key.pem"),
        "--to",
        "finance$client.test",
        "--type",
        "TRUST_REQ",
        "--document",
        &document.display().to_string(),
        "--host",
        &format!("btps://localhost:{}", refusing.address.port()),
        "--ca-file",
        &files.cert.display().to_string(),
    ]
    .iter()
    .map(|text| (*text).to_owned())
    .collect();
    let output = run_btps(&args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let response = btps::protocol::response::parse_response(stdout.trim_end()).unwrap();
    assert!(!response.ok);
    let recorded = refusing.lines.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1);
    let artifact = verify_recorded(&recorded[0]).await;
    assert_eq!(artifact.kind, btps::protocol::TransporterType::TrustRequest);
    assert_eq!(response.req_id.as_deref(), Some(artifact.id.as_str()));

    // Nobody listening: exit 2.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut args = args;
    let host = args.iter().position(|arg| arg == "--host").unwrap() + 1;
    args[host] = format!("127.0.0.1:{port}");
    let output = run_btps(&args).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("connecting"));
}
