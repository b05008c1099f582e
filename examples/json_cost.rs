//! Instruction-count harness for `protocol::json` (run it under callgrind). Builds the
//! same signed BTPS_DOC line as `benches/protocol.rs` (2,099 bytes), then
//! `BTPS_JSON_ROUNDS` times (default 100) parses it, canonicalizes it minus
//! `signature`, frees the value, and runs `protocol::parse_line` on it:
//!
//! ```text
//! cargo build --profile bench --example json_cost
//! valgrind --tool=callgrind --callgrind-out-file=json.out target/release/examples/json_cost
//! callgrind_annotate --inclusive=yes json.out | grep cost_
//! ```
//!
//! The inclusive instructions of `cost_parse`, `cost_canonical`, `cost_drop` and
//! `cost_parse_line` divided by the rounds give the cost of one call.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/line.rs"]
mod line;

use btps::protocol::{self, json};

// The server's allocator (src/main.rs), so that allocation costs what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One `JSON.parse` of the line.
#[inline(never)]
fn cost_parse(line: &str) -> json::Value {
    json::parse(line).unwrap()
}

/// The signed text: the canonical form minus `signature`.
#[inline(never)]
fn cost_canonical(object: &json::Object) -> String {
    object.to_canonical_without(&["signature"])
}

/// What the server does with a received line: decode, parse, classify, validate.
#[inline(never)]
fn cost_parse_line(line: &[u8]) -> Option<protocol::Artifact> {
    protocol::parse_line(line).unwrap()
}

/// Freeing the parsed value.
#[inline(never)]
fn cost_drop(value: json::Value) {
    drop(std::hint::black_box(value));
}

fn main() {
    let line = line::two_kilobyte_line(&line::billing_key());
    let rounds: usize = std::env::var("BTPS_JSON_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(100);
    let mut total = 0;
    for _ in 0..rounds {
        let value = cost_parse(std::hint::black_box(&line));
        total += cost_canonical(value.as_object().unwrap()).len();
        cost_drop(value);
        total += usize::from(cost_parse_line(std::hint::black_box(line.as_bytes())).is_some());
    }
    println!(
        "line {} bytes, {rounds} rounds, {total} canonical bytes",
        line.len()
    );
}
