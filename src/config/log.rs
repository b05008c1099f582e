//! `[log]`: the log filter and the format of log lines.

use super::Config;
use super::loader::{Loader, Section};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON when standard error is not a terminal (journald, containers), text otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `"auto"`, `"text"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Logging settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// A `tracing` filter such as `info` or `btps=debug,info`; `RUST_LOG` wins at run time.
    pub level: String,
    /// Text, JSON, or chosen by whether standard error is a terminal.
    pub format: LogFormat,
}

impl LogSettings {
    /// `info`, in the format chosen by whether standard error is a terminal.
    pub(super) fn defaults() -> Self {
        LogSettings {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

impl Loader<'_> {
    pub(super) fn log(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "log");
        let log = &mut config.log;
        self.setting(
            &mut section,
            "level",
            Some("BTPS_LOG_LEVEL"),
            |raw| {
                let text = raw.text()?;
                tracing_subscriber::EnvFilter::try_new(&text)
                    .map(|_| text.clone())
                    .map_err(|error| {
                        format!("{text:?} is not a log filter (e.g. info, btps=debug): {error}")
                    })
            },
            &mut log.level,
        );
        self.setting(
            &mut section,
            "format",
            Some("BTPS_LOG_FORMAT"),
            |raw| match raw.text()?.as_str() {
                "auto" => Ok(LogFormat::Auto),
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                other => Err(format!(
                    "expected \"auto\", \"text\" or \"json\", found {other:?}"
                )),
            },
            &mut log.format,
        );
        self.finish(section);
    }
}
