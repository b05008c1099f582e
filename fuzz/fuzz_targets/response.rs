//! Fuzz target: the client side, parsing a server response line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = btps::protocol::response::parse_response(text);
});
