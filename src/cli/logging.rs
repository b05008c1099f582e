//! Log output: human-readable on a terminal, JSON lines under systemd (or when asked),
//! level from `RUST_LOG` or else the configuration.

use std::io::IsTerminal;

use btps::config::{LogFormat, LogSettings};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless (the second call
/// keeps the first subscriber).
pub(crate) fn init(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        // systemd sets JOURNAL_STREAM for services whose output goes to the journal.
        LogFormat::Auto => {
            std::env::var_os("JOURNAL_STREAM").is_some() || !std::io::stderr().is_terminal()
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
