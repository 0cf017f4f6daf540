//! `yardmaster fmt`: `.route` files -> the canonical layout, written in place (or, with `--check`,
//! a list of the files that would change and exit 1).

use std::path::PathBuf;

use super::{print_diagnostics, try_exit, Exit, Format};
use crate::policy;
use crate::policy::syntax::span::SourceMap;

/// `fmt`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories.
    paths: Vec<PathBuf>,
    /// Change nothing; exit 1 when a file would change.
    #[arg(long)]
    check: bool,
}

/// Every `.route` file among `paths`, directories searched recursively, sorted.
fn route_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Exit> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut stack = vec![p.clone()];
        while let Some(d) = stack.pop() {
            let rd = std::fs::read_dir(&d).map_err(|e| {
                eprintln!("error: cannot read {}: {e}", d.display());
                Exit::CannotRun
            })?;
            for e in rd.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "route") {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs `fmt`.
pub fn run(args: Args) -> Exit {
    let files = try_exit!(route_files(&args.paths));
    if files.is_empty() {
        eprintln!("error: no .route files given");
        return Exit::CannotRun;
    }
    let mut changed = 0;
    let mut failed = false;
    for f in &files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", f.display());
                return Exit::CannotRun;
            }
        };
        match policy::fmt::format_source(&text) {
            Ok(out) if out == text => {}
            Ok(out) => {
                changed += 1;
                if args.check {
                    outln!("would reformat {}", f.display());
                } else if let Err(e) = std::fs::write(f, out) {
                    eprintln!("error: cannot write {}: {e}", f.display());
                    return Exit::CannotRun;
                } else {
                    outln!("formatted {}", f.display());
                }
            }
            Err(policy::fmt::FmtError::Parse(diags)) => {
                let mut sources = SourceMap::default();
                sources.add(f, text.as_str());
                print_diagnostics(&diags, &sources, Format::Human);
                failed = true;
            }
            Err(e) => {
                eprintln!("error: {}: {e}", f.display());
                failed = true;
            }
        }
    }
    if failed {
        Exit::CannotRun
    } else if args.check && changed > 0 {
        Exit::Findings
    } else {
        Exit::Ok
    }
}
