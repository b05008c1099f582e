//! The error types of the cryptography layer, one enum per kind of operation.
//!
//! Messages name exactly what was wrong with the input so that a log line is enough
//! to diagnose it; none of them ever contains key material.

use thiserror::Error;

/// Text that is not base64 by the lenient rules of [`decode_base64_lenient`].
///
/// [`decode_base64_lenient`]: super::decode_base64_lenient
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Base64Error {
    /// A character outside both base64 alphabets and not whitespace.
    #[error("invalid base64 character {character:?} at byte {index}")]
    InvalidCharacter {
        /// The offending character.
        character: char,
        /// Its byte offset in the input.
        index: usize,
    },
    /// Data after `=` padding.
    #[error("base64 data after padding at byte {index}")]
    MisplacedPadding {
        /// Byte offset of the first symbol after the padding.
        index: usize,
    },
    /// A symbol count that cannot encode whole bytes (4n + 1).
    #[error("invalid base64 length: {symbols} symbols")]
    InvalidLength {
        /// Number of alphabet symbols found.
        symbols: usize,
    },
    /// Padding that does not complete the last group of four.
    #[error("wrong base64 padding: {padding} '=' characters")]
    WrongPadding {
        /// Number of `=` characters found.
        padding: usize,
    },
    /// Rejected by the decoder for another reason.
    #[error("undecodable base64: {0}")]
    Undecodable(String),
}

/// A key that could not be loaded or generated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Public key text that is not `-----BEGIN PUBLIC KEY-----` … `-----END PUBLIC KEY-----`
    /// once trimmed (the reference's acceptance rule).
    #[error(
        "not an SPKI public key PEM (expected -----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)"
    )]
    NotPublicKeyPem,
    /// A PKCS#1 `RSA PUBLIC KEY` PEM: the reference only accepts SPKI.
    #[error("PKCS#1 \"RSA PUBLIC KEY\" PEM is not accepted; the key must be SPKI (\"PUBLIC KEY\")")]
    Pkcs1PublicKey,
    /// Text without a recognisable private key PEM block.
    #[error("not a private key PEM (expected \"PRIVATE KEY\" or \"RSA PRIVATE KEY\")")]
    NotPrivateKeyPem,
    /// A PEM block with a label this crate does not load as a private key.
    #[error("unsupported PEM label {label:?} for a private key")]
    UnsupportedPemLabel {
        /// The label between `BEGIN ` and the closing dashes.
        label: String,
    },
    /// A password-protected private key.
    #[error("encrypted private keys are not supported; store the key unencrypted (PKCS#8)")]
    EncryptedPrivateKey,
    /// A PEM whose `-----END …-----` line is missing or does not match.
    #[error("PEM block for {label:?} has no matching END line")]
    UnterminatedPem {
        /// The label of the BEGIN line.
        label: String,
    },
    /// The PEM body or base64 SPKI is not base64.
    #[error("key body is not base64: {0}")]
    Base64(#[from] Base64Error),
    /// DER that is not a well-formed SubjectPublicKeyInfo with an RSA key inside.
    #[error("malformed SPKI public key: {0}")]
    MalformedPublicKey(String),
    /// A public key for an algorithm other than RSA (`rsaEncryption`).
    #[error("unsupported public key algorithm {oid} (only RSA is supported)")]
    NotRsa {
        /// The algorithm OID, dotted.
        oid: String,
    },
    /// DER that is not a well-formed, consistent RSA private key.
    #[error("malformed RSA private key: {0}")]
    MalformedPrivateKey(String),
    /// A key size outside what this operation supports.
    #[error("unsupported RSA key size: {bits} bits (supported: {supported})")]
    UnsupportedKeySize {
        /// Modulus size of the key, or the size asked for.
        bits: usize,
        /// The supported sizes, for the message.
        supported: &'static str,
    },
    /// Key generation failed (the system random source failed).
    #[error("RSA key generation failed: {0}")]
    Generation(String),
}

/// A signature that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature's fingerprint is not the fingerprint of the key it is checked
    /// against (the reference's `BTP_ERROR_SIG_MISMATCH`).
    #[error("signature fingerprint does not match the signer's key")]
    FingerprintMismatch,
    /// The RSA check failed, or the value is not base64 (the reference's
    /// `BTP_ERROR_SIG_VERIFICATION`).
    #[error("signature verification failed")]
    Invalid,
    /// The key is outside what the verifier supports (RSA below 2048 or above 8192
    /// bits); counts as a verification failure.
    #[error("cannot verify with a {bits}-bit RSA key (supported: 2048 to 8192 bits)")]
    UnsupportedKeySize {
        /// Modulus size of the key.
        bits: usize,
    },
}

/// An envelope that could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The system random source failed.
    #[error("system random source failed")]
    Random,
    /// RSA-OAEP wrapping of the content key failed.
    #[error("RSA-OAEP key wrapping failed: {0}")]
    KeyWrap(String),
    /// AES-256-GCM sealing failed.
    #[error("AES-256-GCM encryption failed")]
    Cipher,
}

/// An envelope that could not be opened (spec §9.3).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// `encryption.algorithm` is not `aes-256-gcm` (`BTP_ERROR_UNSUPPORTED_ENCRYPT`).
    #[error("unsupported encryption algorithm {algorithm:?}")]
    UnsupportedAlgorithm {
        /// The algorithm named by the artifact.
        algorithm: String,
    },
    /// RSA-OAEP unwrapping failed: the content key was wrapped for another key
    /// (`BTP_ERROR_DECRYPTION_UNINTENDED`).
    #[error("decryption failed: message was not intended for this receiver")]
    NotForThisReceiver,
    /// The GCM tag does not authenticate ciphertext, nonce and key.
    #[error("unable to authenticate data (AES-256-GCM tag mismatch)")]
    AuthenticationFailed,
    /// A field that is not what the reference produces (bad base64, wrong length).
    #[error("malformed encryption field: {0}")]
    Malformed(String),
}
