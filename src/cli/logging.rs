//! Log output: human-readable on a terminal, JSON lines under systemd (or when asked),
//! level from `RUST_LOG` or else the configuration.
//!
//! Logs go to standard error; standard output is kept for the few lines an operator
//! reads at start (created files, the listening address). Under systemd both reach
//! the journal; one JSON object per line lets `journalctl -o cat | jq` and log
//! shippers read the fields (code, sender, receiver, remote) without parsing prose.
//! What is logged never includes key material, tokens or document content: log
//! statements name identities, ids, codes and addresses only.

use std::io::IsTerminal;

use btps::config::{LogFormat, LogSettings};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless (the second call
/// keeps the first subscriber).
pub(crate) fn init(settings: &LogSettings) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, rejected) = filter(rust_log.as_deref(), &settings.level);
    let json = wants_json(
        settings.format,
        std::env::var_os("JOURNAL_STREAM").is_some(),
        std::io::stderr().is_terminal(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        // Colours only for a person at a terminal, never into a file or a pipe.
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    if let Some(error) = rejected {
        tracing::warn!(%error, level = %settings.level, "RUST_LOG is not a valid filter; using log.level");
    }
}

/// The filter: `RUST_LOG` when set and valid (it wins over the configuration, as
/// documented), else the configured level, which the configuration loader has
/// already checked. Returns why `RUST_LOG` was rejected, to be logged once the
/// subscriber exists.
fn filter(rust_log: Option<&str>, level: &str) -> (EnvFilter, Option<String>) {
    let configured = || EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    match rust_log.filter(|text| !text.trim().is_empty()) {
        None => (configured(), None),
        Some(text) => match EnvFilter::try_new(text) {
            Ok(filter) => (filter, None),
            Err(error) => (configured(), Some(error.to_string())),
        },
    }
}

/// JSON lines when asked, or — for `auto` — when the output goes to the journal
/// (systemd sets `JOURNAL_STREAM` for services whose standard error it collects) or
/// anywhere else that is not a terminal (containers, files).
fn wants_json(format: LogFormat, journal_stream: bool, terminal: bool) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => journal_stream || !terminal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_format_is_text_only_on_a_terminal_outside_the_journal() {
        assert!(!wants_json(LogFormat::Auto, false, true));
        assert!(wants_json(LogFormat::Auto, true, true));
        assert!(wants_json(LogFormat::Auto, false, false));
        assert!(wants_json(LogFormat::Json, false, true));
        assert!(!wants_json(LogFormat::Text, true, false));
    }

    #[test]
    fn rust_log_wins_when_valid_and_falls_back_when_not() {
        let (chosen, rejected) = filter(Some("btps=trace"), "warn");
        assert_eq!(chosen.to_string(), "btps=trace");
        assert_eq!(rejected, None);
        let (chosen, rejected) = filter(None, "warn");
        assert_eq!(chosen.to_string(), "warn");
        assert_eq!(rejected, None);
        let (chosen, rejected) = filter(Some("  "), "debug");
        assert_eq!(chosen.to_string(), "debug");
        assert_eq!(rejected, None);
        let (chosen, rejected) = filter(Some("btps=loud"), "warn");
        assert_eq!(chosen.to_string(), "warn");
        assert!(rejected.is_some());
    }
}
