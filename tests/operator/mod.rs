//! The operator's safety rails, run as real processes against temporary
//! directories: the token `GET /backup` needs (also on loopback), the modes of
//! everything the commands create and `btps serve` finds, commands that refuse to
//! create a new data directory by accident, and `btps restore` keeping the owner of
//! the database it replaces.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod data_dir;
mod http_token;
mod json;
mod permissions;
mod restore;

/// The CLI, run from `cwd` with none of the variables that would point it at
/// another data directory or configuration.
fn btps(cwd: &Path, args: &[&str]) -> Output {
    btps_env(cwd, args, &[])
}

/// Like [`btps`], with extra environment variables.
fn btps_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_btps"));
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("BTPS_DATA_DIR")
        .env_remove("BTPS_CONFIG")
        .env_remove("BTPS_ADMIN_SOCKET")
        .env_remove("BTPS_ADMIN")
        .env_remove("BTPS_HTTP_LISTEN")
        .env_remove("BTPS_HTTP_TOKEN");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("btps runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns standard output.
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// Asserts success and parses standard output as JSON.
fn ok_json(output: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(output)).unwrap()
}

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A running `btps serve` on ephemeral ports.
struct Serve {
    child: Child,
    /// What it printed up to "btps listening on".
    printed: Vec<String>,
    /// The HTTP endpoint's address, when it is on.
    http: Option<SocketAddr>,
}

impl Serve {
    /// Starts `btps serve --data-dir DATA` from `cwd`, the HTTP endpoint on an
    /// ephemeral loopback port, no DNS needed, with `env` set.
    fn start(cwd: &Path, data: &str, env: &[(&str, &str)]) -> Serve {
        let mut command = Command::new(env!("CARGO_BIN_EXE_btps"));
        command
            .args(["serve", "--data-dir", data])
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--dns-server", "127.0.0.1:9"])
            .current_dir(cwd)
            .env("RUST_LOG", "warn")
            .env_remove("BTPS_DATA_DIR")
            .env_remove("BTPS_CONFIG")
            .env_remove("BTPS_ADMIN_SOCKET")
            .env_remove("BTPS_ADMIN")
            .env_remove("BTPS_HTTP_LISTEN")
            .env_remove("BTPS_HTTP_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();
        let mut http = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("btps http endpoint on http://") {
                http = Some(rest.trim().parse().unwrap());
            }
            let done = line.starts_with("btps listening on ");
            printed.push(line);
            if done {
                break;
            }
        }
        assert!(
            printed
                .last()
                .is_some_and(|line| line.starts_with("btps listening on ")),
            "btps serve did not start: {printed:?}"
        );
        std::thread::spawn(move || for _ in lines {});
        Serve {
            child,
            printed,
            http,
        }
    }

    fn http(&self) -> SocketAddr {
        self.http.expect("the HTTP endpoint is on")
    }

    /// Whether it printed a line containing `needle`.
    fn printed(&self, needle: &str) -> bool {
        self.printed.iter().any(|line| line.contains(needle))
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        let Some(status) = crate::util::sigterm_and_wait(&mut self.child, Duration::from_secs(15))
        else {
            panic!("btps serve did not stop within 15 s of SIGTERM");
        };
        assert!(status.success(), "btps serve exited with {status}");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // A failed assertion must not leave the server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET: (status, body).
fn http_get(address: SocketAddr, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

/// GETs `path` until it answers 200 (the endpoint starts before the listener is
/// ready) or 10 s pass.
fn wait_for_200(address: SocketAddr, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(address, path, None);
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
