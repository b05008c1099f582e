//! A BTPS client: TLS connection to a server, one artifact line out, response lines in.
//!
//! One [`BtpsClient`] is one TLS connection (tokio-rustls, ring provider, TLS 1.2 or
//! 1.3 as the server chooses). It writes lines and reads response lines; matching
//! responses to requests by `reqId` is the caller's business, because a server may
//! answer pipelined lines out of order (`spec/01-wire.md` §2.2).
//!
//! The server certificate is verified against the operating system's trusted CAs
//! plus an optional CA file, for the host name given (or `server_name`). `insecure`
//! turns verification off — the certificate is accepted whatever it is, though the
//! handshake signatures are still checked — for first steps against a fresh
//! appliance with its self-signed certificate, and for tests.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::identity::Identity;
use crate::identity::dns::{HostRecord, KeyDirectory, KeyLookupError};
use crate::protocol::ProtocolError;
use crate::protocol::response::{ServerResponse, parse_response};

/// How a [`BtpsClient`] connects and waits.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Accept any server certificate (self-signed appliances, tests). Never for
    /// production traffic.
    pub insecure: bool,
    /// Limit for connecting (TCP + TLS handshake) and for each response line; the
    /// reference client's per-request default is 5 s.
    pub timeout: Duration,
    /// The name the certificate is verified for (and sent as SNI) instead of the host.
    pub server_name: Option<String>,
    /// A PEM bundle of additional trusted CAs (private deployments, or a
    /// self-signed appliance certificate pinned as its own CA).
    pub ca_file: Option<PathBuf>,
    /// Longest response line accepted, in bytes.
    pub max_response_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: false,
            timeout: Duration::from_secs(5),
            server_name: None,
            ca_file: None,
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be opened.
    #[error("connecting to {address}: {source}")]
    Connect {
        /// `host:port`.
        address: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The TLS handshake failed (certificate refused, no common version, …).
    #[error("TLS handshake with {address}: {source}")]
    Handshake {
        /// `host:port`.
        address: String,
        /// The error, with rustls' reason inside.
        source: io::Error,
    },
    /// The name to verify the certificate for is neither a DNS name nor an IP address.
    #[error("'{name}' is not a valid server name")]
    InvalidServerName {
        /// The name.
        name: String,
    },
    /// rustls refused the client configuration.
    #[error("TLS client configuration: {0}")]
    TlsConfig(rustls::Error),
    /// The CA file could not be used.
    #[error("CA file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Verification is on and no trusted CA is available.
    #[error(
        "no trusted CA certificates: the system has none usable; give a CA file or, for a self-signed test server, --insecure"
    )]
    NoTrustedRoots,
    /// Nothing happened within [`ClientOptions::timeout`].
    #[error("{what} timed out after {} ms", after.as_millis())]
    Timeout {
        /// What was waited for ("connecting", "the response").
        what: &'static str,
        /// The limit.
        after: Duration,
    },
    /// Reading or writing failed on an established connection.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The server sent a line longer than [`ClientOptions::max_response_bytes`].
    #[error("response line longer than {limit} bytes")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// The server sent bytes that are not UTF-8.
    #[error("response line is not UTF-8")]
    NotUtf8,
    /// The server closed the connection where a response was expected.
    #[error("the server closed the connection without a response")]
    Closed,
    /// The server's line is not a valid response envelope.
    #[error("invalid response: {0}")]
    InvalidResponse(ProtocolError),
    /// The receiver's server could not be found in DNS.
    #[error("DNS resolution failed for {identity}: {source}")]
    Discovery {
        /// The receiver.
        identity: Identity,
        /// Why.
        source: KeyLookupError,
    },
}

/// One TLS connection to a BTPS server.
pub struct BtpsClient {
    stream: BufReader<TlsStream<TcpStream>>,
    /// Bytes of a response line read so far (kept across a timed-out read, so that
    /// a later read continues where it stopped).
    partial: Vec<u8>,
    timeout: Duration,
    max_response_bytes: usize,
}

impl std::fmt::Debug for BtpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peer = self.stream.get_ref().get_ref().0.peer_addr().ok();
        f.debug_struct("BtpsClient")
            .field("peer", &peer)
            .finish_non_exhaustive()
    }
}

impl BtpsClient {
    /// Opens a TCP connection to `host:port` and completes the TLS handshake, both
    /// within `options.timeout`. `host` may be an IPv6 literal in brackets, as host
    /// records write it.
    pub async fn connect(
        host: &str,
        port: u16,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        Self::connect_with(host, port, client_config(options)?, options).await
    }

    /// [`BtpsClient::connect`] with a TLS configuration built once beforehand
    /// ([`client_config`]), for a caller that opens many connections.
    pub async fn connect_with(
        host: &str,
        port: u16,
        config: Arc<ClientConfig>,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        let bare_host = host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(host);
        let address = if bare_host.contains(':') {
            format!("[{bare_host}]:{port}")
        } else {
            format!("{bare_host}:{port}")
        };
        let name_text = options.server_name.as_deref().unwrap_or(bare_host);
        let server_name = ServerName::try_from(name_text.to_owned()).map_err(|_| {
            ClientError::InvalidServerName {
                name: name_text.to_owned(),
            }
        })?;
        let connector = TlsConnector::from(config);
        let connecting = async {
            let tcp = TcpStream::connect((bare_host, port))
                .await
                .map_err(|source| ClientError::Connect {
                    address: address.clone(),
                    source,
                })?;
            // Lines are small and interactive; do not wait to fill segments.
            tcp.set_nodelay(true)
                .map_err(|source| ClientError::Connect {
                    address: address.clone(),
                    source,
                })?;
            connector
                .connect(server_name, tcp)
                .await
                .map_err(|source| ClientError::Handshake {
                    address: address.clone(),
                    source,
                })
        };
        let tls = tokio::time::timeout(options.timeout, connecting)
            .await
            .map_err(|_| ClientError::Timeout {
                what: "connecting",
                after: options.timeout,
            })??;
        Ok(BtpsClient {
            stream: BufReader::new(tls),
            partial: Vec::new(),
            timeout: options.timeout,
            max_response_bytes: options.max_response_bytes,
        })
    }

    /// Changes the limit for each later send and response line.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Writes `line` followed by `"\n"`.
    pub async fn send_line(&mut self, line: &str) -> Result<(), ClientError> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.send_raw(&bytes).await
    }

    /// Writes `bytes` as they are (for tests of malformed input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let writing = async {
            let stream = self.stream.get_mut();
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        tokio::time::timeout(self.timeout, writing)
            .await
            .map_err(|_| ClientError::Timeout {
                what: "sending",
                after: self.timeout,
            })??;
        Ok(())
    }

    /// Reads one response line, without its `"\n"` (and a `"\r"` before it). `None`
    /// when the server closed the connection before sending anything more; a final
    /// fragment without `"\n"` is returned as a line. Fails with
    /// [`ClientError::Timeout`] when no complete line arrives within the timeout;
    /// the bytes read so far are kept for the next call.
    pub async fn read_line(&mut self) -> Result<Option<String>, ClientError> {
        let timeout = self.timeout;
        let bytes = tokio::time::timeout(timeout, self.read_line_bytes())
            .await
            .map_err(|_| ClientError::Timeout {
                what: "the response",
                after: timeout,
            })??;
        let Some(mut bytes) = bytes else {
            return Ok(None);
        };
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ClientError::NotUtf8)
    }

    /// The loop of [`read_line`](Self::read_line). Cancel-safe: every byte taken from
    /// the buffered stream is moved into `self.partial` before the next await.
    async fn read_line_bytes(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        loop {
            let available = self.stream.fill_buf().await?;
            if available.is_empty() {
                if self.partial.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.partial)));
            }
            let (taken, complete) = match available.iter().position(|&byte| byte == b'\n') {
                Some(end) => (end, true),
                None => (available.len(), false),
            };
            if self.partial.len() + taken > self.max_response_bytes {
                return Err(ClientError::LineTooLong {
                    limit: self.max_response_bytes,
                });
            }
            self.partial.extend_from_slice(&available[..taken]);
            let consumed = if complete { taken + 1 } else { taken };
            self.stream.consume(consumed);
            if complete {
                return Ok(Some(std::mem::take(&mut self.partial)));
            }
        }
    }

    /// Sends `line`, reads one response line and parses it. With several requests in
    /// flight, use [`send_line`](Self::send_line) and [`read_line`](Self::read_line)
    /// and match by `reqId` instead.
    pub async fn request(&mut self, line: &str) -> Result<ServerResponse, ClientError> {
        self.send_line(line).await?;
        let response = self.read_line().await?.ok_or(ClientError::Closed)?;
        parse_response(&response).map_err(ClientError::InvalidResponse)
    }

    /// Sends TLS close_notify and shuts the connection down.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.stream.get_mut().shutdown())
            .await
            .map_err(|_| ClientError::Timeout {
                what: "closing",
                after: timeout,
            })??;
        Ok(())
    }
}

/// Looks up `_btps.host.<domain>` of the receiver: its server's host, port and the
/// domain's current selector.
pub async fn discover(
    directory: &KeyDirectory,
    receiver: &Identity,
) -> Result<HostRecord, ClientError> {
    directory
        .host(receiver.domain())
        .await
        .map_err(|source| ClientError::Discovery {
            identity: receiver.clone(),
            source,
        })
}

/// The rustls client configuration of `options`: ring, TLS 1.2 and 1.3, the system's
/// CAs plus `ca_file`, or no verification when `insecure`.
pub fn client_config(options: &ClientOptions) -> Result<Arc<ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(ClientError::TlsConfig)?;
    let config = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
            .with_no_client_auth()
    } else {
        let mut roots = system_roots().clone();
        if let Some(path) = &options.ca_file {
            let invalid = |reason: String| ClientError::CaFile {
                path: path.clone(),
                reason,
            };
            let certificates = crate::server::tls::load_certificates(path)
                .map_err(|error| invalid(error.to_string()))?;
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|error| invalid(error.to_string()))?;
            }
        }
        if roots.is_empty() {
            return Err(ClientError::NoTrustedRoots);
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The operating system's trusted CAs, read once per process (a few hundred
/// certificates; unreadable ones are skipped).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!(%error, "skipping unreadable system CA certificates");
        }
        roots.add_parsable_certificates(found.certs);
        roots
    })
}

/// Accepts any server certificate, but still checks that the server holds its key
/// (the handshake signatures), so the connection is at least not trivially spoofed
/// by a passive party.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
