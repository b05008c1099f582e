//! The trust rules of an inbound artifact inside a transaction: what is checked
//! (`spec/05-trust.md` §5) and which records change (§6), written against
//! [`InboundTransaction`] so that every storage backend runs the same rules.

use crate::protocol::{ProtocolError, TransporterType};
use crate::server::trust::{self, TrustPolicy, VerifyingKey};
use crate::store::{
    InboundTransaction, NewTrustRecord, Perspective, PreparedInboxEntry, StoreResult, Timestamp,
    TrustPatch, TrustRecord, TrustStatus,
};

use super::VerifiedArtifact;

/// A transaction, noting whether an artifact wrote trust records (every write goes
/// through here), so that the committer's trust cache learns it from the writes
/// themselves.
pub(super) struct NotingWrites<'t> {
    pub(super) transaction: &'t mut dyn InboundTransaction,
    pub(super) wrote: bool,
}

impl InboundTransaction for NotingWrites<'_> {
    fn trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        self.transaction.trust(perspective, id)
    }

    fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
    ) -> StoreResult<()> {
        self.wrote = true;
        self.transaction.create_trust(perspective, record)
    }

    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<()> {
        self.wrote = true;
        self.transaction.update_trust(perspective, id, patch)
    }

    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool> {
        self.transaction.is_hosted(identity)
    }

    fn duplicate_of(&mut self, entry: &PreparedInboxEntry) -> StoreResult<Option<u64>> {
        self.transaction.duplicate_of(entry)
    }

    fn insert_inbox(&mut self, entry: &PreparedInboxEntry) -> StoreResult<u64> {
        self.transaction.insert_inbox(entry)
    }

    fn generation(&self) -> Option<u64> {
        self.transaction.generation()
    }
}

/// Whether `artifact` may be accepted given `record`, the record its kind is
/// checked against ([`VerifiedArtifact::checked_trust_id`]).
pub fn check(
    artifact: &VerifiedArtifact,
    record: Option<&TrustRecord>,
    now: &Timestamp,
    policy: &TrustPolicy,
) -> Result<(), ProtocolError> {
    match artifact.kind {
        TransporterType::TrustRequest => trust::check_trust_request(record, now),
        TransporterType::TrustResponse => {
            trust::check_trust_response(record, artifact.from.as_str())
        }
        TransporterType::Document => trust::check_document(record, now, artifact.encrypted, policy),
    }
}

/// Updates `id` in `perspective` with `patch` unless the patch is empty.
fn update(
    batch: &mut dyn InboundTransaction,
    perspective: Perspective,
    id: &str,
    patch: TrustPatch,
) -> StoreResult<()> {
    if !trust::is_empty(&patch) {
        batch.update_trust(perspective, id, patch)?;
    }
    Ok(())
}

/// The record changes accepting `artifact` makes (`spec/05-trust.md` §6).
pub fn apply(
    batch: &mut dyn InboundTransaction,
    artifact: &VerifiedArtifact,
    record: Option<&TrustRecord>,
    now: &Timestamp,
    policy: &TrustPolicy,
) -> StoreResult<()> {
    let (from, to) = (artifact.from.as_str(), artifact.to.as_str());
    match artifact.kind {
        TransporterType::TrustRequest => {
            let terms = artifact.content.terms.clone().unwrap_or_default();
            let id = artifact.trust_id.clone();
            match record {
                None => {
                    let new = trust::new_request_record(
                        from,
                        to,
                        &artifact.id,
                        &terms,
                        &artifact.key,
                        now,
                        policy,
                    );
                    batch.create_trust(Perspective::Inbound, new)?;
                }
                Some(record) => {
                    let patch = trust::renew_request_patch(
                        record,
                        &artifact.id,
                        &terms,
                        &artifact.key,
                        now,
                        policy,
                    );
                    update(batch, Perspective::Inbound, &id, patch)?;
                }
            }
            // Both parties hosted here: keep the requesting side's record in step
            // (`spec/05-trust.md` §6.6), so that the answer can be accepted later.
            if batch.is_hosted(artifact.from.as_str())? {
                // The counterpart's key is unknown until its answer arrives.
                let counterpart = VerifyingKey {
                    base64: String::new(),
                    fingerprint: String::new(),
                    delegated_by: None,
                };
                match batch.trust(Perspective::Outbound, &id)? {
                    None => {
                        let mut new = trust::new_request_record(
                            from,
                            to,
                            &artifact.id,
                            &terms,
                            &counterpart,
                            now,
                            policy,
                        );
                        new.retry_after_date = None;
                        batch.create_trust(Perspective::Outbound, new)?;
                    }
                    Some(_) => {
                        let patch = TrustPatch {
                            status: Some(TrustStatus::Pending),
                            decided_by: Some("system".to_owned()),
                            decided_at: Some(now.clone()),
                            expires_at: Some(terms.expires_at.clone()),
                            privacy_type: Some(
                                terms
                                    .privacy_type
                                    .unwrap_or_else(|| policy.default_privacy.clone()),
                            ),
                            ..TrustPatch::default()
                        };
                        update(batch, Perspective::Outbound, &id, patch)?;
                    }
                }
            }
        }
        TransporterType::TrustResponse => {
            // The original request went from `to` (hosted) to `from`.
            let id = artifact.trust_id.clone();
            let Some(record) = record else { return Ok(()) };
            let mut patch = trust::key_patch(record, &artifact.key, now);
            // An encrypted decision cannot be read here: the record stays pending
            // until the owner applies it (`spec/05-trust.md` §6.2).
            let decision = artifact.content.decision.clone();
            if let Some(decision) = &decision {
                let decided = decision.patch();
                patch.status = decided.status;
                patch.decided_by = decided.decided_by;
                patch.decided_at = decided.decided_at;
                patch.expires_at = decided.expires_at;
                patch.retry_after_date = decided.retry_after_date;
                patch.privacy_type = decided.privacy_type;
            }
            update(batch, Perspective::Outbound, &id, patch)?;
            if let Some(decision) = decision
                && batch.is_hosted(artifact.from.as_str())?
                && batch.trust(Perspective::Inbound, &id)?.is_some()
            {
                update(batch, Perspective::Inbound, &id, decision.patch())?;
            }
        }
        TransporterType::Document => {
            if let Some(record) = record {
                let patch = trust::key_patch(record, &artifact.key, now);
                update(batch, Perspective::Inbound, &artifact.trust_id, patch)?;
            }
        }
    }
    Ok(())
}
