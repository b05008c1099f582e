//! The reference's JSON file stores (`06-storage.md` §4): a development backend
//! and the import/export format.
//!
//! All records are held in memory in file order. Every mutation is written through
//! before it returns: the whole set is serialised exactly as the reference's
//! `JSON.stringify(x, null, 2)`, written to `<path>.tmp`, synced, renamed over the
//! file, and the directory is synced. A mutex serialises writers in one process, and
//! the in-memory state only changes once the file write succeeded.
//!
//! The reference's file has no perspectives (`05-trust.md` §6.6): both perspectives
//! address the same records, which is exactly the reference's behaviour.
//!
//! Not done: the reference's `<path>.lock` directory lock and reloading on external
//! change, needed only to share a file with a running reference process.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use indexmap::IndexMap;

use crate::protocol::json::{self, Object, Value};

use super::error::{RecordKind, RecordProblem, StoreError, StoreResult};
use super::keys::{concat, id_bytes, instant_part};
use super::{BoxFuture, Cursor, IdentityStore, Page, PageRequest, TrustStore};
use crate::model::{
    IdentityPatch, IdentityRecord, NewTrustRecord, Perspective, PublicKeyRecord, Timestamp,
    TrustPatch, TrustRecord, TrustStatus, validate_identity, validate_trust,
};
use crate::wire;

/// The top-level shape of a reference JSON store file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonFileShape {
    /// A top-level array (store built without `entityName`).
    Array,
    /// `{ "<entity>": [ … ] }`.
    Entity(String),
}

/// A record kind that lives in a JSON store file.
pub(crate) trait FileRecord: Clone + Send + Sync + 'static {
    fn id(&self) -> &str;
    fn to_json(&self) -> Object;
    fn from_json(object: &Object) -> Result<Self, String>;
}

impl FileRecord for TrustRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn to_json(&self) -> Object {
        wire::trust_to_json(self)
    }
    fn from_json(object: &Object) -> Result<Self, String> {
        wire::trust_from_json(object)
    }
}

impl FileRecord for IdentityRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn to_json(&self) -> Object {
        wire::identity_to_json(self)
    }
    fn from_json(object: &Object) -> Result<Self, String> {
        wire::identity_from_json(object)
    }
}

/// The raw elements of a store file, before they are interpreted as records.
pub(crate) struct RawFile {
    pub(crate) shape: JsonFileShape,
    pub(crate) elements: Vec<Value>,
}

/// Reads a store file and determines its shape (`06-storage.md` §4.6 steps 1–2).
/// With `entity` given, the file must use it; without, an array or an object with
/// exactly one array-valued key is accepted.
pub(crate) fn read_raw(path: &Path, entity: Option<&str>) -> StoreResult<RawFile> {
    let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::FileFormat {
        path: path.to_owned(),
        reason: String::from("not UTF-8 text"),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let value = json::parse(text).map_err(|error| StoreError::FileFormat {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    let format_error = |reason: String| StoreError::FileFormat {
        path: path.to_owned(),
        reason,
    };
    match (value, entity) {
        (Value::Array(elements), None) => Ok(RawFile {
            shape: JsonFileShape::Array,
            elements,
        }),
        (Value::Object(object), Some(entity)) => match object.get(entity) {
            Some(Value::Array(elements)) => Ok(RawFile {
                shape: JsonFileShape::Entity(entity.to_owned()),
                elements: elements.clone(),
            }),
            _ => Err(format_error(format!("expected an array under {entity:?}"))),
        },
        (Value::Object(object), None) => {
            let mut members = object.iter();
            match (members.next(), members.next()) {
                (Some((key, Value::Array(elements))), None) => {
                    let entity = key
                        .as_str()
                        .ok_or_else(|| format_error(String::from("entity name is not text")))?;
                    Ok(RawFile {
                        shape: JsonFileShape::Entity(entity.to_owned()),
                        elements: elements.clone(),
                    })
                }
                _ => Err(format_error(String::from(
                    "expected a top-level array or an object with one array-valued key; give the entity name",
                ))),
            }
        }
        (_, Some(entity)) => Err(format_error(format!(
            "expected an object with the key {entity:?}"
        ))),
        (_, None) => Err(format_error(String::from(
            "expected a top-level array or an object with one array-valued key",
        ))),
    }
}

/// Interprets the elements of a file as records: the records that parsed, with
/// their positions, and a problem for every element that did not (duplicate ids
/// included).
pub(crate) fn parse_records<R: FileRecord>(
    path: &Path,
    elements: &[Value],
) -> (Vec<(usize, R)>, Vec<RecordProblem>) {
    let mut records = Vec::with_capacity(elements.len());
    let mut problems = Vec::new();
    let mut seen: IndexMap<String, usize> = IndexMap::new();
    for (index, element) in elements.iter().enumerate() {
        let problem = |reason: String| RecordProblem {
            file: path.to_owned(),
            index,
            reason,
        };
        let Some(object) = element.as_object() else {
            problems.push(problem(String::from("expected an object")));
            continue;
        };
        match R::from_json(object) {
            Ok(record) => {
                if let Some(first) = seen.insert(record.id().to_owned(), index) {
                    problems.push(problem(format!(
                        "duplicate id {} (also record {first})",
                        record.id()
                    )));
                }
                records.push((index, record));
            }
            Err(reason) => problems.push(problem(reason)),
        }
    }
    (records, problems)
}

/// Serialises records in the file's shape, byte-exact with the reference.
pub(crate) fn render_file<'r, R: FileRecord>(
    shape: &JsonFileShape,
    records: impl Iterator<Item = &'r R>,
) -> String {
    let array = Value::Array(
        records
            .map(|record| Value::Object(record.to_json()))
            .collect(),
    );
    let value = match shape {
        JsonFileShape::Array => array,
        JsonFileShape::Entity(entity) => {
            let mut object = Object::new();
            object.insert(entity.as_str(), array);
            Value::Object(object)
        }
    };
    wire::to_pretty(&value)
}

/// Replaces `path` with `content` atomically: temporary file (mode 0600), fsync,
/// rename, fsync of the directory. A crash leaves either the old or the new file.
pub(crate) fn write_atomically(path: &Path, content: &[u8]) -> StoreResult<()> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    // Trust relationships and identities are the operator's business only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    file.write_all(content).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io)?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // Syncing the directory makes the rename itself durable (Unix); elsewhere it
    // cannot be opened as a file and the rename is as durable as the platform makes it.
    if let Ok(directory) = std::fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}

struct FileState<R> {
    shape: JsonFileShape,
    records: IndexMap<String, R>,
}

struct JsonFileStore<R> {
    /// The file written through on every mutation; `None` keeps the records in
    /// memory only ([`super::MemoryStorage`]).
    path: Option<PathBuf>,
    state: Mutex<FileState<R>>,
}

impl<R: FileRecord> JsonFileStore<R> {
    fn open(path: &Path, entity: Option<&str>) -> StoreResult<Self> {
        if !path.exists() {
            let shape = entity.map_or(JsonFileShape::Array, |entity| {
                JsonFileShape::Entity(entity.to_owned())
            });
            write_atomically(
                path,
                render_file::<R>(&shape, std::iter::empty()).as_bytes(),
            )?;
        }
        let raw = read_raw(path, entity)?;
        let (records, problems) = parse_records::<R>(path, &raw.elements);
        if !problems.is_empty() {
            return Err(StoreError::InvalidRecords { problems });
        }
        Ok(JsonFileStore {
            path: Some(path.to_owned()),
            state: Mutex::new(FileState {
                shape: raw.shape,
                records: records
                    .into_iter()
                    .map(|(_, record)| (record.id().to_owned(), record))
                    .collect(),
            }),
        })
    }

    fn in_memory() -> Self {
        JsonFileStore {
            path: None,
            state: Mutex::new(FileState {
                shape: JsonFileShape::Array,
                records: IndexMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FileState<R>> {
        // A panic while holding the lock cannot leave the map half-changed: state is
        // only replaced after a successful write. So a poisoned lock is still valid.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, id: &str) -> Option<R> {
        self.lock().records.get(&id.to_lowercase()).cloned()
    }

    fn all(&self) -> Vec<R> {
        self.lock().records.values().cloned().collect()
    }

    /// Applies `change` to a copy of the records, writes the file, then publishes.
    fn mutate<T>(
        &self,
        change: impl FnOnce(&mut IndexMap<String, R>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut state = self.lock();
        let mut records = state.records.clone();
        let outcome = change(&mut records)?;
        if let Some(path) = &self.path {
            let content = render_file(&state.shape, records.values());
            write_atomically(path, content.as_bytes())?;
        }
        state.records = records;
        Ok(outcome)
    }
}

impl<R: FileRecord> JsonFileStore<R> {
    /// See [`JsonTrustStore::restore_sync`].
    fn restore(&self, id: &str, record: Option<R>) -> StoreResult<()> {
        let key = id.to_lowercase();
        self.mutate(|records| {
            match record {
                Some(record) => {
                    records.insert(key, record);
                }
                None => {
                    records.shift_remove(&key);
                }
            }
            Ok(())
        })
    }
}

/// Sort key and page selection shared by the in-memory listings: items ordered by
/// (sort key), the cursor is the sort key of the last item returned.
fn page_of<R: Clone>(
    mut keyed: Vec<(Vec<u8>, R)>,
    page: &PageRequest,
    sort_len: usize,
) -> StoreResult<Page<R>> {
    if page
        .after
        .as_ref()
        .is_some_and(|cursor| cursor.0.len() != sort_len)
    {
        return Err(StoreError::InvalidCursor);
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let limit = page.effective_limit();
    let mut rest = keyed
        .into_iter()
        .filter(|(key, _)| page.after.as_ref().is_none_or(|cursor| *key > cursor.0));
    let chosen: Vec<(Vec<u8>, R)> = rest.by_ref().take(limit).collect();
    let next = if rest.next().is_some() {
        chosen.last().map(|(key, _)| Cursor(key.clone()))
    } else {
        None
    };
    Ok(Page {
        items: chosen.into_iter().map(|(_, record)| record).collect(),
        next,
    })
}

/// Runs a file mutation off the async runtime (it writes and syncs the file).
fn spawn<T: Send + 'static>(
    work: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> BoxFuture<'static, StoreResult<T>> {
    Box::pin(async move {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|error| StoreError::TaskFailed(error.to_string()))?
    })
}

/// The reference's `JsonTrustStore` file, read and written losslessly.
#[derive(Clone)]
pub struct JsonTrustStore {
    inner: Arc<JsonFileStore<TrustRecord>>,
}

impl JsonTrustStore {
    /// Opens the file (creating it empty if missing) with the given entity name,
    /// or detecting the shape when `None`.
    pub fn open(path: &Path, entity: Option<&str>) -> StoreResult<Self> {
        Ok(JsonTrustStore {
            inner: Arc::new(JsonFileStore::open(path, entity)?),
        })
    }

    /// A store with no file: the same rules, records in memory only.
    pub fn in_memory() -> Self {
        JsonTrustStore {
            inner: Arc::new(JsonFileStore::in_memory()),
        }
    }

    /// Puts `record` back under `id` as it was (`None`: removes `id`), keeping its
    /// position; how a transaction that failed is rolled back in memory.
    pub(crate) fn restore_sync(&self, id: &str, record: Option<TrustRecord>) -> StoreResult<()> {
        self.inner.restore(id, record)
    }

    /// Every record in file order.
    pub fn records(&self) -> Vec<TrustRecord> {
        self.inner.all()
    }

    /// Synchronous [`TrustStore::get`] (the file has no perspectives).
    pub fn get_sync(&self, id: &str) -> Option<TrustRecord> {
        self.inner.get(id)
    }

    /// The file's shape.
    pub fn shape(&self) -> JsonFileShape {
        self.inner.lock().shape.clone()
    }

    /// Synchronous [`TrustStore::create`].
    pub fn create_sync(
        &self,
        record: NewTrustRecord,
        id: Option<&str>,
    ) -> StoreResult<TrustRecord> {
        let record = TrustRecord::with_computed_id(record, id)?;
        validate_trust(&record).map_err(|reason| StoreError::Invalid {
            kind: RecordKind::Trust,
            reason,
        })?;
        self.inner.mutate(|records| {
            if records.contains_key(&record.id) {
                return Err(StoreError::AlreadyExists {
                    kind: RecordKind::Trust,
                    id: record.id,
                });
            }
            records.insert(record.id.clone(), record.clone());
            Ok(record)
        })
    }

    /// Synchronous [`TrustStore::update`].
    pub fn update_sync(&self, id: &str, patch: TrustPatch) -> StoreResult<TrustRecord> {
        self.inner.mutate(|records| {
            let record =
                records
                    .get_mut(&id.to_lowercase())
                    .ok_or_else(|| StoreError::NotFound {
                        kind: RecordKind::Trust,
                        id: id.to_owned(),
                    })?;
            record.apply(patch);
            record.updated_at = Some(Timestamp::now());
            validate_trust(record).map_err(|reason| StoreError::Invalid {
                kind: RecordKind::Trust,
                reason,
            })?;
            Ok(record.clone())
        })
    }

    /// Synchronous [`TrustStore::delete`].
    pub fn delete_sync(&self, id: &str) -> StoreResult<bool> {
        if self.inner.get(id).is_none() {
            return Ok(false);
        }
        self.inner
            .mutate(|records| Ok(records.shift_remove(&id.to_lowercase()).is_some()))
    }

    fn list(
        &self,
        page: &PageRequest,
        sort_len: usize,
        select: impl Fn(&TrustRecord) -> Option<Vec<u8>>,
    ) -> StoreResult<Page<TrustRecord>> {
        let state = self.inner.lock();
        let keyed = state
            .records
            .values()
            .filter_map(|record| select(record).map(|key| (key, record.clone())))
            .collect();
        drop(state);
        page_of(keyed, page, sort_len)
    }
}

fn id_key(record: &TrustRecord) -> Vec<u8> {
    id_bytes(&record.id).map_or_else(|| record.id.as_bytes().to_vec(), |bytes| bytes.to_vec())
}

impl TrustStore for JsonTrustStore {
    fn get<'a>(
        &'a self,
        _perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<TrustRecord>>> {
        let found = self.inner.get(id);
        Box::pin(async move { Ok(found) })
    }

    fn create<'a>(
        &'a self,
        _perspective: Perspective,
        record: NewTrustRecord,
        id: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>> {
        let id = id.map(str::to_owned);
        let store = self.clone();
        spawn(move || store.create_sync(record, id.as_deref()))
    }

    fn update<'a>(
        &'a self,
        _perspective: Perspective,
        id: &'a str,
        patch: TrustPatch,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>> {
        let id = id.to_owned();
        let store = self.clone();
        spawn(move || store.update_sync(&id, patch))
    }

    fn delete<'a>(
        &'a self,
        _perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let id = id.to_owned();
        let store = self.clone();
        spawn(move || store.delete_sync(&id))
    }

    fn list_by_receiver<'a>(
        &'a self,
        _perspective: Perspective,
        receiver: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let wanted = receiver.to_lowercase();
        let result = self.list(&page, 32, |record| {
            (record.receiver_id.to_lowercase() == wanted).then(|| id_key(record))
        });
        Box::pin(async move { result })
    }

    fn list_by_sender<'a>(
        &'a self,
        _perspective: Perspective,
        sender: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let wanted = sender.to_lowercase();
        let result = self.list(&page, 32, |record| {
            (record.sender_id.to_lowercase() == wanted).then(|| id_key(record))
        });
        Box::pin(async move { result })
    }

    fn list_by_status<'a>(
        &'a self,
        _perspective: Perspective,
        status: &'a TrustStatus,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let result = self.list(&page, 32, |record| {
            (record.status == *status).then(|| id_key(record))
        });
        Box::pin(async move { result })
    }

    fn list_expiring_before<'a>(
        &'a self,
        _perspective: Perspective,
        before_millis: i64,
        status: Option<&'a TrustStatus>,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let result = self.list(&page, 40, |record| {
            let expiry = record.expires_at.as_ref()?;
            let wanted = expiry.millis() < before_millis
                && status.is_none_or(|status| *status == record.status);
            wanted.then(|| concat(&[&instant_part(expiry.millis()), &id_key(record)]))
        });
        Box::pin(async move { result })
    }

    fn list_all<'a>(
        &'a self,
        _perspective: Perspective,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let result = self.list(&page, 32, |record| Some(id_key(record)));
        Box::pin(async move { result })
    }

    fn count_by_status(
        &self,
        _perspective: Perspective,
    ) -> BoxFuture<'_, StoreResult<BTreeMap<TrustStatus, u64>>> {
        let mut counts = BTreeMap::new();
        for record in self.inner.lock().records.values() {
            *counts.entry(record.status.clone()).or_insert(0) += 1;
        }
        Box::pin(async move { Ok(counts) })
    }
}

/// The reference's `JsonIdentityStore` file, read and written losslessly.
#[derive(Clone)]
pub struct JsonIdentityStore {
    inner: Arc<JsonFileStore<IdentityRecord>>,
}

impl JsonIdentityStore {
    /// Opens the file (creating it empty if missing) with the given entity name,
    /// or detecting the shape when `None`.
    pub fn open(path: &Path, entity: Option<&str>) -> StoreResult<Self> {
        Ok(JsonIdentityStore {
            inner: Arc::new(JsonFileStore::open(path, entity)?),
        })
    }

    /// A store with no file: the same rules, records in memory only.
    pub fn in_memory() -> Self {
        JsonIdentityStore {
            inner: Arc::new(JsonFileStore::in_memory()),
        }
    }

    /// Every record in file order.
    pub fn records(&self) -> Vec<IdentityRecord> {
        self.inner.all()
    }

    /// Synchronous [`IdentityStore::get`] by computed id.
    pub fn get_sync(&self, id: &str) -> Option<IdentityRecord> {
        self.inner.get(id)
    }

    /// Synchronous [`IdentityStore::create`].
    pub fn create_sync(&self, record: IdentityRecord) -> StoreResult<IdentityRecord> {
        validate_identity(&record).map_err(|reason| StoreError::Invalid {
            kind: RecordKind::Identity,
            reason,
        })?;
        self.inner.mutate(|records| {
            if records.contains_key(&record.id) {
                return Err(StoreError::AlreadyExists {
                    kind: RecordKind::Identity,
                    id: record.id,
                });
            }
            records.insert(record.id.clone(), record.clone());
            Ok(record)
        })
    }

    /// Synchronous [`IdentityStore::update`].
    pub fn update_sync(&self, id: &str, patch: IdentityPatch) -> StoreResult<IdentityRecord> {
        self.inner.mutate(|records| {
            let record =
                records
                    .get_mut(&id.to_lowercase())
                    .ok_or_else(|| StoreError::NotFound {
                        kind: RecordKind::Identity,
                        id: id.to_owned(),
                    })?;
            record.apply(patch);
            record.updated_at = Some(Timestamp::now());
            validate_identity(record).map_err(|reason| StoreError::Invalid {
                kind: RecordKind::Identity,
                reason,
            })?;
            Ok(record.clone())
        })
    }

    /// Synchronous [`IdentityStore::put_public_key`].
    pub fn put_public_key_sync(
        &self,
        identity: &str,
        key: PublicKeyRecord,
        make_current: bool,
    ) -> StoreResult<IdentityRecord> {
        let id = crate::identity::compute_id(identity);
        match self.inner.get(&id) {
            None => self.create_sync(IdentityRecord::new(identity, key, Timestamp::now())),
            Some(mut record) => {
                record.put_key(key, make_current);
                self.update_sync(
                    &id,
                    IdentityPatch {
                        current_selector: Some(record.current_selector),
                        public_keys: Some(record.public_keys),
                        metadata: None,
                    },
                )
            }
        }
    }
}

impl IdentityStore for JsonIdentityStore {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<IdentityRecord>>> {
        let found = self.inner.get(id);
        Box::pin(async move { Ok(found) })
    }

    fn create(&self, record: IdentityRecord) -> BoxFuture<'_, StoreResult<IdentityRecord>> {
        let store = self.clone();
        spawn(move || store.create_sync(record))
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        patch: IdentityPatch,
    ) -> BoxFuture<'a, StoreResult<IdentityRecord>> {
        let id = id.to_owned();
        let store = self.clone();
        spawn(move || store.update_sync(&id, patch))
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        let id = id.to_owned();
        let store = self.clone();
        spawn(move || {
            if store.inner.get(&id).is_none() {
                return Ok(false);
            }
            store
                .inner
                .mutate(|records| Ok(records.shift_remove(&id.to_lowercase()).is_some()))
        })
    }

    fn public_key<'a>(
        &'a self,
        identity: &'a str,
        selector: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Option<PublicKeyRecord>>> {
        let found = self
            .inner
            .get(&crate::identity::compute_id(identity))
            .and_then(|record| record.key(selector).cloned());
        Box::pin(async move { Ok(found) })
    }

    fn put_public_key<'a>(
        &'a self,
        identity: &'a str,
        key: PublicKeyRecord,
        make_current: bool,
    ) -> BoxFuture<'a, StoreResult<IdentityRecord>> {
        let identity = identity.to_owned();
        let store = self.clone();
        spawn(move || store.put_public_key_sync(&identity, key, make_current))
    }

    fn list(&self, page: PageRequest) -> BoxFuture<'_, StoreResult<Page<IdentityRecord>>> {
        let keyed = self
            .inner
            .all()
            .into_iter()
            .map(|record| (record.identity.to_lowercase().into_bytes(), record))
            .collect();
        // Identity cursors are variable-length names: compare without a length check.
        let result = page_of_names(keyed, &page);
        Box::pin(async move { result })
    }
}

fn page_of_names(
    keyed: Vec<(Vec<u8>, IdentityRecord)>,
    page: &PageRequest,
) -> StoreResult<Page<IdentityRecord>> {
    let sort_len = page.after.as_ref().map_or(0, |cursor| cursor.0.len());
    page_of(keyed, page, sort_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_files_match_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let with_entity = dir.path().join("trust.json");
        JsonTrustStore::open(&with_entity, Some("trusted_senders")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&with_entity).unwrap(),
            "{\n  \"trusted_senders\": []\n}"
        );
        let bare = dir.path().join("identities.json");
        JsonIdentityStore::open(&bare, None).unwrap();
        assert_eq!(std::fs::read_to_string(&bare).unwrap(), "[]");
    }
}
