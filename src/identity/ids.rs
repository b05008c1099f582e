//! Computed ids: the keys under which identity and trust records are stored.
//!
//! `computeId(identity) = hex(SHA-256(UTF-8(identity.toLowerCase())))` and
//! `computeTrustId(sender, receiver) = hex(SHA-256(UTF-8((sender + ":" + receiver).toLowerCase())))`
//! (`spec/04-identity-dns.md` §2). JavaScript's `toLowerCase` is the full,
//! locale-independent Unicode mapping including the final-sigma rule, which is what
//! Rust's `str::to_lowercase` implements.

use ring::digest::{SHA256, digest};

/// `computeId(identity)`: the id of an identity record.
pub fn compute_id(identity: &str) -> String {
    hex_sha256(&identity.to_lowercase())
}

/// `computeTrustId(sender, receiver)`: the id of the trust record for artifacts from
/// `sender` to `receiver`. Directional: `compute_trust_id(a, b) != compute_trust_id(b, a)`.
pub fn compute_trust_id(sender: &str, receiver: &str) -> String {
    let mut joined = String::with_capacity(sender.len() + receiver.len() + 1);
    joined.push_str(sender);
    joined.push(':');
    joined.push_str(receiver);
    hex_sha256(&joined.to_lowercase())
}

fn hex_sha256(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = digest(&SHA256, text.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in hash.as_ref() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        assert_eq!(
            compute_id("Billing$Vendor.COM"),
            "3c35ac3718084ae9ed65d58993ae3fb7c1bc2105799672247501cc03650b0cc2"
        );
        assert_eq!(
            compute_trust_id("billing$vendor.com", "pay$client.com"),
            "7c77edd29090ac71c4e0f978cc8722eedc88103df2cddb80076904a46ee7d8cf"
        );
    }
}
