//! `TenantRouter`: one [`Storage`] in front of one backing store per hosted domain.
//!
//! What routes where, and why:
//!
//! * **Identities** by the identity's domain (`finance$client-a.example` →
//!   `client-a.example`'s store). A domain no tenant serves is hosted nowhere.
//! * **Trust records** live with their *hosted* party: the receiver's tenant for the
//!   inbound perspective, the sender's for the outbound one. Listings by that party
//!   go to its tenant; listings by the other party (a remote vendor may deal with
//!   several tenants), by status or of everything go to every tenant in turn.
//! * **By id** (`get`, `update`, `delete`): ask each tenant. Ids are SHA-256 hashes
//!   (`computeTrustId`, `computeId`); nothing in them names a tenant, which is why
//!   the reference guide's `extractTenantId(computedId)` (split at `:`) cannot work.
//! * **Inbound commits**: the server's group is split by `group.receiver(i)`'s
//!   domain and each part is committed by its tenant ([`Storage::commit_inbound`]).
//! * **Mailbox entry ids**: see [`TENANT_SHIFT`].
//! * **The outbox and write transactions**: see `outbox.rs`.

use std::sync::Arc;

use btps::BoxFuture;
use btps::store::{
    Cursor, IdentityStore, InboundGroup, InboundTransaction, MailboxEntry, MailboxStore,
    NewTrustRecord, OutboxStore, Page, PageRequest, Perspective, PreparedInboxEntry, RecordKind,
    Storage, StoreError, StoreResult, StoreTransaction, TrustPatch, TrustRecord, TrustStore,
};

/// Mailbox entry ids. Each tenant numbers its entries 1, 2, 3, … on its own, so the
/// router presents `tenant index << 48 | the tenant's id`: unique, stable, and
/// decodable back to (tenant, id). Within a tenant they keep the tenant's order;
/// across tenants there is no common order — independent counters have none — so
/// the inbox feed (`inbox_after`, which `Server::events()` subscriptions read) runs
/// tenant after tenant: a router-wide subscription that has moved on to tenant 1
/// no longer sees new entries of tenant 0. An application that needs one feed over
/// all tenants keeps a sequence of its own beside them.
pub(crate) const TENANT_SHIFT: u32 = 48;

/// A tenant: the domain it hosts and its own backing store.
pub(crate) struct Tenant {
    pub(crate) domain: String,
    pub(crate) store: Arc<dyn Storage>,
}

/// Routes every storage call to the tenant of the hosted identity it concerns.
pub(crate) struct TenantRouter {
    pub(crate) tenants: Vec<Tenant>,
}

/// The router's id of the tenant's entry `local`.
pub(crate) fn entry_id(tenant: usize, local: u64) -> StoreResult<u64> {
    match u64::try_from(tenant) {
        Ok(tenant) if local >> TENANT_SHIFT == 0 => Ok(tenant << TENANT_SHIFT | local),
        _ => Err(StoreError::TaskFailed(format!(
            "entry {local} of tenant {tenant} does not fit a router entry id"
        ))),
    }
}

/// (tenant index, the tenant's own entry id) of a router entry id.
pub(crate) fn split_entry_id(id: u64) -> (usize, u64) {
    let tenant = usize::try_from(id >> TENANT_SHIFT).unwrap_or(usize::MAX);
    (tenant, id & ((1 << TENANT_SHIFT) - 1))
}

pub(crate) fn with_router_id(mut entry: MailboxEntry, tenant: usize) -> StoreResult<MailboxEntry> {
    entry.entry_id = entry_id(tenant, entry.entry_id)?;
    Ok(entry)
}

/// The domain of an identity (`account$domain`), lower-cased.
fn domain_of(identity: &str) -> String {
    let domain = identity.rsplit_once('$').map_or("", |(_, domain)| domain);
    domain.to_ascii_lowercase()
}

pub(crate) fn no_tenant(identity: &str) -> StoreError {
    let reason = format!("no tenant hosts the domain of {identity:?}");
    StoreError::Invalid {
        kind: RecordKind::Identity,
        reason,
    }
}

/// A listing cursor over all tenants: the tenant's index (4 hex digits), then that
/// tenant's own cursor (none: the tenant's first page).
fn join_cursor(tenant: usize, inner: Option<&Cursor>) -> StoreResult<Cursor> {
    let inner = inner.map(ToString::to_string).unwrap_or_default();
    format!("{tenant:04x}{inner}").parse()
}

fn split_cursor(cursor: &Cursor) -> StoreResult<(usize, Option<Cursor>)> {
    let text = cursor.to_string();
    let (tenant, inner) = text.split_at_checked(4).ok_or(StoreError::InvalidCursor)?;
    let tenant = usize::from_str_radix(tenant, 16).map_err(|_| StoreError::InvalidCursor)?;
    let inner = (!inner.is_empty()).then(|| inner.parse()).transpose()?;
    Ok((tenant, inner))
}

impl TenantRouter {
    /// A router over `tenants` (at least one: the first also keeps the router's
    /// subscription cursors).
    pub(crate) fn new(tenants: Vec<Tenant>) -> StoreResult<Self> {
        if tenants.is_empty() {
            return Err(StoreError::TaskFailed("a router needs a tenant".to_owned()));
        }
        Ok(TenantRouter { tenants })
    }

    pub(crate) fn tenant_index(&self, identity: &str) -> Option<usize> {
        let domain = domain_of(identity);
        self.tenants
            .iter()
            .position(|tenant| tenant.domain == domain)
    }

    /// `call` on the store of the tenant hosting `identity`'s domain; `absent`
    /// when no tenant does.
    pub(crate) fn on_tenant<'a, T: Send + 'a>(
        &'a self,
        identity: &str,
        absent: impl FnOnce() -> StoreResult<T>,
        call: impl FnOnce(&'a dyn Storage) -> BoxFuture<'a, StoreResult<T>>,
    ) -> BoxFuture<'a, StoreResult<T>> {
        match self.tenant_index(identity) {
            Some(index) => call(self.tenants[index].store.as_ref()),
            None => Box::pin(std::future::ready(absent())),
        }
    }

    /// Asks each tenant in turn; the first `Some` wins (lookups by id).
    pub(crate) async fn first<'a, T>(
        &'a self,
        ask: impl Fn(&'a dyn Storage) -> BoxFuture<'a, StoreResult<Option<T>>>,
    ) -> StoreResult<Option<T>> {
        for tenant in &self.tenants {
            if let Some(found) = ask(tenant.store.as_ref()).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Runs `change` on each tenant in turn until one has the record `id` (a
    /// `NotFound` means: try the next one).
    pub(crate) async fn change<'a, T>(
        &'a self,
        kind: RecordKind,
        id: &str,
        change: impl Fn(&'a dyn Storage) -> BoxFuture<'a, StoreResult<T>>,
    ) -> StoreResult<T> {
        for tenant in &self.tenants {
            match change(tenant.store.as_ref()).await {
                Err(StoreError::NotFound { .. }) => continue,
                done => return done,
            }
        }
        let id = id.to_owned();
        Err(StoreError::NotFound { kind, id })
    }

    /// Whether `delete` removed the record from one of the tenants.
    pub(crate) async fn delete_anywhere<'a>(
        &'a self,
        delete: impl Fn(&'a dyn Storage) -> BoxFuture<'a, StoreResult<bool>>,
    ) -> StoreResult<bool> {
        for tenant in &self.tenants {
            if delete(tenant.store.as_ref()).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A listing of every tenant, tenant after tenant (each in its own order). A
    /// page may stop at a tenant's end with fewer than `limit` items and a cursor.
    pub(crate) async fn across<'a, T>(
        &'a self,
        page: PageRequest,
        list: impl Fn(&'a dyn Storage, PageRequest) -> BoxFuture<'a, StoreResult<Page<T>>>,
    ) -> StoreResult<Page<T>> {
        let (mut index, mut after) = match &page.after {
            Some(cursor) => split_cursor(cursor)?,
            None => (0, None),
        };
        let limit = usize::try_from(page.limit.max(1)).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        while let Some(tenant) = self.tenants.get(index) {
            let rest = u32::try_from(limit - items.len()).unwrap_or(u32::MAX);
            let request = PageRequest {
                after: after.take(),
                limit: rest,
            };
            let part = list(tenant.store.as_ref(), request).await?;
            items.extend(part.items);
            if let Some(next) = part.next {
                let next = Some(join_cursor(index, Some(&next))?);
                return Ok(Page { items, next });
            }
            index += 1;
            if items.len() >= limit {
                break;
            }
        }
        let next = match index < self.tenants.len() {
            true => Some(join_cursor(index, None)?),
            false => None,
        };
        Ok(Page { items, next })
    }

    /// Trust listings by one party: one tenant when the party is the hosted one of
    /// `perspective`, else every tenant.
    pub(crate) fn trust_by_party<'a>(
        &'a self,
        perspective: Perspective,
        party: &'a str,
        party_is_receiver: bool,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let list = move |store: &'a dyn Storage, page| match party_is_receiver {
            true => store.trust().list_by_receiver(perspective, party, page),
            false => store.trust().list_by_sender(perspective, party, page),
        };
        let hosted = party_is_receiver == (perspective == Perspective::Inbound);
        match self.tenant_index(party).filter(|_| hosted) {
            Some(index) => list(self.tenants[index].store.as_ref(), page),
            None => Box::pin(self.across(page, list)),
        }
    }
}

impl Storage for TenantRouter {
    // The record and mailbox traits are implemented in `records.rs`.
    fn trust(&self) -> &dyn TrustStore {
        self
    }

    fn identities(&self) -> &dyn IdentityStore {
        self
    }

    fn mailboxes(&self) -> &dyn MailboxStore {
        self
    }

    // The outbox and write transactions are in `outbox.rs`.
    fn outbox(&self) -> &dyn OutboxStore {
        self
    }

    fn transact(
        &self,
        owner: &str,
        work: &mut dyn FnMut(&mut dyn StoreTransaction) -> StoreResult<()>,
    ) -> StoreResult<()> {
        self.transact_on(owner, work)
    }

    /// Splits the group by the receiver's tenant and commits each part in that
    /// tenant's own transaction. The parts are not atomic together: if a later
    /// tenant fails, the earlier ones stay committed and the error makes the server
    /// retry the artifacts one by one — the committed ones are then found as
    /// duplicates and acknowledged again, never stored twice (the contract allows
    /// exactly this for routers).
    fn commit_inbound(&self, group: &mut dyn InboundGroup) -> StoreResult<()> {
        let mut parts = vec![Vec::new(); self.tenants.len()];
        for index in 0..group.len() {
            // Checked before anything is committed: a receiver no tenant hosts
            // (deleted since the server checked it) fails the whole group.
            let receiver = group.receiver(index);
            let tenant = self
                .tenant_index(receiver)
                .ok_or_else(|| no_tenant(receiver))?;
            parts[tenant].push(index);
        }
        for (tenant, indexes) in parts.into_iter().enumerate() {
            if !indexes.is_empty() {
                let group = &mut *group;
                let mut part = TenantGroup {
                    group,
                    indexes,
                    tenant,
                };
                self.tenants[tenant].store.commit_inbound(&mut part)?;
            }
        }
        Ok(())
    }

    fn check_ready(&self) -> StoreResult<()> {
        let mut tenants = self.tenants.iter();
        tenants.try_for_each(|tenant| tenant.store.check_ready())
    }

    // No `maintenance()`: there is no one database file to back up; each tenant's
    // file is backed up through its own store.
}

/// The part of the server's group that goes to one tenant: index `i` of the part
/// is index `indexes[i]` of the server's group.
struct TenantGroup<'g> {
    group: &'g mut dyn InboundGroup,
    indexes: Vec<usize>,
    tenant: usize,
}

impl InboundGroup for TenantGroup<'_> {
    fn len(&self) -> usize {
        self.indexes.len()
    }

    fn receiver(&self, index: usize) -> &str {
        let index = self.indexes.get(index);
        index.map_or("", |&index| self.group.receiver(index))
    }

    fn apply(
        &mut self,
        index: usize,
        transaction: &mut dyn InboundTransaction,
    ) -> StoreResult<bool> {
        let Some(&index) = self.indexes.get(index) else {
            return Ok(false);
        };
        let tenant = self.tenant;
        let mut routed = TenantTransaction {
            inner: transaction,
            tenant,
        };
        self.group.apply(index, &mut routed)
    }
}

/// A tenant's transaction as the server sees it: the tenant's own, with entry ids
/// in the router's form. `is_hosted` answers for this tenant only, so a sender
/// hosted by another tenant is treated like one on a remote server: tenants stay
/// as separate as if each had a server of its own.
struct TenantTransaction<'t> {
    inner: &'t mut dyn InboundTransaction,
    tenant: usize,
}

impl InboundTransaction for TenantTransaction<'_> {
    fn trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        self.inner.trust(perspective, id)
    }

    fn create_trust(&mut self, perspective: Perspective, new: NewTrustRecord) -> StoreResult<()> {
        self.inner.create_trust(perspective, new)
    }

    fn update_trust(&mut self, side: Perspective, id: &str, patch: TrustPatch) -> StoreResult<()> {
        self.inner.update_trust(side, id, patch)
    }

    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool> {
        self.inner.is_hosted(identity)
    }

    fn duplicate_of(&mut self, entry: &PreparedInboxEntry) -> StoreResult<Option<u64>> {
        let found = self.inner.duplicate_of(entry)?;
        found.map(|local| entry_id(self.tenant, local)).transpose()
    }

    fn insert_inbox(&mut self, entry: &PreparedInboxEntry) -> StoreResult<u64> {
        entry_id(self.tenant, self.inner.insert_inbox(entry)?)
    }

    /// `None`, never the tenant's own number. The server keeps trust records it
    /// read across groups for as long as the generation moves by exactly one from
    /// one of its transactions to the next (no other write in between). Each
    /// tenant counts its own transactions, so tenant A moving by one says nothing
    /// about tenant B: an operator's revocation in B between two groups would go
    /// unseen, and a cached "accepted" record would keep letting B's documents in.
    /// `None` turns that cache off.
    fn generation(&self) -> Option<u64> {
        None
    }
}
