//! The signed BTPS_DOC line that `benches/protocol.rs` and `examples/json_cost.rs`
//! both measure, so that their figures are about the same bytes.

use std::path::PathBuf;

use btps::crypto::PrivateKey;
use btps::identity::Identity;
use btps::protocol::{TransporterType, json};
use btps::signing::{self, TransporterDraft};

/// The reference vectors: `$BTPS_VECTORS`, or `../shared/vectors` beside the crate.
pub(crate) fn vectors() -> PathBuf {
    std::env::var_os("BTPS_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"))
}

/// The vectors' `billing` private key.
pub(crate) fn billing_key() -> PrivateKey {
    PrivateKey::from_pem(&std::fs::read_to_string(vectors().join("keys/billing.key.pem")).unwrap())
        .unwrap()
}

/// A signed BTPS_DOC line of about 2 KB.
pub(crate) fn two_kilobyte_line(key: &PrivateKey) -> String {
    let rows: Vec<String> = (0..14)
        .map(|row| format!(r#"{{"Description":"Consulting services, week {row} — Ünïcödé","Qty":{row},"Amount":{}.5}}"#, 100 + row))
        .collect();
    let document = format!(
        r#"{{"title":"Invoice INV-2025-0001","id":"INV-2025-0001","issuedAt":"2025-06-01T10:00:00.000Z","status":"unpaid","totalAmount":{{"value":1234.5,"currency":"EUR"}},"lineItems":{{"columns":["Description","Qty","Amount"],"rows":[{}]}}}}"#,
        rows.join(",")
    );
    let draft = TransporterDraft {
        kind: TransporterType::Document,
        from: Identity::parse("billing$vendor.test").unwrap(),
        to: Identity::parse("finance$client.test").unwrap(),
        selector: "btps1".to_owned(),
        document: json::parse(&document).unwrap(),
        id: None,
        issued_at: None,
    };
    signing::build_transporter(draft, key, None)
        .unwrap()
        .to_canonical()
}
