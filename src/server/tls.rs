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
    /// A self-signed certificate could not be generated or used ([`self_signed`]).
    #[error("self-signed TLS certificate: {0}")]
    SelfSigned(String),
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
    config_with(certificates, key, min_version).map_err(|source| TlsError::Rejected {
        cert: cert_pem_path.to_owned(),
        key: key_pem_path.to_owned(),
        source,
    })
}

/// The configuration of [`server_config`] for a chain and key already in memory.
fn config_with(
    certificates: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    min_version: TlsVersion,
) -> Result<ServerConfig, rustls::Error> {
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(protocol_versions(min_version))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
}

/// How long a generated self-signed certificate is valid. It is for first steps and
/// tests; an operator replaces it rather than renews it, so an expiry would only
/// break a forgotten test box.
const SELF_SIGNED_VALIDITY_DAYS: i64 = 3650;

/// A freshly generated self-signed certificate and its key.
pub(crate) struct SelfSigned {
    /// The certificate.
    pub(crate) certificate: rcgen::Certificate,
    /// Its ECDSA P-256 key pair.
    pub(crate) key: rcgen::KeyPair,
    /// The end of its validity.
    pub(crate) not_after: time::OffsetDateTime,
}

/// Generates a self-signed ECDSA P-256 certificate for `names` (DNS names or IP
/// addresses as text): what a fresh data directory gets, and what [`self_signed`]
/// serves from memory. ECDSA keeps the TLS handshake cheap on small machines.
pub(crate) fn generate_self_signed(names: &[String]) -> Result<SelfSigned, rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, "btps self-signed");
    params.distinguished_name = subject;
    let now = time::OffsetDateTime::now_utc();
    // A day of slack for clients whose clocks run behind.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_VALIDITY_DAYS);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let certificate = params.self_signed(&key)?;
    Ok(SelfSigned {
        certificate,
        key,
        not_after: params.not_after,
    })
}

/// A listener configuration (TLS 1.3, as [`server_config`] by default) with a
/// self-signed ECDSA P-256 certificate for `names` (DNS names or IP addresses,
/// e.g. `["localhost", "127.0.0.1"]`), generated in memory: nothing is written.
///
/// For embedding, tests and examples: a client must be told to accept the
/// certificate (`ClientOptions::insecure` of [`crate::client`]). A data directory's
/// persistent self-signed pair is made by [`crate::server::bootstrap::prepare`].
pub fn self_signed(names: &[&str]) -> Result<Arc<ServerConfig>, TlsError> {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let generated =
        generate_self_signed(&names).map_err(|error| TlsError::SelfSigned(error.to_string()))?;
    let certificates = vec![generated.certificate.der().clone()];
    let key = PrivateKeyDer::Pkcs8(generated.key.serialize_der().into());
    config_with(certificates, key, TlsVersion::Tls13)
        .map(Arc::new)
        .map_err(|error| TlsError::SelfSigned(error.to_string()))
}
