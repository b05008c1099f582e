//! The store contract over redb: the synchronous API the CLI and tools use without
//! a runtime, and the [`TrustStore`] / [`IdentityStore`] implementations.
//!
//! The async methods run the synchronous ones on `tokio::task::spawn_blocking`, so
//! that a transaction's disk I/O (a durable commit waits for `fsync`) never blocks
//! the runtime's threads.

use std::collections::BTreeMap;

use crate::store::{
    BoxFuture, IdentityPatch, IdentityRecord, IdentityStore, NewTrustRecord, Page, PageRequest,
    Perspective, PublicKeyRecord, StoreError, StoreResult, TrustPatch, TrustRecord, TrustStatus,
    TrustStore,
};

use super::RedbStore;

/// Synchronous API (the CLI and tools use it without a runtime).
impl RedbStore {
    /// The trust record `id` (any case).
    pub fn trust(&self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        self.read(|snapshot| snapshot.trust(perspective, id))
    }

    /// See [`TrustStore::create`].
    pub fn create_trust(
        &self,
        perspective: Perspective,
        record: NewTrustRecord,
        id: Option<&str>,
    ) -> StoreResult<TrustRecord> {
        self.write(|batch| batch.create_trust(perspective, record, id))
    }

    /// See [`TrustStore::update`].
    pub fn update_trust(
        &self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<TrustRecord> {
        self.write(|batch| batch.update_trust(perspective, id, patch))
    }

    /// See [`TrustStore::delete`].
    pub fn delete_trust(&self, perspective: Perspective, id: &str) -> StoreResult<bool> {
        self.write(|batch| batch.delete_trust(perspective, id))
    }

    /// The identity record `id` (any case).
    pub fn identity(&self, id: &str) -> StoreResult<Option<IdentityRecord>> {
        self.read(|snapshot| snapshot.identity(id))
    }

    /// See [`IdentityStore::create`].
    pub fn create_identity(&self, record: IdentityRecord) -> StoreResult<IdentityRecord> {
        self.write(|batch| batch.create_identity(record))
    }

    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&RedbStore) -> StoreResult<T> + Send + 'static,
    ) -> BoxFuture<'static, StoreResult<T>> {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&store))
                .await
                .map_err(|error| StoreError::TaskFailed(error.to_string()))?
        })
    }
}

impl TrustStore for RedbStore {
    fn get<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<TrustRecord>>> {
        let id = id.to_owned();
        self.blocking(move |store| store.trust(perspective, &id))
    }

    fn create<'a>(
        &'a self,
        perspective: Perspective,
        record: NewTrustRecord,
        id: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>> {
        let id = id.map(str::to_owned);
        self.blocking(move |store| store.create_trust(perspective, record, id.as_deref()))
    }

    fn update<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
        patch: TrustPatch,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>> {
        let id = id.to_owned();
        self.blocking(move |store| store.update_trust(perspective, &id, patch))
    }

    fn delete<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let id = id.to_owned();
        self.blocking(move |store| store.delete_trust(perspective, &id))
    }

    fn list_by_receiver<'a>(
        &'a self,
        perspective: Perspective,
        receiver: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let receiver = receiver.to_owned();
        self.blocking(move |store| {
            store.read(|s| s.list_by_receiver(perspective, &receiver, &page))
        })
    }

    fn list_by_sender<'a>(
        &'a self,
        perspective: Perspective,
        sender: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let sender = sender.to_owned();
        self.blocking(move |store| store.read(|s| s.list_by_sender(perspective, &sender, &page)))
    }

    fn list_by_status<'a>(
        &'a self,
        perspective: Perspective,
        status: &'a TrustStatus,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let status = status.clone();
        self.blocking(move |store| store.read(|s| s.list_by_status(perspective, &status, &page)))
    }

    fn list_expiring_before<'a>(
        &'a self,
        perspective: Perspective,
        before_millis: i64,
        status: Option<&'a TrustStatus>,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let status = status.cloned();
        self.blocking(move |store| {
            store.read(|s| {
                s.list_expiring_before(perspective, before_millis, status.as_ref(), &page)
            })
        })
    }

    fn list_all<'a>(
        &'a self,
        perspective: Perspective,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        self.blocking(move |store| store.read(|s| s.list_all(perspective, &page)))
    }

    fn count_by_status(
        &self,
        perspective: Perspective,
    ) -> BoxFuture<'_, StoreResult<BTreeMap<TrustStatus, u64>>> {
        self.blocking(move |store| store.read(|s| s.count_by_status(perspective)))
    }
}

impl IdentityStore for RedbStore {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<IdentityRecord>>> {
        let id = id.to_owned();
        self.blocking(move |store| store.identity(&id))
    }

    fn get_by_identity<'a>(
        &'a self,
        identity: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<IdentityRecord>>> {
        let identity = identity.to_owned();
        self.blocking(move |store| store.read(|s| s.identity_by_name(&identity)))
    }

    fn create(&self, record: IdentityRecord) -> BoxFuture<'_, StoreResult<IdentityRecord>> {
        self.blocking(move |store| store.create_identity(record))
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        patch: IdentityPatch,
    ) -> BoxFuture<'a, StoreResult<IdentityRecord>> {
        let id = id.to_owned();
        self.blocking(move |store| store.write(|batch| batch.update_identity(&id, patch)))
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        let id = id.to_owned();
        self.blocking(move |store| store.write(|batch| batch.delete_identity(&id)))
    }

    fn public_key<'a>(
        &'a self,
        identity: &'a str,
        selector: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Option<PublicKeyRecord>>> {
        let identity = identity.to_owned();
        let selector = selector.map(str::to_owned);
        self.blocking(move |store| store.read(|s| s.public_key(&identity, selector.as_deref())))
    }

    fn put_public_key<'a>(
        &'a self,
        identity: &'a str,
        key: PublicKeyRecord,
        make_current: bool,
    ) -> BoxFuture<'a, StoreResult<IdentityRecord>> {
        let identity = identity.to_owned();
        self.blocking(move |store| {
            store.write(|batch| batch.put_public_key(&identity, key, make_current))
        })
    }

    fn list(&self, page: PageRequest) -> BoxFuture<'_, StoreResult<Page<IdentityRecord>>> {
        self.blocking(move |store| store.read(|s| s.list_identities(&page)))
    }
}
