//! Opening a database file without writing to it.
//!
//! redb's writable open is what checks a file fully — crash recovery, the check of
//! every page checksum — but it writes: the recovery, the check's commit, the
//! "open" mark in the header. [`Unwritten`] is a storage backend for it that never
//! does: it reads the file through a read-only handle and keeps every write in
//! memory, page by page, over the file's bytes (copy on write). Closing the
//! database forgets them, so the file keeps its size, its bytes and its time stamps,
//! and a read-only file (mode 0444, a read-only mount) can be checked.
//!
//! Locks: the ones redb asks for are taken *shared* on the file (a read-only handle
//! cannot hold an exclusive lock). A writer (`btps serve`) cannot open the file
//! while the check holds them, and a running server's file is refused as in use;
//! two checks may run side by side, since neither writes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};

use crate::store::StoreResult;

use super::RedbOptions;
use super::error::{inconsistent, open_error};

/// The unit of the in-memory copy of written bytes.
const PAGE_BYTES: usize = 4096;
const PAGE: u64 = PAGE_BYTES as u64;

/// A database file opened read-only, with writes kept in memory.
#[derive(Debug)]
pub(super) struct Unwritten {
    file: FileBackend,
    overlay: Mutex<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    /// The storage's length as redb sees it.
    len: u64,
    /// How many leading bytes of the file are still visible (a shrink hides the
    /// rest: bytes past it read as zeros unless written).
    visible: u64,
    /// Written pages, by page number, whole.
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl Unwritten {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        let file = FileBackend::new(file).map_err(std::io::Error::other)?;
        Ok(Unwritten {
            file,
            overlay: Mutex::new(Overlay {
                len,
                visible: len,
                pages: BTreeMap::new(),
            }),
        })
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fills `out` with the file's bytes at `offset`, zeros past `visible`.
    fn read_file(&self, visible: u64, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let available = visible.saturating_sub(offset);
        let from_file = usize::try_from(available).map_or(out.len(), |n| n.min(out.len()));
        let (head, tail) = out.split_at_mut(from_file);
        if !head.is_empty() {
            self.file.read(offset, head)?;
        }
        tail.fill(0);
        Ok(())
    }
}

/// The page holding `offset`, and where in it `offset` is.
fn locate(offset: u64) -> (u64, usize) {
    // The remainder is below PAGE, which fits any usize.
    (
        offset / PAGE,
        usize::try_from(offset % PAGE).unwrap_or_default(),
    )
}

impl StorageBackend for Unwritten {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.overlay().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let overlay = self.overlay();
        let end = offset.checked_add(out.len() as u64);
        if end.is_none_or(|end| end > overlay.len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the database",
            ));
        }
        let mut done = 0usize;
        while done < out.len() {
            let position = offset + done as u64;
            let (page, within) = locate(position);
            let length = (PAGE_BYTES - within).min(out.len() - done);
            let target = &mut out[done..done + length];
            match overlay.pages.get(&page) {
                Some(bytes) => target.copy_from_slice(&bytes[within..within + length]),
                None => self.read_file(overlay.visible, position, target)?,
            }
            done += length;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut overlay = self.overlay();
        if len < overlay.len {
            let (page, within) = locate(len);
            overlay.pages.split_off(&(page + 1));
            if let Some(bytes) = overlay.pages.get_mut(&page) {
                bytes[within..].fill(0);
            }
            overlay.visible = overlay.visible.min(len);
        }
        overlay.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut overlay = self.overlay();
        let mut done = 0usize;
        while done < data.len() {
            let position = offset + done as u64;
            let (page, within) = locate(position);
            let length = (PAGE_BYTES - within).min(data.len() - done);
            if !overlay.pages.contains_key(&page) {
                let mut bytes = vec![0u8; PAGE_BYTES].into_boxed_slice();
                let start = page * PAGE;
                let known = usize::try_from(overlay.len.saturating_sub(start))
                    .map_or(bytes.len(), |n| n.min(bytes.len()));
                self.read_file(overlay.visible, start, &mut bytes[..known])?;
                overlay.pages.insert(page, bytes);
            }
            if let Some(bytes) = overlay.pages.get_mut(&page) {
                bytes[within..within + length].copy_from_slice(&data[done..done + length]);
            }
            done += length;
        }
        let end = offset + data.len() as u64;
        overlay.len = overlay.len.max(end);
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// Opens the existing database at `path` over an [`Unwritten`] view and runs
/// redb's full integrity check; the database, and whether the file was intact
/// (`false`: it was not closed cleanly and had to be recovered, in memory).
pub(super) fn open_checked(path: &Path, options: &RedbOptions) -> StoreResult<(Database, bool)> {
    let backend = Unwritten::open(path).map_err(|error| open_error(path, error.into()))?;
    let repaired = Arc::new(AtomicBool::new(false));
    let noted = Arc::clone(&repaired);
    let mut builder = Database::builder();
    builder
        .set_cache_size(usize::try_from(options.cache_size).unwrap_or(usize::MAX))
        .set_repair_callback(move |_| noted.store(true, Ordering::Relaxed));
    // redb checks some invariants with panics in debug builds; a damaged file must
    // produce an error, not bring the process down.
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut database = builder.create_with_backend(backend)?;
        let intact = database.check_integrity()?;
        Ok::<_, redb::DatabaseError>((database, intact))
    }));
    match checked {
        Ok(Ok((database, intact))) => Ok((database, intact && !repaired.load(Ordering::Relaxed))),
        Ok(Err(error)) => Err(open_error(path, error)),
        Err(_) => Err(inconsistent(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stay_in_memory_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let original: Vec<u8> = (0..10_000u32).map(|n| (n % 251) as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let view = Unwritten::open(&path).unwrap();
        let read = |offset: u64, len: usize| {
            let mut out = vec![0xffu8; len];
            view.read(offset, &mut out).map(|()| out)
        };
        assert_eq!(view.len().unwrap(), 10_000);
        assert_eq!(read(0, 10_000).unwrap(), original);
        assert!(read(9_000, 1_001).is_err(), "past the end");

        // A write across a page boundary is read back; the bytes around it are the file's.
        view.write(4_000, &[7u8; 200]).unwrap();
        let mut expected = original.clone();
        expected[4_000..4_200].fill(7);
        assert_eq!(read(0, 10_000).unwrap(), expected);

        // Growing reads zeros; a write past the end grows too.
        view.set_len(12_288).unwrap();
        assert_eq!(read(10_000, 2_288).unwrap(), vec![0u8; 2_288]);
        view.write(12_288, &[9u8; 10]).unwrap();
        assert_eq!(view.len().unwrap(), 12_298);
        assert_eq!(read(12_280, 18).unwrap()[8..], [9u8; 10]);

        // Shrinking hides the file's bytes (and written ones) past the new end.
        view.set_len(4_100).unwrap();
        view.set_len(9_000).unwrap();
        let mut expected = original[..4_100].to_vec();
        expected[4_000..4_100].fill(7);
        expected.resize(9_000, 0);
        assert_eq!(read(0, 9_000).unwrap(), expected);

        drop(view);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            original,
            "the file is untouched"
        );
    }
}
