//! `[http]`: the local HTTP endpoint (health, readiness, metrics, backup): its address
//! and the bearer token that guards it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::loader::{Loader, Section};
use super::{Config, ConfigError};

/// The default address of the local HTTP endpoint (health, metrics, backup).
pub const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3480);
/// The shortest bearer token accepted for the HTTP endpoint.
pub const MIN_HTTP_TOKEN_LEN: usize = 16;

/// A secret setting: compared and cloned like a string, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The local HTTP endpoint: `/healthz`, `/readyz`, `/metrics`, `/backup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Where it listens; `None` turns it off.
    pub listen: Option<SocketAddr>,
    /// The bearer token every request must carry; required unless `listen` is a
    /// loopback address.
    pub token: Option<Secret>,
}

impl HttpSettings {
    /// Checks the rule that ties the two settings together: an endpoint reachable from
    /// other machines (it serves the whole database at `/backup`) needs a token.
    /// Run again after a command-line flag changes `listen`.
    pub fn check(&self) -> Result<(), ConfigError> {
        match (self.listen, &self.token) {
            (Some(address), None) if !address.ip().to_canonical().is_loopback() => {
                Err(ConfigError::new(
                    "http.token",
                    format!(
                        "required because http.listen ({address}) is not a loopback address: \
                         the endpoint serves the whole database at /backup; set http.token or \
                         BTPS_HTTP_TOKEN (at least {MIN_HTTP_TOKEN_LEN} characters), or listen \
                         on 127.0.0.1"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl HttpSettings {
    /// On, at [`DEFAULT_HTTP_LISTEN`] (loopback), without a token.
    pub(super) fn defaults() -> Self {
        HttpSettings {
            listen: Some(DEFAULT_HTTP_LISTEN),
            token: None,
        }
    }
}

/// The HTTP endpoint's address: `IP:PORT`, or `""` / `"off"` to turn it off.
pub fn parse_http_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    match text.trim() {
        "" | "off" => Ok(None),
        address => address.parse::<SocketAddr>().map(Some).map_err(|_| {
            format!("{text:?} is not an IP:PORT address (e.g. 127.0.0.1:3480) or \"off\"")
        }),
    }
}

/// A bearer token: long enough not to be guessed, and legal in an HTTP header.
fn http_token(text: &str) -> Result<Secret, String> {
    if text.len() < MIN_HTTP_TOKEN_LEN {
        return Err(format!(
            "too short ({} characters); use at least {MIN_HTTP_TOKEN_LEN}, e.g. from `openssl rand -hex 32`",
            text.len()
        ));
    }
    if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(
            "must be printable ASCII without spaces (it is sent in an HTTP header)".to_owned(),
        );
    }
    Ok(Secret::new(text))
}

impl Loader<'_> {
    pub(super) fn http(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "http");
        let http = &mut config.http;
        self.setting(
            &mut section,
            "listen",
            Some("BTPS_HTTP_LISTEN"),
            |raw| parse_http_listen(&raw.text()?),
            &mut http.listen,
        );
        self.optional(
            &mut section,
            "token",
            Some("BTPS_HTTP_TOKEN"),
            |raw| http_token(&raw.text()?),
            &mut http.token,
        );
        if let Err(error) = http.check() {
            self.errors.push(error);
        }
        self.finish(section);
    }
}
