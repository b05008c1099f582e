//! The BTPS server: TLS listener, connections, the inbound pipeline and its handlers.

pub mod bootstrap;
pub mod tls;
