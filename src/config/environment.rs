//! Which environment variables a configuration reads, and which it does not.
//!
//! [`environment_report`] sorts a process environment into the variables that
//! set something ([`SETTINGS`](super::SETTINGS) and the command line's
//! `BTPS_CONFIG`), the reference's variables this server does not support (each
//! with what to do instead), and other `BTPS_*` / `POSTGRES_*` / `MONGODB_*`
//! names nobody reads — usually a typo, named with a suggestion. `btps
//! check-config` prints it, so that a variable is never ignored silently.

use super::SETTINGS;

/// What one environment variable does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvironmentNote {
    /// It sets the TOML key(s) named.
    Recognised {
        /// The variable.
        name: String,
        /// The setting it sets (a TOML key, or what it is for).
        setting: String,
    },
    /// A variable of the reference's deployment guide that this server does not
    /// read.
    Unsupported {
        /// The variable.
        name: String,
        /// Why, and what to use instead.
        message: String,
    },
    /// A name in btps's (or the reference's) families that nothing reads.
    Unknown {
        /// The variable.
        name: String,
        /// A recognised variable it may have been meant as.
        suggestion: Option<String>,
    },
}

/// The reference's variables that `btps serve` does not read, with why.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "MONGODB_URI",
        "MongoDB is not supported; use postgres or redb",
    ),
    (
        "MONGODB_COLLECTION",
        "MongoDB is not supported; use postgres or redb",
    ),
    (
        "MONGODB_IDENTITY_COLLECTION",
        "MongoDB is not supported; use postgres or redb",
    ),
    (
        "MIDDLEWARE_PATH",
        "not read: middleware is Rust code registered with Server::builder().middleware \
         (docs/embedding.md §7); btps serve has the rate limiter and IP filter built in",
    ),
    (
        "USE_TLS",
        "not read: btps always serves TLS (tls.cert_path / BTPS_TLS_CERT)",
    ),
    (
        "TLS_CERT",
        "not read: the certificate is a PEM file, tls.cert_path / BTPS_TLS_CERT",
    ),
    (
        "TLS_KEY",
        "not read: the key is a PEM file, tls.key_path / BTPS_TLS_KEY",
    ),
    (
        "NODE_ENV",
        "not read: btps has no development mode; log.level sets the verbosity",
    ),
];

/// Families whose unknown members are reported.
const FAMILIES: &[&str] = &["BTPS_", "POSTGRES_", "MONGODB_"];

/// Variables of the test harness (`BTPS_TEST_POSTGRES_URI`), not the server's.
const TEST_HARNESS: &str = "BTPS_TEST_";

/// Sorts `vars` (name, value) into notes, in name order. Values are not looked at
/// (some are secrets).
pub fn environment_report<'a>(
    vars: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<EnvironmentNote> {
    let mut names: Vec<&str> = vars.into_iter().map(|(name, _)| name).collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter().filter_map(note).collect()
}

fn note(name: &str) -> Option<EnvironmentNote> {
    let settings: Vec<&str> = SETTINGS
        .iter()
        .filter(|(_, env)| *env == Some(name))
        .map(|(key, _)| *key)
        .collect();
    if !settings.is_empty() {
        return Some(EnvironmentNote::Recognised {
            name: name.to_owned(),
            setting: settings.join(", "),
        });
    }
    if name == "BTPS_CONFIG" {
        return Some(EnvironmentNote::Recognised {
            name: name.to_owned(),
            setting: "the configuration file (--config)".to_owned(),
        });
    }
    if let Some((_, message)) = UNSUPPORTED.iter().find(|(known, _)| *known == name) {
        return Some(EnvironmentNote::Unsupported {
            name: name.to_owned(),
            message: (*message).to_owned(),
        });
    }
    if name.starts_with("MONGODB_") {
        return Some(EnvironmentNote::Unsupported {
            name: name.to_owned(),
            message: "MongoDB is not supported; use postgres or redb".to_owned(),
        });
    }
    if FAMILIES.iter().any(|family| name.starts_with(family)) && !name.starts_with(TEST_HARNESS) {
        let suggestion = SETTINGS
            .iter()
            .filter_map(|(_, env)| *env)
            .chain(["BTPS_CONFIG"])
            .map(|known| (edit_distance(name, known), known))
            .filter(|(distance, _)| *distance <= 3)
            .min()
            .map(|(_, known)| known.to_owned());
        return Some(EnvironmentNote::Unknown {
            name: name.to_owned(),
            suggestion,
        });
    }
    None
}

fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for (i, left_char) in left.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, right_char) in right.iter().enumerate() {
            let substitution = previous[j] + usize::from(left_char != *right_char);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[right.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_sorted_out() {
        let report = environment_report([
            ("POSTGRES_URI", "postgres://u:secret@h/db"),
            ("MONGODB_URI", "mongodb://x"),
            ("MONGODB_REPLICA_SET", "rs0"),
            ("BTPS_DATABSE", "/x"),
            ("HOME", "/root"),
            ("PORT", "3443"),
            ("BTPS_CONFIG", "/etc/btps/btps.toml"),
        ]);
        assert_eq!(
            report,
            vec![
                EnvironmentNote::Recognised {
                    name: "BTPS_CONFIG".to_owned(),
                    setting: "the configuration file (--config)".to_owned(),
                },
                EnvironmentNote::Unknown {
                    name: "BTPS_DATABSE".to_owned(),
                    suggestion: Some("BTPS_DATABASE".to_owned()),
                },
                EnvironmentNote::Unsupported {
                    name: "MONGODB_REPLICA_SET".to_owned(),
                    message: "MongoDB is not supported; use postgres or redb".to_owned(),
                },
                EnvironmentNote::Unsupported {
                    name: "MONGODB_URI".to_owned(),
                    message: "MongoDB is not supported; use postgres or redb".to_owned(),
                },
                EnvironmentNote::Recognised {
                    name: "PORT".to_owned(),
                    setting: "listen".to_owned(),
                },
                EnvironmentNote::Recognised {
                    name: "POSTGRES_URI".to_owned(),
                    setting: "storage.postgres.uri".to_owned(),
                },
            ]
        );
    }
}
