//! Cryptography: keys, fingerprints, signatures, envelope encryption.
//!
//! Pure functions over bytes and text, byte-compatible with the reference
//! implementation (spec `03-crypto.md`): RSA keys in SPKI / PKCS#8 form,
//! fingerprints `base64(SHA-256(SPKI DER))`, RSASSA-PKCS1-v1_5 SHA-256 signatures,
//! and AES-256-GCM envelopes whose key is wrapped with RSA-OAEP-SHA256.
//! Canonical JSON (what gets signed) lives in `protocol`; this module only sees text.

mod base64;
mod envelope;
mod error;
mod keys;
mod pem;
mod signature;

pub use self::base64::{decode_base64_lenient, encode_base64};
pub use self::envelope::{
    AUTH_TAG_LEN, CONTENT_KEY_LEN, ENCRYPTION_ALGORITHM, EncryptionMode, Envelope, IV_LEN, decrypt,
    encrypt,
};
#[doc(hidden)]
pub use self::envelope::{encrypt_with, seal_with};
pub use self::error::{Base64Error, CryptoError, DecryptError, KeyError, SignatureError};
pub use self::keys::{PrivateKey, PublicKey, fingerprint_pem};
pub use self::signature::{ALGORITHM_HASH, Signature, sign_text, verify_text};
