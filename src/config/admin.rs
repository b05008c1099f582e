//! `[admin]`: the local admin socket through which the operator commands reach a
//! running server, and the permissions of its file.

use std::path::{Path, PathBuf};

use super::Config;
use super::loader::{Loader, Raw, Section, path};

/// The local admin socket: how the operator commands reach a running server.
///
/// redb lets one process hold the database, so while `btps serve` runs, `btps
/// identity`, `btps trust`, `btps backup` and the others send their requests over
/// this Unix socket instead. Access control is the socket file's permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// Whether `btps serve` opens the socket.
    pub enabled: bool,
    /// The socket file; `<data_dir>/admin.sock` unless configured.
    pub socket: PathBuf,
    /// Permission bits of the socket file: `0o600` (owner only) by default; `0o660`
    /// lets the file's group administer the server too. Never any bits for others.
    pub socket_mode: u32,
}

/// The socket file name inside the data directory.
pub const ADMIN_SOCKET_FILE_NAME: &str = "admin.sock";

impl AdminSettings {
    /// On, at `<data_dir>/admin.sock`, owner only.
    pub(super) fn defaults_under(data_dir: &Path) -> Self {
        AdminSettings {
            enabled: true,
            socket: data_dir.join(ADMIN_SOCKET_FILE_NAME),
            socket_mode: 0o600,
        }
    }
}

impl Loader<'_> {
    pub(super) fn admin(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "admin");
        let admin = &mut config.admin;
        self.setting(
            &mut section,
            "enabled",
            Some("BTPS_ADMIN"),
            Raw::boolean,
            &mut admin.enabled,
        );
        self.setting(
            &mut section,
            "socket",
            Some("BTPS_ADMIN_SOCKET"),
            path,
            &mut admin.socket,
        );
        self.setting(
            &mut section,
            "socket_mode",
            Some("BTPS_ADMIN_SOCKET_MODE"),
            socket_mode,
            &mut admin.socket_mode,
        );
        self.finish(section);
    }
}

/// Permission bits of the admin socket: an octal string (`"0660"`) or a TOML
/// integer (`0o660`). The owner must be able to connect (read and write), and others
/// get nothing: whoever can connect administers the server.
fn socket_mode(raw: Raw) -> Result<u32, String> {
    let mode = match raw {
        Raw::Toml(toml::Value::Integer(value)) => u32::try_from(value)
            .map_err(|_| format!("{value} is not a permission mode such as \"0600\""))?,
        other => {
            let text = other.text()?;
            let digits = text.trim().trim_start_matches("0o");
            u32::from_str_radix(digits, 8).map_err(|_| {
                format!("{text:?} is not an octal permission mode such as \"0600\" or \"0660\"")
            })?
        }
    };
    if mode > 0o777 {
        return Err(format!(
            "{mode:#o} has bits beyond the permission bits (at most 0777)"
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(format!(
            "{mode:04o} does not let the owner connect; it needs at least 0600"
        ));
    }
    if mode & 0o007 != 0 {
        return Err(format!(
            "{mode:04o} lets every local user administer the server; use 0600, or 0660 with a dedicated group"
        ));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_modes_keep_others_out_and_the_owner_in() {
        let text = |text: &str| socket_mode(Raw::Env(text.to_owned()));
        assert_eq!(text("0600"), Ok(0o600));
        assert_eq!(text("660"), Ok(0o660));
        assert_eq!(text("0o640"), Ok(0o640));
        assert_eq!(
            socket_mode(Raw::Toml(toml::Value::Integer(0o660))),
            Ok(0o660)
        );
        assert!(text("0666").unwrap_err().contains("every local user"));
        assert!(text("0400").unwrap_err().contains("owner"));
        assert!(text("4600").is_err());
        assert!(text("rw-------").is_err());
    }

    #[test]
    fn the_admin_socket_follows_the_data_directory() {
        let config = Config::defaults_under(Path::new("/srv/btps"));
        assert_eq!(config.admin.socket, Path::new("/srv/btps/admin.sock"));
        assert_eq!(config.admin.socket_mode, 0o600);
        assert!(config.admin.enabled);
    }
}
