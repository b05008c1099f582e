//! # btps — a self-contained BTPS server appliance
//!
//! BTPS (Billing Trust Protocol Secure) moves invoices and other billing documents
//! between organisations: addresses look like `billing$vendor.com`, keys and servers
//! are found through DNS TXT records, every artifact is signed (and often encrypted),
//! and a receiver only accepts documents from senders it has explicitly trusted.
//!
//! The crate is layered so that the protocol logic is pure and the I/O sits at the
//! edges (see `ARCHITECTURE.md`). From the bottom up — a module uses only modules
//! listed before it, which `tests/architecture.rs` checks:
//!
//! * [`systemd`] — service-manager notifications (readiness, stopping, watchdog).
//! * [`crypto`] — key loading, fingerprints, RSA signatures, AES-256-GCM envelopes
//!   with RSA-OAEP key wrapping, key generation. No I/O.
//! * [`identity`] — identity syntax, computed ids, DNS TXT records and key discovery
//!   behind a resolver trait.
//! * [`protocol`] — wire types, line classification and validation, error codes, and
//!   canonical JSON (JavaScript's `JSON.stringify`, byte for byte). No I/O.
//! * [`model`] — the domain types the logic works with: trust records, identity
//!   records, mailbox entries.
//! * [`wire`] — the reference's JSON forms of those records (its JSON files).
//! * [`metrics`] — the process's metrics, rendered as Prometheus text.
//! * [`signing`] — what each party signs and how a receiver verifies it: key
//!   resolution, delegation, attestation, envelope encryption of documents.
//! * [`store`] — the storage contract and its implementations.
//! * [`config`] — one configuration struct: defaults < TOML file < environment.
//! * [`server`] — the TLS listener, the inbound pipeline and its handlers.
//! * [`client`] — a BTPS client (TLS, one line out, response lines in).
//! * [`delivery`] — outbound delivery: the durable outbox's worker (retries, the
//!   outcome classes, delivery-failure notices), signing for hosted identities
//!   through their domain's delegator, and queueing with the trust changes it implies.
//! * [`agent`] — a BTPS agent: enrollment, refresh and every agent action, signed
//!   with the agent's own key, over a [`client`] connection.
//! * [`http`] — the local operations endpoint: health, readiness, metrics, backup.
//! * [`admin`] — the operator's operations, and the local admin socket that runs
//!   them inside a running server.
//! * [`bench`](mod@bench) — the load generator of `btps bench`: setup, load, measurement.

pub mod admin;
pub mod agent;
pub mod bench;
pub mod client;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod server;
pub mod signing;
pub mod store;
pub mod systemd;
pub mod wire;

/// A boxed, sendable future: what the object-safe async traits of this crate return.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
