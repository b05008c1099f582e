//! `[server]`: the server's own BTPS identity, the DNS selector its key is published
//! under, and the files of its RSA key pair.

use std::path::{Path, PathBuf};

use super::Config;
use super::loader::{Loader, Raw, Section, identity, path};
use crate::identity::Identity;

/// The selector used when none is configured (the reference's `hostSelector` default).
pub const DEFAULT_SELECTOR: &str = "btps1";

/// The server's BTPS identity and the files of its RSA key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerIdentitySettings {
    /// The identity the server signs as when no hosted domain has its own signer.
    pub identity: Option<Identity>,
    /// The DNS selector under which the server key is published.
    pub selector: String,
    /// SPKI PEM of the server key.
    pub public_key_path: PathBuf,
    /// PKCS#8 PEM of the server key (mode 0600).
    pub private_key_path: PathBuf,
}

impl ServerIdentitySettings {
    /// No identity of its own, [`DEFAULT_SELECTOR`], the key pair under `data_dir`.
    pub(super) fn defaults_under(data_dir: &Path) -> Self {
        ServerIdentitySettings {
            identity: None,
            selector: DEFAULT_SELECTOR.to_owned(),
            public_key_path: data_dir.join("keys/server.pub.pem"),
            private_key_path: data_dir.join("keys/server.key.pem"),
        }
    }
}

/// A key selector: it becomes a DNS label, so letters, digits, `-` and `_`, 1 to 63
/// bytes.
fn selector(raw: Raw) -> Result<String, String> {
    let text = raw.text()?;
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(text)
    } else {
        Err(format!(
            "{text:?} is not a selector (1 to 63 letters, digits, '-' or '_')"
        ))
    }
}

impl Loader<'_> {
    pub(super) fn server(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "server");
        let server = &mut config.server;
        self.optional(
            &mut section,
            "identity",
            Some("SERVER_IDENTITY"),
            identity,
            &mut server.identity,
        );
        self.setting(
            &mut section,
            "selector",
            Some("BTPS_SERVER_SELECTOR"),
            selector,
            &mut server.selector,
        );
        self.setting(
            &mut section,
            "public_key_path",
            Some("SERVER_PUBLIC_KEY_PATH"),
            path,
            &mut server.public_key_path,
        );
        self.setting(
            &mut section,
            "private_key_path",
            Some("SERVER_PRIVATE_KEY_PATH"),
            path,
            &mut server.private_key_path,
        );
        self.finish(section);
    }
}
