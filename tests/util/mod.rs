//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

pub mod server;

use std::path::PathBuf;
use std::sync::OnceLock;

/// The first words of the failure of every test that needs the vectors when they
/// are missing.
pub const VECTORS_MISSING: &str = "the interoperability vectors are missing";

/// The interoperability vectors produced by the reference implementation:
/// `$BTPS_VECTORS`, or `../shared/vectors` beside the crate.
///
/// Their presence is checked once per process; without them every test that needs
/// them fails with the same one-line message naming the folder expected.
pub fn vectors_dir() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let dir = std::env::var_os("BTPS_VECTORS").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"),
            PathBuf::from,
        );
        if dir.join("keys").is_dir() {
            Ok(dir)
        } else {
            Err(format!(
                "{VECTORS_MISSING}: expected {} (set BTPS_VECTORS)",
                dir.display()
            ))
        }
    });
    match found {
        Ok(dir) => dir.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// Reads a vector file as a `serde_json::Value`.
pub fn vector_json(relative: &str) -> serde_json::Value {
    let path = vectors_dir().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads a vector file as text.
pub fn vector_text(relative: &str) -> String {
    let path = vectors_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `*.json` file of a vector folder, sorted, as (file name, parsed content).
pub fn vector_files(folder: &str) -> Vec<(String, serde_json::Value)> {
    let dir = vectors_dir().join(folder);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no vectors in {}", dir.display());
    names
        .into_iter()
        .map(|name| {
            let value = vector_json(&format!("{folder}/{name}"));
            (name, value)
        })
        .collect()
}

/// Sends SIGTERM to `child` and waits up to `within` for it to exit. `None` when it
/// did not: it is then killed, and the caller fails with its own message.
pub fn sigterm_and_wait(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -TERM {}", child.id());
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
