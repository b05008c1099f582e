//! Lifecycle hooks and the error callback: the reference's `onServerStart`,
//! `onServerStop`, `onResponseSent` and `onError` (`spec/08-delivery.md` §7.2), as
//! a trait and a closure registered on the [`crate::server::ServerBuilder`].

use std::net::SocketAddr;
use std::sync::Arc;

use crate::BoxFuture;
use crate::protocol::{ErrorCode, ProtocolError};

/// An error a hook reports; it stops the server's start when `on_start` returns it.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// What the server tells [`Lifecycle::on_start`] about itself.
#[derive(Clone, Debug)]
pub struct StartInfo {
    /// The BTPS listener's bound address.
    pub address: SocketAddr,
}

/// A response written to a peer, as [`Lifecycle::on_response_sent`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct ResponseSent<'a> {
    /// The peer.
    pub remote: SocketAddr,
    /// The response line, without its `\n`.
    pub line: &'a str,
    /// The `id` of the artifact the response answers, when known.
    pub request_id: Option<&'a str>,
}

/// Hooks on the server's life: start, stop, every response sent.
///
/// Every method has a default that does nothing.
pub trait Lifecycle: Send + Sync {
    /// After the server is assembled and its listener bound, before it accepts the
    /// first connection. An error aborts the start: [`crate::server::Server::run`]
    /// returns it without serving.
    fn on_start<'a>(&'a self, _info: &'a StartInfo) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// When the server stops, after the connections have drained and before the
    /// storage is released; awaited up to the shutdown grace period.
    fn on_stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// After each response line is written. Called on the connection's task: keep
    /// it quick and never block (hand work to a channel or a task).
    fn on_response_sent(&self, _response: &ResponseSent<'_>) {}
}

/// Where an error arose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorStage {
    /// Framing: a line too long, an idle timeout.
    Connection,
    /// JSON parsing, classification and schema validation.
    Parsing,
    /// The receiver is not hosted here.
    Hosted,
    /// Signature verification (and key discovery).
    SignatureVerification,
    /// The trust check.
    TrustVerification,
    /// The handler: storing, answering a lookup or an agent action.
    OnArtifact,
    /// A middleware hook refused the line at this phase.
    Middleware(super::middleware::Phase),
}

/// An error the server answered, with its context: what the error callback
/// receives (the reference's `onError`, which sees only the error).
#[derive(Clone, Copy, Debug)]
pub struct ErrorEvent<'a> {
    /// The peer.
    pub remote: SocketAddr,
    /// Where it arose.
    pub stage: ErrorStage,
    /// The protocol error answered (code, wire message, precise reason).
    pub error: &'a ProtocolError,
    /// The artifact `id`, once parsed.
    pub request_id: Option<&'a str>,
    /// The line's (`from`, `to`), once parsed.
    pub parties: Option<(&'a str, &'a str)>,
}

impl ErrorEvent<'_> {
    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.error.code
    }
}

/// The error callback: called for every error answered, on the connection's task
/// (keep it quick and never block).
pub type ErrorCallback = Arc<dyn Fn(&ErrorEvent<'_>) + Send + Sync>;
