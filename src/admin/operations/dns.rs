//! The DNS TXT records an identity publishes: one key record per selector, the
//! domain's host record naming this server and the current selector, and the key
//! record of the domain's lookup signer (the server key). `DnsRecords` gathers them
//! for every hosted identity at once, each name once (`btps dns records`, and what
//! `btps dns serve` answers).

use std::fs;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::crypto::PublicKey;
use crate::identity::Identity;
use crate::identity::dns::{host_record_text, key_record_text};
use crate::store::PageRequest;

use super::args::{parse_identity, parse_public_key};
use super::identity::identity_record;
use super::{AdminContext, AdminError, AdminResponse, AdminResult, FULL_LISTING_PAGE};

/// One DNS TXT record to publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// The owner name, without the final dot.
    pub name: String,
    /// Always `TXT`.
    #[serde(rename = "type")]
    pub record_type: String,
    /// The record's text (one record; split into strings of at most 255 bytes).
    pub value: String,
    /// What the record is for.
    pub purpose: String,
}

impl DnsRecord {
    fn txt(name: String, value: String, purpose: impl Into<String>) -> Self {
        DnsRecord {
            name,
            record_type: String::from("TXT"),
            value,
            purpose: purpose.into(),
        }
    }
}

/// The records to publish for every hosted identity (or only `identity`): each
/// identity's key records, each domain's host record and lookup-signer key record,
/// every name once, in the order first needed. Identities of one domain whose
/// current selectors differ would need two host records for one name; the first is
/// kept and a warning says so.
pub(super) fn dns_records(
    context: &AdminContext,
    identity: Option<&str>,
    host: Option<&str>,
) -> AdminResult<AdminResponse> {
    let identities = match identity {
        Some(identity) => vec![identity.to_owned()],
        None => all_identities(context)?,
    };
    let mut records: Vec<DnsRecord> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    if identities.is_empty() {
        warnings.push(String::from(
            "no identity is hosted here yet: add one with btps identity add",
        ));
    }
    for identity in identities {
        let (identity, found, said) = records_of(context, &identity, host)?;
        for record in found {
            match records.iter().find(|known| known.name == record.name) {
                None => records.push(record),
                Some(known) if known.value == record.value => {}
                Some(known) => warnings.push(format!(
                    "{}: {identity} needs \"{}\" but \"{}\" is already listed (one record per name); make the current selectors of the domain's identities agree",
                    record.name, record.value, known.value
                )),
            }
        }
        for warning in said {
            if !warnings.contains(&warning) {
                warnings.push(warning);
            }
        }
    }
    Ok(AdminResponse::DnsRecordSet { records, warnings })
}

/// Every hosted identity, in the store's order.
fn all_identities(context: &AdminContext) -> AdminResult<Vec<String>> {
    let mut identities = Vec::new();
    let mut request = PageRequest::first(FULL_LISTING_PAGE);
    loop {
        let page = context.wait(context.storage().identities().list(request.clone()))??;
        identities.extend(page.items.iter().map(|record| record.identity.clone()));
        match page.next {
            Some(cursor) => request = PageRequest::after(cursor, FULL_LISTING_PAGE),
            None => break,
        }
    }
    Ok(identities)
}

/// The records to publish for one identity (see the module documentation).
pub(super) fn identity_dns_records(
    context: &AdminContext,
    identity: &str,
    host: Option<&str>,
) -> AdminResult<AdminResponse> {
    let (identity, records, warnings) = records_of(context, identity, host)?;
    Ok(AdminResponse::DnsRecords {
        identity,
        records,
        warnings,
    })
}

/// One identity's records: its name as stored, the records, and warnings.
fn records_of(
    context: &AdminContext,
    identity: &str,
    host: Option<&str>,
) -> AdminResult<(String, Vec<DnsRecord>, Vec<String>)> {
    let record = identity_record(context, identity)?;
    let identity = parse_identity(&record.identity)?;
    let mut warnings = Vec::new();
    let host = host_address(context.config(), host, &mut warnings)?;
    let mut records = Vec::new();
    for stored in &record.public_keys {
        match parse_public_key(&stored.public_key) {
            Ok(key) => records.push(key_record(&identity, &stored.selector, &key, &mut warnings)),
            Err(_) => warnings.push(format!(
                "the stored key {:?} does not parse; no record for it",
                stored.selector
            )),
        }
    }
    records.push(host_record(&identity, &host, &record.current_selector));
    let config = context.config();
    let signer = config.lookup_signer(identity.domain());
    let server_key = &config.server.public_key_path;
    match fs::read_to_string(server_key)
        .map_err(|error| error.to_string())
        .and_then(|pem| PublicKey::from_pem(&pem).map_err(|error| error.to_string()))
    {
        Ok(key) => records.push(DnsRecord::txt(
            signer.key_record_name(&config.server.selector),
            key_record_text(&key.to_base64()),
            format!(
                "the server key of {signer}, which signs identity-lookup answers for {}",
                identity.domain()
            ),
        )),
        Err(error) => warnings.push(format!(
            "no record for the lookup signer {signer}: the server key {} is unreadable ({error}); start btps serve once to create it",
            server_key.display()
        )),
    }
    Ok((record.identity, records, warnings))
}

/// The `u=` value of the host record: the given `host[:port]`, else the configured
/// listen address (with a warning when other machines cannot reach it).
pub(super) fn host_address(
    config: &Config,
    given: Option<&str>,
    warnings: &mut Vec<String>,
) -> AdminResult<String> {
    if let Some(host) = given {
        let valid = !host.is_empty()
            && !host
                .chars()
                .any(|c| c.is_whitespace() || c == ';' || c == '=' || c == '"');
        if !valid {
            return Err(AdminError::InvalidArgument(format!(
                "invalid --host {host:?}: expected HOST[:PORT] without spaces, ';', '=' or quotes"
            )));
        }
        return Ok(host.to_owned());
    }
    let listen = config.listen;
    if listen.ip().is_loopback() || listen.ip().is_unspecified() {
        warnings.push(format!(
            "the host record names the listen address {listen}, which other machines cannot reach; pass --host with the public HOST:PORT"
        ));
    }
    Ok(listen.to_string())
}

pub(super) fn key_record(
    identity: &Identity,
    selector: &str,
    key: &PublicKey,
    warnings: &mut Vec<String>,
) -> DnsRecord {
    let base64 = key.to_base64();
    if base64.ends_with('=') {
        warnings.push(format!(
            "the key {selector:?} of {identity} has padded base64; reference peers cannot read padded keys from DNS (use a 2048-bit key)"
        ));
    }
    DnsRecord::txt(
        identity.key_record_name(selector),
        key_record_text(&base64),
        format!("public key {selector} of {identity}"),
    )
}

pub(super) fn host_record(identity: &Identity, host: &str, selector: &str) -> DnsRecord {
    DnsRecord::txt(
        identity.host_record_name(),
        host_record_text(host, selector),
        format!(
            "the server and current selector of {} (one record per domain)",
            identity.domain()
        ),
    )
}
