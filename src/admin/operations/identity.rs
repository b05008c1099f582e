//! Hosted identities: creating a record with its first key, listing and showing
//! records, and rotating to a new key (the old keys stay, so that artifacts naming
//! them still verify).

use serde_json::Value;

use crate::config::Config;
use crate::crypto::PublicKey;
use crate::identity::Identity;
use crate::store::{IdentityRecord, PageRequest, PublicKeyRecord, StoreError, Timestamp};
use crate::wire::identity_to_json;

use super::args::{check_selector, parse_identity, parse_public_key};
use super::dns::{host_record, key_record};
use super::{AdminContext, AdminError, AdminResponse, AdminResult, FULL_LISTING_PAGE, object_json};

/// Version label of keys the appliance adds to identity records.
const KEY_VERSION: &str = "1.0.0";

pub(super) fn identity_record(context: &AdminContext, text: &str) -> AdminResult<IdentityRecord> {
    let identity = parse_identity(text)?;
    context
        .wait(
            context
                .storage()
                .identities()
                .get_by_identity(identity.as_str()),
        )??
        .ok_or_else(|| AdminError::NotFound(format!("no identity record for {identity}")))
}

fn new_key_record(selector: &str, key: &PublicKey) -> PublicKeyRecord {
    // Node's `export({type: 'spki', format: 'pem'})` ends with a newline.
    let mut pem = key.to_pem();
    pem.push('\n');
    PublicKeyRecord {
        selector: selector.to_owned(),
        public_key: pem,
        key_type: String::from("rsa"),
        version: String::from(KEY_VERSION),
        created_at: Timestamp::now(),
        source: None,
    }
}

/// The `u=` value of the host record printed by `identity add` and `rotate-key`:
/// the configured listen address. These commands have no `--host`, so when other
/// machines cannot reach that address the warning names the command that prints
/// the records with another one (`identity dns-records --host`).
fn default_host_address(
    config: &Config,
    identity: &Identity,
    warnings: &mut Vec<String>,
) -> String {
    let listen = config.listen;
    if listen.ip().is_loopback() || listen.ip().is_unspecified() {
        warnings.push(format!(
            "the host record names the listen address {listen}, which other machines cannot reach; print the records with the public address: btps identity dns-records '{identity}' --host HOST:PORT"
        ));
    }
    listen.to_string()
}

pub(super) fn identity_add(
    context: &AdminContext,
    identity: &str,
    selector: &str,
    public_key: &str,
) -> AdminResult<AdminResponse> {
    let identity = parse_identity(identity)?;
    check_selector(selector)?;
    let key = parse_public_key(public_key)?;
    let record = IdentityRecord::new(
        identity.as_str(),
        new_key_record(selector, &key),
        Timestamp::now(),
    );
    let record = context
        .wait(context.storage().identities().create(record))?
        .map_err(|error| match error {
            StoreError::AlreadyExists { .. } => {
                AdminError::Conflict(format!("identity {identity} already exists"))
            }
            other => other.into(),
        })?;
    let mut warnings = Vec::new();
    let host = default_host_address(context.config(), &identity, &mut warnings);
    let dns = vec![
        key_record(&identity, selector, &key, &mut warnings),
        host_record(&identity, &host, selector),
    ];
    Ok(AdminResponse::IdentityAdded {
        record: identity_json(&record),
        selector: selector.to_owned(),
        fingerprint: key.fingerprint().to_owned(),
        dns,
        warnings,
    })
}

pub(super) fn identity_list(context: &AdminContext) -> AdminResult<AdminResponse> {
    let mut records = Vec::new();
    let mut request = PageRequest::first(FULL_LISTING_PAGE);
    loop {
        let page = context.wait(context.storage().identities().list(request.clone()))??;
        records.extend(page.items.iter().map(identity_json));
        match page.next {
            Some(cursor) => request = PageRequest::after(cursor, FULL_LISTING_PAGE),
            None => break,
        }
    }
    Ok(AdminResponse::Identities { records })
}

/// The selector a rotation uses when none is given: `btps<N+1>` after the highest
/// `btps<N>` the record has (`btps2` after `btps1`), skipping taken names.
pub fn next_selector(record: &IdentityRecord) -> String {
    let taken: Vec<&str> = record
        .public_keys
        .iter()
        .map(|key| key.selector.as_str())
        .collect();
    next_selector_after(&taken)
}

/// [`next_selector`] over the selectors in use.
pub fn next_selector_after(taken: &[&str]) -> String {
    let highest = taken
        .iter()
        .filter_map(|selector| selector.strip_prefix("btps")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let mut number = highest.saturating_add(1);
    loop {
        let candidate = format!("btps{number}");
        if !taken.contains(&candidate.as_str()) {
            return candidate;
        }
        number = number.saturating_add(1);
    }
}

pub(super) fn identity_rotate_key(
    context: &AdminContext,
    identity: &str,
    selector: Option<&str>,
    public_key: &str,
) -> AdminResult<AdminResponse> {
    let identity = parse_identity(identity)?;
    if let Some(selector) = selector {
        check_selector(selector)?;
    }
    let key = parse_public_key(public_key)?;
    // The operator's rotations are serialised by the admin socket's one request
    // at a time per connection; two operators rotating the same identity at once
    // could both pick the next selector, and the second then replaces the first's
    // key under it (its record shows the key that is current).
    let identities = context.storage().identities();
    let record = context
        .wait(identities.get_by_identity(identity.as_str()))??
        .ok_or_else(|| AdminError::NotFound(format!("no identity record for {identity}")))?;
    let selector = selector.map_or_else(|| next_selector(&record), str::to_owned);
    if record.key(Some(&selector)).is_some() {
        return Err(AdminError::Conflict(format!(
            "{identity} already has a key with selector {selector:?}; choose a new selector (the old key must stay published)"
        )));
    }
    let previous_selector = record.current_selector;
    let record = context.wait(identities.put_public_key(
        identity.as_str(),
        new_key_record(&selector, &key),
        true,
    ))??;
    let mut warnings = Vec::new();
    let host = default_host_address(context.config(), &identity, &mut warnings);
    let dns = vec![
        key_record(&identity, &selector, &key, &mut warnings),
        host_record(&identity, &host, &selector),
    ];
    Ok(AdminResponse::KeyRotated {
        record: identity_json(&record),
        selector,
        previous_selector,
        fingerprint: key.fingerprint().to_owned(),
        dns,
        warnings,
    })
}

/// The reference's JSON record plus each key's fingerprint.
pub(super) fn identity_json(record: &IdentityRecord) -> Value {
    let mut value = object_json(&identity_to_json(record).to_canonical());
    if let Some(keys) = value.get_mut("publicKeys").and_then(Value::as_array_mut) {
        for (key, stored) in keys.iter_mut().zip(&record.public_keys) {
            if let Some(object) = key.as_object_mut() {
                let fingerprint = parse_public_key(&stored.public_key)
                    .ok()
                    .map(|key| Value::from(key.fingerprint()));
                object.insert(
                    String::from("fingerprint"),
                    fingerprint.unwrap_or(Value::Null),
                );
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_selector_follows_the_highest_btps_number() {
        let key = |selector: &str| PublicKeyRecord {
            selector: selector.to_owned(),
            public_key: String::new(),
            key_type: String::from("rsa"),
            version: String::from("1.0.0"),
            created_at: Timestamp::now(),
            source: None,
        };
        let mut record = IdentityRecord::new("a$b.test", key("s2025"), Timestamp::now());
        assert_eq!(next_selector(&record), "btps1");
        record.put_key(key("btps1"), false);
        record.put_key(key("btps7"), false);
        assert_eq!(next_selector(&record), "btps8");
    }
}
