//! The router's outbox and write transactions: each tenant keeps its own queue,
//! and the router presents the tenants' entries with router entry ids.
//!
//! * **Transactions** ([`Storage::transact`]) go to the tenant of the owner whose
//!   data they change; entry ids crossing the transaction are translated, and an
//!   entry of another tenant is "not there".
//! * **Claims** ask each tenant in turn for what is still allowed; each tenant's
//!   per-pair ordering is its own, and a pair never spans tenants (the owner picks
//!   the tenant).
//! * **Listings** run tenant after tenant, like the record listings.

use btps::BoxFuture;
use btps::store::{
    MailboxEntry, NewTrustRecord, OutboxStats, OutboxStore, Page, PageRequest, Perspective,
    Storage, StoreResult, StoreTransaction, Timestamp, TrustPatch, TrustRecord,
};

use crate::router::{TenantRouter, entry_id, no_tenant, split_entry_id, with_router_id};

impl TenantRouter {
    /// [`Storage::transact`] on the tenant of `owner`.
    pub(crate) fn transact_on(
        &self,
        owner: &str,
        work: &mut dyn FnMut(&mut dyn StoreTransaction) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let tenant = self.tenant_index(owner).ok_or_else(|| no_tenant(owner))?;
        self.tenants[tenant]
            .store
            .transact(owner, &mut |inner| work(&mut TenantWrite { inner, tenant }))
    }
}

/// A tenant's write transaction with entry ids in the router's form.
struct TenantWrite<'t> {
    inner: &'t mut dyn StoreTransaction,
    tenant: usize,
}

impl TenantWrite<'_> {
    /// The tenant's own id of a router entry id of this tenant.
    fn local(&self, id: u64) -> Option<u64> {
        let (tenant, local) = split_entry_id(id);
        (tenant == self.tenant).then_some(local)
    }

    fn local_entry(&self, entry: &MailboxEntry) -> Option<MailboxEntry> {
        let local = self.local(entry.entry_id)?;
        let mut entry = entry.clone();
        entry.entry_id = local;
        Some(entry)
    }
}

impl StoreTransaction for TenantWrite<'_> {
    fn trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        self.inner.trust(perspective, id)
    }

    fn create_trust(
        &mut self,
        perspective: Perspective,
        new: NewTrustRecord,
    ) -> StoreResult<TrustRecord> {
        self.inner.create_trust(perspective, new)
    }

    fn update_trust(
        &mut self,
        side: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<TrustRecord> {
        self.inner.update_trust(side, id, patch)
    }

    fn delete_trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<bool> {
        self.inner.delete_trust(perspective, id)
    }

    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool> {
        self.inner.is_hosted(identity)
    }

    fn entry(&mut self, id: u64) -> StoreResult<Option<MailboxEntry>> {
        let Some(local) = self.local(id) else {
            return Ok(None);
        };
        let found = self.inner.entry(local)?;
        found
            .map(|entry| with_router_id(entry, self.tenant))
            .transpose()
    }

    fn insert_entry(&mut self, entry: MailboxEntry) -> StoreResult<u64> {
        entry_id(self.tenant, self.inner.insert_entry(entry)?)
    }

    fn update_entry(&mut self, entry: &MailboxEntry) -> StoreResult<()> {
        match self.local_entry(entry) {
            Some(local) => self.inner.update_entry(&local),
            None => Err(btps::store::StoreError::NotFound {
                kind: btps::store::RecordKind::MailboxEntry,
                id: entry.entry_id.to_string(),
            }),
        }
    }

    fn remove_entry(&mut self, id: u64) -> StoreResult<Option<MailboxEntry>> {
        let Some(local) = self.local(id) else {
            return Ok(None);
        };
        let removed = self.inner.remove_entry(local)?;
        removed
            .map(|entry| with_router_id(entry, self.tenant))
            .transpose()
    }
}

impl OutboxStore for TenantRouter {
    fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<MailboxEntry>>> {
        Box::pin(async move {
            let mut claimed = Vec::new();
            for (tenant, store) in self.tenants.iter().enumerate() {
                let rest = limit.saturating_sub(u32::try_from(claimed.len()).unwrap_or(limit));
                if rest == 0 {
                    break;
                }
                let part = store
                    .store
                    .outbox()
                    .claim_due(now.clone(), lease_until.clone(), rest)
                    .await?;
                for entry in part {
                    claimed.push(with_router_id(entry, tenant)?);
                }
            }
            Ok(claimed)
        })
    }

    fn release_claims(&self, now: Timestamp) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let mut released = 0;
            for tenant in &self.tenants {
                released += tenant.store.outbox().release_claims(now.clone()).await?;
            }
            Ok(released)
        })
    }

    fn next_due(&self) -> BoxFuture<'_, StoreResult<Option<i64>>> {
        Box::pin(async move {
            let mut next: Option<i64> = None;
            for tenant in &self.tenants {
                if let Some(due) = tenant.store.outbox().next_due().await? {
                    next = Some(next.map_or(due, |next| next.min(due)));
                }
            }
            Ok(next)
        })
    }

    fn list<'a>(
        &'a self,
        owner: Option<&'a str>,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<MailboxEntry>>> {
        Box::pin(async move {
            let listed = match owner {
                Some(owner) => match self.tenant_index(owner) {
                    Some(tenant) => {
                        let store = self.tenants[tenant].store.as_ref();
                        let page = store.outbox().list(Some(owner), page).await?;
                        return Ok(Page {
                            items: page
                                .items
                                .into_iter()
                                .map(|entry| with_router_id(entry, tenant))
                                .collect::<StoreResult<_>>()?,
                            next: page.next,
                        });
                    }
                    None => Page {
                        items: Vec::new(),
                        next: None,
                    },
                },
                None => {
                    // Tenant after tenant; each entry knows its tenant by its owner.
                    let page = self
                        .across(page, |store: &'a dyn Storage, page| {
                            store.outbox().list(None, page)
                        })
                        .await?;
                    let items = page
                        .items
                        .into_iter()
                        .map(|entry| match self.tenant_index(&entry.owner) {
                            Some(tenant) => with_router_id(entry, tenant),
                            None => Ok(entry),
                        })
                        .collect::<StoreResult<_>>()?;
                    Page {
                        items,
                        next: page.next,
                    }
                }
            };
            Ok(listed)
        })
    }

    fn stats(&self) -> BoxFuture<'_, StoreResult<OutboxStats>> {
        Box::pin(async move {
            let mut stats = OutboxStats::default();
            for tenant in &self.tenants {
                let part = tenant.store.outbox().stats().await?;
                stats.entries += part.entries;
                stats.oldest_queued_at = match (stats.oldest_queued_at, part.oldest_queued_at) {
                    (Some(a), Some(b)) => Some(if a.millis() <= b.millis() { a } else { b }),
                    (a, b) => a.or(b),
                };
            }
            Ok(stats)
        })
    }
}
