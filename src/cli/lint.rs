//! `yardmaster lint`: policy files (or the config's policy) -> diagnostics, human or JSON, and the
//! exit code (1 on errors, or on warnings with `--deny-warnings`; 2 when it cannot run).

use std::path::PathBuf;

use super::{expand, load_config, print_diagnostics, try_exit, Exit, Format};
use crate::config::Loaded;
use crate::policy::{self, load, CheckOptions, Severity};

/// `lint`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (default: the config's policy).
    paths: Vec<PathBuf>,
    /// The deployment config whose catalog models are checked against.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Exit 1 on warnings too.
    #[arg(long)]
    deny_warnings: bool,
    /// Report each rule's worst-case cost.
    #[arg(long)]
    costs: bool,
}

/// Runs `lint`.
pub fn run(args: Args) -> Exit {
    let loaded = try_exit!(load_config(args.config.as_deref()));
    let catalog = loaded.as_ref().map(Loaded::catalog);
    // What serve would warn of: provider and key variables that are unset.
    for w in loaded.iter().flat_map(|l| &l.warnings) {
        eprintln!("warning: {}: {w}", l_path(loaded.as_ref()));
    }
    let paths: Vec<PathBuf> = if args.paths.is_empty() {
        match loaded.as_ref().and_then(Loaded::policy_path) {
            Some(p) => vec![p],
            None => {
                eprintln!("error: give a policy file or directory, or a config with `policy:`");
                return Exit::CannotRun;
            }
        }
    } else {
        args.paths.clone()
    };
    let entries = try_exit!(expand(&paths));
    if catalog.is_none() && args.format == Format::Human {
        eprintln!("note: no config (./yardmaster.yaml or --config), so model names are not checked against a catalog");
    }
    let mut json = Vec::new();
    let (mut errors, mut warnings) = (0, 0);
    let mut cannot_run = false;
    for entry in &entries {
        let source = load::load(entry, &load::Fs);
        cannot_run |= source.unreadable;
        let outcome = policy::check(source, catalog.as_ref(), CheckOptions { costs: args.costs });
        for d in &outcome.diagnostics {
            match d.severity() {
                Severity::Error => errors += 1,
                Severity::Warning => warnings += 1,
                Severity::Advice => {}
            }
        }
        print_diagnostics(&outcome.diagnostics, &outcome.sources, args.format);
        json.extend(outcome.diagnostics.iter().map(|d| d.to_json(&outcome.sources)));
    }
    if args.format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&json).unwrap_or_else(|_| "[]".into()));
    } else {
        let files = entries.len();
        outln!(
            "{} {} checked: {errors} error{}, {warnings} warning{}",
            files,
            if files == 1 { "policy" } else { "policies" },
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" }
        );
    }
    if cannot_run {
        Exit::CannotRun
    } else if errors > 0 || (args.deny_warnings && warnings > 0) {
        Exit::Findings
    } else {
        Exit::Ok
    }
}

/// The config's path, as warnings name it.
fn l_path(loaded: Option<&Loaded>) -> String {
    loaded.map(|l| l.path.display().to_string()).unwrap_or_default()
}
