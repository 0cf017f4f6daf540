//! The command line: one file per command, each with its own clap arguments and a `run` that
//! returns an [`Exit`] code (0 success, 1 findings: errors, failing tests, files that would change;
//! 2 cannot run). This module holds what the commands share: the config and policy loading, and
//! the printing of diagnostics.

/// `print!` that ends the process quietly when the reader has gone away (`yardmaster explain |
/// head`), where `print!` would panic on the broken pipe.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::write_out(format_args!($($t)*)) };
}

/// `println!`, as [`out!`].
macro_rules! outln {
    () => { $crate::cli::write_out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::write_out(format_args!("{}\n", format_args!($($t)*))) };
}

mod explain;
mod fmt;
mod lint;
mod serve;
mod simulate;
mod test;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::catalog::Catalog;
use crate::config::{self, Loaded};
use crate::policy::syntax::span::SourceMap;
use crate::policy::testing::KeyInfo;
use crate::policy::{self, load, Diagnostic, Program};

/// Writes to standard output; a closed pipe ends the process with success, quietly (as `head`'s
/// writer expects), and any other error is ignored, as `print!` would have panicked on it.
fn write_out(args: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Findings: errors, failing tests, files that would change.
    Findings = 1,
    /// The command could not run (bad config, unreadable file, bad arguments).
    CannotRun = 2,
}

/// Yardmaster: an LLM gateway routed by a policy you can read, lint, test and replay.
#[derive(Debug, Parser)]
#[command(name = "yardmaster", version, about)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Human,
    /// For machines.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check policy files and report diagnostics.
    Lint(lint::Args),
    /// Format policy files in place.
    Fmt(fmt::Args),
    /// Show how a request would be routed, rule by rule.
    Explain(explain::Args),
    /// Run the gateway.
    Serve(serve::Args),
    /// Run the policy's test cases (`*.tests.yaml` beside each policy).
    Test(test::Args),
    /// Replay a request log through a policy (and a baseline) and compare the routing and cost.
    Simulate(simulate::Args),
    /// Serve the Language Server Protocol over stdio, for editors.
    Lsp,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Lint(a) => lint::run(a),
        Command::Fmt(a) => fmt::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Test(a) => test::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Lsp => match crate::lsp::run() {
            Ok(()) => Exit::Ok,
            Err(e) => {
                eprintln!("error: the language server stopped: {e}");
                Exit::CannotRun
            }
        },
    }
}

/// Loads the config: an explicit path must load; the default `./yardmaster.yaml` is optional.
fn load_config(path: Option<&Path>) -> Result<Option<Loaded>, Exit> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from("yardmaster.yaml"), false),
    };
    if !explicit && !path.exists() {
        return Ok(None);
    }
    match config::load(&path) {
        Ok(l) => Ok(Some(l)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(Exit::CannotRun)
        }
    }
}

/// The policy entries among `paths`: files as given, and the entries of each directory.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Exit> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            match load::entries_in_dir(p) {
                Ok(es) => out.extend(es),
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", p.display());
                    return Err(Exit::CannotRun);
                }
            }
        } else if p.exists() {
            out.push(p.clone());
        } else {
            eprintln!("error: {} does not exist", p.display());
            return Err(Exit::CannotRun);
        }
    }
    Ok(out)
}

/// Prints diagnostics as miette reports (in colour only on a terminal, and never with `NO_COLOR`).
fn print_diagnostics(diags: &[Diagnostic], sources: &SourceMap, format: Format) {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if format == Format::Human {
        for d in diags {
            out!("{}", d.render(sources, 100, color));
            outln!();
        }
    }
}

/// The config's keys as policy tests and `explain` see them.
fn keys_of(loaded: Option<&Loaded>) -> Vec<KeyInfo> {
    loaded
        .map(|l| {
            l.config
                .keys
                .iter()
                .map(|k| KeyInfo { name: k.name.clone(), tier: k.tier.clone(), budget_usd: k.budget.map(|b| b.usd) })
                .collect()
        })
        .unwrap_or_default()
}

/// Builds a program, printing diagnostics on failure.
fn build(entry: &Path, catalog: Option<&Catalog>) -> Result<Program, Exit> {
    let (program, diags, sources) = policy::build(entry, catalog);
    match program {
        Some(p) => Ok(p),
        None => {
            let errors: Vec<Diagnostic> = diags.into_iter().filter(Diagnostic::is_error).collect();
            print_diagnostics(&errors, &sources, Format::Human);
            eprintln!(
                "error: {} does not load ({} error{})",
                entry.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            Err(Exit::Findings)
        }
    }
}

/// Unwraps a step's result, or returns its exit code from the command.
macro_rules! try_exit {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(exit) => return exit,
        }
    };
}
use try_exit;
