//! How the admin commands print: JSON values as table text, indented JSON,
//! aligned `name: value` lines and padded tables. Shared with `btps backup`,
//! `restore` and `check`.

use serde_json::Value;

/// A JSON value as table text: strings bare, absent or null as `-`.
pub(super) fn text(value: &Value) -> String {
    match value {
        Value::Null => String::from("-"),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Prints a value as indented JSON.
pub(crate) fn print_json(value: &Value) {
    // Serialising a `Value` cannot fail.
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// `name: value` lines, names aligned.
pub(crate) fn print_fields(fields: &[(&str, String)]) {
    let width = fields
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    for (name, value) in fields {
        let label = format!("{name}:");
        println!("{label:<width$} {value}", width = width + 1);
    }
}

/// A table with a header row, columns padded to their widest cell.
pub(super) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (position, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if position + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", text.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
