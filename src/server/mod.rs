//! The BTPS server: the composition root ([`Server::builder`]), the TLS listener,
//! connections, the inbound pipeline and its handlers, middleware and hooks.
//!
//! [`Server::run`] takes a bound listener and a shutdown future (mini-redis style), so
//! tests bind `127.0.0.1:0` and stop the server when they are done. Shutdown stops
//! accepting, lets every connection finish the line it is handling, waits for them
//! (up to a grace period), flushes the group committer, stops the services, runs the
//! stop hooks and releases the storage.

pub mod agent;
pub mod bootstrap;
mod builder;
pub mod clock;
pub mod connection;
pub mod events;
mod handlers;
pub mod hooks;
pub mod inbound;
mod listener;
pub mod middleware;
pub mod permissions;
pub mod pipeline;
pub mod tls;
pub mod trust;

pub use builder::{BuildError, RunError, Server, ServerBuilder, Service, ServiceContext};
pub use clock::ClockPolicy;
pub use connection::ConnectionLimits;
pub use events::Subscription;
pub use listener::{ListenerSettings, ListenerStats};
pub use pipeline::{Pipeline, PipelineParts};
