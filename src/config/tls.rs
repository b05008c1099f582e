//! `[tls]`: the listener's certificate and key, the lowest TLS version it accepts and
//! the handshake timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Config;
use super::loader::{Loader, Section, path, positive_ms};

/// The lowest TLS version the listener accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (what a stock Node.js client may negotiate).
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsVersion {
    /// `"1.2"` or `"1.3"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

/// The listener's certificate and TLS policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key of the certificate (PKCS#8, SEC1 or PKCS#1).
    pub key_path: PathBuf,
    /// Lowest accepted protocol version.
    pub min_version: TlsVersion,
    /// How long a client may take to complete the handshake.
    pub handshake_timeout: Duration,
}

impl TlsSettings {
    /// The certificate and key under `data_dir`, TLS 1.3 only, a 10 s handshake.
    pub(super) fn defaults_under(data_dir: &Path) -> Self {
        TlsSettings {
            cert_path: data_dir.join("tls/cert.pem"),
            key_path: data_dir.join("tls/key.pem"),
            min_version: TlsVersion::Tls13,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl Loader<'_> {
    pub(super) fn tls(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "tls");
        let tls = &mut config.tls;
        self.setting(
            &mut section,
            "cert_path",
            Some("BTPS_TLS_CERT"),
            path,
            &mut tls.cert_path,
        );
        self.setting(
            &mut section,
            "key_path",
            Some("BTPS_TLS_KEY"),
            path,
            &mut tls.key_path,
        );
        self.setting(
            &mut section,
            "min_version",
            Some("BTPS_TLS_MIN_VERSION"),
            |raw| match raw.text()?.as_str() {
                "1.2" => Ok(TlsVersion::Tls12),
                "1.3" => Ok(TlsVersion::Tls13),
                other => Err(format!("expected \"1.2\" or \"1.3\", found {other:?}")),
            },
            &mut tls.min_version,
        );
        self.setting(
            &mut section,
            "handshake_timeout_ms",
            Some("BTPS_TLS_HANDSHAKE_TIMEOUT_MS"),
            positive_ms,
            &mut tls.handshake_timeout,
        );
        self.finish(section);
    }
}
