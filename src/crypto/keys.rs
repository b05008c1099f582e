//! RSA keys: loading from the text forms BTPS uses (SPKI PEM, base64 SPKI, PKCS#8 and
//! PKCS#1 private key PEM), fingerprints, generation, and the two primitive
//! operations every other part needs (sign, verify).
//!
//! `ring` does signing and verification; the `rsa` crate parses and re-encodes key
//! structures, generates keys and does RSA-OAEP (which `ring` does not offer).

use std::fmt;

use rand::rngs::OsRng;
use ring::rand::SystemRandom;
use ring::signature::{
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents,
};
use rsa::pkcs1::{self, DecodeRsaPrivateKey as _, UintRef};
use rsa::pkcs8::der::asn1::BitStringRef;
use rsa::pkcs8::der::{Decode as _, Encode as _};
use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, SecretDocument};
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, Oaep, Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest as _, Sha256};

use super::base64::{decode_base64_lenient, encode_base64};
use super::error::{DecryptError, KeyError, SignatureError};
use super::pem;

/// Modulus sizes `ring` verifies RSA signatures with.
const VERIFY_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;
/// Modulus sizes a private key may have: `ring` signs from 2048 bits, and the `rsa`
/// crate (OAEP unwrapping) stops at 4096.
const PRIVATE_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// An RSA public key, as BTPS publishes it (SPKI), with its fingerprint.
///
/// Two keys are equal when their SPKI encodings are. Cloning is cheap (a reference
/// count): a key served from the DNS cache is cloned for every artifact it verifies.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    parts: std::sync::Arc<KeyParts>,
}

#[derive(PartialEq, Eq, Hash)]
struct KeyParts {
    /// Canonical DER of the SubjectPublicKeyInfo: what the fingerprint hashes.
    spki_der: Box<[u8]>,
    /// `base64(SHA-256(spki_der))`, computed once.
    fingerprint: String,
    /// `base64(spki_der)`, computed once (every accepted artifact records it).
    spki_base64: String,
    /// Modulus, big-endian without leading zeros, ready for `ring`.
    modulus: Box<[u8]>,
    /// Public exponent, big-endian without leading zeros.
    exponent: Box<[u8]>,
    /// Bit length of the modulus.
    bits: usize,
}

impl PublicKey {
    /// Loads an SPKI PEM by the reference's rule: after trimming, the text must start
    /// with `-----BEGIN PUBLIC KEY-----` and end with `-----END PUBLIC KEY-----`; the
    /// body may use LF or CRLF line breaks or sit on one line. A PKCS#1
    /// `RSA PUBLIC KEY` PEM is rejected.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let body = pem::public_key_body(text)?;
        Self::from_spki_der(&decode_base64_lenient(body)?)
    }

    /// Loads the base64 of an SPKI DER: a DNS `p=` value or a `publicKeyBase64`.
    pub fn from_base64_spki(b64: &str) -> Result<Self, KeyError> {
        Self::from_spki_der(&decode_base64_lenient(b64)?)
    }

    /// Loads a DER SubjectPublicKeyInfo holding an RSA key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let malformed = |error: &dyn fmt::Display| KeyError::MalformedPublicKey(error.to_string());
        let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(|e| malformed(&e))?;
        if spki.algorithm.oid != pkcs1::ALGORITHM_OID {
            return Err(KeyError::NotRsa {
                oid: spki.algorithm.oid.to_string(),
            });
        }
        // RFC 3279 says NULL; OpenSSL also takes absent parameters (and re-encodes
        // them as NULL, which `from_components` does too).
        if spki
            .algorithm
            .parameters
            .is_some_and(|parameters| !parameters.is_null())
        {
            return Err(malformed(&"rsaEncryption parameters must be NULL"));
        }
        let key_bytes = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| malformed(&"key BIT STRING has unused bits"))?;
        let key = pkcs1::RsaPublicKey::from_der(key_bytes).map_err(|e| malformed(&e))?;
        Self::from_components(key.modulus.as_bytes(), key.public_exponent.as_bytes())
    }

    /// Builds the key from modulus and exponent (big-endian), encoding the SPKI the
    /// way Node/OpenSSL export it, so the fingerprint matches the reference's.
    fn from_components(modulus: &[u8], exponent: &[u8]) -> Result<Self, KeyError> {
        let malformed =
            |error: rsa::pkcs8::der::Error| KeyError::MalformedPublicKey(error.to_string());
        let modulus_uint = UintRef::new(modulus).map_err(malformed)?;
        let exponent_uint = UintRef::new(exponent).map_err(malformed)?;
        if modulus_uint.as_bytes() == [0] || exponent_uint.as_bytes() == [0] {
            return Err(KeyError::MalformedPublicKey(
                "zero modulus or exponent".to_owned(),
            ));
        }
        let pkcs1_der = pkcs1::RsaPublicKey {
            modulus: modulus_uint,
            public_exponent: exponent_uint,
        }
        .to_der()
        .map_err(malformed)?;
        let spki_der = SubjectPublicKeyInfoRef {
            algorithm: pkcs1::ALGORITHM_ID,
            subject_public_key: BitStringRef::from_bytes(&pkcs1_der).map_err(malformed)?,
        }
        .to_der()
        .map_err(malformed)?;
        let fingerprint =
            encode_base64(ring::digest::digest(&ring::digest::SHA256, &spki_der).as_ref());
        // UintRef strips leading zero bytes, so the first byte is non-zero.
        let minimal_modulus = modulus_uint.as_bytes();
        let bits = minimal_modulus.first().map_or(0, |first| {
            minimal_modulus.len() * 8 - first.leading_zeros() as usize
        });
        Ok(Self {
            parts: std::sync::Arc::new(KeyParts {
                spki_base64: encode_base64(&spki_der),
                spki_der: spki_der.into_boxed_slice(),
                fingerprint,
                modulus: minimal_modulus.into(),
                exponent: exponent_uint.as_bytes().into(),
                bits,
            }),
        })
    }

    /// `base64(SHA-256(SPKI DER))`, standard padded base64: the value of
    /// `signature.fingerprint` and of trust records' `publicKeyFingerprint`.
    pub fn fingerprint(&self) -> &str {
        &self.parts.fingerprint
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.parts.spki_der
    }

    /// Base64 of the SPKI DER: the DNS `p=` value and `publicKeyBase64`.
    pub fn to_base64(&self) -> String {
        self.parts.spki_base64.clone()
    }

    /// SPKI PEM by the reference's base64→PEM rule: 64-character lines joined by
    /// `\n`, no trailing newline.
    pub fn to_pem(&self) -> String {
        pem::armour("PUBLIC KEY", &self.parts.spki_der, false)
    }

    /// Checks an RSASSA-PKCS1-v1_5 SHA-256 signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        if !VERIFY_BITS.contains(&self.parts.bits) {
            return Err(SignatureError::UnsupportedKeySize {
                bits: self.parts.bits,
            });
        }
        // ring 0.17 has no reusable parsed RSA public key; handing it the raw
        // components skips at least the DER parsing on every call.
        RsaPublicKeyComponents {
            n: &*self.parts.modulus,
            e: &*self.parts.exponent,
        }
        .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
        .map_err(|_| SignatureError::Invalid)
    }

    /// Bit length of the modulus (2048 for the keys BTPS generates by default).
    pub fn bits(&self) -> usize {
        self.parts.bits
    }

    /// The key as the `rsa` crate wants it for OAEP wrapping.
    pub(crate) fn to_rsa(&self) -> Result<rsa::RsaPublicKey, rsa::Error> {
        rsa::RsaPublicKey::new_with_max_size(
            BigUint::from_bytes_be(&self.parts.modulus),
            BigUint::from_bytes_be(&self.parts.exponent),
            *VERIFY_BITS.end(),
        )
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("bits", &self.parts.bits)
            .field("fingerprint", &self.parts.fingerprint)
            .finish_non_exhaustive()
    }
}

/// An RSA private key able to sign and to unwrap content keys, with its public key.
pub struct PrivateKey {
    /// The key loaded into `ring`, for signing.
    signer: RsaKeyPair,
    /// The same key for the `rsa` crate, for OAEP unwrapping (and as a fallback signer).
    rsa: RsaPrivateKey,
    /// Its PKCS#8 DER, zeroed on drop.
    pkcs8: SecretDocument,
    /// The public half.
    public: PublicKey,
}

impl PrivateKey {
    /// Loads a private key PEM: PKCS#8 (`PRIVATE KEY`, what BTPS writes) or PKCS#1
    /// (`RSA PRIVATE KEY`, what older OpenSSL tools write). RSA, 2048 to 4096 bits.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let (label, body) = pem::first_block(text)?;
        let key = match label {
            "PRIVATE KEY" => {
                let der = decode_base64_lenient(body)?;
                RsaPrivateKey::from_pkcs8_der(&der)
                    .map_err(|e| KeyError::MalformedPrivateKey(e.to_string()))?
            }
            "RSA PRIVATE KEY" => {
                // Legacy OpenSSL encryption puts `Proc-Type`/`DEK-Info` headers in the body.
                if body.contains("Proc-Type:") {
                    return Err(KeyError::EncryptedPrivateKey);
                }
                let der = decode_base64_lenient(body)?;
                RsaPrivateKey::from_pkcs1_der(&der)
                    .map_err(|e| KeyError::MalformedPrivateKey(e.to_string()))?
            }
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::EncryptedPrivateKey),
            other => {
                return Err(KeyError::UnsupportedPemLabel {
                    label: other.to_owned(),
                });
            }
        };
        Self::from_rsa(key)
    }

    /// Generates a new key pair of 2048, 3072 or 4096 bits (exponent 65537).
    pub fn generate(bits: usize) -> Result<Self, KeyError> {
        if !matches!(bits, 2048 | 3072 | 4096) {
            return Err(KeyError::UnsupportedKeySize {
                bits,
                supported: "2048, 3072 or 4096 bits",
            });
        }
        let key = RsaPrivateKey::new(&mut OsRng, bits)
            .map_err(|e| KeyError::Generation(e.to_string()))?;
        Self::from_rsa(key)
    }

    /// Finishes loading: size check, PKCS#8 encoding, `ring` key pair, public key.
    fn from_rsa(key: RsaPrivateKey) -> Result<Self, KeyError> {
        let bits = key.n().bits();
        if !PRIVATE_BITS.contains(&bits) {
            return Err(KeyError::UnsupportedKeySize {
                bits,
                supported: "2048 to 4096 bits",
            });
        }
        let malformed = |error: &dyn fmt::Display| KeyError::MalformedPrivateKey(error.to_string());
        let pkcs8 = key.to_pkcs8_der().map_err(|e| malformed(&e))?;
        let signer = RsaKeyPair::from_pkcs8(pkcs8.as_bytes()).map_err(|e| malformed(&e))?;
        let public = PublicKey::from_components(&key.n().to_bytes_be(), &key.e().to_bytes_be())?;
        Ok(Self {
            signer,
            rsa: key,
            pkcs8,
            public,
        })
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// RSASSA-PKCS1-v1_5 SHA-256 signature of `message` (deterministic; modulus-length
    /// bytes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0; self.signer.public().modulus_len()];
        match self.signer.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            message,
            &mut signature,
        ) {
            Ok(()) => signature,
            // ring only fails when its random source (used for blinding) fails.
            // PKCS#1 v1.5 is deterministic, so the `rsa` crate gives the same bytes.
            Err(_) => self.sign_with_rsa_crate(message),
        }
    }

    /// The fallback signer of [`sign`](Self::sign).
    fn sign_with_rsa_crate(&self, message: &[u8]) -> Vec<u8> {
        let digest = Sha256::digest(message);
        match self.rsa.sign(Pkcs1v15Sign::new::<Sha256>(), &digest) {
            Ok(signature) => signature,
            Err(error) => {
                // Unreachable for a key that passed `from_rsa` (≥ 2048 bits leaves
                // room for the DigestInfo). An empty signature fails every verifier.
                tracing::error!(%error, fingerprint = self.public.fingerprint(), "RSA signing failed");
                Vec::new()
            }
        }
    }

    /// Unwraps an RSA-OAEP (SHA-256, MGF1-SHA-256, empty label) wrapped key.
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<Vec<u8>, DecryptError> {
        // Blinded, so the timing of the private-key operation does not depend on it.
        self.rsa
            .decrypt_blinded(&mut OsRng, Oaep::new::<Sha256>(), wrapped)
            .map_err(|_| DecryptError::NotForThisReceiver)
    }

    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), 64-column lines, trailing newline:
    /// the form the reference writes key files in.
    pub fn to_pkcs8_pem(&self) -> String {
        pem::armour("PRIVATE KEY", self.pkcs8.as_bytes(), true)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The fingerprint of an SPKI PEM (reference `getFingerprintFromPem`).
pub fn fingerprint_pem(text: &str) -> Result<String, KeyError> {
    PublicKey::from_pem(text).map(|key| key.fingerprint().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_spki_is_an_error() {
        assert!(matches!(
            PublicKey::from_spki_der(&[]),
            Err(KeyError::MalformedPublicKey(_))
        ));
        assert!(matches!(
            PublicKey::from_spki_der(&[0x30, 0x03, 0x02, 0x01, 0x00]),
            Err(KeyError::MalformedPublicKey(_))
        ));
        assert!(matches!(
            PublicKey::from_base64_spki("!!"),
            Err(KeyError::Base64(_))
        ));
    }

    #[test]
    fn non_rsa_spki_is_rejected_by_oid() {
        // An EC P-256 SPKI header (id-ecPublicKey, prime256v1) with a dummy point.
        let mut der = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
        ];
        der.extend([1u8; 64]);
        assert_eq!(
            PublicKey::from_spki_der(&der).unwrap_err(),
            KeyError::NotRsa {
                oid: "1.2.840.10045.2.1".to_owned()
            }
        );
    }

    #[test]
    fn private_pem_labels() {
        assert_eq!(
            PrivateKey::from_pem(
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA==\n-----END ENCRYPTED PRIVATE KEY-----"
            )
            .unwrap_err(),
            KeyError::EncryptedPrivateKey
        );
        assert_eq!(
            PrivateKey::from_pem("-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----")
                .unwrap_err(),
            KeyError::UnsupportedPemLabel {
                label: "PUBLIC KEY".to_owned()
            }
        );
        assert!(matches!(
            PrivateKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"),
            Err(KeyError::MalformedPrivateKey(_))
        ));
        assert!(matches!(
            PrivateKey::from_pem(
                "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----"
            ),
            Err(KeyError::EncryptedPrivateKey)
        ));
    }

    #[test]
    fn keys_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PublicKey>();
        assert_send_sync::<PrivateKey>();
    }

    #[test]
    fn generate_rejects_odd_sizes() {
        for bits in [0, 1024, 2047, 8192] {
            assert!(matches!(
                PrivateKey::generate(bits),
                Err(KeyError::UnsupportedKeySize { .. })
            ));
        }
    }
}
