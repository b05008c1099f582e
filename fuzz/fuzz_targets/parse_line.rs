//! Fuzz target: one received line through decode, parse, classify and validate.
//! Any input must give a typed artifact, a blank line, or a typed protocol error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    if let Ok(Some(artifact)) = btps::protocol::parse_line(line) {
        // A validated artifact re-serialises and parses back to the same text.
        let text = artifact.raw().to_canonical();
        let again = btps::protocol::json::parse(&text).expect("canonical text parses");
        assert_eq!(again.to_canonical(), text);
        let _ = artifact.raw().to_canonical_without(&["signature", "delegation"]);
    }
});
