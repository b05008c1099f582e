//! systemd service notifications (`sd_notify(3)`): readiness, shutdown and watchdog
//! keep-alives for a `Type=notify` unit.
//!
//! The protocol is one datagram per notification, `KEY=VALUE` lines, sent to the
//! Unix socket named by `NOTIFY_SOCKET` (a path, or `@name` for the Linux abstract
//! namespace). When `NOTIFY_SOCKET` is unset — a terminal, a container, a test —
//! every method is a no-op, so the server calls them unconditionally.
//!
//! A fresh socket is opened for each message, as libsystemd does: the notification
//! socket may be recreated (daemon re-execution) during a long-running service's
//! life, and a datagram socket connected once would keep pointing at the old one.
//! This is a few lines over `std`, rather than a crate, because the usual crate does
//! not reach abstract-namespace sockets and brings `libc` and `unsafe` for features
//! (file-descriptor passing, socket activation) the server does not use.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The environment variable naming the notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The environment variable holding the watchdog timeout in microseconds.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The environment variable naming the process the watchdog applies to.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// A failure to talk to the service manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The datagram could not be sent to `NOTIFY_SOCKET`.
    #[error("sending {state:?} to the systemd notification socket {socket:?}: {source}")]
    Send {
        /// The notification, e.g. `READY=1`.
        state: String,
        /// `NOTIFY_SOCKET` as given.
        socket: OsString,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// `NOTIFY_SOCKET` is neither an absolute path nor an `@abstract` name.
    #[error("NOTIFY_SOCKET {socket:?} is neither an absolute path nor an @abstract name")]
    InvalidSocket {
        /// `NOTIFY_SOCKET` as given.
        socket: OsString,
    },
}

/// Sends notifications to systemd, or does nothing when not run under it.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    /// `NOTIFY_SOCKET`, when set and not empty.
    socket: Option<OsString>,
    /// The watchdog timeout, when enabled for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier from this process's environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
    /// `WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        Notifier::from_vars(
            std::env::var_os(NOTIFY_SOCKET).as_deref(),
            std::env::var(WATCHDOG_USEC).ok().as_deref(),
            std::env::var(WATCHDOG_PID).ok().as_deref(),
            std::process::id(),
        )
    }

    /// A notifier from explicit values of the three variables, for a process `pid`.
    ///
    /// The watchdog is enabled when `WATCHDOG_USEC` is a positive integer and
    /// `WATCHDOG_PID`, if set, is `pid` (systemd sets it so that a child process
    /// that inherited the environment does not ping on the service's behalf).
    pub fn from_vars(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Notifier {
        let socket = socket
            .filter(|socket| !socket.is_empty())
            .map(OsStr::to_owned);
        let for_this_process = match watchdog_pid {
            None => true,
            Some(text) => text.trim().parse::<u32>().is_ok_and(|owner| owner == pid),
        };
        let watchdog = watchdog_usec
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|&usec| usec > 0 && for_this_process && socket.is_some())
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// Whether the process runs under a service manager that wants notifications.
    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// The watchdog timeout (`WatchdogSec=`), when systemd expects keep-alives.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often to send `WATCHDOG=1`: half the timeout, as `sd_watchdog_enabled(3)`
    /// recommends, so that one late tick does not trip it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|timeout| timeout / 2)
    }

    /// `READY=1`: start-up is complete (the database is open, the listeners are
    /// bound). `status` is shown by `systemctl status`.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&format!("READY=1\nSTATUS={}", single_line(status)))
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.notify("STOPPING=1\nSTATUS=Shutting down")
    }

    /// `WATCHDOG=1`: the service is alive.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.notify("WATCHDOG=1")
    }

    /// `STATUS=...`: a free-form one-line status for `systemctl status`.
    pub fn status(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&format!("STATUS={}", single_line(status)))
    }

    /// Sends one notification (newline-separated `KEY=VALUE` assignments); a no-op
    /// without `NOTIFY_SOCKET`.
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let error = |source| NotifyError::Send {
            state: state.to_owned(),
            socket: socket.clone(),
            source,
        };
        let sender = UnixDatagram::unbound().map_err(error)?;
        connect(&sender, socket)?.map_err(error)?;
        let sent = sender.send(state.as_bytes()).map_err(error)?;
        if sent != state.len() {
            return Err(error(io::Error::new(
                io::ErrorKind::WriteZero,
                "the notification was truncated",
            )));
        }
        Ok(())
    }
}

/// Connects `sender` to a path or, for `@name`, to an abstract-namespace address.
/// The outer error is a malformed `NOTIFY_SOCKET`, the inner one the connection.
fn connect(sender: &UnixDatagram, socket: &OsStr) -> Result<io::Result<()>, NotifyError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'/') => Ok(sender.connect(socket)),
        Some(b'@') => Ok(connect_abstract(sender, &bytes[1..])),
        _ => Err(NotifyError::InvalidSocket {
            socket: socket.to_owned(),
        }),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn connect_abstract(sender: &UnixDatagram, name: &[u8]) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sender.connect_addr(&address)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn connect_abstract(_sender: &UnixDatagram, _name: &[u8]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket addresses exist only on Linux",
    ))
}

/// A status is one line: a newline would start a new assignment.
fn single_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buffer = [0u8; 512];
        let length = socket.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..length].to_vec()).unwrap()
    }

    #[test]
    fn without_notify_socket_everything_is_a_no_op() {
        let notifier = Notifier::from_vars(None, Some("1000000"), None, 7);
        assert!(!notifier.is_enabled());
        assert_eq!(notifier.watchdog_timeout(), None);
        notifier.ready("up").unwrap();
        notifier.stopping().unwrap();
        notifier.watchdog().unwrap();
        let empty = Notifier::from_vars(Some(OsStr::new("")), None, None, 7);
        assert!(!empty.is_enabled());
    }

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::from_vars(Some(path.as_os_str()), None, None, 7);
        assert!(notifier.is_enabled());
        notifier.ready("listening on\n127.0.0.1:3443").unwrap();
        assert_eq!(
            receive(&listener),
            "READY=1\nSTATUS=listening on 127.0.0.1:3443"
        );
        notifier.stopping().unwrap();
        assert!(receive(&listener).starts_with("STOPPING=1\n"));
        notifier.watchdog().unwrap();
        assert_eq!(receive(&listener), "WATCHDOG=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("btps-test-notify-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        let socket = OsString::from(format!("@{name}"));
        Notifier::from_vars(Some(&socket), None, None, 7)
            .watchdog()
            .unwrap();
        assert_eq!(receive(&listener), "WATCHDOG=1");
    }

    #[test]
    fn a_missing_or_malformed_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        let error = Notifier::from_vars(Some(missing.as_os_str()), None, None, 7)
            .ready("up")
            .unwrap_err();
        assert!(matches!(error, NotifyError::Send { .. }), "{error}");
        let relative = Notifier::from_vars(Some(OsStr::new("notify")), None, None, 7);
        assert!(matches!(
            relative.ready("up").unwrap_err(),
            NotifyError::InvalidSocket { .. }
        ));
    }

    #[test]
    fn the_watchdog_applies_to_its_own_process_only() {
        let socket = Some(OsStr::new("/run/systemd/notify"));
        let own = Notifier::from_vars(socket, Some("3000000"), Some("7"), 7);
        assert_eq!(own.watchdog_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(own.watchdog_interval(), Some(Duration::from_millis(1500)));
        let unset_pid = Notifier::from_vars(socket, Some("3000000"), None, 7);
        assert_eq!(unset_pid.watchdog_timeout(), Some(Duration::from_secs(3)));
        for (usec, pid) in [
            (Some("3000000"), Some("8")),
            (Some("0"), None),
            (Some("soon"), None),
            (None, None),
        ] {
            let notifier = Notifier::from_vars(socket, usec, pid, 7);
            assert_eq!(notifier.watchdog_timeout(), None, "{usec:?} {pid:?}");
        }
        // No socket, no watchdog: there is nobody to ping.
        assert_eq!(
            Notifier::from_vars(None, Some("3000000"), None, 7).watchdog_timeout(),
            None
        );
    }
}
