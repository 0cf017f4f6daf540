//! `yardmaster serve`: a config -> the running gateway, with logging and the runtime set up. The
//! config is read once here and handed to the gateway, which builds its first snapshot from it.

use std::path::PathBuf;

use super::{Exit, Format};
use crate::config::{self, Loaded};

/// `serve`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The deployment config.
    #[arg(long, default_value = "yardmaster.yaml")]
    config: PathBuf,
    /// Listen here instead of the config's `listen`.
    #[arg(long)]
    listen: Option<String>,
    /// Log format (default: the config's `log.format`, else human).
    #[arg(long, value_enum)]
    log_format: Option<Format>,
    /// Keep polling for I/O this long after each request instead of sleeping (`500us`,
    /// `1ms`): lower latency on a VM for the price of CPU time; off by default.
    #[arg(long, value_name = "WINDOW", value_parser = busy_window)]
    busy_poll: Option<std::time::Duration>,
}

/// `--busy-poll`: a duration in microseconds (`500us`) or as the config writes them (`1ms`).
fn busy_window(s: &str) -> Result<std::time::Duration, String> {
    let d = match s.trim().strip_suffix("us") {
        Some(us) => us.trim().parse::<u64>().ok().map(std::time::Duration::from_micros),
        None => crate::util::duration::parse_ms(s).map(std::time::Duration::from_millis),
    };
    d.filter(|d| !d.is_zero()).ok_or_else(|| format!("`{s}` is not a duration (try `500us` or `1ms`)"))
}

/// Logs to stderr, filtered by `YARDMASTER_LOG` (default `info`).
fn init_logging(format: Format) {
    // INVARIANT: the default level never logs keys or prompt text; request bodies are only ever
    // logged at `trace`, which must be asked for.
    let asked = std::env::var("YARDMASTER_LOG").ok();
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("YARDMASTER_LOG")
        // The ANN index's crate logs every index it makes at `info`: one per semantic context.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hnsw_rs=warn"));
    if !asked.as_deref().is_some_and(|a| a.contains("notify")) {
        // The file watcher's crate logs every file event at `trace`: with the log written to a
        // file in a watched directory, each line would be an event and another line, forever.
        if let Ok(d) = "notify=debug".parse() {
            filter = filter.add_directive(d);
        }
    }
    // Colours only on a terminal (and never with NO_COLOR): a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if format == Format::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The runtime: `YARDMASTER_WORKERS` threads (default: one per available core); with one, a
/// single-threaded runtime, which avoids waking other threads on every request.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = std::env::var("YARDMASTER_WORKERS").ok().and_then(|n| n.parse::<usize>().ok()).filter(|n| *n > 0);
    let mut rt = if workers.unwrap_or(cores) == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let Some(n) = workers.filter(|n| *n > 1) {
        rt.worker_threads(n);
    }
    rt.enable_all().build()
}

/// Runs `serve`.
pub fn run(args: Args) -> Exit {
    let loaded: Result<Loaded, String> = config::load(&args.config).map_err(|e| e.to_string());
    let from_config = loaded.as_ref().ok().and_then(|l| l.config.log.format.as_deref()) == Some("json");
    init_logging(args.log_format.unwrap_or(if from_config { Format::Json } else { Format::Human }));
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::CannotRun;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return Exit::CannotRun;
        }
    };
    match rt.block_on(crate::gateway::serve(loaded, args.listen, args.busy_poll)) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::CannotRun
        }
    }
}
