//! The integration tests: one binary, a module per area, shared helpers in `util`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod admin_running;
mod agents;
mod architecture;
mod bench;
mod cli;
mod client;
mod config;
mod crypto;
mod delivery;
mod dns;
mod dns_cli;
mod http;
mod hygiene;
mod interop;
mod operator;
mod ops;
#[cfg(feature = "postgres")]
mod postgres;
mod protocol;
mod schema;
mod server;
mod store;
mod try_it;
mod util;
mod vectors;
