//! The local operations endpoint (HTTP/1, axum): `/healthz`, `/readyz`, `/metrics`
//! and `/backup`.
//!
//! It listens on `127.0.0.1:3480` by default, beside the BTPS listener, and is meant
//! for the machine's own supervisor, a Prometheus scraper and backup jobs. It is not
//! part of the protocol. [`router`] builds the routes over an [`HttpState`], so tests
//! call it without a socket; [`serve`] runs it on a bound listener until a shutdown
//! future completes.
//!
//! * `GET /healthz` — 200 while the process runs.
//! * `GET /readyz` — 200 when the BTPS listener accepts connections, the
//!   database answers a read and, after a write failed (a full disk), a write
//!   commits again; 503 with the reason otherwise (before the listener starts,
//!   during shutdown, while writes fail: `writes to the database fail: <file>:
//!   storage temporarily unavailable: no space left on device`).
//! * `GET /metrics` — Prometheus text format (`docs/metrics.md`).
//! * `GET /backup` — a consistent snapshot of the whole database as one redb file,
//!   streamed while the server keeps committing ([`Maintenance`]); a storage without
//!   a database file (PostgreSQL, memory) answers 501.
//!
//! Who must present `Authorization: Bearer <token>` (compared in constant time, 401
//! otherwise) is an [`HttpAuth`]: with a configured `http.token`, every request;
//! with the token `btps serve` generates into the data directory when none is
//! configured, only `/backup` (and unknown paths), so that a supervisor and a
//! scraper on the machine need nothing while another local user cannot download
//! the database; with no token at all, `/backup` is refused (403). The
//! configuration refuses a non-loopback address without a configured token.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::BoxFuture;
use crate::config::Secret;
use crate::metrics::{Metrics, RenderInputs};
use crate::server::ListenerStats;
use crate::server::{Service, ServiceContext};
use crate::store::{Maintenance, Perspective, Storage, StoreError};

/// How long `/readyz` waits for the database read before calling it a failure.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);
/// Read size of the backup stream.
const BACKUP_CHUNK: usize = 256 * 1024;
/// The Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The paths served without a token unless [`HttpAuth::Every`] says otherwise:
/// nothing in their answers is secret.
const OPEN_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Which requests must carry the bearer token.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum HttpAuth {
    /// No token: `/healthz`, `/readyz` and `/metrics` are open and `/backup` is
    /// refused (403), since it hands out the whole database.
    #[default]
    NoToken,
    /// Every request must carry this token (`http.token` configured).
    Every(Secret),
    /// `/backup` (and any path other than `/healthz`, `/readyz`, `/metrics`) must
    /// carry this token: the token `btps serve` generates into the data directory.
    Backup(Secret),
}

impl HttpAuth {
    /// [`HttpAuth::Every`] with a token, [`HttpAuth::NoToken`] without.
    pub fn every_request(token: Option<&Secret>) -> Self {
        token.map_or(HttpAuth::NoToken, |token| HttpAuth::Every(token.clone()))
    }
}

/// What the endpoint serves from. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    listener: Arc<ListenerStats>,
    metrics: &'static Metrics,
    /// SHA-256 of the token: comparing digests in constant time also hides the
    /// token's length.
    token_digest: Option<[u8; 32]>,
    /// Whether the open paths need the token too.
    every_request: bool,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("token", &self.inner.token_digest.map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl HttpState {
    /// The state of an endpoint serving `storage`, reporting the readiness and
    /// counters of the BTPS listener `listener`, rendering `metrics`, and requiring
    /// `token` on every request when there is one ([`HttpAuth::every_request`]).
    pub fn new(
        storage: Arc<dyn Storage>,
        listener: Arc<ListenerStats>,
        metrics: &'static Metrics,
        token: Option<&Secret>,
    ) -> Self {
        Self::with_auth(storage, listener, metrics, &HttpAuth::every_request(token))
    }

    /// Like [`HttpState::new`], with the token rule `auth`.
    pub fn with_auth(
        storage: Arc<dyn Storage>,
        listener: Arc<ListenerStats>,
        metrics: &'static Metrics,
        auth: &HttpAuth,
    ) -> Self {
        let (token, every_request) = match auth {
            HttpAuth::NoToken => (None, false),
            HttpAuth::Every(token) => (Some(token), true),
            HttpAuth::Backup(token) => (Some(token), false),
        };
        HttpState {
            inner: Arc::new(Inner {
                storage,
                listener,
                metrics,
                token_digest: token.map(|token| digest(token.expose().as_bytes())),
                every_request,
            }),
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The endpoint's routes over `state`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/backup", get(backup))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the requests
/// in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut response = (status, body.into()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn require_token(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    let open = !state.inner.every_request && OPEN_PATHS.contains(&request.uri().path());
    if open {
        return next.run(request).await;
    }
    let Some(expected) = &state.inner.token_digest else {
        if request.uri().path() == "/backup" {
            return text(
                StatusCode::FORBIDDEN,
                "backup: no token is set, and /backup hands out the whole database; set http.token, or let btps serve generate its token file\n",
            );
        }
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let authorised =
        presented.is_some_and(|token| bool::from(digest(token.as_bytes()).ct_eq(expected)));
    if authorised {
        return next.run(request).await;
    }
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "a valid Authorization: Bearer token is required\n",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"btps\""),
    );
    response
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

/// Runs a blocking store operation off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(format!("storage task failed: {error}")),
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let not_ready = |reason: String| {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
    };
    if !state.inner.listener.is_listening() {
        return not_ready("the BTPS listener is not accepting connections".to_owned());
    }
    let storage = Arc::clone(&state.inner.storage);
    let read = blocking(move || {
        Ok(storage.check_ready().map_err(|error| match error {
            StoreError::Unavailable { .. } => format!("writes to the database fail: {error}"),
            other => format!("the database read failed: {other}"),
        }))
    });
    match tokio::time::timeout(READINESS_TIMEOUT, read).await {
        Ok(Ok(Ok(()))) => text(StatusCode::OK, "ready\n"),
        Ok(Ok(Err(reason)) | Err(reason)) => not_ready(reason),
        Err(_) => not_ready(format!(
            "the database did not answer a read within {} ms",
            READINESS_TIMEOUT.as_millis()
        )),
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let storage = &state.inner.storage;
    let counts = async {
        let mut counts = Vec::new();
        for (perspective, label) in [
            (Perspective::Inbound, "inbound"),
            (Perspective::Outbound, "outbound"),
        ] {
            for (status, count) in storage.trust().count_by_status(perspective).await? {
                counts.push((label, status.as_str().to_owned(), count));
            }
        }
        Ok::<_, StoreError>(counts)
    }
    .await;
    let trust_records = counts.unwrap_or_else(|error| {
        // Render what is known; the scrape itself should not fail with the database.
        tracing::warn!(error = %error, "metrics: counting trust records failed");
        Vec::new()
    });
    let sized = Arc::clone(storage);
    let db_file_bytes =
        tokio::task::spawn_blocking(move || sized.maintenance().and_then(Maintenance::file_size))
            .await
            .unwrap_or_default();
    let outbox = match storage.outbox().stats().await {
        Ok(stats) => {
            let now = crate::store::Timestamp::now().millis();
            let age = stats
                .oldest_queued_at
                .map_or(0, |queued| now - queued.millis());
            let age = Duration::from_millis(u64::try_from(age).unwrap_or(0));
            Some((stats.entries, age))
        }
        Err(error) => {
            tracing::warn!(error = %error, "metrics: reading the outbox failed");
            None
        }
    };
    let listener = &state.inner.listener;
    let inputs = RenderInputs {
        connections_open: u64::try_from(listener.open_connections()).unwrap_or(u64::MAX),
        connections_accepted: listener.accepted_connections(),
        db_file_bytes,
        trust_records,
        outbox,
    };
    let body = state.inner.metrics.render(&inputs);
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_TEXT),
    );
    response
}

async fn backup(State(state): State<HttpState>) -> Response {
    let started = Instant::now();
    if state.inner.storage.maintenance().is_none() {
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "backup: this storage has no database file; back it up with its own tools (pg_dump for PostgreSQL)\n",
        );
    }
    let storage = Arc::clone(&state.inner.storage);
    let taken = blocking(move || match storage.maintenance() {
        Some(maintenance) => maintenance.backup_to_anonymous_file(),
        None => Err(StoreError::TaskFailed("no database file".to_owned())),
    });
    let (file, report) = match taken.await {
        Ok(taken) => taken,
        Err(error) => {
            tracing::error!(error = %error, "backup failed");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("backup failed: {error}\n"),
            );
        }
    };
    tracing::info!(
        bytes = report.bytes,
        trust_records = report.trust_records,
        identities = report.identities,
        mailbox_entries = report.mailbox_entries,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "backup snapshot taken; streaming it"
    );
    let stream =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), BACKUP_CHUNK);
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(report.bytes));
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"btps-backup-{stamp}.redb\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    for (name, value) in [
        ("x-btps-trust-records", report.trust_records),
        ("x-btps-identities", report.identities),
        ("x-btps-mailbox-entries", report.mailbox_entries),
        ("x-btps-schema-version", u64::from(report.schema_version)),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    response
}

/// The endpoint as a [`Service`] of the server: installs the metrics recorder,
/// removes scratch files of interrupted backups, and serves until the server stops.
pub struct HttpService {
    listener: tokio::net::TcpListener,
    auth: HttpAuth,
}

impl HttpService {
    /// The endpoint on a bound `listener`, requiring `token` on every request when
    /// there is one (without one, `/backup` is refused).
    pub fn new(listener: tokio::net::TcpListener, token: Option<Secret>) -> Self {
        Self::with_auth(listener, token.map_or(HttpAuth::NoToken, HttpAuth::Every))
    }

    /// The endpoint on a bound `listener`, with the token rule `auth`.
    pub fn with_auth(listener: tokio::net::TcpListener, auth: HttpAuth) -> Self {
        HttpService { listener, auth }
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

impl Service for HttpService {
    fn name(&self) -> &'static str {
        "http"
    }

    fn run(
        self: Box<Self>,
        context: ServiceContext,
        stop: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let metrics = crate::metrics::install();
            let storage = Arc::clone(&context.storage);
            let removed = tokio::task::spawn_blocking(move || {
                storage
                    .maintenance()
                    .map_or(0, Maintenance::remove_stale_backups)
            })
            .await
            .unwrap_or_default();
            if removed > 0 {
                tracing::info!(removed, "removed scratch files of interrupted backups");
            }
            let state =
                HttpState::with_auth(context.storage, context.listener, metrics, &self.auth);
            // Without a scrape, histogram samples would pile up; drain them regularly.
            let upkeep = tokio::spawn(metrics.upkeep_every(Duration::from_secs(5)));
            if let Err(error) = serve(self.listener, router(state), stop).await {
                tracing::warn!(error = %error, "HTTP endpoint failed");
            }
            upkeep.abort();
        })
    }
}
