//! `btps check-config`: loads the configuration exactly as `btps serve` would and
//! prints every problem, or a summary of the effective settings.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use btps::config::{Config, EnvironmentNote, environment_report, process_env};
use serde_json::json;

use super::admin::print_json;

/// The process environment sorted out: what sets something, what the reference
/// has that this server does not read, what nobody reads (values never shown).
fn environment() -> Vec<EnvironmentNote> {
    let vars: Vec<(String, String)> = std::env::vars_os()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .collect();
    environment_report(
        vars.iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    )
}

fn environment_json(notes: &[EnvironmentNote]) -> Vec<serde_json::Value> {
    notes
        .iter()
        .map(|note| match note {
            EnvironmentNote::Recognised { name, setting } => {
                json!({"name": name, "state": "recognised", "setting": setting})
            }
            EnvironmentNote::Unsupported { name, message } => {
                json!({"name": name, "state": "unsupported", "message": message})
            }
            EnvironmentNote::Unknown { name, suggestion } => {
                json!({"name": name, "state": "unknown", "suggestion": suggestion})
            }
        })
        .collect()
}

fn print_environment(notes: &[EnvironmentNote]) {
    if notes.is_empty() {
        return;
    }
    println!("environment:");
    for note in notes {
        match note {
            EnvironmentNote::Recognised { name, setting } => println!("  {name}: sets {setting}"),
            EnvironmentNote::Unsupported { name, message } => {
                println!("  {name}: unsupported: {message}");
            }
            EnvironmentNote::Unknown { name, suggestion } => match suggestion {
                Some(known) => println!("  {name}: unknown, not read; did you mean {known}?"),
                None => println!("  {name}: unknown, not read"),
            },
        }
    }
}

/// Arguments of `btps check-config`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckConfigArgs {
    /// The TOML configuration file. Default: /etc/btps/btps.toml when it exists, else
    /// defaults and environment only (as `btps serve`).
    #[arg(long, env = "BTPS_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON instead of text: `{"ok": true, "summary": [{"area", "value"}],
    /// "environment": [...]}`, or `{"ok": false, "problems": [{"setting", "message"}],
    /// "environment": [...]}`; each environment entry is `{"name", "state":
    /// "recognised"|"unsupported"|"unknown", "setting"|"message"|"suggestion"}`.
    #[arg(long)]
    json: bool,
}

pub(crate) fn check_config(args: &CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let file = super::serve::config_file(args.config.clone());
    let environment = environment();
    match Config::load(file.as_deref(), &process_env) {
        Ok(config) if args.json => {
            // The summary's `area: value` lines as objects.
            let summary: Vec<_> = summary(&config)
                .iter()
                .map(|line| {
                    let (area, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                    json!({"area": area, "value": value.trim()})
                })
                .collect();
            print_json(&json!({
                "ok": true,
                "summary": summary,
                "environment": environment_json(&environment),
            }));
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) if args.json => {
            let problems: Vec<_> = errors
                .0
                .iter()
                .map(|error| json!({"setting": error.setting, "message": error.message}))
                .collect();
            print_json(&json!({
                "ok": false,
                "problems": problems,
                "environment": environment_json(&environment),
            }));
            Ok(ExitCode::from(2))
        }
        Ok(config) => {
            println!("configuration OK");
            for line in summary(&config) {
                println!("  {line}");
            }
            print_environment(&environment);
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            let count = errors.0.len();
            println!(
                "configuration has {count} problem{}:",
                if count == 1 { "" } else { "s" }
            );
            for error in &errors.0 {
                println!("  {error}");
            }
            print_environment(&environment);
            Ok(ExitCode::from(2))
        }
    }
}

/// Whether a file the server needs is there or will be created at start.
fn presence(path: &Path) -> String {
    let state = if path.exists() {
        "exists"
    } else {
        "will be created"
    };
    format!("{} ({state})", path.display())
}

/// The effective settings, one line per area.
fn summary(config: &Config) -> Vec<String> {
    let mut lines = vec![
        format!("data dir:        {}", presence(&config.data_dir)),
        format!("listen:          {}", config.listen),
        format!(
            "HTTP endpoint:   {}",
            config
                .http
                .listen
                .map_or_else(|| "off".to_owned(), |address| address.to_string())
        ),
        format!(
            "server identity: {} (selector {})",
            config
                .server
                .identity
                .as_ref()
                .map_or("none (domain signers or admin$<domain>)", |identity| {
                    identity.as_str()
                }),
            config.server.selector
        ),
        format!(
            "server key:      {}",
            presence(&config.server.private_key_path)
        ),
        format!(
            "TLS:             {} (TLS {}+, handshake timeout {} ms)",
            presence(&config.tls.cert_path),
            config.tls.min_version.as_str(),
            config.tls.handshake_timeout.as_millis()
        ),
    ];
    lines.push(match config.storage.kind {
        btps::config::StorageKind::Redb => format!(
            "storage:         redb {} (cache {} MiB)",
            presence(&config.storage.database_path),
            config.storage.cache_size_bytes >> 20
        ),
        btps::config::StorageKind::Json => format!(
            "storage:         json {} and {}",
            config.storage.trust_file_path.display(),
            config.storage.identity_file_path.display()
        ),
        btps::config::StorageKind::Postgres => {
            let postgres = &config.storage.postgres;
            format!(
                "storage:         postgres {} (tables {} and {}, {} connections, connect timeout {} ms; back up with pg_dump)",
                postgres
                    .uri
                    .as_ref()
                    .map_or_else(|| "(no uri)".to_owned(), ToString::to_string),
                postgres.trust_table,
                postgres.identity_table,
                postgres.pool_size,
                postgres.connect_timeout.as_millis()
            )
        }
    });
    let servers = if config.dns.servers.is_empty() {
        "system resolvers".to_owned()
    } else {
        config
            .dns
            .servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    lines.push(format!(
        "DNS:             {servers} (timeout {} ms x {}, cache {} names)",
        config.dns.timeout.as_millis(),
        config.dns.attempts,
        config.dns.cache.capacity
    ));
    lines.push(format!(
        "limits:          lines up to {} bytes, {} connections, idle timeout {} ms",
        config.limits.max_line_bytes,
        config.limits.max_connections,
        config.limits.idle_timeout.as_millis()
    ));
    let rate = &config.rate_limit;
    lines.push(if rate.enabled {
        format!(
            "rate limit:      per IP {}/s burst {}, per sender {}/s burst {}",
            rate.per_ip.rate_per_second,
            rate.per_ip.burst,
            rate.per_sender.rate_per_second,
            rate.per_sender.burst
        )
    } else {
        "rate limit:      off".to_owned()
    });
    let nets = |list: &[ipnet::IpNet]| {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let filter = &config.ip_filter;
    if !filter.allow.is_empty() || !filter.deny.is_empty() {
        lines.push(format!(
            "IP filter:       allow [{}], deny [{}]",
            nets(&filter.allow),
            nets(&filter.deny)
        ));
    }
    if config.domains.is_empty() {
        lines.push("hosted domains:  none".to_owned());
    }
    for domain in &config.domains {
        lines.push(format!(
            "hosted domain:   {} (lookups signed by {})",
            domain.name, domain.signer
        ));
    }
    lines.push(format!(
        "log:             {} ({})",
        config.log.level,
        config.log.format.as_str()
    ));
    lines
}
