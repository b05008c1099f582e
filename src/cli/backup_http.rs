//! `btps backup` through the HTTP endpoint: `GET /backup` on `http.listen` with the
//! configured `http.token`, or the token `btps serve` generated into the data
//! directory. Used when a server holds the database but its admin socket does not
//! answer (the socket turned off). A plain HTTP/1.1 request on loopback; the body
//! must be exactly as long as the server announced.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use btps::config::Config;
use btps::server::bootstrap;

/// How long to wait for the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read may wait: the server takes its snapshot before it answers, which
/// takes seconds for a large database.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest response head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Downloads the backup into the new file `destination` (mode 0600).
pub(super) fn download(config: &Config, destination: &Path) -> anyhow::Result<()> {
    let Some(listen) = config.http.listen else {
        bail!("the HTTP endpoint is off (http.listen)");
    };
    let address = reachable(listen);
    let token = bootstrap::http_token(config)?.with_context(|| {
        format!(
            "a server holds the database and its admin socket {} does not answer; its HTTP endpoint needs a token, and there is no http.token and no {}",
            config.admin.socket.display(),
            bootstrap::http_token_path(config).display()
        )
    })?;
    let failed = |what: &str| format!("{what} GET http://{address}/backup");
    let mut stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
        .with_context(|| failed("connecting for"))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .with_context(|| failed("setting up"))?;
    write!(
        stream,
        "GET /backup HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token.expose()
    )
    .with_context(|| failed("sending"))?;
    let mut reader = BufReader::new(stream);
    let (status, length) =
        read_head(&mut reader).with_context(|| failed("reading the answer of"))?;
    if status != 200 {
        let mut body = Vec::new();
        let _ = reader.take(4096).read_to_end(&mut body);
        bail!(
            "GET http://{address}/backup answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    let Some(length) = length else {
        bail!("GET http://{address}/backup answered without a Content-Length");
    };
    let mut file = super::backup::create_private_file(destination)?;
    let copied = std::io::copy(&mut reader.take(length), &mut file)
        .with_context(|| format!("writing {}", destination.display()))?;
    if copied != length {
        bail!("GET http://{address}/backup ended after {copied} of {length} bytes");
    }
    file.sync_all()
        .with_context(|| format!("syncing {}", destination.display()))?;
    Ok(())
}

/// An unspecified listen address (`0.0.0.0`, `[::]`) is reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// Reads the status line and the headers: (status, Content-Length).
fn read_head(reader: &mut impl BufRead) -> anyhow::Result<(u16, Option<u64>)> {
    let mut read = 0_usize;
    let mut next_line = |reader: &mut dyn BufRead| -> anyhow::Result<String> {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        read += n;
        if n == 0 {
            bail!("the connection closed before the end of the response head");
        }
        if read > MAX_HEAD_BYTES {
            bail!("the response head is longer than {MAX_HEAD_BYTES} bytes");
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    };
    let status_line = next_line(reader)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut length = None;
    loop {
        let line = next_line(reader)?;
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = Some(
                value
                    .trim()
                    .parse()
                    .with_context(|| format!("a bad Content-Length: {value:?}"))?,
            );
        }
    }
    Ok((status, length))
}
