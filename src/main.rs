//! The `yardmaster` binary: parses the command line and runs it.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = yardmaster::cli::Cli::parse();
    std::process::ExitCode::from(yardmaster::cli::run(cli) as u8)
}
