//! `btps identity`, `btps trust` and `btps inbox`: the operator's commands on the
//! hosted identities, the trust records and the inboxes.
//!
//! Each command is one [`AdminRequest`]. While a server runs (its admin socket
//! answers) the request goes to the server; otherwise the command opens the
//! database itself and runs the same operation (`btps::admin::operations`). Output
//! is a table, or JSON with `--json`. The appliance never keeps a hosted user's
//! private key: `identity add` and `identity rotate-key` write a generated one to a
//! file for its owner (in the data directory's `keys/`, or `--key-out DIR`) and
//! send only the public key.
//!
//! This module holds what every command shares: the output options and the way to
//! the database ([`Admin`]). Each command group has its own file (`identity`,
//! `trust`, `inbox`) with its arguments, its requests and its printing; `output`
//! holds the table, field and JSON printers.

use btps::admin::operations::{AdminContext, AdminError, AdminRequest, AdminResponse, execute};
use btps::admin::socket::AdminClient;

use btps::config::Config;

use super::store::{DataDirArg, Missing, open_database};

mod identity;
mod inbox;
mod outbox;
mod output;
mod trust;

pub(crate) use identity::{IdentityArgs, identity};
pub(crate) use inbox::{InboxArgs, inbox};
pub(crate) use outbox::{OutboxArgs, SentboxArgs, outbox, sentbox};
pub(crate) use output::{print_fields, print_json};
pub(crate) use trust::{TrustArgs, trust};

/// Options every admin command has.
#[derive(Debug, clap::Args)]
pub(crate) struct OutputArgs {
    #[command(flatten)]
    pub(crate) data: DataDirArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// How a command reaches the database: through a running server's admin socket, or
/// directly.
pub(crate) enum Admin {
    /// A server answers on its admin socket.
    Socket(AdminClient),
    /// No server runs; the database is open in this process.
    Direct(AdminContext),
}

impl Admin {
    /// The server's admin socket if it answers, else the database itself. The data
    /// directory must exist; `create` (the command's `--create`) allows creating it
    /// (mode 0700) and the database in it. A database held by a process whose socket
    /// does not answer is an error saying so.
    pub(crate) fn connect(target: &DataDirArg, create: bool) -> anyhow::Result<Admin> {
        let missing = if create {
            Missing::CreateIf(true)
        } else {
            Missing::Refuse
        };
        Self::connect_with(target, target.config()?, missing)
    }

    /// Like [`Admin::connect`], with the configuration already loaded and what to do
    /// when the data directory does not exist spelled out. The database is created
    /// in an existing data directory only by a command that has `--create`.
    pub(crate) fn connect_with(
        target: &DataDirArg,
        config: Config,
        missing: Missing,
    ) -> anyhow::Result<Admin> {
        if let Ok(client) = AdminClient::connect(&config.admin.socket) {
            return Ok(Admin::Socket(client));
        }
        target.existing_data_dir(&config, missing)?;
        #[cfg(feature = "postgres")]
        if config.storage.kind == btps::config::StorageKind::Postgres {
            // A shared database: no file lock, the command works beside running nodes.
            let storage = super::postgres::connect(&config)?;
            return Ok(Admin::Direct(AdminContext::new(
                std::sync::Arc::new(storage),
                config,
            )));
        }
        let store = open_database(&config, matches!(missing, Missing::CreateIf(_)))?;
        Ok(Admin::Direct(AdminContext::for_redb(store, config)))
    }

    /// Runs one request, here or in the server.
    pub(crate) fn call(&mut self, request: AdminRequest) -> Result<AdminResponse, AdminError> {
        match self {
            Admin::Socket(client) => client.call(&request),
            Admin::Direct(context) => execute(context, request),
        }
    }

    /// Like [`Admin::call`], with the error as the command's error.
    fn run(&mut self, request: AdminRequest) -> anyhow::Result<AdminResponse> {
        self.call(request).map_err(anyhow::Error::new)
    }
}

/// An answer of another shape than the request's: a server of another version.
fn unexpected(response: &AdminResponse) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from the server: {response:?}")
}
