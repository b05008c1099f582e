//! Signature objects (spec §5): signing the canonical text of an artifact and the
//! reference's two-step verification, fingerprint first, then RSA.
//!
//! Canonicalisation is not done here: callers pass the exact text (`canon(m)`).

use super::base64::{decode_base64_lenient, encode_base64};
use super::error::SignatureError;
use super::keys::{PrivateKey, PublicKey};

/// The only `algorithmHash` BTPS uses.
pub const ALGORITHM_HASH: &str = "sha256";

/// The `value` and `fingerprint` of a signature object as they go on the wire
/// (`algorithmHash` is always [`ALGORITHM_HASH`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Base64 (standard, padded) of the RSASSA-PKCS1-v1_5 SHA-256 signature.
    pub value: String,
    /// Fingerprint of the signer's public key.
    pub fingerprint: String,
}

/// Signs the UTF-8 bytes of `text` (spec §5.1).
pub fn sign_text(key: &PrivateKey, text: &str) -> Signature {
    Signature {
        value: encode_base64(&key.sign(text.as_bytes())),
        fingerprint: key.public_key().fingerprint().to_owned(),
    }
}

/// The reference's `verify()` (spec §5.2): the fingerprint of `key` must equal
/// `fingerprint` exactly, then `value` (base64) must be a valid signature of the
/// UTF-8 bytes of `text` under `key`. Undecodable base64 counts as invalid.
pub fn verify_text(
    key: &PublicKey,
    text: &str,
    value_b64: &str,
    fingerprint: &str,
) -> Result<(), SignatureError> {
    if key.fingerprint() != fingerprint {
        return Err(SignatureError::FingerprintMismatch);
    }
    let signature = decode_base64_lenient(value_b64).map_err(|_| SignatureError::Invalid)?;
    key.verify(text.as_bytes(), &signature)
}
