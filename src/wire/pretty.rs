//! `JSON.stringify(value, null, 2)`: how the reference lays out its JSON files.

use crate::protocol::json::{JsString, Object, Value, array_index};

/// `JSON.stringify(value, null, 2)`: the reference's file layout, byte for byte
/// (no trailing newline).
pub fn to_pretty(value: &Value) -> String {
    let mut out = String::with_capacity(4096);
    write_pretty(&mut out, value, 0);
    out
}

fn write_pretty(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_pretty(out, item, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(object) if !object.is_empty() => {
            out.push('{');
            for (position, (key, member)) in js_order(object).into_iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                out.push_str(&Value::String(key.clone()).to_canonical());
                out.push_str(": ");
                write_pretty(out, member, depth + 1);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_canonical()),
    }
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// Members in JavaScript enumeration order: array-index keys ascending, then the
/// others in insertion order.
fn js_order(object: &Object) -> Vec<(&JsString, &Value)> {
    let mut indexed: Vec<(u32, &JsString, &Value)> = object
        .iter()
        .filter_map(|(key, value)| array_index(key).map(|index| (index, key, value)))
        .collect();
    indexed.sort_unstable_by_key(|(index, _, _)| *index);
    indexed
        .into_iter()
        .map(|(_, key, value)| (key, value))
        .chain(object.iter().filter(|(key, _)| array_index(key).is_none()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json::parse;

    #[test]
    fn pretty_matches_json_stringify_layout() {
        let value = parse(r#"{"b":[],"a":{},"2":[1,{"x":"\n"}],"1":null}"#).unwrap();
        assert_eq!(
            to_pretty(&value),
            "{\n  \"1\": null,\n  \"2\": [\n    1,\n    {\n      \"x\": \"\\n\"\n    }\n  ],\n  \"b\": [],\n  \"a\": {}\n}"
        );
    }
}
