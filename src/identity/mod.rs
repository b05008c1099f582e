//! BTPS identities (`account$domain`), computed ids, and key discovery.
//!
//! Pure parsing and hashing live here; DNS lookups sit behind the
//! [`dns::TxtResolver`] trait so that the verification logic never performs I/O itself.

mod address;
pub mod dns;
mod ids;
pub mod responder;

pub use address::{Identity, IdentityError, is_js_whitespace, is_schema_identity};
pub use ids::{compute_id, compute_trust_id};
