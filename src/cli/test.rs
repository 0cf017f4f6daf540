//! `yardmaster test`: each policy's `*.tests.yaml` -> a test runner's report, with `--coverage`
//! the rules and targets that no case reaches; exit 1 on any failure.

use std::path::{Path, PathBuf};

use super::{build, expand, keys_of, load_config, try_exit, Exit};
use crate::config::Loaded;
use crate::policy::testing::{self, tests_path, Case, CaseResult, KeyInfo};
use crate::policy::Program;

/// `test`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A directory of policies (default: the config's policy directory, else `rules/`).
    dir: Option<PathBuf>,
    /// The deployment config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// List the rules and targets that no test reaches.
    #[arg(long)]
    coverage: bool,
}

/// Passed and failed cases.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
}

/// Runs `test`.
pub fn run(args: Args) -> Exit {
    let loaded = try_exit!(load_config(args.config.as_deref()));
    let dir = args
        .dir
        .clone()
        .or_else(|| loaded.as_ref().and_then(Loaded::policy_path).and_then(|p| p.parent().map(Path::to_path_buf)))
        .unwrap_or_else(|| PathBuf::from("rules"));
    let entries = try_exit!(expand(std::slice::from_ref(&dir)));
    let catalog = loaded.as_ref().map(Loaded::catalog);
    if catalog.is_none() {
        eprintln!(
            "note: no config (./yardmaster.yaml or --config), so tests run without a catalog: model names are not \
             checked, and cases that depend on prices, contexts or capabilities may not decide as they would in serve"
        );
    }
    let keys = keys_of(loaded.as_ref());
    let mut tally = Tally::default();
    let mut any = false;
    for entry in &entries {
        let tests = tests_path(entry);
        if !tests.exists() {
            continue;
        }
        any = true;
        let program = try_exit!(build(entry, catalog.as_ref()));
        let cases = try_exit!(read_cases(&tests));
        outln!("running {} test{} from {}", cases.len(), if cases.len() == 1 { "" } else { "s" }, tests.display());
        run_cases(&program, &cases, &keys, args.coverage, &mut tally);
    }
    if !any {
        eprintln!("error: no policy under {} has a .tests.yaml beside it", dir.display());
        return Exit::CannotRun;
    }
    let Tally { passed, failed } = tally;
    outln!("test result: {}. {passed} passed; {failed} failed", if failed == 0 { "ok" } else { "FAILED" });
    outln!("{passed} passed, {failed} failed");
    if failed > 0 {
        Exit::Findings
    } else {
        Exit::Ok
    }
}

fn read_cases(tests: &Path) -> Result<Vec<Case>, Exit> {
    let text = std::fs::read_to_string(tests).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", tests.display());
        Exit::CannotRun
    })?;
    testing::parse_cases(&text).map_err(|e| {
        eprintln!("error: {}: {e}", tests.display());
        Exit::CannotRun
    })
}

/// Runs one file's cases and prints them as a test runner does.
fn run_cases(program: &Program, cases: &[Case], keys: &[KeyInfo], coverage: bool, tally: &mut Tally) {
    let results = testing::run(program, cases, keys);
    let mut failures = Vec::new();
    for r in &results {
        match &r.failure {
            None => {
                tally.passed += 1;
                outln!("test {} ... ok", r.name);
            }
            Some(f) => {
                tally.failed += 1;
                outln!("test {} ... FAILED", r.name);
                failures.push((r.name.clone(), f.clone()));
            }
        }
    }
    if !failures.is_empty() {
        outln!("\nfailures:");
        for (n, f) in &failures {
            outln!("    {n}: {f}");
        }
    }
    if coverage {
        print_coverage(program, &results);
    }
    outln!();
}

fn print_coverage(program: &Program, results: &[CaseResult]) {
    let mut lines = Vec::new();
    for (i, r) in program.checked.rules.iter().enumerate() {
        let cases: Vec<&CaseResult> = results.iter().filter(|c| c.rule == Some(i)).collect();
        if cases.is_empty() {
            lines.push(format!("    rule {:?}: no test reaches it", r.name));
            continue;
        }
        let mut models = Vec::new();
        r.target.explicit_models(&mut |m| {
            if let Some(model) = program.catalog().get(m) {
                if !models.contains(&model.name) {
                    models.push(model.name.clone());
                }
            }
        });
        for m in models {
            if !cases.iter().any(|c| c.taken.contains(&m)) {
                lines.push(format!("    rule {:?}: no test takes target `{m}`", r.name));
            }
        }
    }
    if lines.is_empty() {
        outln!("\ncoverage: every rule and target is reached by a test");
    } else {
        outln!("\ncoverage: not reached by any test:");
        for l in lines {
            outln!("{l}");
        }
    }
}
