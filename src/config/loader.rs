//! The loader behind [`Config::load`]: how a value is read from the TOML file or the
//! environment, the layering of the two over the defaults, error collection, unknown
//! keys, and the top-level settings (`data_dir`, `listen`). Each section's own
//! settings are read by the `Loader` method in that section's file.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Config, ConfigError, DEFAULT_DATA_DIR};
use crate::identity::Identity;

/// A value before it is interpreted: from the TOML file or the environment.
pub(super) enum Raw {
    Toml(toml::Value),
    Env(String),
}

impl Raw {
    /// The value as text: a TOML string, or the environment value.
    pub(super) fn text(self) -> Result<String, String> {
        match self {
            Raw::Env(text) => Ok(text),
            Raw::Toml(toml::Value::String(text)) => Ok(text),
            Raw::Toml(other) => Err(format!("expected a string, found {}", other.type_str())),
        }
    }

    /// A non-negative integer (TOML integer, or decimal digits in the environment).
    pub(super) fn unsigned(self) -> Result<u64, String> {
        match self {
            Raw::Env(text) => text
                .parse::<u64>()
                .map_err(|_| format!("expected a non-negative integer, found {text:?}")),
            Raw::Toml(toml::Value::Integer(value)) => u64::try_from(value)
                .map_err(|_| format!("expected a non-negative integer, found {value}")),
            Raw::Toml(other) => Err(format!("expected an integer, found {}", other.type_str())),
        }
    }

    pub(super) fn boolean(self) -> Result<bool, String> {
        match self {
            Raw::Env(text) => match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("expected true or false, found {text:?}")),
            },
            Raw::Toml(toml::Value::Boolean(value)) => Ok(value),
            Raw::Toml(other) => Err(format!(
                "expected true or false, found {}",
                other.type_str()
            )),
        }
    }

    pub(super) fn float(self) -> Result<f64, String> {
        match self {
            Raw::Env(text) => text
                .parse::<f64>()
                .map_err(|_| format!("expected a number, found {text:?}")),
            Raw::Toml(toml::Value::Float(value)) => Ok(value),
            // Rates are small; every i64 a person writes here is exact as f64.
            #[allow(clippy::cast_precision_loss)]
            Raw::Toml(toml::Value::Integer(value)) => Ok(value as f64),
            Raw::Toml(other) => Err(format!("expected a number, found {}", other.type_str())),
        }
    }

    /// A list of strings: a TOML array, or comma-separated in the environment.
    pub(super) fn list(self) -> Result<Vec<String>, String> {
        match self {
            Raw::Env(text) => Ok(text
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()),
            Raw::Toml(toml::Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(text) => Ok(text),
                    other => Err(format!(
                        "expected a list of strings, found an element of type {}",
                        other.type_str()
                    )),
                })
                .collect(),
            Raw::Toml(other) => Err(format!(
                "expected a list of strings, found {}",
                other.type_str()
            )),
        }
    }

    /// A byte size: an integer, or a string with an optional binary unit.
    pub(super) fn size(self) -> Result<u64, String> {
        match self {
            Raw::Toml(toml::Value::Integer(_)) => self.unsigned(),
            other => parse_size(&other.text()?),
        }
    }
}

/// Parses `1048576`, `"512KiB"`, `"64 MiB"`, `"1GiB"` (binary units only, so a size
/// is never off by the 1000-vs-1024 confusion).
fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("expected a size such as 33554432 or \"32MiB\", found {text:?}"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit in {text:?}; use bytes or KiB, MiB, GiB"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A duration in milliseconds that must be positive.
pub(super) fn positive_ms(raw: Raw) -> Result<Duration, String> {
    match raw.unsigned()? {
        0 => Err("must be greater than 0".to_owned()),
        ms => Ok(Duration::from_millis(ms)),
    }
}

pub(super) fn positive_usize(raw: Raw) -> Result<usize, String> {
    let value = raw.unsigned()?;
    if value == 0 {
        return Err("must be at least 1".to_owned());
    }
    usize::try_from(value).map_err(|_| format!("{value} is too large for this machine"))
}

pub(super) fn path(raw: Raw) -> Result<PathBuf, String> {
    let text = raw.text()?;
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(PathBuf::from(text))
}

pub(super) fn identity(raw: Raw) -> Result<Identity, String> {
    let text = raw.text()?;
    Identity::parse(&text).map_err(|error| format!("{text:?}: {error}"))
}

/// A table of the file being read, with the keys not yet consumed: whatever is left
/// when the section is finished is an unknown key.
pub(super) struct Section {
    /// The dotted path of the table (`""` for the top level, `rate_limit.per_ip`).
    pub(super) path: String,
    pub(super) table: toml::Table,
    /// Keys asked for, to suggest a correction for a misspelt one.
    known: Vec<&'static str>,
}

impl Section {
    pub(super) fn new(path: String, table: toml::Table) -> Self {
        Section {
            path,
            table,
            known: Vec::new(),
        }
    }

    fn empty(path: &str) -> Self {
        Section::new(path.to_owned(), toml::Table::new())
    }

    pub(super) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn take(&mut self, key: &'static str) -> Option<toml::Value> {
        self.known.push(key);
        self.table.remove(key)
    }
}

/// The state of one [`Config::load`]: the errors so far and the environment.
pub(super) struct Loader<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) errors: Vec<ConfigError>,
    /// Every TOML key and environment variable consulted (checked against
    /// [`SETTINGS`](super::SETTINGS) by a test).
    pub(super) consulted: BTreeSet<(String, Option<&'static str>)>,
}

impl<'a> Loader<'a> {
    pub(super) fn new(env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Loader {
            env,
            errors: Vec::new(),
            consulted: BTreeSet::new(),
        }
    }

    pub(super) fn error(&mut self, setting: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(setting, message));
    }

    pub(super) fn env(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|value| !value.trim().is_empty())
    }

    /// Applies one setting: the TOML value of `key` in `section`, then the
    /// environment variable `env`, each parsed with `parse`; a bad value is recorded
    /// and leaves `target` unchanged.
    pub(super) fn setting<T>(
        &mut self,
        section: &mut Section,
        key: &'static str,
        env: Option<&'static str>,
        parse: impl Fn(Raw) -> Result<T, String>,
        target: &mut T,
    ) {
        let full_key = section.key(key);
        self.consulted.insert((full_key.clone(), env));
        if let Some(value) = section.take(key) {
            match parse(Raw::Toml(value)) {
                Ok(value) => *target = value,
                Err(message) => self.error(full_key, message),
            }
        }
        if let Some(name) = env
            && let Some(value) = self.env(name)
        {
            match parse(Raw::Env(value)) {
                Ok(value) => *target = value,
                Err(message) => self.error(name, message),
            }
        }
    }

    /// Like [`Loader::setting`] for a value that has no default of its own.
    pub(super) fn optional<T>(
        &mut self,
        section: &mut Section,
        key: &'static str,
        env: Option<&'static str>,
        parse: impl Fn(Raw) -> Result<T, String>,
        target: &mut Option<T>,
    ) {
        self.setting(section, key, env, |raw| parse(raw).map(Some), target);
    }

    /// The sub-table `key` of `section` (empty when absent or not a table).
    pub(super) fn table(&mut self, section: &mut Section, key: &'static str) -> Section {
        let path = section.key(key);
        match section.take(key) {
            None => Section::empty(&path),
            Some(toml::Value::Table(table)) => Section::new(path, table),
            Some(other) => {
                self.error(
                    path.clone(),
                    format!("expected a table, found {}", other.type_str()),
                );
                Section::empty(&path)
            }
        }
    }

    /// Reports the keys nobody asked for. Takes the section so that nothing can be
    /// read from it afterwards.
    pub(super) fn finish(&mut self, mut section: Section) {
        let leftover = std::mem::take(&mut section.table);
        for key in leftover.keys() {
            let suggestion = section
                .known
                .iter()
                .map(|known| (edit_distance(key, known), *known))
                .filter(|(distance, _)| *distance <= 3)
                .min()
                .map(|(_, known)| format!("; did you mean '{}'?", section.key(known)))
                .unwrap_or_default();
            self.error(section.key(key), format!("unknown setting{suggestion}"));
        }
    }

    /// The TOML file as a table (empty, with an error recorded, if unreadable).
    fn read_file(&mut self, file: &Path) -> toml::Table {
        let setting = format!("config file {}", file.display());
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) => {
                self.error(setting, format!("cannot be read: {error}"));
                return toml::Table::new();
            }
        };
        match text.parse::<toml::Table>() {
            Ok(table) => table,
            Err(error) => {
                self.error(
                    setting,
                    format!("is not valid TOML: {}", error.to_string().trim_end()),
                );
                toml::Table::new()
            }
        }
    }

    pub(super) fn run(&mut self, file: Option<&Path>) -> Config {
        let table = match file {
            Some(file) => self.read_file(file),
            None => toml::Table::new(),
        };
        let mut top = Section::new(String::new(), table);

        // data_dir first: the defaults of every path below follow it.
        let mut data_dir = PathBuf::from(DEFAULT_DATA_DIR);
        self.setting(
            &mut top,
            "data_dir",
            Some("BTPS_DATA_DIR"),
            path,
            &mut data_dir,
        );
        let mut config = Config::defaults_under(&data_dir);

        self.setting(
            &mut top,
            "listen",
            Some("BTPS_LISTEN"),
            |raw| {
                let text = raw.text()?;
                text.parse::<SocketAddr>()
                    .map_err(|_| format!("{text:?} is not an IP:PORT address (e.g. 0.0.0.0:3443)"))
            },
            &mut config.listen,
        );
        // PORT (the reference's name) changes only the port of `listen`.
        let mut port = config.listen.port();
        self.consulted.insert(("listen".to_owned(), Some("PORT")));
        if let Some(text) = self.env("PORT") {
            match text.parse::<u16>() {
                Ok(value) => port = value,
                Err(_) => self.error("PORT", format!("{text:?} is not a port number (0-65535)")),
            }
        }
        config.listen.set_port(port);

        self.server(&mut top, &mut config);
        self.tls(&mut top, &mut config);
        self.storage(&mut top, &mut config);
        self.dns(&mut top, &mut config);
        self.limits(&mut top, &mut config);
        self.trust(&mut top, &mut config);
        self.rate_limit(&mut top, &mut config);
        self.ip_filter(&mut top, &mut config);
        self.domains(&mut top, &mut config);
        self.log(&mut top, &mut config);
        self.admin(&mut top, &mut config);
        self.http(&mut top, &mut config);
        self.delivery(&mut top, &mut config);
        self.agents(&mut top, &mut config);
        self.finish(top);
        config
    }
}

/// Levenshtein distance, for "did you mean" on unknown keys.
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
    fn sizes_take_binary_units_only() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size(" 2 GiB "), Ok(2 << 30));
        assert_eq!(parse_size("512kib"), Ok(512 << 10));
        assert!(parse_size("64MB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("idle_timout_ms", "idle_timeout_ms"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
