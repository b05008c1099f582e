//! The test suite itself: it runs beside a developer's own server and says clearly
//! what is missing when the interoperability vectors are not there.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::VECTORS_MISSING;

/// Every `.rs` file under `tests/`, with its text.
fn test_sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, found: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                found.push((path, text));
            }
        }
    }
    let mut found = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"),
        &mut found,
    );
    found.sort();
    found
}

/// Whether a line begins a function item.
fn starts_fn(line: &str) -> bool {
    let line = line.trim_start();
    [
        "fn ",
        "async fn ",
        "pub fn ",
        "pub(crate) fn ",
        "pub(super) fn ",
    ]
    .iter()
    .any(|start| line.starts_with(start))
}

/// The functions of `text` (by line ranges) that start `btps serve` without choosing
/// both its BTPS and its HTTP address: such a server binds the defaults
/// addresses, which a developer's own server may hold.
/// Any function naming the subcommand (`"serve"`) counts as starting one, whether it
/// passes it as an argument or recognises it in commands read from elsewhere (the
/// walkthrough of docs/try-it.md). `btps dns serve` (`"dns", "serve"`) binds one
/// address, 127.0.0.1:8053 by default, so it must name `--listen`.
fn default_port_servers(text: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut problems = Vec::new();
    for (number, line) in lines.iter().enumerate() {
        let mut servers = line.match_indices(r#""serve""#).map(|(at, _)| {
            let before = line[..at].trim_end().trim_end_matches(',').trim_end();
            before.ends_with(r#""dns""#)
        });
        let Some(dns_only) = servers.next() else {
            continue;
        };
        let dns_only = dns_only && servers.all(|dns| dns);
        let start = (0..=number)
            .rev()
            .find(|&at| starts_fn(lines[at]))
            .unwrap_or(0);
        let end = (number + 1..lines.len())
            .find(|&at| starts_fn(lines[at]))
            .unwrap_or(lines.len());
        let body = lines[start..end].join("\n");
        let listen = body.contains(r#""--listen""#) || body.contains(r#""BTPS_LISTEN""#);
        let http = body.contains(r#""--http-listen""#) || body.contains(r#""BTPS_HTTP_LISTEN""#);
        if !(listen && (http || dns_only)) {
            problems.push(number + 1);
        }
    }
    problems
}

/// The addresses with a fixed, non-zero port that a test binds or passes to
/// `--listen` / `--http-listen`.
fn fixed_bindings(text: &str) -> Vec<String> {
    let literals: Vec<&str> = text.split('"').skip(1).step_by(2).collect();
    let fixed = |address: &str| {
        address
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|address| address.port() != 0)
    };
    let mut found = Vec::new();
    for pair in literals.windows(2) {
        if matches!(pair[0], "--listen" | "--http-listen" | "--dns-listen") && fixed(pair[1]) {
            found.push(format!("{} {}", pair[0], pair[1]));
        }
    }
    for (index, _) in text.match_indices("bind(\"") {
        let literal = text[index + 6..].split('"').next().unwrap_or("");
        if fixed(literal) {
            found.push(format!("bind({literal})"));
        }
    }
    found
}

#[test]
fn no_test_binds_a_fixed_port() {
    let mut problems = Vec::new();
    for (path, text) in test_sources() {
        if path.ends_with("hygiene.rs") {
            continue;
        }
        for line in default_port_servers(&text) {
            problems.push(format!(
                "{}:{line}: btps serve without both --listen/BTPS_LISTEN and --http-listen/BTPS_HTTP_LISTEN (btps dns serve: without --listen)",
                path.display()
            ));
        }
        for binding in fixed_bindings(&text) {
            problems.push(format!("{}: binds a fixed port: {binding}", path.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_fixed_port_checks_catch_what_they_should() {
    let unsafe_server = "fn start() {\n    Command::new(btps).arg(\"serve\").spawn();\n}\n";
    assert_eq!(default_port_servers(unsafe_server), [2]);
    let safe_server = "fn start() {\n    Command::new(btps)\n        .arg(\"serve\")\n        .args([\"--listen\", \"127.0.0.1:0\"])\n        .env(\"BTPS_HTTP_LISTEN\", \"off\");\n}\n";
    assert!(default_port_servers(safe_server).is_empty());
    let read_elsewhere = "fn run(words: &[&str]) {\n    if words[1] == \"serve\" {\n        spawn(words);\n    }\n}\n";
    assert_eq!(default_port_servers(read_elsewhere), [2]);
    let dns_responder = "fn dns() {\n    btps(&[\"dns\", \"serve\", \"--json\"]);\n}\nfn named() {\n    btps(&[\"dns\", \"serve\", \"--listen\", \"127.0.0.1:0\"]);\n}\n";
    assert_eq!(default_port_servers(dns_responder), [2]);
    assert_eq!(
        fixed_bindings(
            "x.args([\"--listen\",\n \"127.0.0.1:4443\"]); TcpListener::bind(\"0.0.0.0:4480\")"
        ),
        ["--listen 127.0.0.1:4443", "bind(0.0.0.0:4480)"]
    );
    assert!(fixed_bindings("bind(\"127.0.0.1:0\"); [\"--listen\", \"[::1]:0\"]").is_empty());
}

/// Without the vectors, a test that needs them fails with one line naming the
/// folder expected — once per failing test, whether it reads a vector itself or
/// starts a server that publishes the vector keys.
#[test]
fn without_the_vectors_tests_fail_with_one_clear_message() {
    let missing = std::env::temp_dir().join("btps-no-such-vectors");
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "vectors::compute_id_vectors",
            "server::clock::artifacts_dated_9999_or_1970_are_refused_by_default",
            "--test-threads",
            "1",
        ])
        .env("BTPS_VECTORS", &missing)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{printed}");
    assert!(printed.contains("2 failed"), "{printed}");
    let message = format!(
        "{VECTORS_MISSING}: expected {} (set BTPS_VECTORS)",
        missing.display()
    );
    assert_eq!(printed.matches(&message).count(), 2, "{printed}");
    assert_eq!(printed.matches(VECTORS_MISSING).count(), 2, "{printed}");
}
