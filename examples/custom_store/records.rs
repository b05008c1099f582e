//! The record and mailbox traits of `TenantRouter`, each call routed by the rules
//! in `router.rs`: by the hosted identity's domain when the call names one, by
//! asking each tenant when it only has an id, over every tenant for listings that
//! are not about a hosted party.

use std::collections::BTreeMap;

use btps::BoxFuture;
use btps::store::{
    IdentityPatch, IdentityRecord, IdentityStore, Mailbox, MailboxEntry, MailboxStore,
    NewTrustRecord, Page, PageRequest, Perspective, PublicKeyRecord, RecordKind, StoreResult,
    TrustPatch, TrustRecord, TrustStatus, TrustStore,
};

use super::router::{TenantRouter, no_tenant, split_entry_id, with_router_id};

type Records<'a> = BoxFuture<'a, StoreResult<Page<TrustRecord>>>;

impl TrustStore for TenantRouter {
    fn get<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<TrustRecord>>> {
        Box::pin(self.first(move |store| store.trust().get(perspective, id)))
    }

    /// Stored with the hosted party: the receiver when inbound, else the sender.
    fn create<'a>(
        &'a self,
        perspective: Perspective,
        record: NewTrustRecord,
        id: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>> {
        let home = match perspective {
            Perspective::Inbound => record.receiver_id.clone(),
            Perspective::Outbound => record.sender_id.clone(),
        };
        let absent = || Err(no_tenant(&home));
        self.on_tenant(&home, absent, move |store| {
            store.trust().create(perspective, record, id)
        })
    }

    fn update<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
        patch: TrustPatch,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>> {
        Box::pin(self.change(RecordKind::Trust, id, move |store| {
            store.trust().update(perspective, id, patch.clone())
        }))
    }

    fn delete<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(self.delete_anywhere(move |store| store.trust().delete(perspective, id)))
    }

    fn list_by_receiver<'a>(
        &'a self,
        perspective: Perspective,
        receiver: &'a str,
        page: PageRequest,
    ) -> Records<'a> {
        self.trust_by_party(perspective, receiver, true, page)
    }

    fn list_by_sender<'a>(
        &'a self,
        perspective: Perspective,
        sender: &'a str,
        page: PageRequest,
    ) -> Records<'a> {
        self.trust_by_party(perspective, sender, false, page)
    }

    fn list_by_status<'a>(
        &'a self,
        perspective: Perspective,
        status: &'a TrustStatus,
        page: PageRequest,
    ) -> Records<'a> {
        Box::pin(self.across(page, move |store, page| {
            store.trust().list_by_status(perspective, status, page)
        }))
    }

    /// By expiry within each tenant, tenant after tenant (not one global order).
    fn list_expiring_before<'a>(
        &'a self,
        perspective: Perspective,
        before: i64,
        status: Option<&'a TrustStatus>,
        page: PageRequest,
    ) -> Records<'a> {
        Box::pin(self.across(page, move |store, page| {
            let trust = store.trust();
            trust.list_expiring_before(perspective, before, status, page)
        }))
    }

    fn list_all<'a>(&'a self, perspective: Perspective, page: PageRequest) -> Records<'a> {
        Box::pin(self.across(page, move |store, page| {
            store.trust().list_all(perspective, page)
        }))
    }

    fn count_by_status(
        &self,
        perspective: Perspective,
    ) -> BoxFuture<'_, StoreResult<BTreeMap<TrustStatus, u64>>> {
        Box::pin(async move {
            let mut total = BTreeMap::new();
            for tenant in &self.tenants {
                let counts = tenant.store.trust().count_by_status(perspective).await?;
                for (status, count) in counts {
                    *total.entry(status).or_insert(0) += count;
                }
            }
            Ok(total)
        })
    }
}

impl IdentityStore for TenantRouter {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<IdentityRecord>>> {
        Box::pin(self.first(move |store| store.identities().get(id)))
    }

    /// What the server asks for every artifact: is its receiver hosted here?
    fn get_by_identity<'a>(
        &'a self,
        identity: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<IdentityRecord>>> {
        self.on_tenant(
            identity,
            || Ok(None),
            |store| store.identities().get_by_identity(identity),
        )
    }

    fn create(&self, record: IdentityRecord) -> BoxFuture<'_, StoreResult<IdentityRecord>> {
        let identity = record.identity.clone();
        let absent = || Err(no_tenant(&identity));
        self.on_tenant(&identity, absent, |store| store.identities().create(record))
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        patch: IdentityPatch,
    ) -> BoxFuture<'a, StoreResult<IdentityRecord>> {
        Box::pin(self.change(RecordKind::Identity, id, move |store| {
            store.identities().update(id, patch.clone())
        }))
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(self.delete_anywhere(move |store| store.identities().delete(id)))
    }

    fn public_key<'a>(
        &'a self,
        identity: &'a str,
        selector: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Option<PublicKeyRecord>>> {
        self.on_tenant(
            identity,
            || Ok(None),
            |store| store.identities().public_key(identity, selector),
        )
    }

    fn put_public_key<'a>(
        &'a self,
        identity: &'a str,
        key: PublicKeyRecord,
        make_current: bool,
    ) -> BoxFuture<'a, StoreResult<IdentityRecord>> {
        let absent = || Err(no_tenant(identity));
        self.on_tenant(identity, absent, |store| {
            store
                .identities()
                .put_public_key(identity, key, make_current)
        })
    }

    fn list(&self, page: PageRequest) -> BoxFuture<'_, StoreResult<Page<IdentityRecord>>> {
        Box::pin(self.across(page, |store, page| store.identities().list(page)))
    }
}

/// Mailboxes route by their owner; entry ids carry their tenant (`TENANT_SHIFT`).
impl MailboxStore for TenantRouter {
    fn entry(&self, id: u64) -> BoxFuture<'_, StoreResult<Option<MailboxEntry>>> {
        Box::pin(async move {
            let (index, local) = split_entry_id(id);
            let Some(tenant) = self.tenants.get(index) else {
                return Ok(None);
            };
            let entry = tenant.store.mailboxes().entry(local).await?;
            entry.map(|entry| with_router_id(entry, index)).transpose()
        })
    }

    fn list<'a>(
        &'a self,
        owner: &'a str,
        mailbox: Mailbox,
        page: PageRequest,
        newest_first: bool,
    ) -> BoxFuture<'a, StoreResult<Page<MailboxEntry>>> {
        Box::pin(async move {
            let Some(index) = self.tenant_index(owner) else {
                let (items, next) = (Vec::new(), None);
                return Ok(Page { items, next });
            };
            let mailboxes = self.tenants[index].store.mailboxes();
            let page = mailboxes.list(owner, mailbox, page, newest_first).await?;
            let items = page.items.into_iter();
            let items = items.map(|entry| with_router_id(entry, index));
            let items = items.collect::<StoreResult<_>>()?;
            Ok(Page {
                items,
                next: page.next,
            })
        })
    }

    fn count<'a>(&'a self, owner: &'a str, mailbox: Mailbox) -> BoxFuture<'a, StoreResult<u64>> {
        self.on_tenant(
            owner,
            || Ok(0),
            move |store| store.mailboxes().count(owner, mailbox),
        )
    }

    /// Tenant after tenant, in router entry-id order (see `TENANT_SHIFT`).
    fn inbox_after(&self, after: u64, limit: u32) -> BoxFuture<'_, StoreResult<Vec<MailboxEntry>>> {
        Box::pin(async move {
            let (first, mut local) = split_entry_id(after);
            let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
            let mut entries = Vec::new();
            for (index, tenant) in self.tenants.iter().enumerate().skip(first) {
                let rest = u32::try_from(limit - entries.len()).unwrap_or(u32::MAX);
                for entry in tenant.store.mailboxes().inbox_after(local, rest).await? {
                    entries.push(with_router_id(entry, index)?);
                }
                if entries.len() >= limit {
                    break;
                }
                // Past the tenant of `after`: from the start of the next one.
                local = 0;
            }
            Ok(entries)
        })
    }

    // Subscription positions are the router's own, in router entry ids: they are
    // kept in the first tenant's store.
    fn cursor<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StoreResult<u64>> {
        self.tenants[0].store.mailboxes().cursor(name)
    }

    fn set_cursor<'a>(&'a self, name: &'a str, entry_id: u64) -> BoxFuture<'a, StoreResult<()>> {
        self.tenants[0].store.mailboxes().set_cursor(name, entry_id)
    }
}
