//! The `yardmaster` binary: parses the command line and runs it.

use clap::Parser as _;

// A gateway allocates per request (JSON values, headers, buffers); mimalloc is markedly faster
// than the system allocator for that pattern (see bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = yardmaster::cli::Cli::parse();
    std::process::ExitCode::from(yardmaster::cli::run(cli) as u8)
}
