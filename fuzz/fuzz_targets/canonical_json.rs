//! Fuzz target: JSON.parse semantics and JSON.stringify stability.
//! stringify(parse(stringify(parse(x)))) == stringify(parse(x)) for every accepted x,
//! and a text the parser takes as canonical is exactly its stringify, also with the
//! top-level `signature` member cut out.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok((value, noted)) = btps::protocol::json::parse_noting_canonical(text) {
        let canonical = value.to_canonical();
        let again = btps::protocol::json::parse(&canonical).expect("canonical text parses");
        assert_eq!(again.to_canonical(), canonical);
        if let Some(noted) = noted {
            assert_eq!(canonical, text, "taken as canonical");
            let object = value.as_object().expect("only objects are taken as canonical");
            assert_eq!(
                noted.without_signature(text),
                Some(object.to_canonical_without(&["signature"]))
            );
        }
    }
});
