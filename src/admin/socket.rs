//! The local admin socket: operator requests to a running server over a Unix socket.
//!
//! redb lets one process hold the database, so while `btps serve` runs the
//! operator commands cannot open it; they connect here instead. The protocol is one
//! JSON request line ([`AdminRequest`]) answered by one JSON reply line
//! (`{"ok":true,"response":{…}}` or `{"ok":false,"error":{"kind":…,"message":…}}`),
//! newline framed, several per connection. A backup reply is the one exception: the
//! line announces the size and the database copy's bytes follow it.
//!
//! Access control is the file's permission bits: the socket is bound under a
//! temporary name, given its mode, and only then renamed into place, so that there
//! is no moment at which it is reachable with wider permissions. A socket file left
//! by a crashed server (nobody answers on it) is replaced; a socket a live server
//! answers on is never touched. Every request runs on `spawn_blocking`, because the
//! store does disk I/O; the socket's own file calls while it serves (the backup
//! copy, removing the socket file at shutdown) go through `tokio::fs`.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use super::operations::{
    AdminContext, AdminError, AdminRequest, AdminResponse, AdminResult, execute, temporary_beside,
    write_backup,
};

/// Longest request line. Requests are small (the largest carries one PEM key).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Longest reply line a client accepts (a listing of many identities).
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// Connections served at once; more are refused with an error reply.
const MAX_CONNECTIONS: usize = 16;
/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long requests in progress may take to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client waits for a reply (a check or backup reads the whole file).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(600);

/// Why the admin socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminSocketError {
    /// Another live server answers on the socket.
    #[error(
        "{}: another btps server answers on this admin socket; stop it or configure another [admin] socket",
        path.display()
    )]
    AlreadyServed {
        /// The socket file.
        path: PathBuf,
    },
    /// Something other than a socket has the socket's name.
    #[error("{}: exists and is not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The file.
        path: PathBuf,
    },
    /// A file system call failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A bound admin socket, ready to [`AdminSocket::run`].
#[derive(Debug)]
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file, so that shutdown removes only our own.
    file_id: (u64, u64),
    replaced_stale: bool,
}

/// One reply line.
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<AdminResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<AdminError>,
}

impl Reply {
    fn from_result(result: AdminResult<AdminResponse>) -> Self {
        match result {
            Ok(response) => Reply {
                ok: true,
                response: Some(response),
                error: None,
            },
            Err(error) => Reply {
                ok: false,
                response: None,
                error: Some(error),
            },
        }
    }

    fn into_result(self) -> AdminResult<AdminResponse> {
        match (self.ok, self.response, self.error) {
            (true, Some(response), _) => Ok(response),
            (false, _, Some(error)) => Err(error),
            _ => Err(AdminError::Protocol(String::from(
                "the server's reply has neither a response nor an error",
            ))),
        }
    }

    fn line(&self) -> Vec<u8> {
        // Serialising plain data (strings, numbers, JSON values) cannot fail; the
        // fallback still produces a well-formed error line.
        let mut line = serde_json::to_vec(self).unwrap_or_else(|error| {
            format!(r#"{{"ok":false,"error":{{"kind":"protocol","message":"unserialisable reply: {error}"}}}}"#)
                .into_bytes()
        });
        line.push(b'\n');
        line
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AdminSocketError {
    let path = path.to_owned();
    move |source| AdminSocketError::Io {
        action,
        path,
        source,
    }
}

impl AdminSocket {
    /// Binds the socket at `path` with permission bits `mode`, replacing a stale
    /// socket file nobody answers on. Call inside a Tokio runtime, once at startup:
    /// the file-system calls it makes block the calling thread.
    pub fn bind(path: &Path, mode: u32) -> Result<AdminSocket, AdminSocketError> {
        let replaced_stale = remove_stale(path)?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".{}.new", std::process::id()));
        let temporary = PathBuf::from(temporary);
        // A temporary name left by an earlier crash of this very process id.
        let _ = std::fs::remove_file(&temporary);
        let listener = std::os::unix::net::UnixListener::bind(&temporary)
            .map_err(io_error("binding the admin socket", &temporary))?;
        let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
            .map_err(io_error("setting the mode of", &temporary))
            .and_then(|()| {
                std::fs::rename(&temporary, path).map_err(io_error("renaming the socket to", path))
            });
        if let Err(error) = placed {
            let _ = std::fs::remove_file(&temporary);
            return Err(error);
        }
        let metadata = std::fs::symlink_metadata(path).map_err(io_error("reading", path))?;
        listener
            .set_nonblocking(true)
            .map_err(io_error("configuring", path))?;
        let listener = UnixListener::from_std(listener).map_err(io_error("registering", path))?;
        Ok(AdminSocket {
            listener,
            path: path.to_owned(),
            file_id: (metadata.dev(), metadata.ino()),
            replaced_stale,
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a socket file left by a crashed server was replaced.
    pub fn replaced_stale(&self) -> bool {
        self.replaced_stale
    }

    /// Serves requests until `shutdown` completes, then stops accepting, removes
    /// the socket file and lets requests in progress finish (for a bounded time).
    pub async fn run(self, context: AdminContext, shutdown: impl Future<Output = ()>) {
        let context = Arc::new(context);
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                            let reply = Reply::from_result(Err(AdminError::Protocol(String::from(
                                "the admin socket is busy; try again",
                            ))));
                            let _ = stream.try_write(&reply.line());
                            continue;
                        };
                        let context = Arc::clone(&context);
                        connections.spawn(async move {
                            serve_connection(stream, &context).await;
                            drop(permit);
                        });
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "admin socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(self.listener);
        remove_if_ours(&self.path, self.file_id).await;
        let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!("admin socket: requests still running at shutdown were abandoned");
            connections.abort_all();
        }
    }
}

/// Removes a socket file at `path` that nobody answers on; refuses to touch a live
/// socket or anything that is not a socket. Whether a stale file was removed.
fn remove_stale(path: &Path) -> Result<bool, AdminSocketError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(io_error("reading", path)(error)),
    };
    if !metadata.file_type().is_socket() {
        return Err(AdminSocketError::NotASocket {
            path: path.to_owned(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(AdminSocketError::AlreadyServed {
            path: path.to_owned(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => Ok(true),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(error) => Err(io_error("removing the stale socket", path)(error)),
            }
        }
        Err(error) => Err(io_error("probing the existing socket", path)(error)),
    }
}

/// Removes the socket file at `path` if it is still the one bound (`file_id`), not
/// one a later server put in its place. Runs on the async threads, so through
/// `tokio::fs` (the blocking pool).
async fn remove_if_ours(path: &Path, file_id: (u64, u64)) {
    let ours = tokio::fs::symlink_metadata(path)
        .await
        .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == file_id);
    if ours && let Err(error) = tokio::fs::remove_file(path).await {
        tracing::warn!(%error, path = %path.display(), "admin socket: cannot remove the socket file");
    }
}

/// Reads request lines and answers each, until the client closes, goes quiet or
/// breaks the protocol.
async fn serve_connection(stream: tokio::net::UnixStream, context: &Arc<AdminContext>) {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_REQUEST_BYTES + 1).unwrap_or(u64::MAX);
        let read = tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut reader).take(limit).read_until(b'\n', &mut line),
        )
        .await;
        match read {
            Ok(Ok(0)) | Err(_) => return,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "admin socket: read failed");
                return;
            }
        }
        if line.last() != Some(&b'\n') {
            let problem = if line.len() > MAX_REQUEST_BYTES {
                format!("request line longer than {MAX_REQUEST_BYTES} bytes")
            } else {
                String::from("request line without its final newline")
            };
            let reply = Reply::from_result(Err(AdminError::Protocol(problem)));
            let _ = write.write_all(&reply.line()).await;
            return;
        }
        let request = match serde_json::from_slice::<AdminRequest>(&line) {
            Ok(request) => request,
            Err(error) => {
                let reply = Reply::from_result(Err(AdminError::Protocol(format!(
                    "not an admin request: {error}"
                ))));
                let _ = write.write_all(&reply.line()).await;
                return;
            }
        };
        if request == AdminRequest::Backup {
            stream_backup(context, &mut write).await;
            return;
        }
        tracing::info!(?request, "admin request");
        let shared = Arc::clone(context);
        let outcome = tokio::task::spawn_blocking(move || execute(&shared, request))
            .await
            .unwrap_or_else(|error| {
                Err(AdminError::Storage(format!(
                    "the request failed inside the server: {error}"
                )))
            });
        let reply = Reply::from_result(outcome);
        if write.write_all(&reply.line()).await.is_err() {
            return;
        }
    }
}

/// Writes a consistent copy beside the database, announces its size, sends its
/// bytes and removes it.
async fn stream_backup(context: &Arc<AdminContext>, write: &mut tokio::net::unix::OwnedWriteHalf) {
    tracing::info!("admin request: backup");
    let shared = Arc::clone(context);
    let database = match context.database() {
        Ok(database) => database.clone(),
        Err(error) => {
            let _ = write
                .write_all(&Reply::from_result(Err(error)).line())
                .await;
            return;
        }
    };
    let copy = temporary_beside(database.path(), "backup");
    let target = copy.clone();
    let written = tokio::task::spawn_blocking(move || {
        let database = shared.database()?;
        write_backup(database, &target)
    })
    .await
    .unwrap_or_else(|error| Err(AdminError::Storage(format!("the backup failed: {error}"))));
    let opened = match written {
        Ok(bytes) => tokio::fs::File::open(&copy)
            .await
            .map(|file| (bytes, file))
            .map_err(|error| AdminError::Storage(format!("{}: {error}", copy.display()))),
        Err(error) => Err(error),
    };
    match opened {
        Ok((bytes, mut file)) => {
            let reply = Reply::from_result(Ok(AdminResponse::BackupStream { bytes }));
            if write.write_all(&reply.line()).await.is_ok() {
                let sent = tokio::io::copy(&mut (&mut file).take(bytes), write).await;
                if let Err(error) = sent {
                    tracing::warn!(%error, "admin socket: sending the backup failed");
                }
                let _ = write.flush().await;
            }
        }
        Err(error) => {
            let _ = write
                .write_all(&Reply::from_result(Err(error)).line())
                .await;
        }
    }
    let _ = tokio::fs::remove_file(&copy).await;
}

/// A connection to a server's admin socket (blocking; the command line uses it).
#[derive(Debug)]
pub struct AdminClient {
    reader: BufReader<std::os::unix::net::UnixStream>,
    path: PathBuf,
}

impl AdminClient {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> std::io::Result<AdminClient> {
        let stream = std::os::unix::net::UnixStream::connect(path)?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        Ok(AdminClient {
            reader: BufReader::new(stream),
            path: path.to_owned(),
        })
    }

    /// Gives up on a request or reply after `timeout` instead of the default (ten
    /// minutes, which a backup of a large database may need): for a caller that
    /// must answer someone else in time, such as `btps dns serve` answering a query.
    pub fn set_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        let stream = self.reader.get_ref();
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))
    }

    fn failed(&self, what: &str, error: impl std::fmt::Display) -> AdminError {
        AdminError::Protocol(format!(
            "admin socket {}: {what}: {error}",
            self.path.display()
        ))
    }

    fn send(&mut self, request: &AdminRequest) -> AdminResult<()> {
        let mut line = serde_json::to_vec(request)
            .map_err(|error| self.failed("encoding the request", error))?;
        line.push(b'\n');
        let result = self.reader.get_mut().write_all(&line);
        result.map_err(|error| self.failed("sending the request", error))
    }

    fn receive(&mut self) -> AdminResult<AdminResponse> {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_REPLY_BYTES + 1).unwrap_or(u64::MAX);
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut line);
        match read {
            Ok(0) => {
                return Err(self.failed("reading the reply", "the server closed the connection"));
            }
            Ok(_) if line.last() != Some(&b'\n') => {
                return Err(self.failed("reading the reply", "incomplete or oversized reply line"));
            }
            Ok(_) => {}
            Err(error) => return Err(self.failed("reading the reply", error)),
        }
        let reply: Reply = serde_json::from_slice(&line)
            .map_err(|error| self.failed("decoding the reply", error))?;
        reply.into_result()
    }

    /// Sends one request and returns the server's answer.
    pub fn call(&mut self, request: &AdminRequest) -> AdminResult<AdminResponse> {
        if *request == AdminRequest::Backup {
            return Err(AdminError::Unsupported(String::from(
                "use AdminClient::backup for a backup",
            )));
        }
        self.send(request)?;
        self.receive()
    }

    /// Asks for a backup and copies its bytes to `out`; returns their number.
    pub fn backup(mut self, out: &mut dyn Write) -> AdminResult<u64> {
        self.send(&AdminRequest::Backup)?;
        let AdminResponse::BackupStream { bytes } = self.receive()? else {
            return Err(self.failed("backup", "unexpected reply"));
        };
        let copied = std::io::copy(&mut (&mut self.reader).take(bytes), out)
            .map_err(|error| self.failed("receiving the backup", error))?;
        if copied != bytes {
            return Err(self.failed(
                "receiving the backup",
                format!("the connection ended after {copied} of {bytes} bytes"),
            ));
        }
        Ok(bytes)
    }
}
