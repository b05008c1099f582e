//! The measured server as a child process: `btps serve` from the same executable,
//! on its own data directory and the benchmark's DNS responder, watched through
//! `/proc` (resident memory, CPU time) and stopped with SIGTERM like an operator
//! would stop it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::BenchError;
use super::stats::{Memory, parse_stat_ticks, parse_status};

/// How long the server may take to print its address.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may take to stop after SIGTERM (it finishes what is in flight).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `btps serve`.
pub struct ServerProcess {
    child: Child,
    address: SocketAddr,
    log: PathBuf,
    /// From spawning to the "btps listening on" line.
    pub start_to_ready: Duration,
}

impl ServerProcess {
    /// Spawns `executable serve --data-dir DIR --listen 127.0.0.1:0 --dns-server DNS`
    /// with a connection cap of `max_connections`, and waits for its
    /// "btps listening on ADDR" line. Its standard error goes to `DIR/server.log`.
    ///
    /// The environment is cleared so that no `BTPS_*` or reference variable of the
    /// caller changes what is measured.
    pub fn spawn(
        executable: &Path,
        data_dir: &Path,
        dns: SocketAddr,
        max_connections: usize,
    ) -> Result<Self, BenchError> {
        let log = data_dir.join("server.log");
        let log_file = std::fs::File::create(&log).map_err(|source| BenchError::Io {
            what: format!("creating {}", log.display()),
            source,
        })?;
        let started = Instant::now();
        let mut child = Command::new(executable)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--dns-server", &dns.to_string()])
            .env_clear()
            .env("RUST_LOG", "warn")
            .env("BTPS_MAX_CONNECTIONS", max_connections.to_string())
            // Every client of the bench comes from 127.0.0.1.
            .env("BTPS_MAX_CONNECTIONS_PER_IP", max_connections.to_string())
            // The bench measures the BTPS listener only; the HTTP endpoint's fixed
            // port could clash with another server on the machine.
            .env("BTPS_HTTP_LISTEN", "off")
            .env("BTPS_ADMIN", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|source| BenchError::Io {
                what: format!("starting {}", executable.display()),
                source,
            })?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(BenchError::ServerNotReady { log });
        };
        // A thread reads stdout: it reports the address, then keeps draining so that
        // the server never blocks on a full pipe.
        let (sender, receiver) = mpsc::channel::<SocketAddr>();
        std::thread::spawn(move || {
            let mut sender = Some(sender);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = listening_address(&line)
                    && let Some(sender) = sender.take()
                {
                    let _ = sender.send(address);
                }
            }
        });
        match receiver.recv_timeout(READY_TIMEOUT) {
            Ok(address) => Ok(ServerProcess {
                child,
                address,
                log,
                start_to_ready: started.elapsed(),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(BenchError::ServerNotReady { log })
            }
        }
    }

    /// Where the server listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its resident memory now and at peak; `None` where `/proc` is unavailable.
    pub fn memory(&self) -> Option<Memory> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        parse_status(&text)
    }

    /// How many CPUs its main thread (and every thread it starts) may run on;
    /// `None` where that cannot be read.
    #[cfg(target_os = "linux")]
    pub fn cpus_allowed(&self) -> Option<usize> {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).ok()?)?;
        let set = rustix::thread::sched_getaffinity(Some(pid)).ok()?;
        Some(set.count() as usize)
    }

    /// See the Linux version.
    #[cfg(not(target_os = "linux"))]
    pub fn cpus_allowed(&self) -> Option<usize> {
        None
    }

    /// The CPU time (user + system) it has used so far, in seconds; `None` where
    /// `/proc` is unavailable.
    pub fn cpu_seconds(&self) -> Option<f64> {
        process_cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    /// Sends SIGTERM and waits for a clean exit (the database is then closed and
    /// can be opened by this process).
    pub fn stop(mut self) -> Result<(), BenchError> {
        let pid = self.child.id().to_string();
        let signalled = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|source| BenchError::Io {
                what: "running kill -TERM".to_owned(),
                source,
            })?;
        if !signalled.success() {
            return Err(BenchError::ServerExit {
                status: format!("kill -TERM {pid} failed with {signalled}"),
                log: self.log.clone(),
            });
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let waited = self.child.try_wait().map_err(|source| BenchError::Io {
                what: "waiting for the server".to_owned(),
                source,
            })?;
            match waited {
                Some(status) if status.success() => return Ok(()),
                Some(status) => {
                    return Err(BenchError::ServerExit {
                        status: status.to_string(),
                        log: self.log.clone(),
                    });
                }
                None if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(BenchError::ServerExit {
                        status: format!("still running {} s after SIGTERM", STOP_TIMEOUT.as_secs()),
                        log: self.log.clone(),
                    });
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for ServerProcess {
    /// A server left behind by an error path is killed, never orphaned.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in a "btps listening on ADDR (database …)" line.
pub fn listening_address(line: &str) -> Option<SocketAddr> {
    line.strip_prefix("btps listening on ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// User plus system CPU time of the process whose `stat` file is `path`
/// (`/proc/self/stat` for this one).
pub fn process_cpu_seconds(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let ticks = parse_stat_ticks(&text)?;
    Some(ticks as f64 / clock_ticks_per_second())
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`, read once; 100, the
/// value on every common Linux platform, when it cannot be read).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|&ticks| ticks > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        assert_eq!(
            listening_address("btps listening on 127.0.0.1:40123 (database /tmp/x/btps.redb)"),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            listening_address("created /tmp/x/keys/server.key.pem"),
            None
        );
    }
}
