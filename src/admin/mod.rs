//! Administration: the operator's operations and the local admin socket through
//! which they reach a running server.
//!
//! [`operations`] defines every operation once, as a serializable request executed
//! against the store; [`socket`] serves those requests on a Unix socket beside the
//! listener and is the client the command line uses to reach it.

pub mod operations;
#[cfg(unix)]
pub mod service;
#[cfg(unix)]
pub mod socket;
