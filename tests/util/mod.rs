//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

pub mod server;

use std::path::PathBuf;

/// The interoperability vectors produced by the reference implementation:
/// `$BTPS_VECTORS`, or `../shared/vectors` beside the crate.
pub fn vectors_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BTPS_VECTORS") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors")
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
