//! The `btps` command line: argument parsing and glue; the work happens in the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
