//! A full disk: a server whose data directory is on a small tmpfs answers documents
//! with a temporary error while writes fail (nothing acknowledged), `/readyz` says
//! why, and as soon as space is freed the next document is stored — no restart —
//! and `/readyz` is ready again. Every document acknowledged before is kept, and
//! the file passes `btps check` after the server stopped.
//!
//! Mounting needs root (CI runs as root). Without it the test is skipped with a
//! message, except under CI (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use btps::http::{HttpState, router};
use btps::protocol::TransporterType;
use btps::protocol::response::ServerResponse;
use btps::store::{Mailbox, PageRequest, Perspective, REOPEN_INTERVAL, TrustStatus};
use tower::ServiceExt;

use crate::util::server::{
    TestOptions, TestServer, artifact_with_id, invoice, trust_record, vector_dns,
};

const SENDER: &str = "billing$vendor.test";
const RECEIVER: &str = "finance$client.test";
const TEMPORARY_REASON: &str = "storage temporarily unavailable: no space left on device";

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    mount_point: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "24m"); `None` (with a message) when this
    /// process may not mount, unless `CI` is set, where that is a failure.
    fn mount(size: &str) -> Option<Tmpfs> {
        let mount_point = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("tmpfs")
            .arg(mount_point.path())
            .output();
        let failure = match output {
            Ok(output) if output.status.success() => return Some(Tmpfs { mount_point }),
            Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            Err(error) => error.to_string(),
        };
        let message =
            format!("cannot mount a tmpfs for the disk-full test (it needs root): {failure}");
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("skipped: {message}");
        None
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.mount_point.path())
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // Something still holds it: detach it now, the kernel frees it later.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.mount_point.path())
                .status();
        }
    }
}

/// Writes a file until the file system is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
        let bytes = vec![0x42u8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
    let _ = file.sync_all();
    path
}

/// One HTTP request through the router: (status, body).
async fn readyz(state: &HttpState) -> (StatusCode, String) {
    let response = router(state.clone())
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Sends invoice `id` on a new connection.
async fn send(server: &TestServer, id: &str) -> ServerResponse {
    let line = artifact_with_id(
        TransporterType::Document,
        SENDER,
        "billing",
        RECEIVER,
        &invoice(id),
        Some(id),
    );
    server.send(&line).await
}

/// The refusal a sender must take as temporary: "Unknown error" (500) with the
/// request's id and the precise reason.
fn assert_temporary(response: &ServerResponse, id: &str) {
    assert!(!response.ok, "{:?}", response.raw);
    assert_eq!(response.code, 500.0, "{:?}", response.raw);
    assert_eq!(
        response.message.as_deref(),
        Some("Unknown error"),
        "{:?}",
        response.raw
    );
    assert_eq!(response.req_id.as_deref(), Some(id), "{:?}", response.raw);
    assert_eq!(
        response.reason.as_deref(),
        Some(TEMPORARY_REASON),
        "{:?}",
        response.raw
    );
}

/// Sends documents until one is refused; returns the ids acknowledged before it
/// and the refused id.
async fn send_until_refused(
    server: &TestServer,
    round: &str,
    acknowledged: &mut Vec<String>,
) -> String {
    for n in 0..5000 {
        let id = format!("{round}-{n}");
        let response = send(server, &id).await;
        if response.ok {
            acknowledged.push(id);
            continue;
        }
        assert_temporary(&response, &id);
        return id;
    }
    panic!("the disk never filled up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_documents_temporarily_and_recovers_when_space_returns() {
    let Some(tmpfs) = Tmpfs::mount("24m") else {
        return;
    };
    let data = tmpfs.path().join("data");
    let server = TestServer::start_in(&data, Arc::new(vector_dns()), TestOptions::default()).await;
    server
        .store
        .create_trust(
            Perspective::Inbound,
            trust_record(SENDER, RECEIVER, TrustStatus::Accepted, Some("billing")),
            None,
        )
        .unwrap();
    let http = HttpState::new(
        Arc::new(server.store.clone()),
        Arc::clone(&server.stats),
        btps::metrics::install(),
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while readyz(&http).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let id = format!("before-{n}");
        assert!(send(&server, &id).await.ok);
        acknowledged.push(id);
    }

    // Round 1: the disk fills; documents are refused with a temporary error.
    let filler = fill(tmpfs.path());
    let refused = send_until_refused(&server, "full-1", &mut acknowledged).await;
    let (status, body) = readyz(&http).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains(TEMPORARY_REASON), "{body}");
    // While the disk stays full, every document is refused the same way, at once.
    for n in 0..3 {
        let id = format!("still-full-{n}");
        let started = Instant::now();
        assert_temporary(&send(&server, &id).await, &id);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    tokio::time::sleep(REOPEN_INTERVAL + Duration::from_millis(200)).await;
    let id = "still-full-after-a-reopen";
    assert_temporary(&send(&server, id).await, id);

    // Space comes back: the next document is stored, without a restart.
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(REOPEN_INTERVAL + Duration::from_millis(200)).await;
    let response = send(&server, &refused).await;
    assert!(response.ok, "{:?}", response.raw);
    acknowledged.push(refused);
    let (status, body) = readyz(&http).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));
    for n in 0..10 {
        let id = format!("after-1-{n}");
        assert!(send(&server, &id).await.ok);
        acknowledged.push(id);
    }

    // Round 2: nobody sends after space returns; readiness itself notices.
    let filler = fill(tmpfs.path());
    let refused = send_until_refused(&server, "full-2", &mut acknowledged).await;
    assert_eq!(readyz(&http).await.0, StatusCode::SERVICE_UNAVAILABLE);
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + REOPEN_INTERVAL * 5;
    loop {
        let (status, body) = readyz(&http).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(body.contains(TEMPORARY_REASON), "{body}");
        assert!(Instant::now() < deadline, "never ready again: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = send(&server, &refused).await;
    assert!(response.ok, "{:?}", response.raw);
    acknowledged.push(refused);

    // Every acknowledged document is in the inbox, once; a resent one is a duplicate.
    let inbox = server
        .store
        .read(|snapshot| {
            snapshot.list_mailbox(
                RECEIVER,
                Mailbox::Inbox,
                &PageRequest::first(u32::MAX),
                false,
            )
        })
        .unwrap()
        .items;
    let stored: std::collections::BTreeSet<String> = inbox
        .iter()
        .map(|entry| entry.artifact_id.clone())
        .collect();
    assert_eq!(stored.len(), inbox.len(), "an artifact stored twice");
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged {id} is not in the inbox");
    }
    assert!(send(&server, &acknowledged[0]).await.ok);
    let count = server
        .store
        .read(|snapshot| snapshot.mailbox_count(RECEIVER, Mailbox::Inbox))
        .unwrap();
    assert_eq!(count, inbox.len() as u64);
    eprintln!(
        "disk full: {} documents acknowledged, {} stored",
        acknowledged.len(),
        inbox.len()
    );

    // Stopped, the file passes `btps check`.
    let store = server.store.clone();
    server.stop().await;
    drop(http);
    drop(store);
    let database = data.join(btps::store::DATABASE_FILE_NAME);
    let output = Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(["check", database.to_str().unwrap(), "--data-dir"])
        .arg(&data)
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "btps check: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    drop(tmpfs);
}
