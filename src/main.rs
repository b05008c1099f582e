//! The `btps` command line: argument parsing and glue; the work happens in the library.

mod cli;

/// mimalloc instead of the system allocator: the server allocates per artifact
/// (parsed JSON, TLS records, stored copies), where glibc's malloc spent about a sixth
/// of its CPU time (docs/benchmark.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
