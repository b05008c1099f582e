//! What a benchmark needs before the first artifact: the sender and receiver keys
//! (generated in parallel, kept in a key directory for the next run), the receiver
//! hosted in a data directory that trusts every sender, and a DNS responder that
//! publishes the senders' keys.

use std::path::{Path, PathBuf};

use crate::crypto::PrivateKey;
use crate::identity::responder::DnsResponder;
use crate::identity::{Identity, compute_id, compute_trust_id};
use crate::store::{
    IdentityRecord, NewTrustRecord, Perspective, PrivacyType, PublicKeyRecord, RedbOptions,
    RedbStore, Timestamp, TrustStatus,
};

use super::BenchError;

/// The selector every benchmark key is published under.
pub const SELECTOR: &str = "btps1";

/// The receiving identity, hosted by the measured server.
pub const RECEIVER: &str = "finance$client.bench.test";

/// Key size of every generated key: the size peers publish in DNS.
const KEY_BITS: usize = 2048;

/// The identity of sender `index` (`billing$vendor<index>.bench.test`).
pub fn sender_identity(index: usize) -> String {
    format!("billing$vendor{index}.bench.test")
}

/// The keys of one benchmark: the receiver's (documents are encrypted to it) and
/// one per sender, sender `i` being [`sender_identity`]`(i)`.
pub struct KeySet {
    /// The receiver's key pair.
    pub receiver: PrivateKey,
    /// The senders' key pairs, by index.
    pub senders: Vec<PrivateKey>,
    /// Senders' and receiver's keys generated in this run (0 when all came from
    /// the key directory).
    pub generated: usize,
}

/// Loads the receiver key and `senders` sender keys from `dir` (`receiver.key.pem`,
/// `sender-<i>.key.pem`), generating — over all cores — and writing the missing
/// ones. RSA key generation is the slow part of a first run (tens of milliseconds
/// to seconds per key), so a kept directory makes later runs start at once.
pub fn load_or_generate_keys(dir: &Path, senders: usize) -> Result<KeySet, BenchError> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Io {
        what: format!("creating the key directory {}", dir.display()),
        source,
    })?;
    let mut paths: Vec<PathBuf> = vec![dir.join("receiver.key.pem")];
    paths.extend((0..senders).map(|index| dir.join(format!("sender-{index}.key.pem"))));
    let mut keys: Vec<Option<PrivateKey>> = Vec::with_capacity(paths.len());
    for path in &paths {
        keys.push(read_key(path)?);
    }
    let missing: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].is_none()).collect();
    let generated = generate_parallel(missing.len())?;
    for (&index, key) in missing.iter().zip(generated) {
        write_key(&paths[index], &key)?;
        keys[index] = Some(key);
    }
    let mut keys = keys.into_iter().flatten();
    let receiver = keys.next().ok_or(BenchError::KeysMissing)?;
    let senders: Vec<PrivateKey> = keys.collect();
    if senders.len() != paths.len() - 1 {
        return Err(BenchError::KeysMissing);
    }
    Ok(KeySet {
        receiver,
        senders,
        generated: missing.len(),
    })
}

fn read_key(path: &Path) -> Result<Option<PrivateKey>, BenchError> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_pem(&text)
            .map(Some)
            .map_err(|source| BenchError::Key {
                path: path.to_owned(),
                source,
            }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BenchError::Io {
            what: format!("reading {}", path.display()),
            source,
        }),
    }
}

fn write_key(path: &Path, key: &PrivateKey) -> Result<(), BenchError> {
    let io = |source| BenchError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    std::fs::write(path, key.to_pkcs8_pem()).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// Generates `count` RSA keys on as many threads as there are cores.
fn generate_parallel(count: usize) -> Result<Vec<PrivateKey>, BenchError> {
    let threads = worker_threads().min(count.max(1));
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let share = per_thread.min(count.saturating_sub(thread * per_thread));
                scope.spawn(move || {
                    (0..share)
                        .map(|_| PrivateKey::generate(KEY_BITS))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut keys = Vec::with_capacity(count);
        for handle in handles {
            let batch = handle
                .join()
                .map_err(|_| BenchError::WorkerPanicked("key generation"))?
                .map_err(BenchError::Generate)?;
            keys.extend(batch);
        }
        Ok(keys)
    })
}

/// The number of threads for CPU-bound preparation: one per available core.
pub(crate) fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Hosts [`RECEIVER`] (with the receiver's public key) in `<data_dir>/btps.redb` and
/// records an accepted inbound trust from every sender, in one transaction. Records
/// already present are left alone, so that a data directory can be prepared again.
/// The server must not be running (redb allows one process per file).
pub fn prepare_data_dir(data_dir: &Path, keys: &KeySet) -> Result<(), BenchError> {
    let store = RedbStore::open_dir(data_dir, &RedbOptions::default())?;
    let now = Timestamp::now();
    store.write(|batch| {
        if batch.identity(&compute_id(RECEIVER))?.is_none() {
            let key = PublicKeyRecord {
                selector: SELECTOR.to_owned(),
                public_key: keys.receiver.public_key().to_pem() + "\n",
                key_type: "rsa".to_owned(),
                version: "1.0.0".to_owned(),
                created_at: now.clone(),
                source: None,
            };
            batch.create_identity(IdentityRecord::new(RECEIVER, key, now.clone()))?;
        }
        for (index, key) in keys.senders.iter().enumerate() {
            let sender = sender_identity(index);
            if batch
                .trust(Perspective::Inbound, &compute_trust_id(&sender, RECEIVER))?
                .is_some()
            {
                continue;
            }
            let record = NewTrustRecord {
                sender_id: sender,
                receiver_id: RECEIVER.to_owned(),
                status: TrustStatus::Accepted,
                created_at: now.clone(),
                decided_by: "btps bench".to_owned(),
                decided_at: now.clone(),
                expires_at: None,
                public_key_base64: key.public_key().to_base64(),
                public_key_fingerprint: key.public_key().fingerprint().to_owned(),
                key_history: Vec::new(),
                privacy_type: PrivacyType::Mixed,
                retry_after_date: None,
                metadata: None,
            };
            batch.create_trust(Perspective::Inbound, record, None)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Starts a DNS responder on `listen` publishing every sender's key under
/// [`SELECTOR`], so that the measured server resolves them as it would in the field.
pub fn start_dns(listen: std::net::SocketAddr, keys: &KeySet) -> Result<DnsResponder, BenchError> {
    let responder = DnsResponder::start(listen).map_err(|source| BenchError::Io {
        what: format!("starting the DNS responder on {listen}"),
        source,
    })?;
    for (index, key) in keys.senders.iter().enumerate() {
        let identity = Identity::parse(&sender_identity(index))
            .map_err(|error| BenchError::InvalidOption(error.to_string()))?;
        responder.publish_key(&identity, SELECTOR, &key.public_key().to_base64());
    }
    Ok(responder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_valid_and_distinct() {
        let a = Identity::parse(&sender_identity(0)).unwrap();
        let b = Identity::parse(&sender_identity(99)).unwrap();
        assert_ne!(a, b);
        Identity::parse(RECEIVER).unwrap();
    }
}
