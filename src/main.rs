//! The `btps` command line: argument parsing and glue; the work happens in the library.

mod cli;

/// mimalloc instead of the system allocator: the server allocates per artifact
/// (parsed JSON, stored copies), where glibc's malloc spent a fifth of its CPU time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
