//! Crash campaign: `btps serve` as a child process under a load of signed documents
//! from several concurrent TLS clients, killed with SIGKILL at a random moment and
//! restarted on the same data directory, round after round. After every kill the
//! database file is opened and every document the server acknowledged must be in
//! the inbox, exactly once; documents sent again (acknowledged ones and those in
//! flight at the kill) are answered with success and never stored twice.
//!
//! Every fifth round also kills a server while it starts (opening and recovering
//! the file the last kill left).
//!
//! `a_short_crash_campaign` (30 rounds) runs with the suite;
//! `a_long_crash_campaign` (1,000 rounds, `BTPS_CRASH_ROUNDS` to change) is ignored
//! by default:
//!
//! ```text
//! cargo test --release --test main -- --ignored a_long_crash_campaign --nocapture
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use btps::client::{BtpsClient, ClientOptions};
use btps::protocol::TransporterType;
use btps::store::{Mailbox, Perspective, RedbOptions, RedbStore, TrustStatus};
use rand::Rng;
use rand::seq::SliceRandom;

use super::process::{Process, spawn_with_env, terminate};
use crate::util::server::{artifact_with_id, host, invoice, trust_record, vector_dns};

const RECEIVER: &str = "finance$client.test";
/// The senders (identity, vector key), each trusted by the receiver.
const SENDERS: [(&str, &str); 2] = [
    ("billing$vendor.test", "billing"),
    ("admin$vendor.test", "admin-vendor"),
];
/// Concurrent clients per round.
const CLIENTS: usize = 4;
/// Lines kept for sending again in later rounds.
const RESEND_POOL: usize = 512;
/// Lines each client sends again at the start of a round.
const RESENDS_PER_CLIENT: usize = 3;

/// A signed document line and what identifies it in the inbox.
#[derive(Clone)]
struct Sent {
    sender: &'static str,
    id: String,
    line: Arc<str>,
}

/// What the campaign has seen so far.
#[derive(Default)]
struct Ledger {
    /// (sender, artifact id) of every acknowledged document.
    acknowledged: BTreeSet<(String, String)>,
    /// (sender, artifact id) → entry id, for every inbox entry found so far.
    stored: BTreeMap<(String, String), u64>,
    /// The last entry id read from the inbox.
    cursor: u64,
    /// Lines to send again.
    pool: Vec<Sent>,
    resent: u64,
    resent_acknowledged: u64,
}

fn client_options() -> ClientOptions {
    ClientOptions {
        insecure: true,
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

/// One client's round: connects, sends `resend` again, then new documents until
/// the connection fails (the kill); returns every line it sent and whether each
/// was acknowledged.
async fn client_round(
    address: SocketAddr,
    round: usize,
    client: usize,
    resend: Vec<Sent>,
) -> Vec<(Sent, bool, bool)> {
    let mut outcomes = Vec::new();
    let Ok(mut connection) =
        BtpsClient::connect("127.0.0.1", address.port(), &client_options()).await
    else {
        return outcomes;
    };
    let (sender, key) = SENDERS[client % SENDERS.len()];
    let again = resend.into_iter().map(|sent| (sent, true));
    let fresh = (0..).map(|n| {
        let id = format!("r{round}-c{client}-{n}");
        let line = artifact_with_id(
            TransporterType::Document,
            sender,
            key,
            RECEIVER,
            &invoice(&id),
            Some(&id),
        );
        (
            Sent {
                sender,
                id,
                line: line.into(),
            },
            false,
        )
    });
    for (sent, resent) in again.chain(fresh) {
        match connection.request(&sent.line).await {
            Ok(response) => {
                assert!(
                    response.ok && response.req_id.as_deref() == Some(sent.id.as_str()),
                    "{} from {}: {:?}",
                    sent.id,
                    sent.sender,
                    response.raw
                );
                outcomes.push((sent, resent, true));
            }
            Err(_) => {
                // Killed: this one may or may not have been stored.
                outcomes.push((sent, resent, false));
                return outcomes;
            }
        }
    }
    outcomes
}

/// Reads the inbox entries added since the last round and checks the ledger:
/// nothing stored twice, every acknowledged document present, the count table in
/// step. With `full`, the open verifies every page checksum of the file too.
fn verify(database: &Path, ledger: &mut Ledger, full: bool) {
    let options = RedbOptions {
        check_integrity_on_open: full,
        ..RedbOptions::default()
    };
    let store = RedbStore::open(database, &options).unwrap();
    store
        .read(|snapshot| {
            loop {
                let entries = snapshot.inbox_after(ledger.cursor, 1000)?;
                let Some(last) = entries.last() else {
                    break;
                };
                ledger.cursor = last.entry_id;
                for entry in entries {
                    let key = (entry.from.clone(), entry.artifact_id.clone());
                    if let Some(first) = ledger.stored.insert(key, entry.entry_id) {
                        panic!(
                            "{} from {} stored twice: entries {first} and {}",
                            entry.artifact_id, entry.from, entry.entry_id
                        );
                    }
                }
            }
            let count = snapshot.mailbox_count(RECEIVER, Mailbox::Inbox)?;
            assert_eq!(count, ledger.stored.len() as u64, "the inbox count");
            Ok(())
        })
        .unwrap();
    let lost: Vec<_> = ledger
        .acknowledged
        .iter()
        .filter(|key| !ledger.stored.contains_key(*key))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged document(s) lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}

/// Runs `rounds` kill -9 rounds; prints the figures.
async fn campaign(rounds: usize) {
    let started = Instant::now();
    let dns = vector_dns();
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let database = data.join(btps::store::DATABASE_FILE_NAME);
    {
        let store = RedbStore::open_dir(&data, &RedbOptions::default()).unwrap();
        host(&store, RECEIVER, "finance");
        for (sender, key) in SENDERS {
            store
                .create_trust(
                    Perspective::Inbound,
                    trust_record(sender, RECEIVER, TrustStatus::Accepted, Some(key)),
                    None,
                )
                .unwrap();
        }
    }
    let dns_address = dns.local_addr().to_string();
    let args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--dns-server",
        &dns_address,
    ];
    let mut ledger = Ledger::default();
    let mut killed_with_traffic = 0usize;
    let mut killed_starting = 0usize;
    for round in 0..rounds {
        // Now and then a kill while the server starts: opening, recovering the file
        // the last kill left, binding.
        if round % 5 == 4 {
            kill_while_starting(&args, temp.path(), rand::thread_rng().gen_range(1..60));
            killed_starting += 1;
            verify(&database, &mut ledger, false);
        }
        let process = spawn_with_env(&args, temp.path(), &[]);
        let address = process.address;
        let mut rng = rand::thread_rng();
        let mut clients = Vec::new();
        for client in 0..CLIENTS {
            let resend: Vec<Sent> = ledger
                .pool
                .choose_multiple(&mut rng, RESENDS_PER_CLIENT)
                .cloned()
                .collect();
            clients.push(tokio::spawn(client_round(address, round, client, resend)));
        }
        // A random moment: during start-up work, mid-stream or between lines.
        let after = Duration::from_millis(rng.gen_range(20..400));
        tokio::time::sleep(after).await;
        kill(process);
        let mut outcomes = Vec::new();
        for client in clients {
            outcomes.extend(client.await.unwrap());
        }
        let mut acknowledged_now = 0;
        for (sent, resent, acknowledged) in outcomes {
            let key = (sent.sender.to_owned(), sent.id.clone());
            if resent {
                ledger.resent += 1;
                if acknowledged && ledger.acknowledged.contains(&key) {
                    ledger.resent_acknowledged += 1;
                }
            }
            if acknowledged {
                acknowledged_now += 1;
                ledger.acknowledged.insert(key);
            }
            if !resent {
                if ledger.pool.len() < RESEND_POOL {
                    ledger.pool.push(sent);
                } else {
                    let slot = rng.gen_range(0..RESEND_POOL);
                    ledger.pool[slot] = sent;
                }
            }
        }
        if acknowledged_now > 0 {
            killed_with_traffic += 1;
        }
        // Every page checksum now and then (the file grows with every round).
        verify(&database, &mut ledger, round % 25 == 0);
        if (round + 1) % 100 == 0 {
            eprintln!(
                "crash campaign: {} rounds, {} acknowledged, {} stored, {:.0} s",
                round + 1,
                ledger.acknowledged.len(),
                ledger.stored.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }

    // A last start: every document is sent again once more, then a clean stop.
    let process = spawn_with_env(&args, temp.path(), &[]);
    let pool = ledger.pool.clone();
    let mut connection =
        BtpsClient::connect("127.0.0.1", process.address.port(), &client_options())
            .await
            .unwrap();
    for sent in &pool {
        let response = connection.request(&sent.line).await.unwrap();
        assert!(response.ok, "{:?}", response.raw);
    }
    drop(connection);
    terminate(process);
    verify(&database, &mut ledger, true);
    assert!(RedbStore::check_file_integrity(&database).unwrap());
    assert!(
        killed_with_traffic * 2 >= rounds,
        "only {killed_with_traffic} of {rounds} rounds had acknowledged traffic when killed"
    );
    eprintln!(
        "crash campaign: {rounds} kill -9 rounds under load ({killed_with_traffic} with acknowledged traffic) \
         and {killed_starting} kills while starting, in {:.1} s; \
         {} acknowledged documents checked, 0 lost; {} inbox entries, none twice; \
         {} lines sent again ({} of them acknowledged before), {} more at the end",
        started.elapsed().as_secs_f64(),
        ledger.acknowledged.len(),
        ledger.stored.len(),
        ledger.resent,
        ledger.resent_acknowledged,
        pool.len(),
    );
}

/// Starts `btps serve` and kills it `after_ms` later, whether it listens yet or not.
fn kill_while_starting(args: &[&str], cwd: &Path, after_ms: u64) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_btps"))
        .arg("serve")
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env_remove("BTPS_DATA_DIR")
        // `args` names the listen address too; an ephemeral port in any case.
        .env("BTPS_LISTEN", "127.0.0.1:0")
        .env("BTPS_HTTP_LISTEN", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(after_ms));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// SIGKILL, and wait until the process is gone (its file lock with it).
fn kill(mut process: Process) {
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_crash_campaign() {
    campaign(30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: 1,000 kill -9 rounds; run with --ignored (BTPS_CRASH_ROUNDS to change)"]
async fn a_long_crash_campaign() {
    let rounds = std::env::var("BTPS_CRASH_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(1000);
    campaign(rounds).await;
}
