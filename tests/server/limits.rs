//! Slow and greedy clients: a line that trickles in is cut off at the line timeout,
//! and one address cannot take every connection slot.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use btps::client::{ClientOptions, client_config};
use btps::protocol::response::parse_response;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::util::server::{TestOptions, TestServer};

const PING: &str =
    r#"{"version":"1.0.0","id":"ping","issuedAt":"2025-01-15T10:30:00.000Z","action":"PING"}"#;

/// A TLS connection to `server` from the loopback address `from`.
pub(super) async fn connect_from(
    from: IpAddr,
    server: SocketAddr,
) -> TlsStream<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let tcp = socket.connect(server).await.unwrap();
    let options = ClientOptions {
        insecure: true,
        ..ClientOptions::default()
    };
    let connector = TlsConnector::from(client_config(&options).unwrap());
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads one line, or `None` at the end of the stream.
async fn read_line(stream: &mut BufReader<TlsStream<tokio::net::TcpStream>>) -> Option<String> {
    let mut line = String::new();
    match stream.read_line(&mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

type Connection = BufReader<TlsStream<tokio::net::TcpStream>>;

/// Sends a PING on `stream`; whether it was answered with success.
async fn pinged(stream: &mut Connection) -> bool {
    stream
        .get_mut()
        .write_all(format!("{PING}\n").as_bytes())
        .await
        .unwrap();
    parse_response(&read_line(stream).await.unwrap())
        .unwrap()
        .ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_line_is_cut_off_at_the_line_timeout() {
    let server = TestServer::start(TestOptions {
        line_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(30),
        ..TestOptions::default()
    })
    .await;
    let stream = connect_from("127.0.0.1".parse().unwrap(), server.address).await;
    let (reader, mut writer) = tokio::io::split(stream);
    let started = Instant::now();
    // One byte every 100 ms, never a newline: each byte would restart the idle timer.
    let trickle = tokio::spawn(async move {
        for byte in PING.bytes().cycle().take(200) {
            if writer.write_all(&[byte]).await.is_err() || writer.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut reader = tokio::io::BufReader::new(reader);
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut answer))
        .await
        .expect("the server answers a trickling line within the line timeout");
    assert!(read.unwrap() > 0);
    let response = parse_response(&answer).unwrap();
    assert!(!response.ok);
    assert_eq!(
        response.reason.as_deref(),
        Some("line not completed in time")
    );
    let mut rest = String::new();
    assert_eq!(
        reader.read_line(&mut rest).await.unwrap_or(0),
        0,
        "then it closes"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    trickle.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection_slot() {
    let server = TestServer::start(TestOptions {
        max_connections_per_ip: 3,
        ..TestOptions::default()
    })
    .await;
    let greedy: IpAddr = "127.0.0.1".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = BufReader::new(connect_from(greedy, server.address).await);
        // Each of the three is served.
        assert!(pinged(&mut stream).await);
        held.push(stream);
    }
    let mut fourth = BufReader::new(connect_from(greedy, server.address).await);
    let refusal = parse_response(&read_line(&mut fourth).await.unwrap()).unwrap();
    assert!(!refusal.ok);
    assert_eq!(refusal.message.as_deref(), Some("Too many connections"));
    assert_eq!(
        refusal.reason.as_deref(),
        Some("too many connections from this address")
    );
    assert!(read_line(&mut fourth).await.is_none(), "and closed");

    // Another address is served meanwhile.
    let mut other =
        BufReader::new(connect_from("127.0.0.2".parse().unwrap(), server.address).await);
    assert!(pinged(&mut other).await);

    // A slot given back is taken again.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut stream = BufReader::new(connect_from(greedy, server.address).await);
        stream
            .get_mut()
            .write_all(format!("{PING}\n").as_bytes())
            .await
            .unwrap();
        let line = read_line(&mut stream).await.unwrap();
        if parse_response(&line).unwrap().ok {
            again = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the freed slot is usable");
    server.stop().await;
}

/// The trickle siege of the hardening target, against a `btps serve` process:
/// 2,000 connections from 40 loopback addresses each sending one byte a second and
/// never a newline, while a good client pings from another address. Prints one JSON
/// line of figures. Run with `cargo test --release -- --ignored trickle_siege
/// --nocapture`.
#[test]
#[ignore = "a load run of about 30 s; run by hand"]
fn trickle_siege() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(siege());
}

async fn siege() {
    const ADDRESSES: u8 = 40;
    const PER_ADDRESS: usize = 50;
    const LINE_TIMEOUT_MS: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let process = super::process::spawn_with_env(
        &["--data-dir", data, "--listen", "127.0.0.1:0"],
        dir.path(),
        &[("BTPS_LINE_TIMEOUT_MS", "5000")],
    );
    let server = process.address;
    let pid = process.child.id();
    let opened = Instant::now();
    let mut tricklers = tokio::task::JoinSet::new();
    for address in 0..ADDRESSES {
        let from: IpAddr = format!("127.0.1.{}", 10 + address).parse().unwrap();
        for _ in 0..PER_ADDRESS {
            let stream = connect_from(from, server).await;
            tricklers.spawn(async move {
                let (reader, mut writer) = tokio::io::split(stream);
                let started = Instant::now();
                let writing = tokio::spawn(async move {
                    for byte in PING.bytes().cycle().take(60) {
                        if writer.write_all(&[byte]).await.is_err() {
                            break;
                        }
                        let _ = writer.flush().await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                });
                let mut reader = tokio::io::BufReader::new(reader);
                let mut sink = String::new();
                while matches!(reader.read_line(&mut sink).await, Ok(n) if n > 0) {}
                writing.abort();
                started.elapsed()
            });
        }
    }
    let open_ms = opened.elapsed().as_millis();
    let rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    // The good client, while the tricklers are open.
    let mut pings = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let mut good = BufReader::new(connect_from("127.0.0.2".parse().unwrap(), server).await);
        good.get_mut()
            .write_all(format!("{PING}\n").as_bytes())
            .await
            .unwrap();
        let answer = read_line(&mut good).await.unwrap();
        assert!(parse_response(&answer).unwrap().ok);
        pings.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut closes = Vec::new();
    while let Some(closed) = tricklers.join_next().await {
        closes.push(closed.unwrap().as_secs_f64() * 1000.0);
    }
    super::process::terminate(process);
    pings.sort_by(f64::total_cmp);
    closes.sort_by(f64::total_cmp);
    let connections = usize::from(ADDRESSES) * PER_ADDRESS;
    println!(
        "{{\"connections\":{connections},\"addresses\":{ADDRESSES},\"opened_ms\":{open_ms},\"server_rss_kb_while_open\":{rss_kb},\"ping_ms_min\":{:.1},\"ping_ms_max\":{:.1},\"line_timeout_ms\":{LINE_TIMEOUT_MS},\"close_ms_min\":{:.0},\"close_ms_max\":{:.0}}}",
        pings[0],
        pings[pings.len() - 1],
        closes[0],
        closes[closes.len() - 1],
    );
    assert!(
        pings[pings.len() - 1] < 1000.0,
        "a good client waited {pings:?} ms"
    );
    assert!(
        closes[closes.len() - 1] < (LINE_TIMEOUT_MS + 2000) as f64,
        "a trickler stayed open {} ms",
        closes[closes.len() - 1]
    );
}
