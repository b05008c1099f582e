//! The artifacts a benchmark sends: realistic invoices (about 2 KB on the wire),
//! signed — and the chosen share encrypted to the receiver — before the measured
//! window opens, over all cores.

use crate::crypto::EncryptionMode;
use crate::identity::Identity;
use crate::protocol::TransporterType;
use crate::protocol::json;
use crate::signing::{TransporterDraft, build_transporter};

use super::BenchError;
use super::setup::{KeySet, RECEIVER, SELECTOR, sender_identity, worker_threads};
use super::stats::is_encrypted;

/// Line items per invoice: with them a signed plain artifact is about 2 KB.
const LINE_ITEMS: usize = 9;

/// One signed artifact, ready to be written as a line.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The artifact's `id`: the `reqId` of its response and the key of its inbox entry.
    pub id: String,
    /// The canonical JSON line, without the final `"\n"`.
    pub line: String,
    /// Whether the document is encrypted.
    pub encrypted: bool,
}

/// The invoice document of artifact `index`: a BTPS invoice with `LINE_ITEMS`
/// line items, its totals consistent with them.
pub fn invoice_document(index: usize) -> String {
    const PRODUCTS: [&str; 6] = [
        "Consulting services (senior)",
        "Cloud hosting, dedicated instance",
        "Support contract, business hours",
        "Licence renewal, annual seat",
        "On-site installation and training",
        "Hardware maintenance, quarterly",
    ];
    let mut rows = Vec::with_capacity(LINE_ITEMS);
    let mut total_cents: u64 = 0;
    for item in 0..LINE_ITEMS {
        let quantity = 1 + (index + item) % 9;
        let unit_cents = 1_250 + ((index * 7 + item * 131) % 40_000) as u64;
        let amount_cents = unit_cents * quantity as u64;
        total_cents += amount_cents;
        rows.push(format!(
            r#"{{"Description":"{} — period {}","Quantity":{quantity},"Unit price":{},"Amount":{}}}"#,
            PRODUCTS[(index + item) % PRODUCTS.len()],
            item + 1,
            cents(unit_cents),
            cents(amount_cents),
        ));
    }
    let tax_cents = total_cents / 10;
    format!(
        r#"{{"title":"Invoice INV-{index:08}","id":"INV-{index:08}","issuedAt":"2025-02-01T00:00:00.000Z","dueAt":"2025-03-03T00:00:00.000Z","status":"unpaid","totalAmount":{{"value":{},"currency":"AUD"}},"lineItems":{{"columns":["Description","Quantity","Unit price","Amount"],"rows":[{}]}},"issuer":{{"name":"Vendor {index} Pty Ltd","email":"accounts@vendor.bench.test","phone":"+61 2 5550 0100"}},"paymentLink":{{"linkText":"Pay now","url":"https://pay.vendor.bench.test/INV-{index:08}"}},"notes":{{"type":"text","content":"Tax {} included. Payment within 30 days."}}}}"#,
        cents(total_cents + tax_cents),
        rows.join(","),
        cents(tax_cents),
    )
}

/// Cents as a JSON number with two decimals at most (`1234` → `12.34`).
fn cents(value: u64) -> String {
    let (whole, fraction) = (value / 100, value % 100);
    if fraction == 0 {
        whole.to_string()
    } else if fraction % 10 == 0 {
        format!("{whole}.{}", fraction / 10)
    } else {
        format!("{whole}.{fraction:02}")
    }
}

/// Signs `count` BTPS_DOC artifacts from the senders of `keys` in turn (artifact `i`
/// from sender `i % senders`) to [`RECEIVER`], `encrypted_share` of them encrypted to
/// the receiver's key, on one thread per core. Artifact ids are fresh UUIDs, so
/// that repeated runs against one database are never duplicates.
pub fn presign(
    keys: &KeySet,
    count: usize,
    encrypted_share: f64,
) -> Result<Vec<Prepared>, BenchError> {
    if keys.senders.is_empty() {
        return Err(BenchError::InvalidOption(
            "at least one sender is needed".to_owned(),
        ));
    }
    let receiver =
        Identity::parse(RECEIVER).map_err(|error| BenchError::InvalidOption(error.to_string()))?;
    let senders: Vec<Identity> = (0..keys.senders.len())
        .map(|index| Identity::parse(&sender_identity(index)))
        .collect::<Result<_, _>>()
        .map_err(|error| BenchError::InvalidOption(error.to_string()))?;
    let threads = worker_threads().min(count.max(1));
    let per_thread = count.div_ceil(threads);
    let sign_one = |index: usize| -> Result<Prepared, BenchError> {
        let sender = index % keys.senders.len();
        let document = json::parse(&invoice_document(index))
            .map_err(|error| BenchError::InvalidOption(error.to_string()))?;
        let draft = TransporterDraft {
            kind: TransporterType::Document,
            from: senders[sender].clone(),
            to: receiver.clone(),
            selector: SELECTOR.to_owned(),
            document,
            id: None,
            issued_at: None,
        };
        let encrypted = is_encrypted(index, count, encrypted_share);
        let encrypt_to = encrypted.then(|| (keys.receiver.public_key(), EncryptionMode::Standard));
        let artifact = build_transporter(draft, &keys.senders[sender], encrypt_to)
            .map_err(BenchError::Sign)?;
        let id = artifact.str("id").unwrap_or_default().to_owned();
        Ok(Prepared {
            id,
            line: artifact.to_canonical(),
            encrypted,
        })
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let start = (thread * per_thread).min(count);
                let end = (start + per_thread).min(count);
                let sign_one = &sign_one;
                scope.spawn(move || (start..end).map(sign_one).collect::<Result<Vec<_>, _>>())
            })
            .collect();
        let mut prepared = Vec::with_capacity(count);
        for handle in handles {
            prepared.extend(
                handle
                    .join()
                    .map_err(|_| BenchError::WorkerPanicked("signing"))??,
            );
        }
        Ok(prepared)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoices_are_valid_json_of_realistic_size() {
        for index in [0, 1, 99_999] {
            let text = invoice_document(index);
            let value = json::parse(&text).unwrap();
            let object = value.as_object().unwrap();
            assert_eq!(object.str("id"), Some(format!("INV-{index:08}").as_str()));
            // The signed envelope adds about 450 bytes to the document.
            assert!((1100..1700).contains(&text.len()), "{}", text.len());
        }
    }

    #[test]
    fn cents_print_as_json_numbers() {
        assert_eq!(cents(123_400), "1234");
        assert_eq!(cents(123_450), "1234.5");
        assert_eq!(cents(123_405), "1234.05");
        assert_eq!(cents(5), "0.05");
    }
}
