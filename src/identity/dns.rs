//! DNS TXT discovery of BTPS servers and keys (`spec/04-identity-dns.md` §3–§6).
//!
//! The module is layered so that each layer can be tested on its own:
//!
//! * pure record parsing: [`parse_txt_pairs`], [`HostRecord`], [`KeyRecord`] — bytes in,
//!   values out, no I/O;
//! * the [`TxtResolver`] trait, the single point where DNS I/O happens, with a real
//!   implementation ([`HickoryTxtResolver`]) and a cache that wraps any implementation
//!   ([`CachingResolver`]);
//! * [`KeyDirectory`], which turns answers into BTPS keys and hosts and classifies
//!   failures the way the server must report them (`01-wire.md` §5.3): a record that
//!   definitively does not exist is a verification failure, a resolver failure is a
//!   temporary error.

use std::collections::BTreeMap;
use std::time::Duration;

use super::is_js_whitespace;

mod cache;
mod directory;
mod hickory;

pub use cache::{CacheConfig, CacheStats, CachingResolver, DnsCacheEvent};
pub use directory::{KeyDirectory, KeyLookupError};
pub use hickory::{HickoryTxtResolver, ResolverOptions};

/// The port a host record's `u=` value implies when it names none (§4.4).
pub const DEFAULT_BTPS_PORT: u16 = 3443;

/// The record version the appliance publishes (`v=`).
pub const RECORD_VERSION: &str = "1.0.0";

/// Splits the TXT answer of one name into `key → value` pairs (§4.1, with the
/// first-`=` split recommended by §4.3).
///
/// `records` is the answer as the resolver returned it: a list of records, each a list
/// of character-strings. All character-strings are glued without separator, first
/// within each record and then across records, in the given order; the text is split
/// at every `;`, each piece is trimmed with JavaScript's whitespace class, split at its
/// **first** `=` (so padded base64 values survive), and both halves are trimmed again.
/// Pieces without `=` are dropped; a later duplicate key overwrites an earlier one.
/// Keys and values may be empty (`p=` yields `"p" → ""`), exactly as the reference
/// keeps them; the record parsers decide what an empty value means.
///
/// Bytes are read as single-byte characters (ISO-8859-1), so every byte sequence has a
/// meaning and byte `0xA0` counts as whitespace, as U+00A0 does in JavaScript.
pub fn parse_txt_pairs(records: &[Vec<Vec<u8>>]) -> BTreeMap<String, String> {
    let text: String = records
        .iter()
        .flatten()
        .flatten()
        .map(|&byte| char::from(byte))
        .collect();
    let mut pairs = BTreeMap::new();
    for piece in text.split(';') {
        let piece = piece.trim_matches(is_js_whitespace);
        if let Some((key, value)) = piece.split_once('=') {
            pairs.insert(
                key.trim_matches(is_js_whitespace).to_owned(),
                value.trim_matches(is_js_whitespace).to_owned(),
            );
        }
    }
    pairs
}

/// The TXT text of a host record, `v=1.0.0; u=<address>; s=<selector>` (§4.4), as the
/// appliance publishes it and operators are told to publish it.
pub fn host_record_text(address: &str, selector: &str) -> String {
    format!("v={RECORD_VERSION}; u={address}; s={selector}")
}

/// The TXT text of an identity key record, `v=1.0.0; k=rsa; p=<base64 SPKI>` (§4.5).
pub fn key_record_text(spki_base64: &str) -> String {
    format!("v={RECORD_VERSION}; k=rsa; p={spki_base64}")
}

/// Why a `_btps.host.<domain>` answer is not a usable host record.
///
/// The spec treats all of these as "record absent"; the variants say why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostRecordError {
    /// One of the required keys `v`, `u`, `s` is missing or has an empty value.
    #[error("host record has no usable '{key}=' value")]
    MissingField {
        /// The missing key.
        key: &'static str,
    },
    /// The `u=` value is not a URL once prefixed with `btps://` (e.g. a port above
    /// 65535).
    #[error("host record address '{address}' is not valid: {reason}")]
    BadAddress {
        /// The `u=` value as published.
        address: String,
        /// The URL parser's complaint.
        reason: String,
    },
    /// The `u=` value names no host.
    #[error("host record address '{address}' has an empty host")]
    EmptyHost {
        /// The `u=` value as published.
        address: String,
    },
    /// The `u=` value names port 0.
    #[error("host record address '{address}' has port 0")]
    PortZero {
        /// The `u=` value as published.
        address: String,
    },
}

/// A parsed `_btps.host.<domain>` record: where the domain's BTPS server listens and
/// which key selector the domain currently uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRecord {
    /// `v=`, never checked against anything.
    pub version: String,
    /// The server's host name, verbatim from the URL (not lower-cased; an IPv6 literal
    /// keeps its brackets, as in `[::1]`).
    pub host: String,
    /// The server's port, [`DEFAULT_BTPS_PORT`] when `u=` names none.
    pub port: u16,
    /// `s=`, the domain's current key selector.
    pub selector: String,
}

impl HostRecord {
    /// Parses a host record from the raw TXT answer of its name.
    pub fn parse(records: &[Vec<Vec<u8>>]) -> Result<Self, HostRecordError> {
        Self::from_pairs(&parse_txt_pairs(records))
    }

    /// Builds a host record from already split pairs (§4.4).
    pub fn from_pairs(pairs: &BTreeMap<String, String>) -> Result<Self, HostRecordError> {
        let required = |key: &'static str| {
            pairs
                .get(key)
                .filter(|value| !value.is_empty())
                .ok_or(HostRecordError::MissingField { key })
        };
        let version = required("v")?;
        let address = required("u")?;
        let selector = required("s")?;
        let (host, port) = parse_host_address(address)?;
        Ok(HostRecord {
            version: version.clone(),
            host,
            port,
            selector: selector.clone(),
        })
    }
}

/// Interprets a `u=` value the way the reference client does: prefix `btps://` unless
/// present, parse with the WHATWG URL parser (a non-special scheme, so the host is
/// kept as written), take the hostname and the port (default 3443), ignore the rest.
fn parse_host_address(address: &str) -> Result<(String, u16), HostRecordError> {
    let prefixed = if address.starts_with("btps://") {
        address.to_owned()
    } else {
        format!("btps://{address}")
    };
    let url = url::Url::parse(&prefixed).map_err(|error| HostRecordError::BadAddress {
        address: address.to_owned(),
        reason: error.to_string(),
    })?;
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err(HostRecordError::EmptyHost {
            address: address.to_owned(),
        });
    }
    let port = url.port().unwrap_or(DEFAULT_BTPS_PORT);
    if port == 0 {
        return Err(HostRecordError::PortZero {
            address: address.to_owned(),
        });
    }
    Ok((host.to_owned(), port))
}

/// A parsed `<selector>._btps.identity.<account>.<domain>` record (§4.5).
///
/// `p` is kept as the published base64 text; turning it into a key (and rejecting
/// text that is not one) is the crypto module's job, and the spec classifies an
/// undecodable key differently from a missing one (fingerprint mismatch rather than
/// "not found").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// `v=`, returned to callers but never validated.
    pub version: Option<String>,
    /// `k=`, returned to callers but never validated.
    pub key_type: Option<String>,
    /// `p=`: base64 of the SPKI DER, non-empty.
    pub public_key_base64: String,
}

impl KeyRecord {
    /// Parses a key record from the raw TXT answer of its name; `None` when it has no
    /// usable (non-empty) `p=`.
    pub fn parse(records: &[Vec<Vec<u8>>]) -> Option<Self> {
        Self::from_pairs(&parse_txt_pairs(records))
    }

    /// Builds a key record from already split pairs; `None` without a non-empty `p=`.
    pub fn from_pairs(pairs: &BTreeMap<String, String>) -> Option<Self> {
        let public_key_base64 = pairs.get("p").filter(|value| !value.is_empty())?;
        Some(KeyRecord {
            version: pairs.get("v").cloned(),
            key_type: pairs.get("k").cloned(),
            public_key_base64: public_key_base64.clone(),
        })
    }
}

/// [`TxtResolver`] returns boxed futures so that the trait stays object-safe (the
/// server holds an `Arc<dyn TxtResolver>`).
pub use crate::BoxFuture;

/// A successful TXT answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxtAnswer {
    /// The TXT records in the order the resolver returned them, each a list of
    /// character-strings. Never empty: an empty answer is [`DnsError::NotFound`].
    pub records: Vec<Vec<Vec<u8>>>,
    /// How long the answer may be cached: the smallest TTL of its records (for an
    /// answer served from a cache, what remains of it).
    pub ttl: Duration,
}

/// Why a TXT lookup produced no records.
///
/// The split that matters is definitive absence ([`DnsError::NotFound`]) versus a
/// failure that may go away ([`DnsError::Temporary`]): the server reports the first as
/// a verification failure and the second as "retry later".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN), has no TXT records (NODATA), or the answer
    /// was empty.
    #[error("no TXT record at {name}")]
    NotFound {
        /// The name queried.
        name: String,
    },
    /// The lookup failed in a way that may succeed later: timeout, SERVFAIL, REFUSED,
    /// network error, any other unexpected response code.
    #[error("DNS lookup of {name} failed: {reason}")]
    Temporary {
        /// The name queried.
        name: String,
        /// What went wrong, for logs.
        reason: String,
    },
    /// The name cannot be a DNS name (a label longer than 63 bytes, a name longer than
    /// 255 bytes, an empty label…), so no record can exist under it.
    #[error("'{name}' is not a valid DNS name: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is not valid.
        reason: String,
    },
}

/// A source of TXT records. [`HickoryTxtResolver`] asks real DNS servers;
/// [`CachingResolver`] wraps any implementation.
pub trait TxtResolver: Send + Sync {
    /// Looks up the TXT records of `name`, an absolute name with or without the final
    /// dot (no search domains are applied).
    fn lookup_txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<TxtAnswer, DnsError>>;
}

impl<R: TxtResolver + ?Sized> TxtResolver for std::sync::Arc<R> {
    fn lookup_txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<TxtAnswer, DnsError>> {
        (**self).lookup_txt(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(strings: &[&str]) -> Vec<Vec<u8>> {
        strings.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn pairs(records: &[Vec<Vec<u8>>]) -> Vec<(String, String)> {
        parse_txt_pairs(records).into_iter().collect()
    }

    fn pair(key: &str, value: &str) -> (String, String) {
        (key.to_owned(), value.to_owned())
    }

    #[test]
    fn pairs_are_split_at_semicolons_and_trimmed() {
        let parsed = pairs(&[record(&["  v = 1.0.0 ;u=h:1;\t s=btps1 ;"])]);
        assert_eq!(
            parsed,
            vec![pair("s", "btps1"), pair("u", "h:1"), pair("v", "1.0.0")]
        );
    }

    #[test]
    fn character_strings_and_records_are_glued_without_separator() {
        // The split point falls inside a key and inside a value; both must re-join.
        let parsed = pairs(&[record(&["v=1.0.0; k=r", "sa; p=AB"]), record(&["CD; x=1"])]);
        assert_eq!(
            parsed,
            vec![
                pair("k", "rsa"),
                pair("p", "ABCD"),
                pair("v", "1.0.0"),
                pair("x", "1")
            ]
        );
    }

    #[test]
    fn two_records_corrupt_each_other_when_not_separated() {
        // §4.2: an old and a new record glued together: "…p=OLDv=1.0.0…".
        let parsed = parse_txt_pairs(&[record(&["v=1.0.0; p=OLD"]), record(&["v=1.0.0; p=NEW"])]);
        assert_eq!(parsed.get("p").map(String::as_str), Some("NEW"));
        assert_eq!(parsed.get("v").map(String::as_str), Some("1.0.0"));
        assert!(
            parse_txt_pairs(&[record(&["p=OLD"]), record(&["p=NEW"])])
                .get("p")
                .is_some_and(|p| p == "OLDp=NEW")
        );
    }

    #[test]
    fn padded_base64_survives_the_first_equals_split() {
        let parsed = parse_txt_pairs(&[record(&["v=1.0.0; k=rsa; p=AAAA==  "])]);
        assert_eq!(parsed.get("p").map(String::as_str), Some("AAAA=="));
    }

    #[test]
    fn pieces_without_equals_are_dropped_and_empty_parts_kept() {
        let parsed = pairs(&[record(&["junk; p=; =x; ;v=1"])]);
        assert_eq!(parsed, vec![pair("", "x"), pair("p", ""), pair("v", "1")]);
    }

    #[test]
    fn later_duplicates_overwrite_and_keys_are_case_sensitive() {
        let parsed = pairs(&[record(&["s=a; S=b; s=c"])]);
        assert_eq!(parsed, vec![pair("S", "b"), pair("s", "c")]);
    }

    #[test]
    fn bytes_are_latin1_and_nbsp_is_whitespace() {
        // 0xA0 is U+00A0, JavaScript whitespace; 0x85 (U+0085) is not.
        let parsed = parse_txt_pairs(&[vec![b"\xA0s=\xA0a\xA0;t=\x85".to_vec()]]);
        assert_eq!(parsed.get("s").map(String::as_str), Some("a"));
        assert_eq!(parsed.get("t").map(String::as_str), Some("\u{85}"));
    }

    #[test]
    fn host_record_with_defaults() {
        let host = HostRecord::parse(&[record(&["v=1.0.0; u=btps.vendor.com; s=btps1"])]).unwrap();
        assert_eq!(
            host,
            HostRecord {
                version: "1.0.0".into(),
                host: "btps.vendor.com".into(),
                port: DEFAULT_BTPS_PORT,
                selector: "btps1".into()
            }
        );
    }

    #[test]
    fn host_record_address_forms() {
        let parse = |u: &str| HostRecord::parse(&[record(&["v=1.0.0; s=btps1; u=", u])]);
        let ok = |u: &str| {
            let host = parse(u).unwrap();
            (host.host, host.port)
        };
        assert_eq!(ok("btps://h.example:4000"), ("h.example".into(), 4000));
        assert_eq!(ok("h.example:4000/ignored?x#y"), ("h.example".into(), 4000));
        // A non-special scheme keeps the host as written.
        assert_eq!(ok("Btps.Vendor.COM:1"), ("Btps.Vendor.COM".into(), 1));
        assert_eq!(ok("[::1]:3444"), ("[::1]".into(), 3444));
        assert_eq!(ok("btps://[2001:db8::1]"), ("[2001:db8::1]".into(), 3443));
        assert_eq!(ok("127.0.0.1:65535"), ("127.0.0.1".into(), 65535));
        // §4.4 note: another scheme becomes the host name.
        assert_eq!(ok("https://x.example").0, "https");

        assert!(matches!(
            parse("h:65536"),
            Err(HostRecordError::BadAddress { .. })
        ));
        assert!(matches!(
            parse("h:port"),
            Err(HostRecordError::BadAddress { .. })
        ));
        assert!(matches!(
            parse("h:0"),
            Err(HostRecordError::PortZero { .. })
        ));
        assert!(matches!(
            parse("btps://"),
            Err(HostRecordError::EmptyHost { .. } | HostRecordError::BadAddress { .. })
        ));
        assert!(matches!(
            parse("btps://:3443"),
            Err(HostRecordError::EmptyHost { .. } | HostRecordError::BadAddress { .. })
        ));
    }

    #[test]
    fn host_record_needs_v_u_and_s() {
        let parse = |text: &str| HostRecord::parse(&[record(&[text])]);
        assert_eq!(
            parse("v=1.0.0; u=h:1"),
            Err(HostRecordError::MissingField { key: "s" })
        );
        assert_eq!(
            parse("u=h:1; s=btps1"),
            Err(HostRecordError::MissingField { key: "v" })
        );
        assert_eq!(
            parse("v=1.0.0; u=; s=btps1"),
            Err(HostRecordError::MissingField { key: "u" })
        );
        // §4.2: a space is not a separator, so `u` swallows the selector.
        let spaced = parse("v=1.0.0; u=btps.vendor.com:3443 s=btps1");
        assert_eq!(spaced, Err(HostRecordError::MissingField { key: "s" }));
    }

    #[test]
    fn key_record_needs_a_non_empty_p() {
        let key = KeyRecord::parse(&[record(&["v=1.0.0; k=rsa; p=AAAA"])]).unwrap();
        assert_eq!(key.version.as_deref(), Some("1.0.0"));
        assert_eq!(key.key_type.as_deref(), Some("rsa"));
        assert_eq!(key.public_key_base64, "AAAA");
        let bare = KeyRecord::parse(&[record(&["p=AAAA"])]).unwrap();
        assert_eq!((bare.version, bare.key_type), (None, None));
        assert_eq!(KeyRecord::parse(&[record(&["v=1.0.0; k=rsa"])]), None);
        assert_eq!(KeyRecord::parse(&[record(&["v=1.0.0; k=rsa; p= "])]), None);
        assert_eq!(KeyRecord::parse(&[]), None);
    }

    #[test]
    fn published_texts_parse_back() {
        let host =
            HostRecord::parse(&[record(&[&host_record_text("h.example:3444", "s7")])]).unwrap();
        assert_eq!(
            (host.host.as_str(), host.port, host.selector.as_str()),
            ("h.example", 3444, "s7")
        );
        let key = KeyRecord::parse(&[record(&[&key_record_text("QUJD")])]).unwrap();
        assert_eq!(key.public_key_base64, "QUJD");
    }
}
