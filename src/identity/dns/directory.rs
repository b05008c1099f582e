//! BTPS keys and hosts from TXT answers, with failures classified the way the server
//! reports them (`01-wire.md` §5.3 "DNS failures", `04-identity-dns.md` §4.6).

use std::sync::Arc;

use super::{DnsError, HostRecord, HostRecordError, KeyRecord, TxtResolver};
use crate::identity::Identity;

/// Why no key (or host) could be obtained from DNS.
///
/// [`KeyLookupError::Temporary`] is the only variant that may go away by itself; the
/// server answers it with its `Display` text and the sender retries. Every other
/// variant means the record definitively does not provide what was asked, which the
/// server reports as a verification failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyLookupError {
    /// NXDOMAIN, NODATA or an empty answer.
    #[error("no TXT record at {name}")]
    NotFound {
        /// The DNS name queried.
        name: String,
    },
    /// A key record exists but has no usable (non-empty) `p=`.
    #[error("the key record at {name} has no usable 'p=' value")]
    NoUsableKey {
        /// The DNS name queried.
        name: String,
    },
    /// A host record exists but lacks `v`, `u` or `s`, or its address is unusable.
    #[error("the host record at {name} is unusable: {reason}")]
    NoUsableHost {
        /// The DNS name queried.
        name: String,
        /// What is wrong with it.
        reason: HostRecordError,
    },
    /// The name built from the identity and selector cannot exist in the DNS (e.g. a
    /// label longer than 63 bytes).
    #[error("'{name}' is not a valid DNS name: {reason}")]
    InvalidName {
        /// The name that was built.
        name: String,
        /// Why it is not valid.
        reason: String,
    },
    /// Timeout, SERVFAIL, REFUSED or a network failure. The text is the exact message
    /// of `01-wire.md` §5.3, which senders recognise by its prefix.
    #[error("Temporary DNS failure while resolving {name}, retry later")]
    Temporary {
        /// The DNS name queried.
        name: String,
        /// What went wrong, for logs (not part of the message).
        reason: String,
    },
}

impl KeyLookupError {
    /// Whether retrying later may succeed (only [`KeyLookupError::Temporary`]).
    pub fn is_temporary(&self) -> bool {
        matches!(self, KeyLookupError::Temporary { .. })
    }

    /// The DNS name the failed lookup was about.
    pub fn name(&self) -> &str {
        match self {
            KeyLookupError::NotFound { name }
            | KeyLookupError::NoUsableKey { name }
            | KeyLookupError::NoUsableHost { name, .. }
            | KeyLookupError::InvalidName { name, .. }
            | KeyLookupError::Temporary { name, .. } => name,
        }
    }
}

impl From<DnsError> for KeyLookupError {
    fn from(error: DnsError) -> Self {
        match error {
            DnsError::NotFound { name } => KeyLookupError::NotFound { name },
            DnsError::Temporary { name, reason } => KeyLookupError::Temporary { name, reason },
            DnsError::InvalidName { name, reason } => KeyLookupError::InvalidName { name, reason },
        }
    }
}

/// Finds identity keys and domain hosts in DNS through a [`TxtResolver`] (normally a
/// [`super::CachingResolver`] around a [`super::HickoryTxtResolver`]).
#[derive(Clone)]
pub struct KeyDirectory {
    resolver: Arc<dyn TxtResolver>,
}

impl KeyDirectory {
    /// Uses `resolver` for every lookup.
    pub fn new(resolver: Arc<dyn TxtResolver>) -> Self {
        KeyDirectory { resolver }
    }

    /// The resolver underneath.
    pub fn resolver(&self) -> &Arc<dyn TxtResolver> {
        &self.resolver
    }

    /// The key record of `identity` under `selector`, from
    /// `<selector>._btps.identity.<account>.<domain>`.
    pub async fn identity_key(
        &self,
        identity: &Identity,
        selector: &str,
    ) -> Result<KeyRecord, KeyLookupError> {
        self.identity_key_named(&identity.key_record_name(selector))
            .await
            .map(|(record, _)| record)
    }

    /// The key record at `name` (a key record name, see
    /// [`Identity::key_record_name`]) and how long the answer may still be used: its
    /// TTL, or what remains of it when it came from a cache.
    pub async fn identity_key_named(
        &self,
        name: &str,
    ) -> Result<(KeyRecord, std::time::Duration), KeyLookupError> {
        let answer = self.resolver.lookup_txt(name).await?;
        let record =
            KeyRecord::parse(&answer.records).ok_or_else(|| KeyLookupError::NoUsableKey {
                name: name.to_owned(),
            })?;
        Ok((record, answer.ttl))
    }

    /// The host record of `domain`, from `_btps.host.<domain>`.
    pub async fn host(&self, domain: &str) -> Result<HostRecord, KeyLookupError> {
        let name = format!("_btps.host.{domain}");
        let answer = self.resolver.lookup_txt(&name).await?;
        HostRecord::parse(&answer.records)
            .map_err(|reason| KeyLookupError::NoUsableHost { name, reason })
    }
}

impl std::fmt::Debug for KeyDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyDirectory").finish_non_exhaustive()
    }
}
