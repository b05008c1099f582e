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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

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
