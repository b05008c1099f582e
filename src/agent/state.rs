//! What an enrolled agent keeps between runs: the server, the identity, the agent
//! id, the refresh token and where its private key is — one JSON file, readable by
//! its owner only (0600), replaced atomically.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Session;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading or writing the file failed (the cause is the error's source).
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not an agent state (the cause is the error's source).
    #[error("{}: not an agent state file", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
}

/// An enrolled agent's state.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// `host:port` of the server.
    pub server: String,
    /// The identity the agent acts for.
    pub identity: String,
    /// The agent's id.
    pub agent_id: String,
    /// The current refresh token (secret).
    pub refresh_token: String,
    /// When the session expires unless refreshed.
    pub expires_at: String,
    /// The identity the server decrypts agent documents with.
    pub decrypt_by: String,
    /// The agent's private key file (PKCS#8 PEM, 0600).
    pub key_file: PathBuf,
    /// Accept any server certificate (a fresh appliance's self-signed one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Additional trusted CA certificates (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The name the server certificate is verified for, instead of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("server", &self.server)
            .field("identity", &self.identity)
            .field("agent_id", &self.agent_id)
            .field("refresh_token", &"<secret>")
            .field("expires_at", &self.expires_at)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl AgentState {
    /// The state after an enrollment or refresh.
    pub fn new(server: &str, identity: &str, session: &Session, key_file: PathBuf) -> Self {
        AgentState {
            server: server.to_owned(),
            identity: identity.to_owned(),
            agent_id: session.agent_id.clone(),
            refresh_token: session.refresh_token.clone(),
            expires_at: session.expires_at.clone(),
            decrypt_by: session.decrypt_by.clone(),
            key_file,
            insecure: false,
            ca_file: None,
            server_name: None,
        }
    }

    /// Takes a refreshed session.
    pub fn update(&mut self, session: &Session) {
        self.agent_id.clone_from(&session.agent_id);
        self.refresh_token.clone_from(&session.refresh_token);
        self.expires_at.clone_from(&session.expires_at);
        self.decrypt_by.clone_from(&session.decrypt_by);
    }

    /// Reads the state file.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let text = std::fs::read_to_string(path).map_err(|source| StateError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| StateError::Format {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the state file (mode 0600) through a temporary file renamed over it,
    /// so that a crash never leaves half a state or loses the refresh token.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|source| StateError::Format {
            path: path.to_owned(),
            source,
        })?;
        text.push('\n');
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".new");
        let temporary = PathBuf::from(temporary);
        let _ = std::fs::remove_file(&temporary);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temporary).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&temporary, path).map_err(io)?;
        Ok(())
    }
}
