//! Command-line interface: one module per command group.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod store;

/// btps — a self-contained BTPS server appliance.
#[derive(Debug, Parser)]
#[command(name = "btps", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import a reference deployment's trust and identity JSON files into the database.
    Import(store::ImportArgs),
    /// Export the database as the reference's trust and identity JSON files.
    Export(store::ExportArgs),
}

/// Parses the command line, runs the command, and maps its outcome to an exit code.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Import(args) => store::import(&args),
        Command::Export(args) => store::export(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
