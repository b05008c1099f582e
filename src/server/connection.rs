//! One client connection: newline framing with a maximum line length, the idle
//! timeout, and the reply after each line. Lines of one connection are handled in
//! order, so every response carries the `reqId` of its own request.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::protocol::response;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::server::pipeline::{After, Pipeline};

/// Limits of one connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// The longest line accepted, in bytes (without the `\n`).
    pub max_line_bytes: usize,
    /// How long the connection may stay silent (no byte read, no reply written).
    pub idle_timeout: Duration,
    /// How long a line may take from its first byte to its `\n`, however its bytes
    /// trickle in (each byte restarts the idle timer, not this one).
    pub line_timeout: Duration,
}

/// The outcome of reading one line.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// A complete line is in the buffer (without its `\n`).
    Line,
    /// The peer closed the connection (any unterminated fragment is dropped: no
    /// reply could reach the peer anyway, `spec/01-wire.md` §2.1).
    Closed,
    /// The line grew past the limit.
    TooLong,
    /// Nothing arrived for the idle timeout.
    Idle,
    /// The line was started but not completed within the line timeout.
    TooSlow,
}

/// Which limit ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expired {
    /// The connection was silent for the idle timeout.
    Idle,
    /// The line being read took longer than the line timeout.
    Line,
}

/// The idle limit of one connection, and the deadline of the line being read, kept
/// without a timer per line: one `Sleep` stays registered with the earlier of the
/// two deadlines, and only moves (one timer-wheel update) when it fires while the
/// connection has been active, or when a line starts arriving in pieces. A
/// `tokio::time::timeout` around each read and write instead registers and removes a
/// timer per line, and often wakes the timer driver with a system call. A line that
/// arrives whole in one read never sets the line deadline.
struct IdleTimer {
    limit: Duration,
    last_activity: Instant,
    line_limit: Duration,
    /// When the line being read must be complete; `None` between lines.
    line_deadline: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    fn new(limit: Duration, line_limit: Duration) -> Self {
        let now = Instant::now();
        IdleTimer {
            limit,
            last_activity: now,
            line_limit,
            line_deadline: None,
            sleep: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    /// The first bytes of a line arrived without its end: it must be complete
    /// within the line limit.
    fn line_started(&mut self) {
        if self.line_deadline.is_none() {
            let deadline = Instant::now() + self.line_limit;
            self.line_deadline = Some(deadline);
            if deadline < self.sleep.deadline() {
                self.sleep.as_mut().reset(deadline);
            }
        }
    }

    /// The line is complete.
    fn line_ended(&mut self) {
        self.line_deadline = None;
    }

    /// Completes once the connection has been silent for the whole limit, or the
    /// line being read has run out of time.
    async fn expired(&mut self) -> Expired {
        loop {
            self.sleep.as_mut().await;
            let idle = self.last_activity + self.limit;
            let (deadline, which) = match self.line_deadline {
                Some(line) if line < idle => (line, Expired::Line),
                _ => (idle, Expired::Idle),
            };
            if Instant::now() >= deadline {
                return which;
            }
            self.sleep.as_mut().reset(deadline);
        }
    }

    /// Runs `work` unless it makes no progress for the limit (the silence is
    /// counted from this call, as each read or write restarts it) or the line runs
    /// out of time.
    async fn guard<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Expired> {
        self.last_activity = Instant::now();
        tokio::select! {
            biased;
            done = work => Ok(done),
            expired = self.expired() => Err(expired),
        }
    }
}

/// Reads up to and including the next `\n` into `line` (without the `\n`), never
/// holding more than `max` bytes; the idle timer restarts whenever bytes arrive.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
    idle: &mut IdleTimer,
) -> io::Result<LineRead> {
    line.clear();
    loop {
        let available = match idle.guard(reader.fill_buf()).await {
            Err(Expired::Idle) => return Ok(LineRead::Idle),
            Err(Expired::Line) => return Ok(LineRead::TooSlow),
            Ok(result) => result?,
        };
        if available.is_empty() {
            return Ok(LineRead::Closed);
        }
        match memchr::memchr(b'\n', available) {
            Some(end) => {
                if line.len() + end > max {
                    return Ok(LineRead::TooLong);
                }
                line.extend_from_slice(&available[..end]);
                reader.consume(end + 1);
                idle.line_ended();
                return Ok(LineRead::Line);
            }
            None => {
                let taken = available.len();
                if line.len() + taken > max {
                    return Ok(LineRead::TooLong);
                }
                line.extend_from_slice(available);
                reader.consume(taken);
                idle.line_started();
            }
        }
    }
}

/// Writes `line` and its `\n` with one write, so that the answer leaves in one TLS
/// record and one system call.
async fn write_line<W: AsyncWrite + Unpin>(
    writer: &mut W,
    line: &mut String,
    idle: &mut IdleTimer,
) -> io::Result<()> {
    line.push('\n');
    let write = async {
        writer.write_all(line.as_bytes()).await?;
        writer.flush().await
    };
    let written = idle.guard(write).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer does not read its responses",
        )
    });
    line.pop();
    written?
}

/// Serves one (already TLS-wrapped) connection until the peer leaves, the connection
/// is ended or destroyed, or `shutdown` fires between two lines.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    remote: SocketAddr,
    pipeline: &Pipeline,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut stream = BufReader::with_capacity(16 * 1024, stream);
    let mut line = Vec::with_capacity(4096);
    let mut last_request_id: Option<String> = None;
    let mut idle = IdleTimer::new(limits.idle_timeout, limits.line_timeout);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let read = tokio::select! {
            read = read_line(&mut stream, &mut line, limits.max_line_bytes, &mut idle) => read,
            _ = shutdown.changed() => break,
        };
        match read {
            Ok(LineRead::Line) => {}
            Ok(LineRead::Closed) | Err(_) => return,
            Ok(LineRead::TooLong) => {
                let error = ProtocolError::validation(format!(
                    "line longer than {} bytes",
                    limits.max_line_bytes
                ))
                .with_reason("line too long");
                tracing::info!(remote = %remote, code = error.code.code(), "line too long; closing the connection");
                crate::metrics::artifact(
                    crate::metrics::ArtifactLabel::Unparsed,
                    crate::metrics::Outcome::Refused(error.code),
                );
                pipeline.connection_error(remote, &error);
                let mut reply = response::error(&error, None).to_canonical();
                if write_line(stream.get_mut(), &mut reply, &mut idle)
                    .await
                    .is_ok()
                {
                    pipeline.response_sent(remote, &reply, None);
                }
                return;
            }
            Ok(read @ (LineRead::Idle | LineRead::TooSlow)) => {
                let error = if read == LineRead::Idle {
                    ProtocolError::new(ErrorCode::SocketTimeout, "idle timeout")
                } else {
                    tracing::info!(remote = %remote, "line not completed in time; closing the connection");
                    ProtocolError::new(
                        ErrorCode::SocketTimeout,
                        format!(
                            "line not completed within {} ms",
                            limits.line_timeout.as_millis()
                        ),
                    )
                    .with_reason("line not completed in time")
                };
                pipeline.connection_error(remote, &error);
                let mut reply = response::error(&error, last_request_id.as_deref()).to_canonical();
                if write_line(stream.get_mut(), &mut reply, &mut idle)
                    .await
                    .is_ok()
                {
                    pipeline.response_sent(remote, &reply, last_request_id.as_deref());
                }
                return;
            }
        }
        let reply = pipeline.handle_line(&line, remote).await;
        if reply.request_id.is_some() {
            last_request_id.clone_from(&reply.request_id);
        }
        if let Some(mut reply_line) = reply.line {
            if write_line(stream.get_mut(), &mut reply_line, &mut idle)
                .await
                .is_err()
            {
                return;
            }
            pipeline.response_sent(remote, &reply_line, reply.request_id.as_deref());
        }
        if let Some(answered) = &reply.answered_error {
            pipeline.after_error(remote, answered).await;
        }
        match reply.after {
            After::KeepOpen => {}
            After::End => break,
        }
    }
    // Graceful end: TLS close_notify, then FIN.
    let _ = tokio::time::timeout(limits.idle_timeout, stream.get_mut().shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn framing_limits_and_fragments() {
        let data: &[u8] = b"{\"a\":1}\r\nshort\n0123456789abcdef\ntail";
        let mut reader = BufReader::with_capacity(4, data);
        let mut line = Vec::new();
        let mut idle = IdleTimer::new(Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(
            read_line(&mut reader, &mut line, 10, &mut idle)
                .await
                .unwrap(),
            LineRead::Line
        );
        assert_eq!(line, b"{\"a\":1}\r");
        assert_eq!(
            read_line(&mut reader, &mut line, 10, &mut idle)
                .await
                .unwrap(),
            LineRead::Line
        );
        assert_eq!(line, b"short");
        assert_eq!(
            read_line(&mut reader, &mut line, 10, &mut idle)
                .await
                .unwrap(),
            LineRead::TooLong
        );
    }

    #[tokio::test]
    async fn an_unterminated_fragment_is_dropped_at_eof() {
        let data: &[u8] = b"tail";
        let mut reader = BufReader::new(data);
        let mut line = Vec::new();
        assert_eq!(
            read_line(
                &mut reader,
                &mut line,
                10,
                &mut IdleTimer::new(Duration::from_secs(1), Duration::from_secs(1))
            )
            .await
            .unwrap(),
            LineRead::Closed
        );
    }
}
