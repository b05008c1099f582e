//! Fuzz target: JSON.parse semantics and JSON.stringify stability.
//! stringify(parse(stringify(parse(x)))) == stringify(parse(x)) for every accepted x.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(value) = btps::protocol::json::parse(text) {
        let canonical = value.to_canonical();
        let again = btps::protocol::json::parse(&canonical).expect("canonical text parses");
        assert_eq!(again.to_canonical(), canonical);
    }
});
