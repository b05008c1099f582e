//! Envelope encryption (spec §9): AES-256-GCM for the document under a fresh key,
//! that key wrapped for the receiver with RSA-OAEP (SHA-256, MGF1-SHA-256, empty
//! label). The artifact's signature is computed afterwards over the ciphertext.

use rand::rngs::OsRng;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use rsa::Oaep;
use sha2::Sha256;

use super::base64::{decode_base64_lenient, encode_base64};
use super::error::{CryptoError, DecryptError};
use super::keys::{PrivateKey, PublicKey};

/// The `encryption.algorithm` value: the only payload cipher BTPS uses.
pub const ENCRYPTION_ALGORITHM: &str = "aes-256-gcm";
/// AES-256 key length in bytes.
pub const CONTENT_KEY_LEN: usize = 32;
/// GCM nonce length in bytes (`iv`).
pub const IV_LEN: usize = NONCE_LEN;
/// GCM tag length in bytes (`authTag`).
pub const AUTH_TAG_LEN: usize = 16;

/// The `encryption.type` label. The reference encrypts identically for all three;
/// it is a label only (there is no second factor in `2faEncrypt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptionMode {
    /// `standardEncrypt`.
    Standard,
    /// `2faEncrypt`.
    TwoFactor,
    /// `none` (still encrypted; unencrypted artifacts carry `"encryption": null`).
    None,
}

impl EncryptionMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standardEncrypt",
            Self::TwoFactor => "2faEncrypt",
            Self::None => "none",
        }
    }

    /// Parses a wire name (exact, case-sensitive).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "standardEncrypt" => Some(Self::Standard),
            "2faEncrypt" => Some(Self::TwoFactor),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// An encrypted document: `document` and the fields of the `encryption` object,
/// all base64 (standard, padded). The algorithm is always [`ENCRYPTION_ALGORITHM`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Base64 ciphertext: the artifact's new `document`.
    pub document: String,
    /// Base64 RSA-OAEP wrapped AES key (`encryptedKey`).
    pub encrypted_key: String,
    /// Base64 12-byte GCM nonce (`iv`).
    pub iv: String,
    /// Base64 16-byte GCM tag (`authTag`).
    pub auth_tag: String,
    /// The `type` label.
    pub mode: EncryptionMode,
}

/// Encrypts `plaintext` for `receiver` with a fresh random key and nonce.
pub fn encrypt(
    plaintext: &[u8],
    receiver: &PublicKey,
    mode: EncryptionMode,
) -> Result<Envelope, CryptoError> {
    let random = SystemRandom::new();
    let mut content_key = [0u8; CONTENT_KEY_LEN];
    let mut iv = [0u8; IV_LEN];
    random
        .fill(&mut content_key)
        .map_err(|_| CryptoError::Random)?;
    random.fill(&mut iv).map_err(|_| CryptoError::Random)?;
    encrypt_with(plaintext, receiver, mode, &content_key, &iv)
}

/// [`encrypt`] with a given key and nonce: for test vectors only. Reusing a
/// (key, nonce) pair destroys GCM's security.
#[doc(hidden)]
pub fn encrypt_with(
    plaintext: &[u8],
    receiver: &PublicKey,
    mode: EncryptionMode,
    content_key: &[u8; CONTENT_KEY_LEN],
    iv: &[u8; IV_LEN],
) -> Result<Envelope, CryptoError> {
    let (ciphertext, tag) = seal_with(content_key, iv, plaintext)?;
    let wrapped = receiver
        .to_rsa()
        .and_then(|key| key.encrypt(&mut OsRng, Oaep::new::<Sha256>(), content_key))
        .map_err(|e| CryptoError::KeyWrap(e.to_string()))?;
    Ok(Envelope {
        document: encode_base64(&ciphertext),
        encrypted_key: encode_base64(&wrapped),
        iv: encode_base64(iv),
        auth_tag: encode_base64(&tag),
        mode,
    })
}

/// AES-256-GCM without AAD: (ciphertext, tag). Deterministic; for test vectors.
#[doc(hidden)]
pub fn seal_with(
    content_key: &[u8; CONTENT_KEY_LEN],
    iv: &[u8; IV_LEN],
    plaintext: &[u8],
) -> Result<(Vec<u8>, [u8; AUTH_TAG_LEN]), CryptoError> {
    let key = UnboundKey::new(&AES_256_GCM, content_key).map_err(|_| CryptoError::Cipher)?;
    let key = LessSafeKey::new(key);
    let mut buffer = plaintext.to_vec();
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*iv), Aad::empty(), &mut buffer)
        .map_err(|_| CryptoError::Cipher)?;
    let mut tag_bytes = [0u8; AUTH_TAG_LEN];
    tag_bytes.copy_from_slice(tag.as_ref());
    Ok((buffer, tag_bytes))
}

/// Opens an envelope with the receiver's private key (spec §9.3), given the
/// artifact's `document` and the `algorithm`, `encryptedKey`, `iv` and `authTag` of
/// its `encryption` object. Returns the plaintext bytes (JSON text, not parsed).
pub fn decrypt(
    key: &PrivateKey,
    algorithm: &str,
    document_b64: &str,
    encrypted_key_b64: &str,
    iv_b64: &str,
    auth_tag_b64: &str,
) -> Result<Vec<u8>, DecryptError> {
    if algorithm != ENCRYPTION_ALGORITHM {
        return Err(DecryptError::UnsupportedAlgorithm {
            algorithm: algorithm.to_owned(),
        });
    }
    let decode = |field: &str, text: &str| {
        decode_base64_lenient(text).map_err(|e| DecryptError::Malformed(format!("{field}: {e}")))
    };
    let wrapped = decode("encryptedKey", encrypted_key_b64)?;
    let iv = decode("iv", iv_b64)?;
    let tag = decode("authTag", auth_tag_b64)?;
    let mut buffer = decode("document", document_b64)?;
    // Node would take other nonce and tag sizes; the reference never produces them,
    // and a short tag weakens authentication.
    let iv: [u8; IV_LEN] = iv.try_into().map_err(|iv: Vec<u8>| {
        DecryptError::Malformed(format!("iv: {} bytes, expected {IV_LEN}", iv.len()))
    })?;
    if tag.len() != AUTH_TAG_LEN {
        return Err(DecryptError::Malformed(format!(
            "authTag: {} bytes, expected {AUTH_TAG_LEN}",
            tag.len()
        )));
    }
    let content_key = key.unwrap_key(&wrapped)?;
    if content_key.len() != CONTENT_KEY_LEN {
        return Err(DecryptError::Malformed(format!(
            "encryptedKey: unwraps to {} bytes, expected {CONTENT_KEY_LEN}",
            content_key.len()
        )));
    }
    let unbound = UnboundKey::new(&AES_256_GCM, &content_key)
        .map_err(|_| DecryptError::Malformed("encryptedKey: unusable AES key".to_owned()))?;
    buffer.extend_from_slice(&tag);
    let plaintext_len = LessSafeKey::new(unbound)
        .open_in_place(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut buffer)
        .map_err(|_| DecryptError::AuthenticationFailed)?
        .len();
    buffer.truncate(plaintext_len);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_their_wire_names() {
        for mode in [
            EncryptionMode::Standard,
            EncryptionMode::TwoFactor,
            EncryptionMode::None,
        ] {
            assert_eq!(EncryptionMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(EncryptionMode::parse("StandardEncrypt"), None);
        assert_eq!(EncryptionMode::parse(""), None);
    }
}
