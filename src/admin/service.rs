//! The admin socket as a [`Service`] of the server: it answers operator commands
//! while the server runs, and stops (its file removed) when the server stops.

use crate::BoxFuture;
use crate::server::{Service, ServiceContext};

use super::operations::AdminContext;
use super::socket::AdminSocket;

/// A bound admin socket and the context its operations run in.
pub struct AdminService {
    socket: AdminSocket,
    context: AdminContext,
}

impl AdminService {
    /// Serves `socket` with `context`.
    pub fn new(socket: AdminSocket, context: AdminContext) -> Self {
        AdminService { socket, context }
    }
}

impl Service for AdminService {
    fn name(&self) -> &'static str {
        "admin socket"
    }

    fn run(
        self: Box<Self>,
        _context: ServiceContext,
        stop: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(self.socket.run(self.context, stop))
    }
}
