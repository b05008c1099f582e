//! `GET /backup` needs a token, also on loopback: the one `btps serve` generates
//! into the data directory when `http.token` is not set, which `btps backup` reads;
//! `/healthz`, `/readyz` and `/metrics` stay open. A configured token keeps its
//! rule: every request must carry it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use btps::config::Secret;
use btps::http::{HttpAuth, HttpState, router};
use tower::ServiceExt;

use super::{Serve, btps, btps_env, http_get, mode, ok_json, wait_for_200};
use crate::util::server::{TestOptions, TestServer};

const TOKEN: &str = "0123456789abcdef-operator-token";

#[test]
fn backup_needs_the_generated_token_and_health_stays_open() {
    let temp = tempfile::tempdir().unwrap();
    let server = Serve::start(temp.path(), "data", &[]);
    let http = server.http();
    let token_file = temp.path().join("data/http.token");
    assert!(server.printed("http.token"), "{:?}", server.printed);
    assert_eq!(mode(&token_file), 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    // 32 random bytes, base64url without padding.
    assert_eq!(token.len(), 43, "{token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );

    // The supervisor's and the scraper's paths need nothing.
    wait_for_200(http, "/readyz");
    assert_eq!(http_get(http, "/healthz", None).0, 200);
    assert_eq!(http_get(http, "/metrics", None).0, 200);
    // Another local user cannot download the database.
    let (status, body) = http_get(http, "/backup", None);
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        http_get(http, "/backup", Some("not-the-token-at-all")).0,
        401
    );
    let (status, body) = http_get(http, "/backup", Some(token));
    assert_eq!(status, 200);
    assert!(body.len() > 4096);

    // `btps backup` works as before (through the admin socket).
    let written = ok_json(&btps(
        temp.path(),
        &[
            "backup",
            "--data-dir",
            "data",
            "--out",
            "socket.redb",
            "--json",
        ],
    ));
    assert_eq!(written["from"], "running server");
    server.stop();

    // A later start reads the same token; it is never replaced.
    let server = Serve::start(temp.path(), "data", &[]);
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    assert!(!server.printed("created"), "{:?}", server.printed);
    server.stop();

    // With the admin socket off, `btps backup` goes through the HTTP endpoint with
    // the token it reads from the data directory.
    let server = Serve::start(temp.path(), "data", &[("BTPS_ADMIN", "false")]);
    let address = server.http().to_string();
    let written = ok_json(&btps_env(
        temp.path(),
        &[
            "backup",
            "--data-dir",
            "data",
            "--out",
            "http.redb",
            "--json",
        ],
        &[("BTPS_HTTP_LISTEN", &address)],
    ));
    assert_eq!(written["from"], "running server's HTTP endpoint");
    assert_eq!(mode(&temp.path().join("http.redb")), 0o600);
    assert_eq!(written["report"]["identities"], 0);
    // Without the token file it is refused, and says why.
    std::fs::rename(&token_file, temp.path().join("token.away")).unwrap();
    let refused = btps_env(
        temp.path(),
        &["backup", "--data-dir", "data", "--out", "no.redb"],
        &[("BTPS_HTTP_LISTEN", &address)],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        super::stderr(&refused).contains("in use"),
        "{}",
        super::stderr(&refused)
    );
    assert!(!temp.path().join("no.redb").exists());
    std::fs::rename(temp.path().join("token.away"), &token_file).unwrap();
    server.stop();

    // A configured token keeps today's rule: every request carries it, and no
    // generated token is used.
    let server = Serve::start(temp.path(), "data", &[("BTPS_HTTP_TOKEN", TOKEN)]);
    let http = server.http();
    for path in ["/healthz", "/readyz", "/metrics", "/backup"] {
        assert_eq!(http_get(http, path, None).0, 401, "{path}");
        assert_eq!(http_get(http, path, Some(token)).0, 401, "{path}");
    }
    assert_eq!(http_get(http, "/healthz", Some(TOKEN)).0, 200);
    assert_eq!(http_get(http, "/backup", Some(TOKEN)).0, 200);
    server.stop();
}

async fn status(state: &HttpState, path: &str, token: Option<&str>) -> StatusCode {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    router(state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_rules_of_the_endpoint() {
    let server = TestServer::start(TestOptions::default()).await;
    let state = |auth: HttpAuth| {
        HttpState::with_auth(
            Arc::new(server.store.clone()),
            Arc::clone(&server.stats),
            btps::metrics::install(),
            &auth,
        )
    };
    // The generated token guards /backup (and unknown paths) only.
    let backup_only = state(HttpAuth::Backup(Secret::new(TOKEN)));
    for path in ["/healthz", "/metrics"] {
        assert_eq!(status(&backup_only, path, None).await, StatusCode::OK);
    }
    assert_ne!(
        status(&backup_only, "/readyz", None).await,
        StatusCode::UNAUTHORIZED
    );
    for path in ["/backup", "/backup/", "/nowhere"] {
        assert_eq!(
            status(&backup_only, path, None).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    assert_eq!(
        status(&backup_only, "/backup", Some(TOKEN)).await,
        StatusCode::OK
    );
    // No token at all: /backup is never served.
    let open = state(HttpAuth::NoToken);
    assert_eq!(status(&open, "/healthz", None).await, StatusCode::OK);
    assert_eq!(status(&open, "/backup", None).await, StatusCode::FORBIDDEN);
    assert_eq!(
        status(&open, "/backup", Some(TOKEN)).await,
        StatusCode::FORBIDDEN
    );
    // HttpState::new with a token: every request.
    let every = HttpState::new(
        Arc::new(server.store.clone()),
        Arc::clone(&server.stats),
        btps::metrics::install(),
        Some(&Secret::new(TOKEN)),
    );
    assert_eq!(
        status(&every, "/healthz", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&every, "/healthz", Some(TOKEN)).await,
        StatusCode::OK
    );
    server.stop().await;
}
