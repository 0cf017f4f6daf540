//! `yardmaster simulate`: a request log and one or two policies -> requests per rule and per model
//! and the estimated cost, side by side with what the log recorded (`crate::simulate` does the
//! replay; this file reads the arguments and draws the progress bar).

use std::path::{Path, PathBuf};

use super::{build, load_config, try_exit, Exit, Format};
use crate::config::Loaded;
use crate::policy::Program;

/// `simulate`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The request log (JSONL, as `log: { requests: FILE }` writes it).
    #[arg(long)]
    traffic: PathBuf,
    /// The policy to try.
    #[arg(long)]
    policy: PathBuf,
    /// The policy to compare with (default: only what the log recorded).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// The deployment config whose catalog prices the models.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

/// A progress bar on long logs (drawn on stderr, and only when it is a terminal).
fn progress(size: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:10} {bar:40} {percent:>3}% {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if size < 4 * 1024 * 1024 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// Runs `simulate`.
pub fn run(args: Args) -> Exit {
    let loaded = try_exit!(load_config(args.config.as_deref()));
    let catalog = loaded.as_ref().map(Loaded::catalog);
    if catalog.is_none() {
        eprintln!("warning: no config (give --config): models have no prices, so estimated costs are 0");
    }
    let new = try_exit!(build(&args.policy, catalog.as_ref()));
    let old = try_exit!(args.baseline.as_deref().map(|b| build(b, catalog.as_ref())).transpose());
    let file = match std::fs::File::open(&args.traffic) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.traffic.display());
            return Exit::CannotRun;
        }
    };
    let bar = progress(file.metadata().map_or(0, |m| m.len()));
    bar.set_message("reading");
    let t = match crate::simulate::read(std::io::BufReader::new(file), |b| bar.set_position(b)) {
        Ok(t) => t,
        Err(e) => {
            bar.finish_and_clear();
            eprintln!("error: cannot read {}: {e}", args.traffic.display());
            return Exit::CannotRun;
        }
    };
    let n = t.entries.len() as u64;
    let mut columns = vec![crate::simulate::recorded(&t.entries)];
    let runs: Vec<(&Path, &Program)> =
        args.baseline.as_deref().zip(old.as_ref()).into_iter().chain([(args.policy.as_path(), &new)]).collect();
    for (path, program) in runs {
        bar.set_length(n);
        bar.set_position(0);
        bar.set_message(path.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned()));
        let label = path.display().to_string();
        columns.push(crate::simulate::replay(&label, program, &t.entries, || bar.inc(1)));
    }
    bar.finish_and_clear();
    match args.format {
        Format::Json => {
            let out = serde_json::json!({"columns": columns, "skipped_lines": t.skipped});
            outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Human => out!("{}", crate::simulate::render(&columns, t.skipped.len())),
    }
    Exit::Ok
}
