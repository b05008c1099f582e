//! Signing and verifying artifacts: the exact texts each party signs
//! (`spec/03-crypto.md` §5–§8), delegation and attestation, envelope encryption of
//! documents, and the resolution of signer keys through a [`KeySource`].
//!
//! Verification never re-serialises a typed struct: it canonicalises the received
//! object with members removed or replaced in place, so unknown members and the
//! sender's member order are covered exactly as the sender signed them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::BoxFuture;
use crate::crypto::{self, DecryptError, EncryptionMode, PrivateKey, PublicKey, SignatureError};
use crate::identity::Identity;
use crate::protocol::json::{self, Object, Value};
use crate::protocol::response::ServerResponse;
use crate::protocol::{
    AgentAction, AgentArtifact, EncryptionObject, ErrorCode, ProtocolError, SignatureObject,
    TransporterArtifact, TransporterType,
};

/// Why a signer's public key could not be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyLookupFailure {
    /// The key record does not exist (NXDOMAIN, NODATA, or no such key).
    #[error("no public key published at {name}")]
    NotFound {
        /// The DNS name (or description) of what was looked up.
        name: String,
    },
    /// A record exists but holds no usable key.
    #[error("the key published at {name} is unusable: {reason}")]
    Unusable {
        /// The DNS name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The lookup failed for a reason that may pass (timeout, SERVFAIL).
    #[error("temporary failure resolving {name}: {reason}")]
    Temporary {
        /// The DNS name.
        name: String,
        /// The resolver's error.
        reason: String,
    },
}

impl KeyLookupFailure {
    fn into_protocol_error(self, role: &str) -> ProtocolError {
        match self {
            KeyLookupFailure::Temporary { ref name, .. } => {
                ProtocolError::temporary_dns(name, format!("{role} key: {self}"))
            }
            other => ProtocolError::new(ErrorCode::ResolvePubkey, format!("{role} key: {other}")),
        }
    }
}

/// Where verification finds the public key of an identity under a selector.
pub trait KeySource: Send + Sync {
    /// The public key of `identity` published under `selector`.
    fn public_key<'a>(
        &'a self,
        identity: &'a Identity,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<PublicKey, KeyLookupFailure>>;
}

/// A fixed set of keys, keyed by (identity ignoring case, selector).
#[derive(Clone, Debug, Default)]
pub struct StaticKeys {
    keys: HashMap<(String, String), PublicKey>,
}

impl StaticKeys {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the key of `identity` under `selector`.
    pub fn insert(&mut self, identity: &Identity, selector: &str, key: PublicKey) {
        self.keys
            .insert((identity.as_str().to_lowercase(), selector.to_owned()), key);
    }
}

impl KeySource for StaticKeys {
    fn public_key<'a>(
        &'a self,
        identity: &'a Identity,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<PublicKey, KeyLookupFailure>> {
        let found = self
            .keys
            .get(&(identity.as_str().to_lowercase(), selector.to_owned()))
            .cloned();
        Box::pin(async move {
            found.ok_or_else(|| KeyLookupFailure::NotFound {
                name: identity.key_record_name(selector),
            })
        })
    }
}

/// Tries `first`, and `then` for keys `first` does not have (not on temporary failures).
pub struct Layered {
    first: Arc<dyn KeySource>,
    then: Arc<dyn KeySource>,
}

impl Layered {
    /// Keys from `first`, falling back to `then`.
    pub fn new(first: Arc<dyn KeySource>, then: Arc<dyn KeySource>) -> Self {
        Layered { first, then }
    }
}

impl KeySource for Layered {
    fn public_key<'a>(
        &'a self,
        identity: &'a Identity,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<PublicKey, KeyLookupFailure>> {
        Box::pin(async move {
            match self.first.public_key(identity, selector).await {
                Err(KeyLookupFailure::NotFound { .. }) => {
                    self.then.public_key(identity, selector).await
                }
                other => other,
            }
        })
    }
}

// ---------------------------------------------------------------------------------
// Verification.
// ---------------------------------------------------------------------------------

/// Who signed a verified artifact.
#[derive(Clone, Debug)]
pub enum VerifiedSigner {
    /// The sender itself, with its key.
    Sender(PublicKey),
    /// An agent under a delegation.
    Delegated {
        /// The agent's key (top-level signature).
        agent: PublicKey,
        /// The delegator identity.
        delegator: Identity,
        /// The delegator's key (what trust records track for delegated senders).
        delegator_key: PublicKey,
        /// The attestor, when there was an attestation.
        attestor: Option<Identity>,
    },
}

/// Checks one signature object over `text`, mapping failures to protocol errors:
/// a fingerprint mismatch to `mismatch`, a bad signature to `invalid`.
fn check_signature(
    key: &PublicKey,
    text: &str,
    signature: &SignatureObject,
    mismatch: ErrorCode,
    invalid: ErrorCode,
    role: &str,
) -> Result<(), ProtocolError> {
    let started = crate::metrics::timer();
    let verified = crypto::verify_text(key, text, &signature.value, &signature.fingerprint);
    crate::metrics::signature_checked(started);
    verified.map_err(|error| match error {
        SignatureError::FingerprintMismatch => ProtocolError::new(
            mismatch,
            format!("{role}: signature fingerprint does not match the key"),
        ),
        other => ProtocolError::new(invalid, format!("{role}: {other}")),
    })
}

/// Parses an inline SPKI PEM key; an unusable key counts as a fingerprint mismatch,
/// as in the reference (its fingerprint is "undefined").
fn inline_key(pem: &str, code: ErrorCode, role: &str) -> Result<PublicKey, ProtocolError> {
    PublicKey::from_pem(pem)
        .map_err(|error| ProtocolError::new(code, format!("{role}: unusable public key: {error}")))
}

/// Verifies a transporter artifact as a receiving server does (`spec/03-crypto.md`
/// §6.1, and §7.2 with the §7.3 correction for delegations).
pub async fn verify_transporter(
    artifact: &TransporterArtifact,
    keys: &dyn KeySource,
) -> Result<VerifiedSigner, ProtocolError> {
    let Some(delegation) = &artifact.delegation else {
        let key = keys
            .public_key(&artifact.from, &artifact.selector)
            .await
            .map_err(|failure| failure.into_protocol_error("sender"))?;
        let text = match &artifact.signed_text {
            Some(text) => std::borrow::Cow::Borrowed(text.as_str()),
            None => std::borrow::Cow::Owned(artifact.raw.to_canonical_without(&["signature"])),
        };
        check_signature(
            &key,
            &text,
            &artifact.signature,
            ErrorCode::SigMismatch,
            ErrorCode::SigVerification,
            "sender signature",
        )?;
        return Ok(VerifiedSigner::Sender(key));
    };

    // 1. Allowed? The appliance compares identities ignoring case (spec §7.2 Note).
    let own = delegation.signed_by.eq_ignore_case(&artifact.from);
    if !own && !delegation.signed_by.same_domain(&artifact.from) {
        return Err(ProtocolError::new(
            ErrorCode::DelegationInvalid,
            format!(
                "{} may not delegate for {}",
                delegation.signed_by, artifact.from
            ),
        ));
    }
    // 2. A user delegating for itself needs an attestation.
    if own && delegation.attestation.is_none() {
        return Err(ProtocolError::new(
            ErrorCode::DelegationInvalid,
            "a self-signed delegation requires an attestation",
        ));
    }
    let raw_delegation = artifact
        .raw
        .get("delegation")
        .and_then(Value::as_object)
        .ok_or_else(|| ProtocolError::validation("delegation: must be an object"))?;

    // 3. The attestation, whenever present.
    if let Some(attestation) = &delegation.attestation {
        let raw_attestation = raw_delegation
            .get("attestation")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                ProtocolError::validation("delegation.attestation: must be an object")
            })?;
        let key = keys
            .public_key(&attestation.signed_by, &attestation.selector)
            .await
            .map_err(|failure| failure.into_protocol_error("attestor"))?;
        let mut reduced_attestation = raw_attestation.clone();
        reduced_attestation.remove("signature");
        let mut attested = raw_delegation.clone();
        attested.remove("attestation");
        attested.append("attestation", reduced_attestation);
        check_signature(
            &key,
            &attested.to_canonical(),
            &attestation.signature,
            ErrorCode::AttestationVerification,
            ErrorCode::AttestationVerification,
            "attestation",
        )?;
    }

    // 4. The delegator signed the artifact (agent signature kept) with the delegation,
    //    minus its own signature and minus the attestation, in place.
    let delegator_key = keys
        .public_key(&delegation.signed_by, &delegation.selector)
        .await
        .map_err(|failure| failure.into_protocol_error("delegator"))?;
    let mut reduced_delegation = raw_delegation.clone();
    reduced_delegation.remove("signature");
    reduced_delegation.remove("attestation");
    let mut delegated = artifact.raw.clone();
    delegated.insert("delegation", reduced_delegation);
    check_signature(
        &delegator_key,
        &delegated.to_canonical(),
        &delegation.signature,
        ErrorCode::DelegationSigVerification,
        ErrorCode::DelegationSigVerification,
        "delegator signature",
    )?;

    // 5. The agent signed the artifact without delegation and signature.
    let agent = inline_key(
        &delegation.agent_public_key,
        ErrorCode::DelegationSigVerification,
        "agent",
    )?;
    let text = artifact
        .raw
        .to_canonical_without(&["delegation", "signature"]);
    check_signature(
        &agent,
        &text,
        &artifact.signature,
        ErrorCode::DelegationSigVerification,
        ErrorCode::DelegationSigVerification,
        "agent signature",
    )?;
    Ok(VerifiedSigner::Delegated {
        agent,
        delegator: delegation.signed_by.clone(),
        delegator_key,
        attestor: delegation
            .attestation
            .as_ref()
            .map(|attestation| attestation.signed_by.clone()),
    })
}

/// Verifies an agent artifact (`spec/03-crypto.md` §6.2–§6.3). `stored_key` is the
/// key of the agent's record (`computeTrustId(agentId, to)`), when there is one.
/// Returns the key that verified.
pub fn verify_agent(
    artifact: &AgentArtifact,
    stored_key: Option<&PublicKey>,
) -> Result<PublicKey, ProtocolError> {
    let document_key = || -> Result<PublicKey, ProtocolError> {
        let pem = artifact
            .raw
            .get("document")
            .and_then(Value::as_object)
            .and_then(|document| document.str("publicKey"))
            .ok_or_else(|| {
                ProtocolError::new(ErrorCode::SigVerification, "document.publicKey missing")
            })?;
        inline_key(pem, ErrorCode::SigMismatch, "agent")
    };
    let key = match artifact.action {
        AgentAction::AuthRequest => document_key()?,
        AgentAction::AuthRefresh => {
            let offered = document_key()?;
            match stored_key {
                Some(stored) if stored.fingerprint() == offered.fingerprint() => stored.clone(),
                // Agent key rotation: verified with the new key; the refresh token
                // must then authenticate the request (spec §6.3 Note).
                _ => offered,
            }
        }
        _ => stored_key
            .cloned()
            .ok_or_else(|| ProtocolError::new(ErrorCode::SigVerification, "unknown agent"))?,
    };
    let text = artifact.raw.to_canonical_without(&["signature"]);
    check_signature(
        &key,
        &text,
        &artifact.signature,
        ErrorCode::SigMismatch,
        ErrorCode::SigVerification,
        "agent signature",
    )?;
    Ok(key)
}

/// Verifies a signed server response exactly as received minus `signature`
/// (`spec/03-crypto.md` §8; the reference client's added `"encryption":null` is a bug).
pub async fn verify_response(
    response: &ServerResponse,
    keys: &dyn KeySource,
) -> Result<PublicKey, ProtocolError> {
    let signer = response.signer.as_ref().ok_or_else(|| {
        ProtocolError::new(ErrorCode::SigVerification, "the response is not signed")
    })?;
    let key = keys
        .public_key(&signer.signed_by, &signer.selector)
        .await
        .map_err(|failure| failure.into_protocol_error("server"))?;
    let text = response.raw.to_canonical_without(&["signature"]);
    check_signature(
        &key,
        &text,
        &signer.signature,
        ErrorCode::SigMismatch,
        ErrorCode::SigVerification,
        "response signature",
    )?;
    Ok(key)
}

// ---------------------------------------------------------------------------------
// Signing.
// ---------------------------------------------------------------------------------

fn signature_value(signature: &crypto::Signature) -> Object {
    let mut object = Object::new();
    object.insert("algorithmHash", "sha256");
    object.insert("value", signature.value.as_str());
    object.insert("fingerprint", signature.fingerprint.as_str());
    object
}

/// Signs `object` (any existing `signature` member is replaced) and appends the
/// signature object as the last member (`spec/03-crypto.md` §5.1).
pub fn sign_object(object: &mut Object, key: &PrivateKey) {
    object.remove("signature");
    let signature = crypto::sign_text(key, &object.to_canonical());
    object.insert("signature", signature_value(&signature));
}

/// What a transporter artifact is made of before it is signed.
#[derive(Clone, Debug)]
pub struct TransporterDraft {
    /// `type`.
    pub kind: TransporterType,
    /// The sender.
    pub from: Identity,
    /// The receiver.
    pub to: Identity,
    /// The selector of the sender's signing key.
    pub selector: String,
    /// The document (encrypted when `encrypt_to` is given).
    pub document: Value,
    /// The artifact id (a fresh UUID v4 when `None`).
    pub id: Option<String>,
    /// `issuedAt` (now when `None`).
    pub issued_at: Option<String>,
}

/// Builds and signs a transporter artifact the way the reference's `signEncrypt`
/// does: members `version, type, from, to, selector, id, issuedAt, document,
/// encryption, signature`; with `encrypt_to`, the document is encrypted first and the
/// signature covers the ciphertext (`spec/03-crypto.md` §10).
pub fn build_transporter(
    draft: TransporterDraft,
    key: &PrivateKey,
    encrypt_to: Option<(&PublicKey, EncryptionMode)>,
) -> Result<Object, ProtocolError> {
    let mut artifact = Object::new();
    artifact.insert("version", crate::protocol::response::PROTOCOL_VERSION);
    artifact.insert("type", draft.kind.as_str());
    artifact.insert("from", draft.from.as_str());
    artifact.insert("to", draft.to.as_str());
    artifact.insert("selector", draft.selector);
    artifact.insert(
        "id",
        draft.id.unwrap_or_else(crate::protocol::response::new_id),
    );
    artifact.insert(
        "issuedAt",
        draft
            .issued_at
            .unwrap_or_else(crate::protocol::response::now_iso),
    );
    match encrypt_to {
        None => {
            artifact.insert("document", draft.document);
            artifact.insert("encryption", Value::Null);
        }
        Some((receiver, mode)) => {
            let (ciphertext, encryption) = encrypt_document(&draft.document, receiver, mode)?;
            artifact.insert("document", ciphertext);
            artifact.insert("encryption", encryption);
        }
    }
    sign_object(&mut artifact, key);
    Ok(artifact)
}

/// Encrypts a document (`spec/03-crypto.md` §9.1): returns the base64 ciphertext and
/// the encryption object (`algorithm, encryptedKey, iv, authTag, type`).
pub fn encrypt_document(
    document: &Value,
    receiver: &PublicKey,
    mode: EncryptionMode,
) -> Result<(String, Object), ProtocolError> {
    let plaintext: Cow<'_, str> = match document.as_str() {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(document.to_canonical()),
    };
    let envelope = crypto::encrypt(plaintext.as_bytes(), receiver, mode)
        .map_err(|error| ProtocolError::new(ErrorCode::UnsupportedEncrypt, error.to_string()))?;
    let mut encryption = Object::new();
    encryption.insert("algorithm", "aes-256-gcm");
    encryption.insert("encryptedKey", envelope.encrypted_key);
    encryption.insert("iv", envelope.iv);
    encryption.insert("authTag", envelope.auth_tag);
    encryption.insert("type", mode.as_str());
    Ok((envelope.document, encryption))
}

/// Decrypts an encrypted document and parses it (`spec/03-crypto.md` §9.3). Call it
/// only after the signature has verified: never decrypt unverified input.
pub fn decrypt_document(
    ciphertext: &str,
    encryption: &EncryptionObject,
    key: &PrivateKey,
) -> Result<Value, ProtocolError> {
    let plaintext = crypto::decrypt(
        key,
        &encryption.algorithm,
        ciphertext,
        &encryption.encrypted_key,
        &encryption.iv,
        &encryption.auth_tag,
    )
    .map_err(|error| {
        let code = match error {
            DecryptError::UnsupportedAlgorithm { .. } => ErrorCode::UnsupportedEncrypt,
            DecryptError::NotForThisReceiver => ErrorCode::DecryptionUnintended,
            _ => ErrorCode::Unknown,
        };
        ProtocolError::new(code, error.to_string())
    })?;
    let text = String::from_utf8(plaintext)
        .map_err(|_| ProtocolError::new(ErrorCode::Unknown, "decrypted document is not UTF-8"))?;
    json::parse(&text).map_err(|error| {
        ProtocolError::new(ErrorCode::Unknown, format!("decrypted document: {error}"))
    })
}

/// Delegates an agent-signed artifact (`spec/03-crypto.md` §7.1 step 2): the
/// delegator signs the artifact (agent signature included) plus
/// `delegation: {agentId, agentPubKey, signedBy, issuedAt, selector}`.
pub fn delegate(
    artifact: &mut Object,
    agent_id: &str,
    agent_key: &PublicKey,
    delegator: &Identity,
    delegator_key: &PrivateKey,
    selector: &str,
    issued_at: Option<String>,
) {
    let mut delegation = Object::new();
    delegation.insert("agentId", agent_id);
    delegation.insert("agentPubKey", agent_key.to_pem());
    delegation.insert("signedBy", delegator.as_str());
    delegation.insert(
        "issuedAt",
        issued_at.unwrap_or_else(crate::protocol::response::now_iso),
    );
    delegation.insert("selector", selector);
    sign_with_member(artifact, "delegation", delegation, delegator_key);
}

/// Appends `member` (without signature) to `container` as `name`, signs the container
/// so extended, and puts the signature into the member, in place.
fn sign_with_member(container: &mut Object, name: &str, mut member: Object, key: &PrivateKey) {
    container.append(name, member.clone());
    let signature = crypto::sign_text(key, &container.to_canonical());
    member.insert("signature", signature_value(&signature));
    container.insert(name, member);
}

/// Attests the delegation of `artifact` (`spec/03-crypto.md` §7.1 step 3): the
/// attestor signs the delegation (delegator signature included) plus
/// `attestation: {signedBy, issuedAt, selector}`; the artifact itself is not covered.
pub fn attest(
    artifact: &mut Object,
    attestor: &Identity,
    attestor_key: &PrivateKey,
    selector: &str,
    issued_at: Option<String>,
) -> Result<(), ProtocolError> {
    let Some(Value::Object(delegation)) = artifact.get_mut("delegation") else {
        return Err(ProtocolError::validation("delegation: required to attest"));
    };
    let mut attestation = Object::new();
    attestation.insert("signedBy", attestor.as_str());
    attestation.insert(
        "issuedAt",
        issued_at.unwrap_or_else(crate::protocol::response::now_iso),
    );
    attestation.insert("selector", selector);
    sign_with_member(delegation, "attestation", attestation, attestor_key);
    Ok(())
}

// ---------------------------------------------------------------------------------
// Keys from DNS.
// ---------------------------------------------------------------------------------

/// Signer keys from DNS TXT records (`<selector>._btps.identity.<account>.<domain>`),
/// with the parsed keys memoised by their base64 text so that a key served from the
/// DNS cache is not re-parsed for every artifact.
///
/// A key is also remembered under its record name for as long as the DNS answer may
/// be used (its TTL, or what the DNS cache has left of it), so that a stream of
/// artifacts from one sender does not go through the DNS cache for every artifact.
/// Such a hit is counted as a DNS cache hit.
pub struct DnsKeys {
    directory: crate::identity::dns::KeyDirectory,
    parsed: std::sync::Mutex<HashMap<String, PublicKey>>,
    /// Record name → key and until when the answer it came from may be used.
    recent: std::sync::Mutex<HashMap<String, (PublicKey, tokio::time::Instant)>>,
}

/// How many distinct parsed keys [`DnsKeys`] keeps (about 1 KB each).
const PARSED_KEY_CAPACITY: usize = 4096;

impl DnsKeys {
    /// Keys looked up through `directory`.
    pub fn new(directory: crate::identity::dns::KeyDirectory) -> Self {
        DnsKeys {
            directory,
            parsed: std::sync::Mutex::new(HashMap::new()),
            recent: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The key remembered under `name`, while its answer may still be used.
    fn recent(&self, name: &str) -> Option<PublicKey> {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        recent
            .get(name)
            .filter(|(_, until)| *until > tokio::time::Instant::now())
            .map(|(key, _)| key.clone())
    }

    fn remember(&self, name: String, key: &PublicKey, ttl: std::time::Duration) {
        if ttl.is_zero() {
            return;
        }
        let until = tokio::time::Instant::now() + ttl;
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() >= PARSED_KEY_CAPACITY {
            recent.clear();
        }
        recent.insert(name, (key.clone(), until));
    }

    fn parse(&self, name: &str, base64: &str) -> Result<PublicKey, KeyLookupFailure> {
        // A poisoned lock only means another thread panicked mid-insert of a
        // self-contained entry; the map is still usable.
        let mut parsed = self
            .parsed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(key) = parsed.get(base64) {
            return Ok(key.clone());
        }
        let key =
            PublicKey::from_base64_spki(base64).map_err(|error| KeyLookupFailure::Unusable {
                name: name.to_owned(),
                reason: error.to_string(),
            })?;
        if parsed.len() >= PARSED_KEY_CAPACITY {
            parsed.clear();
        }
        parsed.insert(base64.to_owned(), key.clone());
        Ok(key)
    }
}

impl KeySource for DnsKeys {
    fn public_key<'a>(
        &'a self,
        identity: &'a Identity,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<PublicKey, KeyLookupFailure>> {
        use crate::identity::dns::KeyLookupError;
        Box::pin(async move {
            let name = identity.key_record_name(selector);
            if let Some(key) = self.recent(&name) {
                crate::metrics::dns_cache(crate::metrics::DnsCacheEvent::Hit);
                return Ok(key);
            }
            match self.directory.identity_key_named(&name).await {
                Ok((record, ttl)) => {
                    let key = self.parse(&name, &record.public_key_base64)?;
                    self.remember(name, &key, ttl);
                    Ok(key)
                }
                Err(KeyLookupError::Temporary { name, reason }) => {
                    Err(KeyLookupFailure::Temporary { name, reason })
                }
                Err(KeyLookupError::NotFound { name }) => Err(KeyLookupFailure::NotFound { name }),
                Err(other) => Err(KeyLookupFailure::Unusable {
                    name: other.name().to_owned(),
                    reason: other.to_string(),
                }),
            }
        })
    }
}

#[cfg(test)]
mod dns_keys_tests {
    use super::*;
    use crate::identity::dns::{DnsError, KeyDirectory, TxtAnswer, TxtResolver};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Answers every name with one key record and the given TTL, counting queries.
    struct Counting {
        record: Vec<u8>,
        ttl: Duration,
        queries: AtomicUsize,
    }

    impl TxtResolver for Counting {
        fn lookup_txt<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<TxtAnswer, DnsError>> {
            self.queries.fetch_add(1, Ordering::Relaxed);
            let answer = TxtAnswer {
                records: vec![vec![self.record.clone()]],
                ttl: self.ttl,
            };
            Box::pin(async move { Ok(answer) })
        }
    }

    fn keys(ttl: Duration) -> (DnsKeys, Arc<Counting>) {
        // The interoperability vectors: `$BTPS_VECTORS`, or `../shared/vectors`
        // beside the crate (as the integration tests find them).
        let vectors = std::env::var_os("BTPS_VECTORS").map_or_else(
            || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"),
            std::path::PathBuf::from,
        );
        let pem =
            std::fs::read_to_string(vectors.join("keys/billing.pub.pem")).unwrap_or_else(|_| {
                panic!(
                    "the interoperability vectors are missing: expected {} (set BTPS_VECTORS)",
                    vectors.display()
                )
            });
        let key = PublicKey::from_pem(&pem).unwrap();
        let resolver = Arc::new(Counting {
            record: format!("v=BTP1; k=rsa; p={}", key.to_base64()).into_bytes(),
            ttl,
            queries: AtomicUsize::new(0),
        });
        (DnsKeys::new(KeyDirectory::new(resolver.clone())), resolver)
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_reused_for_the_ttl_of_its_answer_only() {
        let (keys, resolver) = keys(Duration::from_secs(60));
        let identity = Identity::parse("billing$vendor.test").unwrap();
        let first = keys.public_key(&identity, "btps1").await.unwrap();
        let again = keys.public_key(&identity, "btps1").await.unwrap();
        assert_eq!(first, again);
        assert_eq!(resolver.queries.load(Ordering::Relaxed), 1);
        // Another selector is another record.
        keys.public_key(&identity, "btps2").await.unwrap();
        assert_eq!(resolver.queries.load(Ordering::Relaxed), 2);
        tokio::time::advance(Duration::from_secs(61)).await;
        keys.public_key(&identity, "btps1").await.unwrap();
        assert_eq!(resolver.queries.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_without_ttl_is_not_reused() {
        let (keys, resolver) = keys(Duration::ZERO);
        let identity = Identity::parse("billing$vendor.test").unwrap();
        for expected in 1..=3 {
            keys.public_key(&identity, "btps1").await.unwrap();
            assert_eq!(resolver.queries.load(Ordering::Relaxed), expected);
        }
    }
}
