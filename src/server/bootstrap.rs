//! Preparing a data directory: the server key pair, a self-signed TLS certificate
//! and the token of the HTTP endpoint's `/backup`.
//!
//! `btps serve` with no configuration must just work, so the first start creates
//! what is missing: the data directory (0700), the server's RSA-2048 BTPS key pair
//! (private key 0600), a self-signed ECDSA P-256 certificate for the listener
//! (ECDSA keeps the TLS handshake cheap on small machines; BTPS identity keys stay
//! RSA because that is what the protocol signs with) and, when the HTTP endpoint is
//! on without a configured `http.token`, a random token in `<data_dir>/http.token`
//! (0600) that `GET /backup` requires. Later starts load the same files. Nothing is
//! ever overwritten: a file is written under a temporary name and hard-linked into
//! place, which fails if the name exists, so two processes starting at once cannot
//! replace each other's key either. Every start also takes group and other
//! permissions away from the private files it finds wider
//! ([`super::permissions::tighten_data_files`]).

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rand::RngCore as _;

use super::permissions::{self, TightenReport};
use crate::config::{Config, Secret};
use crate::crypto::{KeyError, PrivateKey, PublicKey};
use crate::identity::dns::key_record_text;
use crate::server::tls::{self, TlsError};

/// The RSA modulus size of a generated server key: 2048 bits, because a larger key's
/// base64 is `=`-padded and reference peers cannot read padded keys from DNS.
const SERVER_KEY_BITS: usize = 2048;

/// The generated token of the HTTP endpoint, in the data directory.
pub const HTTP_TOKEN_FILE: &str = "http.token";

/// Random bytes in a generated token (base64url: 43 characters).
const HTTP_TOKEN_BYTES: usize = 32;

/// The shortest token read from a token file (as for `http.token`).
const MIN_HTTP_TOKEN_LEN: usize = 16;

/// What [`prepare`] made ready.
pub struct Prepared {
    /// The server's BTPS signing key.
    pub server_key: PrivateKey,
    /// The listener's TLS configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// The token `GET /backup` requires when no `http.token` is configured (read
    /// from, or generated into, [`http_token_path`]); `None` with a configured token
    /// or without the HTTP endpoint.
    pub http_token: Option<Secret>,
    /// Human-readable lines saying what was created (empty when everything existed).
    pub actions: Vec<String>,
    /// The modes of private files that were open to other users and were tightened,
    /// and those that could not be.
    pub tightened: TightenReport,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("server_key", &self.server_key)
            .field("http_token", &self.http_token)
            .field("actions", &self.actions)
            .field("tightened", &self.tightened)
            .finish_non_exhaustive()
    }
}

/// Why the data directory could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// A file or directory could not be created, written or read.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("creating", "writing", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// An existing server key file is not a usable key.
    #[error("server key {}: {source}", path.display())]
    ServerKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyError,
    },
    /// The server's public key file belongs to another private key.
    #[error(
        "server public key {} does not belong to the private key {} (fingerprints {public} and {private}); remove or fix the public key file",
        public_path.display(),
        private_path.display()
    )]
    KeyMismatch {
        /// The public key file.
        public_path: PathBuf,
        /// The private key file.
        private_path: PathBuf,
        /// Fingerprint of the public key file.
        public: String,
        /// Fingerprint of the private key's public half.
        private: String,
    },
    /// A public key exists without its private key; generating a new pair would
    /// replace a key that may already be published in DNS.
    #[error(
        "server public key {} exists but its private key {} does not; restore the private key or remove the public key",
        public_path.display(),
        private_path.display()
    )]
    PrivateKeyMissing {
        /// The public key file.
        public_path: PathBuf,
        /// The missing private key file.
        private_path: PathBuf,
    },
    /// Only one of the TLS certificate and its key exists.
    #[error(
        "TLS {present_kind} {} exists but the {missing_kind} {} does not; provide both or remove {} to have a self-signed pair created",
        present.display(),
        missing.display(),
        present.display()
    )]
    TlsPairIncomplete {
        /// "certificate" or "key", whichever exists.
        present_kind: &'static str,
        /// The file that exists.
        present: PathBuf,
        /// "certificate" or "key", whichever is missing.
        missing_kind: &'static str,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// Generating the server key failed.
    #[error("generating the server key: {0}")]
    KeyGeneration(KeyError),
    /// Generating the self-signed certificate failed.
    #[error("generating the self-signed TLS certificate: {0}")]
    Certificate(String),
    /// The token file of the HTTP endpoint is not a usable token.
    #[error(
        "the HTTP token file {} does not hold a token ({reason}); remove it to have a new one generated",
        path.display()
    )]
    HttpToken {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Creates the data directory (0700), the server RSA-2048 key pair (private key
/// 0600) if absent, a self-signed ECDSA P-256 certificate (SAN `localhost`,
/// `127.0.0.1`, `::1`, a specific listening address, and the hosted domains) if
/// absent, and the HTTP token file (0600) when the endpoint is on without a
/// configured token; loads existing ones otherwise. Never overwrites a file. Then
/// tightens the modes of the private files that are open to other users.
pub fn prepare(config: &Config) -> Result<Prepared, BootstrapError> {
    let mut actions = Vec::new();
    create_private_dir(&config.data_dir, &mut actions)?;
    let server_key = prepare_server_key(config, &mut actions)?;
    let tls = prepare_tls(config, &mut actions)?;
    let http_token = if config.http.listen.is_some() && config.http.token.is_none() {
        Some(prepare_http_token(config, &mut actions)?)
    } else {
        None
    };
    let tightened = permissions::tighten_data_files(config);
    Ok(Prepared {
        server_key,
        tls: Arc::new(tls),
        http_token,
        actions,
        tightened,
    })
}

/// Creates `dir` and its missing parents with mode 0700, reporting it when created.
fn create_private_dir(dir: &Path, actions: &mut Vec<String>) -> Result<(), BootstrapError> {
    let created = permissions::create_private_dir(dir).map_err(|source| BootstrapError::Io {
        action: "creating the directory",
        path: dir.to_owned(),
        source,
    })?;
    if created {
        actions.push(format!("created directory {} (mode 0700)", dir.display()));
    }
    Ok(())
}

/// The file holding the generated token of the HTTP endpoint:
/// `<data_dir>/http.token`.
pub fn http_token_path(config: &Config) -> PathBuf {
    config.data_dir.join(HTTP_TOKEN_FILE)
}

/// The token a client of the HTTP endpoint's `/backup` presents: the configured
/// `http.token`, else the one in [`http_token_path`] (`None` when there is no such
/// file yet: the server has not started with the endpoint on).
pub fn http_token(config: &Config) -> Result<Option<Secret>, BootstrapError> {
    if let Some(token) = &config.http.token {
        return Ok(Some(token.clone()));
    }
    let path = http_token_path(config);
    match fs::read_to_string(&path) {
        Ok(text) => parse_token_file(&path, &text).map(Some),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BootstrapError::Io {
            action: "reading",
            path,
            source,
        }),
    }
}

fn parse_token_file(path: &Path, text: &str) -> Result<Secret, BootstrapError> {
    let token = text.trim();
    let reason = if token.len() < MIN_HTTP_TOKEN_LEN {
        Some(format!(
            "{} characters, at least {MIN_HTTP_TOKEN_LEN} needed",
            token.len()
        ))
    } else if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        Some("not printable ASCII without spaces".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BootstrapError::HttpToken {
            path: path.to_owned(),
            reason,
        }),
        None => Ok(Secret::new(token)),
    }
}

/// Reads the generated token, or generates it (32 random bytes, base64url) into a
/// new file readable by the owner only.
fn prepare_http_token(
    config: &Config,
    actions: &mut Vec<String>,
) -> Result<Secret, BootstrapError> {
    let path = http_token_path(config);
    if path.exists() {
        return parse_token_file(&path, &read_text(&path)?);
    }
    let mut bytes = [0_u8; HTTP_TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    match write_new_file(&path, format!("{token}\n").as_bytes(), 0o600) {
        Ok(()) => {
            actions.push(format!(
                "created {} (the bearer token GET /backup requires, mode 0600)",
                path.display()
            ));
            Ok(Secret::new(token))
        }
        // Another process won the race to create it: use its token.
        Err(BootstrapError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            parse_token_file(&path, &read_text(&path)?)
        }
        Err(error) => Err(error),
    }
}

/// Creates the parent directory of a file about to be written.
fn create_parent(path: &Path, actions: &mut Vec<String>) -> Result<(), BootstrapError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => create_private_dir(parent, actions),
        _ => Ok(()),
    }
}

/// Writes `contents` to a new file at `path` with `mode`, failing if `path` exists.
///
/// The bytes go to a temporary file first, which is then hard-linked to `path`: the
/// link fails if `path` exists, and a crash never leaves a half-written file under
/// the final name.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), BootstrapError> {
    let io_error = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| BootstrapError::Io {
            action,
            path,
            source,
        }
    };
    let mut temporary_name = path.as_os_str().to_owned();
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let written = options
        .open(&temporary)
        .map_err(io_error("creating", &temporary))
        .and_then(|mut file| {
            file.write_all(contents)
                .and_then(|()| file.sync_all())
                .map_err(io_error("writing", &temporary))
        })
        .and_then(|()| fs::hard_link(&temporary, path).map_err(io_error("creating", path)));
    // The temporary name is gone either way; a failure to remove it is harmless.
    let _ = fs::remove_file(&temporary);
    written
}

fn read_text(path: &Path) -> Result<String, BootstrapError> {
    fs::read_to_string(path).map_err(|source| BootstrapError::Io {
        action: "reading",
        path: path.to_owned(),
        source,
    })
}

/// Loads the server key pair, creating whatever half is missing when that cannot
/// replace an existing key.
fn prepare_server_key(
    config: &Config,
    actions: &mut Vec<String>,
) -> Result<PrivateKey, BootstrapError> {
    let private_path = &config.server.private_key_path;
    let public_path = &config.server.public_key_path;
    let private_exists = private_path.exists();
    let public_exists = public_path.exists();

    if !private_exists && public_exists {
        return Err(BootstrapError::PrivateKeyMissing {
            public_path: public_path.clone(),
            private_path: private_path.clone(),
        });
    }
    let key = if private_exists {
        PrivateKey::from_pem(&read_text(private_path)?).map_err(|source| {
            BootstrapError::ServerKey {
                path: private_path.clone(),
                source,
            }
        })?
    } else {
        let key = PrivateKey::generate(SERVER_KEY_BITS).map_err(BootstrapError::KeyGeneration)?;
        create_parent(private_path, actions)?;
        write_new_file(private_path, key.to_pkcs8_pem().as_bytes(), 0o600)?;
        actions.push(format!(
            "created {} (RSA-{SERVER_KEY_BITS} server key, mode 0600, fingerprint {})",
            private_path.display(),
            key.public_key().fingerprint()
        ));
        key
    };

    if public_exists {
        let public = PublicKey::from_pem(&read_text(public_path)?).map_err(|source| {
            BootstrapError::ServerKey {
                path: public_path.clone(),
                source,
            }
        })?;
        if public.fingerprint() != key.public_key().fingerprint() {
            return Err(BootstrapError::KeyMismatch {
                public_path: public_path.clone(),
                private_path: private_path.clone(),
                public: public.fingerprint().to_owned(),
                private: key.public_key().fingerprint().to_owned(),
            });
        }
    } else {
        let mut pem = key.public_key().to_pem();
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        create_parent(public_path, actions)?;
        write_new_file(public_path, pem.as_bytes(), 0o644)?;
        actions.push(format!(
            "created {} (server public key)",
            public_path.display()
        ));
        // A new key is only useful once peers can find it.
        let record = key_record_text(&key.public_key().to_base64());
        let name = match &config.server.identity {
            Some(identity) => identity.key_record_name(&config.server.selector),
            None => format!(
                "{}._btps.identity.<account>.<domain>",
                config.server.selector
            ),
        };
        actions.push(format!("publish in DNS: {name}. IN TXT \"{record}\""));
    }
    Ok(key)
}

/// Loads the listener's certificate and key, or creates a self-signed pair when
/// neither exists.
fn prepare_tls(
    config: &Config,
    actions: &mut Vec<String>,
) -> Result<rustls::ServerConfig, BootstrapError> {
    let cert_path = &config.tls.cert_path;
    let key_path = &config.tls.key_path;
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {}
        (false, false) => {
            let names = certificate_names(config);
            let (cert_pem, key_pem, not_after) = self_signed_certificate(&names)?;
            create_parent(key_path, actions)?;
            write_new_file(key_path, key_pem.as_bytes(), 0o600)?;
            create_parent(cert_path, actions)?;
            write_new_file(cert_path, cert_pem.as_bytes(), 0o644)?;
            actions.push(format!(
                "created {} (self-signed ECDSA P-256 TLS certificate for {}, valid until {not_after}; replace it with a publicly trusted one for peers that verify certificates)",
                cert_path.display(),
                names.join(", ")
            ));
            actions.push(format!(
                "created {} (TLS private key, mode 0600)",
                key_path.display()
            ));
        }
        (true, false) => {
            return Err(BootstrapError::TlsPairIncomplete {
                present_kind: "certificate",
                present: cert_path.clone(),
                missing_kind: "key",
                missing: key_path.clone(),
            });
        }
        (false, true) => {
            return Err(BootstrapError::TlsPairIncomplete {
                present_kind: "key",
                present: key_path.clone(),
                missing_kind: "certificate",
                missing: cert_path.clone(),
            });
        }
    }
    Ok(tls::server_config(
        cert_path,
        key_path,
        config.tls.min_version,
    )?)
}

/// The subject alternative names of a generated certificate: the loopback names,
/// the listening address when it is a specific one, and the hosted domains.
fn certificate_names(config: &Config) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let listen: IpAddr = config.listen.ip();
    if !listen.is_unspecified() && !listen.is_loopback() {
        names.push(listen.to_string());
    }
    for domain in &config.domains {
        let name = domain.name.to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// A self-signed ECDSA P-256 certificate for `names`: (certificate PEM, key PEM,
/// expiry date).
fn self_signed_certificate(names: &[String]) -> Result<(String, String, String), BootstrapError> {
    let generated = tls::generate_self_signed(names)
        .map_err(|error| BootstrapError::Certificate(error.to_string()))?;
    let not_after = generated.not_after.date().to_string();
    Ok((
        generated.certificate.pem(),
        generated.key.serialize_pem(),
        not_after,
    ))
}
