//! The reference implementation's vectors: canonical JSON and computed ids.

use btps::identity::{compute_id, compute_trust_id};
use btps::protocol::json;

use crate::util::vector_json;

#[test]
fn stringify_vectors_reproduce_json_stringify() {
    let vectors = vector_json("stringify.json");
    let cases = vectors["cases"].as_array().expect("cases");
    assert!(cases.len() > 10);
    for case in cases {
        let input = case["input"].as_str().unwrap();
        let expected = case["output"].as_str().unwrap();
        let parsed = json::parse(input).unwrap_or_else(|e| panic!("{}: {e}", case["description"]));
        assert_eq!(parsed.to_canonical(), expected, "{}", case["description"]);
        // Stable: stringify(parse(stringify(x))) == stringify(x).
        assert_eq!(json::parse(expected).unwrap().to_canonical(), expected);
    }
}

#[test]
fn compute_id_vectors() {
    let vectors = vector_json("ids.json");
    let cases = vectors["computeId"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let input = case["input"].as_str().unwrap();
        assert_eq!(
            input.to_lowercase(),
            case["lowercased"].as_str().unwrap(),
            "lower({input:?})"
        );
        assert_eq!(
            compute_id(input),
            case["id"].as_str().unwrap(),
            "computeId({input:?})"
        );
    }
}

#[test]
fn compute_trust_id_vectors() {
    let vectors = vector_json("ids.json");
    let cases = vectors["computeTrustId"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let sender = case["senderId"].as_str().unwrap();
        let receiver = case["receiverId"].as_str().unwrap();
        assert_eq!(
            compute_trust_id(sender, receiver),
            case["trustId"].as_str().unwrap(),
            "{sender} -> {receiver}"
        );
    }
}
