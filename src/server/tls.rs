//! TLS configuration of the listener (rustls with the ring provider).
//!
//! BTPS authenticates artifacts by their signatures, so TLS here only protects the
//! channel: no client certificates, no ALPN. TLS 1.3 is the default; TLS 1.2 can be
//! allowed because a stock Node.js client of the reference may negotiate it
//! (`spec/01-wire.md` §1).
//!
//! PEM files are read with rustls' own `pki-types` parser (the successor of the
//! `rustls-pemfile` crate), so no extra dependency is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsVersion;

/// Why the listener's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read or holds no usable PEM certificate.
    #[error("TLS certificate {}: {reason}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The key file could not be read or holds no usable PEM private key.
    #[error("TLS private key {}: {reason}", path.display())]
    PrivateKey {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate, or its
    /// algorithm is not supported).
    #[error("TLS certificate {} with key {}: {source}", cert.display(), key.display())]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' complaint.
        source: rustls::Error,
    },
}

/// The protocol versions of `min_version` and above.
pub fn protocol_versions(
    min_version: TlsVersion,
) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static TLS12_AND_13: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    match min_version {
        TlsVersion::Tls13 => &TLS13_ONLY,
        TlsVersion::Tls12 => &TLS12_AND_13,
    }
}

/// Reads every certificate of a PEM file, leaf first.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| invalid(pem_reason(&error)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(pem_reason(&error)))?;
    if certificates.is_empty() {
        return Err(invalid(
            "no \"BEGIN CERTIFICATE\" block in the file".to_owned(),
        ));
    }
    Ok(certificates)
}

/// Reads the first private key (PKCS#8, SEC1 or PKCS#1) of a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| TlsError::PrivateKey {
        path: path.to_owned(),
        reason: pem_reason(&error),
    })
}

fn pem_reason(error: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(io) => format!("cannot be read: {io}"),
        Error::NoItemsFound => "no PEM block of the expected kind in the file".to_owned(),
        other => format!("is not valid PEM: {other}"),
    }
}

/// The listener's TLS configuration: the certificate chain and key from PEM files,
/// the ring provider, TLS 1.3 only or 1.2 and 1.3, no client authentication, no ALPN.
pub fn server_config(
    cert_pem_path: &Path,
    key_pem_path: &Path,
    min_version: TlsVersion,
) -> Result<ServerConfig, TlsError> {
    let certificates = load_certificates(cert_pem_path)?;
    let key = load_private_key(key_pem_path)?;
    let rejected = |source: rustls::Error| TlsError::Rejected {
        cert: cert_pem_path.to_owned(),
        key: key_pem_path.to_owned(),
        source,
    };
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(protocol_versions(min_version))
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(rejected)
}
