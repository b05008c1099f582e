//! Import of a reference deployment's JSON store files into the redb database, and
//! export back to those files (`06-storage.md` §4.6).
//!
//! Import reads and validates everything first and reports every invalid record
//! with its file, position and reason; only then does it write, in one transaction,
//! so nothing is ever half-imported. Importing the same files twice changes
//! nothing. The files' shapes (entity name or bare array) are remembered so that
//! export writes the same shapes back.

use std::collections::BTreeSet;
use std::path::Path;

use crate::crypto::PublicKey;

use super::error::{RecordProblem, StoreError, StoreResult};
use super::json_store::{JsonFileShape, parse_records, read_raw, render_file, write_atomically};
use super::{RedbStore, WriteBatch};
use crate::model::{IdentityRecord, Perspective, TrustRecord, validate_identity, validate_trust};
use crate::wire;

const META_TRUST_SHAPE: &str = "export.trust_shape";
const META_IDENTITY_SHAPE: &str = "export.identity_shape";

/// The entity name reference deployments use for the trust file by default.
pub const DEFAULT_TRUST_ENTITY: &str = "trusted_senders";

/// Choices of an import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Entity name of the trust file; detected when `None`.
    pub trust_entity: Option<String>,
    /// Entity name of the identity file; detected when `None`.
    pub identity_entity: Option<String>,
    /// Replace stored records whose content differs (otherwise a conflict).
    pub overwrite: bool,
    /// Skip trust records where neither party is hosted (otherwise imported as
    /// inbound, with a warning).
    pub skip_foreign: bool,
    /// Treat key problems (a key that does not parse, a fingerprint that is not
    /// the key's) as errors instead of warnings (`06-storage.md` §4.6).
    pub strict: bool,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Trust records written (per perspective: a record between two hosted
    /// identities counts twice).
    pub trust_inserted: u64,
    /// Trust records already stored with the same content.
    pub trust_unchanged: u64,
    /// Trust records replaced (`overwrite`).
    pub trust_replaced: u64,
    /// Trust records skipped (`skip_foreign`).
    pub trust_skipped: u64,
    /// Identity records written.
    pub identities_inserted: u64,
    /// Identity records already stored with the same content.
    pub identities_unchanged: u64,
    /// Identity records replaced (`overwrite`).
    pub identities_replaced: u64,
    /// Things worth knowing that did not stop the import.
    pub warnings: Vec<RecordProblem>,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Trust records written.
    pub trust: u64,
    /// Identity records written.
    pub identities: u64,
}

enum Outcome {
    Inserted,
    Unchanged,
    Replaced,
}

/// Imports the given files (either may be absent) into `store` in one transaction.
pub fn import(
    store: &RedbStore,
    trust_file: Option<&Path>,
    identity_file: Option<&Path>,
    options: &ImportOptions,
) -> StoreResult<ImportReport> {
    let mut problems = Vec::new();
    let identities = match identity_file {
        Some(path) => {
            let raw = read_raw(path, options.identity_entity.as_deref())?;
            let records = collect(
                path,
                parse_records::<IdentityRecord>(path, &raw.elements),
                &mut problems,
                validate_identity,
            );
            Some((path, raw.shape, records))
        }
        None => None,
    };
    let trust = match trust_file {
        Some(path) => {
            let raw = read_raw(path, options.trust_entity.as_deref())?;
            let records = collect(
                path,
                parse_records::<TrustRecord>(path, &raw.elements),
                &mut problems,
                validate_trust,
            );
            Some((path, raw.shape, records))
        }
        None => None,
    };
    // Key problems are warnings unless strict: the reference's own fixtures carry
    // placeholder keys, and such records must still import and export losslessly.
    let mut key_problems = Vec::new();
    if let Some((path, _, records)) = &identities {
        for (index, record) in records {
            key_problems.extend(identity_key_problems(record).map(|reason| RecordProblem {
                file: path.to_path_buf(),
                index: *index,
                reason,
            }));
        }
    }
    if let Some((path, _, records)) = &trust {
        for (index, record) in records {
            key_problems.extend(trust_key_problem(record).map(|reason| RecordProblem {
                file: path.to_path_buf(),
                index: *index,
                reason,
            }));
        }
    }
    if options.strict {
        problems.append(&mut key_problems);
        // Identity file first (as read), then the trust file; by position within each.
        problems
            .sort_by_key(|problem| (Some(problem.file.as_path()) != identity_file, problem.index));
    }
    if !problems.is_empty() {
        return Err(StoreError::InvalidRecords { problems });
    }

    store.write(|batch| {
        let mut report = ImportReport {
            warnings: key_problems.clone(),
            ..ImportReport::default()
        };
        let mut conflicts = Vec::new();
        if let Some((path, shape, records)) = &identities {
            for (index, record) in records.iter() {
                match import_identity(batch, record, options.overwrite)? {
                    Ok(Outcome::Inserted) => report.identities_inserted += 1,
                    Ok(Outcome::Unchanged) => report.identities_unchanged += 1,
                    Ok(Outcome::Replaced) => report.identities_replaced += 1,
                    Err(reason) => conflicts.push(RecordProblem {
                        file: path.to_path_buf(),
                        index: *index,
                        reason,
                    }),
                }
            }
            batch.set_meta(META_IDENTITY_SHAPE, &encode_shape(shape))?;
        }
        if let Some((path, shape, records)) = &trust {
            for (index, record) in records.iter() {
                let hosted = |identity: &str| -> StoreResult<bool> {
                    Ok(batch
                        .identity(&crate::identity::compute_id(identity))?
                        .is_some())
                };
                let mut perspectives = Vec::new();
                if hosted(&record.receiver_id)? {
                    perspectives.push(Perspective::Inbound);
                }
                if hosted(&record.sender_id)? {
                    perspectives.push(Perspective::Outbound);
                }
                if perspectives.is_empty() {
                    let reason =
                        String::from("neither senderId nor receiverId is a hosted identity");
                    if options.skip_foreign {
                        report.trust_skipped += 1;
                        report.warnings.push(RecordProblem {
                            file: path.to_path_buf(),
                            index: *index,
                            reason: format!("{reason}; skipped"),
                        });
                        continue;
                    }
                    report.warnings.push(RecordProblem {
                        file: path.to_path_buf(),
                        index: *index,
                        reason: format!("{reason}; imported as inbound"),
                    });
                    perspectives.push(Perspective::Inbound);
                }
                for perspective in perspectives {
                    match import_trust(batch, perspective, record, options.overwrite)? {
                        Ok(Outcome::Inserted) => report.trust_inserted += 1,
                        Ok(Outcome::Unchanged) => report.trust_unchanged += 1,
                        Ok(Outcome::Replaced) => report.trust_replaced += 1,
                        Err(reason) => conflicts.push(RecordProblem {
                            file: path.to_path_buf(),
                            index: *index,
                            reason,
                        }),
                    }
                }
            }
            batch.set_meta(META_TRUST_SHAPE, &encode_shape(shape))?;
        }
        if conflicts.is_empty() {
            Ok(report)
        } else {
            // Returning an error aborts the transaction: nothing of this import stays.
            Err(StoreError::InvalidRecords {
                problems: conflicts,
            })
        }
    })
}

/// What is wrong with a trust record's key, if anything: `publicKeyBase64` must be
/// the base64 of an RSA SPKI and `publicKeyFingerprint` its fingerprint. A record
/// with neither (a requesting-side record before the answer) has nothing to check.
fn trust_key_problem(record: &TrustRecord) -> Option<String> {
    if record.public_key_base64.is_empty() && record.public_key_fingerprint.is_empty() {
        return None;
    }
    match PublicKey::from_base64_spki(&record.public_key_base64) {
        Err(error) => Some(format!(
            "publicKeyBase64 is not a base64 SPKI public key: {error}"
        )),
        Ok(key) if key.fingerprint() != record.public_key_fingerprint => Some(format!(
            "publicKeyFingerprint {:?} is not the fingerprint of publicKeyBase64 ({})",
            record.public_key_fingerprint,
            key.fingerprint()
        )),
        Ok(_) => None,
    }
}

/// What is wrong with each key of an identity record: `publicKey` must be an SPKI
/// PEM or the bare base64 of an SPKI (kept as given either way).
fn identity_key_problems(record: &IdentityRecord) -> impl Iterator<Item = String> + '_ {
    record
        .public_keys
        .iter()
        .enumerate()
        .filter_map(|(position, key)| {
            let text = key.public_key.trim();
            let parsed = if text.starts_with("-----") {
                PublicKey::from_pem(text)
            } else {
                PublicKey::from_base64_spki(text)
            };
            parsed.err().map(|error| {
                format!(
                    "publicKeys[{position}] (selector {:?}): publicKey is not an SPKI public key: {error}",
                    key.selector
                )
            })
        })
}

/// Validates parsed records and gathers every problem of the file, in file order.
fn collect<R>(
    path: &Path,
    (records, mut found): (Vec<(usize, R)>, Vec<RecordProblem>),
    problems: &mut Vec<RecordProblem>,
    validate: fn(&R) -> Result<(), String>,
) -> Vec<(usize, R)> {
    for (index, record) in &records {
        if let Err(reason) = validate(record) {
            found.push(RecordProblem {
                file: path.to_owned(),
                index: *index,
                reason,
            });
        }
    }
    found.sort_by_key(|problem| problem.index);
    problems.extend(found);
    records
}

fn import_identity(
    batch: &mut WriteBatch<'_>,
    record: &IdentityRecord,
    overwrite: bool,
) -> StoreResult<Result<Outcome, String>> {
    match batch.identity(&record.id)? {
        None => {
            batch.create_identity(record.clone())?;
            Ok(Ok(Outcome::Inserted))
        }
        Some(existing) if wire::identity_to_json(&existing) == wire::identity_to_json(record) => {
            Ok(Ok(Outcome::Unchanged))
        }
        Some(_) if overwrite => {
            batch.replace_identity(record)?;
            Ok(Ok(Outcome::Replaced))
        }
        Some(_) => Ok(Err(format!(
            "identity {} is stored with different content (use --overwrite to replace it)",
            record.identity
        ))),
    }
}

fn import_trust(
    batch: &mut WriteBatch<'_>,
    perspective: Perspective,
    record: &TrustRecord,
    overwrite: bool,
) -> StoreResult<Result<Outcome, String>> {
    match batch.trust(perspective, &record.id)? {
        None => {
            batch.insert_trust(perspective, record)?;
            Ok(Ok(Outcome::Inserted))
        }
        Some(existing) if wire::trust_to_json(&existing) == wire::trust_to_json(record) => {
            Ok(Ok(Outcome::Unchanged))
        }
        Some(_) if overwrite => {
            batch.replace_trust(perspective, record)?;
            Ok(Ok(Outcome::Replaced))
        }
        Some(_) => Ok(Err(format!(
            "trust record {} → {} is stored with different content (use --overwrite to replace it)",
            record.sender_id, record.receiver_id
        ))),
    }
}

/// Writes the database as reference files, in the shapes of the last import (or
/// `{"trusted_senders": […]}` and a bare array when nothing was imported).
///
/// A relationship stored in both perspectives is written once, as first inserted.
pub fn export(
    store: &RedbStore,
    trust_file: Option<&Path>,
    identity_file: Option<&Path>,
) -> StoreResult<ExportReport> {
    let (trust, identities, trust_shape, identity_shape) = store.read(|batch| {
        let trust = batch.trust_in_insertion_order()?;
        let identities = batch.identities_in_insertion_order()?;
        let trust_shape = batch
            .meta(META_TRUST_SHAPE)?
            .and_then(|bytes| decode_shape(&bytes))
            .unwrap_or_else(|| JsonFileShape::Entity(DEFAULT_TRUST_ENTITY.to_owned()));
        let identity_shape = batch
            .meta(META_IDENTITY_SHAPE)?
            .and_then(|bytes| decode_shape(&bytes))
            .unwrap_or(JsonFileShape::Array);
        Ok((trust, identities, trust_shape, identity_shape))
    })?;
    let mut report = ExportReport::default();
    if let Some(path) = trust_file {
        let mut seen = BTreeSet::new();
        let unique: Vec<TrustRecord> = trust
            .into_iter()
            .filter(|(_, record)| seen.insert(record.id.clone()))
            .map(|(_, record)| record)
            .collect();
        report.trust = u64::try_from(unique.len()).unwrap_or(u64::MAX);
        write_atomically(path, render_file(&trust_shape, unique.iter()).as_bytes())?;
    }
    if let Some(path) = identity_file {
        report.identities = u64::try_from(identities.len()).unwrap_or(u64::MAX);
        write_atomically(
            path,
            render_file(&identity_shape, identities.iter()).as_bytes(),
        )?;
    }
    Ok(report)
}

fn encode_shape(shape: &JsonFileShape) -> Vec<u8> {
    match shape {
        JsonFileShape::Array => vec![0],
        JsonFileShape::Entity(entity) => {
            let mut out = vec![1];
            out.extend_from_slice(entity.as_bytes());
            out
        }
    }
}

fn decode_shape(bytes: &[u8]) -> Option<JsonFileShape> {
    match bytes.split_first()? {
        (0, []) => Some(JsonFileShape::Array),
        (1, entity) => std::str::from_utf8(entity)
            .ok()
            .map(|entity| JsonFileShape::Entity(entity.to_owned())),
        _ => None,
    }
}
