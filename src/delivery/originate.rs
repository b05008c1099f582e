//! Artifacts the appliance makes for the identities it hosts (an operator's trust
//! answer, a send without a key file), signed so that any receiver — a reference
//! server included — accepts them (`07-agents-auth.md` §8.3).
//!
//! The appliance holds no private key of a hosted user (README decision 3). It signs
//! the artifact with its server key, acting as the user's agent, and adds a
//! delegation signed by the domain's delegator — the identity configured as the
//! domain's signer (`admin$<domain>` by default), whose DNS key is the server key:
//! `signedBy` = the delegator, `selector` = the server key's selector,
//! `agentPubKey` = the server key, **no attestation** (reference receivers refuse
//! attested delegations). A receiver checks the delegation with the delegator's
//! DNS key and the artifact with `agentPubKey`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::crypto::{self, EncryptionMode, PrivateKey, PublicKey};
use crate::identity::Identity;
use crate::identity::dns::KeyDirectory;
use crate::protocol::json::{Object, Value};
use crate::protocol::{ProtocolError, TransporterType};
use crate::signing::{TransporterDraft, build_transporter, delegate};

/// The `agentId` of the appliance's own delegations: the server acting for its users.
pub const APPLIANCE_AGENT_ID: &str = "btps-appliance";

/// The bytes the delegator check signs (`07-agents-auth.md` §8.2 step 3).
const KEY_VALIDATION_TEXT: &str = "btps-key-validation";

/// Why the appliance cannot sign for an identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginateError {
    /// The domain's delegator key in DNS is not the server key (or cannot be found).
    #[error("the delegator {delegator} cannot sign for {domain}: {reason}")]
    Delegator {
        /// The hosted domain.
        domain: String,
        /// Its delegator identity.
        delegator: String,
        /// What the DNS check found.
        reason: String,
    },
    /// The artifact could not be built (encryption failed).
    #[error("building the artifact: {0}")]
    Build(String),
}

/// Makes and signs artifacts for hosted identities.
pub struct Originator {
    key: Arc<PrivateKey>,
    selector: String,
    config: Arc<Config>,
    directory: Option<KeyDirectory>,
    /// Domains whose delegator passed the DNS check.
    checked: Mutex<HashMap<String, ()>>,
}

impl std::fmt::Debug for Originator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Originator")
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl Originator {
    /// Signs with `key` (the server key, published under `selector` for every
    /// domain's delegator); checks delegators and finds receivers' keys through
    /// `directory` (none: no check, no encryption).
    pub fn new(
        key: Arc<PrivateKey>,
        selector: impl Into<String>,
        config: Arc<Config>,
        directory: Option<KeyDirectory>,
    ) -> Self {
        Originator {
            key,
            selector: selector.into(),
            config,
            directory,
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// The DNS resolver's key directory, if any.
    pub fn directory(&self) -> Option<&KeyDirectory> {
        self.directory.as_ref()
    }

    /// The delegator of `domain`.
    pub fn delegator(&self, domain: &str) -> Identity {
        self.config.lookup_signer(domain)
    }

    /// The delegator check of `07-agents-auth.md` §8.2: the delegator's domain host
    /// record names a selector, the delegator's key at that selector is in DNS, and
    /// a signature of the server key verifies with it. A passed check is remembered.
    pub async fn check_delegator(&self, domain: &str) -> Result<(), OriginateError> {
        let domain = domain.to_ascii_lowercase();
        if self.is_checked(&domain) {
            return Ok(());
        }
        let delegator = self.delegator(&domain);
        let fail = |reason: String| OriginateError::Delegator {
            domain: domain.clone(),
            delegator: delegator.to_string(),
            reason,
        };
        let Some(directory) = &self.directory else {
            return Err(fail("no DNS resolver to check its key with".to_owned()));
        };
        let host = directory
            .host(delegator.domain())
            .await
            .map_err(|error| fail(format!("its domain's host record: {error}")))?;
        let record = directory
            .identity_key(&delegator, &host.selector)
            .await
            .map_err(|error| {
                fail(format!(
                    "its key at {}: {error}",
                    delegator.key_record_name(&host.selector)
                ))
            })?;
        let published =
            PublicKey::from_base64_spki(&record.public_key_base64).map_err(|error| {
                fail(format!(
                    "the key at {} is unusable: {error}",
                    delegator.key_record_name(&host.selector)
                ))
            })?;
        let signature = crypto::sign_text(&self.key, KEY_VALIDATION_TEXT);
        let verified = crypto::verify_text(
            &published,
            KEY_VALIDATION_TEXT,
            &signature.value,
            &signature.fingerprint,
        );
        if verified.is_err() || host.selector != self.selector {
            return Err(fail(format!(
                "the key published at {} (selector of the host record: {}) is not this \
                 server's key (selector {}, fingerprint {}); publish the server key there",
                delegator.key_record_name(&host.selector),
                host.selector,
                self.selector,
                self.key.public_key().fingerprint()
            )));
        }
        self.checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(domain, ());
        Ok(())
    }

    fn is_checked(&self, domain: &str) -> bool {
        self.checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(domain)
    }

    /// Builds the artifact `kind` from `from` (hosted) to `to`, encrypted to
    /// `encrypt_to` when given, signed by the server key and delegated by `from`'s
    /// domain delegator. The delegator must have passed [`Self::check_delegator`].
    pub fn sign(
        &self,
        kind: TransporterType,
        from: &Identity,
        to: &Identity,
        document: Value,
        encrypt_to: Option<&PublicKey>,
    ) -> Result<Object, OriginateError> {
        let domain = from.domain().to_ascii_lowercase();
        if !self.is_checked(&domain) {
            return Err(OriginateError::Delegator {
                delegator: self.delegator(&domain).to_string(),
                domain,
                reason: "its DNS key has not been checked against the server key".to_owned(),
            });
        }
        let draft = TransporterDraft {
            kind,
            from: from.clone(),
            to: to.clone(),
            selector: self.selector.clone(),
            document,
            id: None,
            issued_at: None,
        };
        let encryption = encrypt_to.map(|key| (key, EncryptionMode::Standard));
        let mut artifact = build_transporter(draft, &self.key, encryption)
            .map_err(|error: ProtocolError| OriginateError::Build(error.to_string()))?;
        let delegator = self.delegator(&domain);
        delegate(
            &mut artifact,
            APPLIANCE_AGENT_ID,
            self.key.public_key(),
            &delegator,
            &self.key,
            &self.selector,
            None,
        );
        Ok(artifact)
    }

    /// Adds the delegation of `from`'s domain delegator to an artifact an agent of
    /// `from` signed (`07-agents-auth.md` §8.3 step 2): `signedBy` the delegator,
    /// `selector` the server key's, `agentPubKey` the agent's key, no attestation.
    /// The delegator must have passed [`Self::check_delegator`].
    pub fn delegate_agent_artifact(
        &self,
        artifact: &mut Object,
        from: &Identity,
        agent_id: &str,
        agent_key: &PublicKey,
    ) -> Result<(), OriginateError> {
        let domain = from.domain().to_ascii_lowercase();
        if !self.is_checked(&domain) {
            return Err(OriginateError::Delegator {
                delegator: self.delegator(&domain).to_string(),
                domain,
                reason: "its DNS key has not been checked against the server key".to_owned(),
            });
        }
        let delegator = self.delegator(&domain);
        delegate(
            artifact,
            agent_id,
            agent_key,
            &delegator,
            &self.key,
            &self.selector,
            None,
        );
        Ok(())
    }

    /// The public key of `receiver` to encrypt to: its key record at the selector
    /// of its domain's host record.
    pub async fn receiver_key(&self, receiver: &Identity) -> Result<PublicKey, String> {
        let directory = self
            .directory
            .as_ref()
            .ok_or_else(|| "no DNS resolver to find the receiver's key".to_owned())?;
        let host = directory
            .host(receiver.domain())
            .await
            .map_err(|error| format!("the host record of {}: {error}", receiver.domain()))?;
        let record = directory
            .identity_key(receiver, &host.selector)
            .await
            .map_err(|error| format!("the key of {receiver}: {error}"))?;
        PublicKey::from_base64_spki(&record.public_key_base64)
            .map_err(|error| format!("the key of {receiver} is unusable: {error}"))
    }
}
