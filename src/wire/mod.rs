//! The reference's JSON forms of stored records: what its JSON file stores hold, what
//! `btps export` writes and what the admin operations answer with.
//!
//! The domain types ([`crate::model`]) know nothing of these field names and layouts;
//! this module converts between the two ([`trust_from_json`], [`trust_to_json`],
//! [`identity_from_json`], [`identity_to_json`], …) and lays out whole files the way
//! the reference does ([`to_pretty`]). The artifacts' wire format is not here: it is
//! the protocol's ([`crate::protocol`]).

mod pretty;
mod records;

pub use pretty::to_pretty;
pub use records::{
    identity_from_json, identity_to_json, public_key_from_json, public_key_to_json,
    trust_from_json, trust_to_json,
};
