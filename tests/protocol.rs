//! Property tests of the protocol core: canonical JSON is stable, and no input makes
//! line handling panic.

use btps::protocol::json::{self, Value};
use btps::protocol::{self, ErrorCode};
use proptest::prelude::*;

/// Arbitrary JSON text built from JavaScript-relevant pieces: index-like and odd
/// keys, duplicate keys, doubles of every magnitude, escapes and lone surrogates.
fn json_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        "[a-z]{1,6}",
        Just("0".to_owned()),
        Just("01".to_owned()),
        Just("4294967294".to_owned()),
        Just("4294967295".to_owned()),
        (0u32..2000).prop_map(|index| index.to_string()),
        "\\PC{0,4}",
    ];
    let number = prop_oneof![
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(|number| format!("{number:e}")),
        any::<i64>().prop_map(|number| number.to_string()),
        Just("-0".to_owned()),
        Just("1e400".to_owned()),
        Just("0.30000000000000004".to_owned()),
        Just("123456789012345678901234567890".to_owned()),
    ];
    let string = prop_oneof![
        "\\PC{0,12}".prop_map(|text| serde_json::to_string(&text).unwrap()),
        Just(r#""\ud800""#.to_owned()),
        Just(r#""a\udc00\ud83d\ude00\u0000\u001f\u2028/\/""#.to_owned()),
    ];
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number,
        string,
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(" , "))),
            prop::collection::vec((key.clone(), inner), 0..8).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(key, value)| format!("{}:{value}", serde_json::to_string(&key).unwrap()))
                    .collect();
                format!("{{ {} }}", members.join(","))
            }),
        ]
    })
}

/// `n` with a decimal point `places` digits from the right, as a sender might spell
/// it: `decimal(1500, 2)` is `15.00`, `decimal(5, 3)` is `0.005`.
fn decimal(n: u64, places: usize) -> String {
    let digits = format!("{n:0>width$}", width = places + 1);
    let (integer, fraction) = digits.split_at(digits.len() - places);
    if places == 0 {
        integer.to_owned()
    } else {
        format!("{integer}.{fraction}")
    }
}

/// Compact JSON objects as `JSON.stringify` writes them, and near misses: number
/// spellings and escapes JavaScript never writes, duplicate and array-index keys,
/// whitespace, and a `signature` member anywhere.
fn compact_object() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => "[a-z]{1,6}",
        2 => Just("signature".to_owned()),
        1 => Just("0".to_owned()),
        1 => Just("17".to_owned()),
        1 => Just("01".to_owned()),
    ];
    let number = prop_oneof![
        any::<i64>().prop_map(|number| number.to_string()),
        (any::<u64>(), 0usize..20).prop_map(|(n, places)| decimal(n % 10u64.pow(12), places)),
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(|number| Value::Number(number).to_canonical()),
        prop_oneof![
            Just("-0"),
            Just("0.0"),
            Just("1e5"),
            Just("1E5"),
            Just("1.50"),
            Just("0.0000001"),
            Just("0.000001"),
            Just("-0.5"),
            Just("123456789012345"),
            Just("1234567890123456"),
            Just("9007199254740993"),
            Just("0.1"),
            Just("100"),
        ]
        .prop_map(str::to_owned),
    ];
    let string = prop_oneof![
        4 => "\\PC{0,8}".prop_map(|text| serde_json::to_string(&text).unwrap()),
        1 => prop_oneof![
            Just(r#""a\/b""#), Just(r#""\u0041""#), Just(r#""\n\t\"\\""#), Just(r#""\u001f""#),
            Just(r#""\ud800""#), Just(r#""\b\f\r""#),
        ]
        .prop_map(str::to_owned),
    ];
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        number,
        string,
    ];
    let members = move |inner: BoxedStrategy<String>| {
        prop::collection::vec((key.clone(), inner), 0..6).prop_map(|members| {
            let members: Vec<String> = members
                .into_iter()
                .map(|(key, value)| format!("{}:{value}", serde_json::to_string(&key).unwrap()))
                .collect();
            format!("{{{}}}", members.join(","))
        })
    };
    let value = leaf.prop_recursive(3, 32, 6, {
        let members = members.clone();
        move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                members(inner),
            ]
        }
    });
    (members(value.boxed()), prop::option::of(0usize..4)).prop_map(|(text, space)| match space {
        // Now and then a space somewhere between two tokens.
        Some(count) => text.replacen(',', ", ", count + 1),
        None => text,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The signed text of a line taken as canonical is cut from the line; it must be,
    /// byte for byte, what writing the parsed object out again gives.
    #[test]
    fn a_line_taken_as_canonical_is_its_own_canonical_form(text in compact_object()) {
        let (value, canonical) = json::parse_noting_canonical(&text).unwrap();
        let object = value.as_object().unwrap();
        if let Some(canonical) = canonical {
            prop_assert_eq!(&object.to_canonical(), &text);
            prop_assert_eq!(
                canonical.without_signature(&text),
                Some(object.to_canonical_without(&["signature"]))
            );
        }
    }

    /// Written-out canonical text whose numbers are short and that has no
    /// array-index keys or `\u` escapes is recognised as such.
    #[test]
    fn canonical_text_is_recognised(text in compact_object()) {
        let canonical = json::parse(&text).unwrap().to_canonical();
        let (_, noted) = json::parse_noting_canonical(&canonical).unwrap();
        let value = json::parse(&canonical).unwrap();
        if !has_index_keys(&value) && !canonical.contains("\\u") && !long_numbers(&value) {
            prop_assert!(noted.is_some(), "not recognised: {}", canonical);
        }
    }

    #[test]
    fn parse_stringify_parse_is_stable(text in json_text()) {
        let value = json::parse(&text).unwrap();
        let canonical = value.to_canonical();
        let again = json::parse(&canonical).unwrap();
        prop_assert_eq!(again.to_canonical(), canonical);
    }

    #[test]
    fn canonical_text_of_valid_unicode_is_what_serde_json_reads(text in json_text()) {
        // Whenever the canonical text is well-formed Unicode, it is plain JSON that an
        // independent parser accepts.
        let canonical = json::parse(&text).unwrap().to_canonical();
        if !canonical.contains("\\ud") {
            prop_assert!(serde_json::from_str::<serde_json::Value>(&canonical).is_ok());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        match protocol::parse_line(&bytes) {
            Ok(_) => {}
            Err(error) => prop_assert!(matches!(error.code, ErrorCode::InvalidJson | ErrorCode::Validation)),
        }
    }

    #[test]
    fn arbitrary_json_never_panics(text in json_text()) {
        let value = json::parse(&text).unwrap();
        match protocol::validate(value) {
            Ok(artifact) => prop_assert!(!artifact.raw().is_empty()),
            Err(error) => prop_assert_eq!(error.code, ErrorCode::Validation),
        }
    }

    #[test]
    fn artifact_shaped_json_never_panics(
        from in prop_oneof![Just("a$b.c".to_owned()), "\\PC{0,8}"],
        kind in prop_oneof![Just("TRUST_REQ"), Just("TRUST_RES"), Just("BTPS_DOC"), Just("X")],
        document in json_text(),
        encryption in prop_oneof![Just("null".to_owned()), json_text()],
        delegation in prop::option::of(json_text()),
    ) {
        let mut line = format!(
            r#"{{"version":"1.0.0","issuedAt":"2025-01-15T10:30:00.000Z","id":"x","type":"{kind}","from":{},"to":"p$q.r","selector":"btps1","document":{document},"encryption":{encryption},"signature":{{"algorithmHash":"sha256","value":"AA==","fingerprint":"AA=="}}"#,
            serde_json::to_string(&from).unwrap()
        );
        if let Some(delegation) = delegation {
            line.push_str(&format!(r#","delegation":{delegation}"#));
        }
        line.push('}');
        let _ = protocol::parse_line(line.as_bytes());
    }
}

#[test]
fn every_value_kind_round_trips() {
    let value = json::parse(r#"{"a":[1,"x",null,true,{"2":3,"1":4}],"b":-0}"#).unwrap();
    assert!(matches!(value, Value::Object(_)));
    assert_eq!(
        value.to_canonical(),
        r#"{"a":[1,"x",null,true,{"1":4,"2":3}],"b":0}"#
    );
}

/// Whether any object in `value` has an array-index key.
fn has_index_keys(value: &Value) -> bool {
    match value {
        Value::Object(object) => object
            .iter()
            .any(|(key, value)| json::array_index(key).is_some() || has_index_keys(value)),
        Value::Array(items) => items.iter().any(has_index_keys),
        _ => false,
    }
}

/// Whether any number in `value` is written with an exponent or more than 15 digits.
fn long_numbers(value: &Value) -> bool {
    match value {
        Value::Number(_) => {
            let text = value.to_canonical();
            text.contains('e') || text.bytes().filter(u8::is_ascii_digit).count() > 15
        }
        Value::Object(object) => object.iter().any(|(_, value)| long_numbers(value)),
        Value::Array(items) => items.iter().any(long_numbers),
        _ => false,
    }
}

#[test]
fn canonical_spellings_of_numbers_and_strings() {
    let cases = [
        (
            r#"{"a":1,"signature":{"v":"x"},"b":2}"#,
            Some(r#"{"a":1,"b":2}"#),
        ),
        (r#"{"signature":{"v":"x"},"b":2}"#, Some(r#"{"b":2}"#)),
        (r#"{"a":1,"signature":"x"}"#, Some(r#"{"a":1}"#)),
        (r#"{"signature":"x"}"#, Some("{}")),
        (r#"{"a":{"signature":1}}"#, Some(r#"{"a":{"signature":1}}"#)),
        (
            r#"{"a":[0,-5,100,0.5,-0.25,10.125,0.000001,123456789012345]}"#,
            Some(r#"{"a":[0,-5,100,0.5,-0.25,10.125,0.000001,123456789012345]}"#),
        ),
        (
            r#"{"a":"\"\\\n\t\b\f\r é"}"#,
            Some(r#"{"a":"\"\\\n\t\b\f\r é"}"#),
        ),
        (r#"{"a":-0}"#, None),
        (r#"{"a":0.0}"#, None),
        (r#"{"a":1.50}"#, None),
        (r#"{"a":1e5}"#, None),
        (r#"{"a":0.0000001}"#, None),
        (r#"{"a":1234567890123456}"#, None),
        (r#"{"a":"\/"}"#, None),
        (r#"{"a":"\u0041"}"#, None),
        (r#"{"a":1,"a":2}"#, None),
        (r#"{"signature":1,"signature":2}"#, None),
        (r#"{"1":1}"#, None),
        (r#"{"a": 1}"#, None),
        (r#" {"a":1}"#, None),
        (r#"{"a":1}	"#, None),
        ("[1]", None),
        ("\"text\"", None),
    ];
    for (text, expected) in cases {
        let (value, canonical) = json::parse_noting_canonical(text).unwrap();
        let cut = canonical.and_then(|canonical| canonical.without_signature(text));
        assert_eq!(cut.as_deref(), expected, "{text}");
        if let (Some(cut), Some(object)) = (&cut, value.as_object()) {
            assert_eq!(cut, &object.to_canonical_without(&["signature"]), "{text}");
        }
    }
}

/// Lines the reference wrote are canonical: their signed text is cut from the line
/// unless it holds something the check leaves to the writer. Lines spelled
/// differently on the wire take the written-out text (they verify either way: see
/// the vector tests).
#[test]
fn reference_lines_take_the_cut_signed_text() {
    let dir = crate::util::vectors_dir().join("signed");
    for (name, cut) in [
        ("btps-doc-encrypted.json", true),
        ("trust-req.json", true),
        ("trust-res.json", true),
        // Its document holds numbers JavaScript writes with an exponent or 17
        // digits, array-index keys and a `\u0001`: written out again.
        ("btps-doc.json", false),
        ("delegated.json", false),
        ("btps-doc-wire-whitespace.json", false),
        ("btps-doc-wire-number-spelling.json", false),
        ("btps-doc-wire-escapes.json", false),
        ("btps-doc-wire-integer-keys-unordered.json", false),
    ] {
        let vector: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap();
        let line = vector["artifact"].as_str().unwrap();
        let Some(protocol::Artifact::Transporter(artifact)) =
            protocol::parse_line(line.as_bytes()).unwrap()
        else {
            panic!("{name}: not a transporter artifact");
        };
        assert_eq!(artifact.signed_text.is_some(), cut, "{name}");
        if let Some(text) = &artifact.signed_text {
            assert_eq!(
                text,
                &artifact.raw.to_canonical_without(&["signature"]),
                "{name}"
            );
            assert_eq!(
                Some(text.as_str()),
                vector["signedPayload"].as_str(),
                "{name}"
            );
        }
    }
}
