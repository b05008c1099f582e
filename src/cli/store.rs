//! `btps import` and `btps export`.

use std::path::PathBuf;
use std::process::ExitCode;

/// Where the stored state lives: shared by every command that touches it.
#[derive(Debug, clap::Args)]
pub(crate) struct DataDirArg {
    /// Data directory (the database is one file inside it).
    #[arg(long, env = "BTPS_DATA_DIR", default_value = "./btps-data")]
    pub(crate) data_dir: PathBuf,
}

/// Arguments of `btps import`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    pub(crate) data: DataDirArg,
}

/// Arguments of `btps export`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) data: DataDirArg,
}

pub(crate) fn import(_args: &ImportArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("import is not implemented yet")
}

pub(crate) fn export(_args: &ExportArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("export is not implemented yet")
}
