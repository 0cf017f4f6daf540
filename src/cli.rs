//! The command line: `lint`, `fmt`, `explain` and `test`. Each command returns an [`Exit`] code:
//! 0 success, 1 findings (errors, failing tests, files that would change), 2 cannot run.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::catalog::Catalog;
use crate::config::{self, Loaded};
use crate::policy::check::codes::Code;
use crate::policy::compile::Program;
use crate::policy::syntax::span::SourceMap;
use crate::policy::testing::{self, Case, Expect, KeyInfo};
use crate::policy::{self, load, CheckOptions, Diagnostic, Severity};

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
    Lint {
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
    },
    /// Format policy files in place.
    Fmt {
        /// Files or directories.
        paths: Vec<PathBuf>,
        /// Change nothing; exit 1 when a file would change.
        #[arg(long)]
        check: bool,
    },
    /// Show how a request would be routed, rule by rule.
    Explain {
        /// An OpenAI chat request body (JSON file, or `-` for stdin).
        #[arg(long)]
        request: PathBuf,
        /// The policy (default: the config's policy).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The deployment config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Evaluate as this key (tier and budget come from the config).
        #[arg(long, conflicts_with = "tier")]
        key: Option<String>,
        /// Evaluate with this tier.
        #[arg(long)]
        tier: Option<String>,
        /// Treat a model as down (repeatable).
        #[arg(long)]
        down: Vec<String>,
        /// A request header, `K=V` (repeatable).
        #[arg(long)]
        header: Vec<String>,
        /// OpenAI's `user` field.
        #[arg(long)]
        user_id: Option<String>,
        /// `budget.remaining`, as `5%` or `$3`.
        #[arg(long)]
        budget_remaining: Option<String>,
        /// Observed latency, `MODEL=DURATION` (repeatable).
        #[arg(long)]
        latency: Vec<String>,
        /// The time, `wed 13:00` or RFC 3339.
        #[arg(long)]
        time: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Run the gateway.
    Serve {
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
    },
    /// Run the policy's test cases (`*.tests.yaml` beside each policy).
    Test {
        /// A directory of policies (default: the config's policy directory, else `rules/`).
        dir: Option<PathBuf>,
        /// The deployment config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// List the rules and targets that no test reaches.
        #[arg(long)]
        coverage: bool,
    },
    /// Replay a request log through a policy (and a baseline) and compare the routing and cost.
    Simulate {
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
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Lint { paths, config, format, deny_warnings, costs } => {
            lint(&paths, config.as_deref(), format, deny_warnings, costs)
        }
        Command::Fmt { paths, check } => fmt(&paths, check),
        Command::Explain {
            request,
            policy,
            config,
            key,
            tier,
            down,
            header,
            user_id,
            budget_remaining,
            latency,
            time,
            format,
        } => {
            let case = ExplainArgs { key, tier, down, header, user_id, budget_remaining, latency, time };
            explain(&request, policy.as_deref(), config.as_deref(), case, format)
        }
        Command::Test { dir, config, coverage } => test(dir.as_deref(), config.as_deref(), coverage),
        Command::Serve { config, listen, log_format, busy_poll } => serve(&config, listen, log_format, busy_poll),
        Command::Simulate { traffic, policy, baseline, config, format } => {
            simulate(&traffic, &policy, baseline.as_deref(), config.as_deref(), format)
        }
    }
}

fn simulate(traffic: &Path, policy: &Path, baseline: Option<&Path>, config: Option<&Path>, format: Format) -> Exit {
    let loaded = match load_config(config) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let catalog = loaded.as_ref().map(Loaded::catalog);
    if catalog.is_none() {
        eprintln!("warning: no config (give --config): models have no prices, so estimated costs are 0");
    }
    let new = match build(policy, catalog.as_ref()) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let old = match baseline.map(|b| build(b, catalog.as_ref())).transpose() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let file = match std::fs::File::open(traffic) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", traffic.display());
            return Exit::CannotRun;
        }
    };
    let size = file.metadata().map_or(0, |m| m.len());
    // A progress bar on long logs (drawn on stderr, and only when it is a terminal).
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:10} {bar:40} {percent:>3}% {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if size < 4 * 1024 * 1024 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message("reading");
    let read = crate::simulate::read(std::io::BufReader::new(file), |b| bar.set_position(b));
    let t = match read {
        Ok(t) => t,
        Err(e) => {
            bar.finish_and_clear();
            eprintln!("error: cannot read {}: {e}", traffic.display());
            return Exit::CannotRun;
        }
    };
    let n = t.entries.len() as u64;
    let mut columns = vec![crate::simulate::recorded(&t.entries)];
    let runs: Vec<(&Path, &Program)> = baseline.zip(old.as_ref()).into_iter().chain([(policy, &new)]).collect();
    for (path, program) in runs {
        bar.set_length(n);
        bar.set_position(0);
        bar.set_message(path.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned()));
        let label = path.display().to_string();
        columns.push(crate::simulate::replay(&label, program, &t.entries, || bar.inc(1)));
    }
    bar.finish_and_clear();
    match format {
        Format::Json => {
            let out = serde_json::json!({"columns": columns, "skipped_lines": t.skipped});
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Human => print!("{}", crate::simulate::render(&columns, t.skipped.len())),
    }
    Exit::Ok
}

/// `--busy-poll`: a duration in microseconds (`500us`) or as the config writes them (`1ms`).
fn busy_window(s: &str) -> Result<std::time::Duration, String> {
    let d = match s.trim().strip_suffix("us") {
        Some(us) => us.trim().parse::<u64>().ok().map(std::time::Duration::from_micros),
        None => crate::util::duration::parse_ms(s).map(std::time::Duration::from_millis),
    };
    d.filter(|d| !d.is_zero()).ok_or_else(|| format!("`{s}` is not a duration (try `500us` or `1ms`)"))
}

fn serve(
    config: &Path,
    listen: Option<String>,
    log_format: Option<Format>,
    busy_poll: Option<std::time::Duration>,
) -> Exit {
    let from_config = || config::load(config).ok().and_then(|l| l.config.log.format).filter(|f| f == "json");
    let log_format = log_format.unwrap_or(if from_config().is_some() { Format::Json } else { Format::Human });
    // INVARIANT: the default level never logs keys or prompt text; request bodies are only ever
    // logged at `trace`, which must be asked for.
    let filter = tracing_subscriber::EnvFilter::try_from_env("YARDMASTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if log_format == Format::Json {
        builder.json().init();
    } else {
        builder.init();
    }
    // `YARDMASTER_WORKERS` sets the number of runtime threads (default: one per available core).
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = std::env::var("YARDMASTER_WORKERS").ok().and_then(|n| n.parse::<usize>().ok()).filter(|n| *n > 0);
    let mut rt = if workers.unwrap_or(cores) == 1 {
        // One core: a single-threaded runtime avoids waking other threads on every request.
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let Some(n) = workers.filter(|n| *n > 1) {
        rt.worker_threads(n);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return Exit::CannotRun;
        }
    };
    match rt.block_on(crate::gateway::serve(config, listen, busy_poll)) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::CannotRun
        }
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

fn print_diagnostics(diags: &[Diagnostic], sources: &SourceMap, format: Format) {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if format == Format::Human {
        for d in diags {
            print!("{}", d.render(sources, 100, color));
            println!();
        }
    }
}

fn lint(paths: &[PathBuf], config: Option<&Path>, format: Format, deny_warnings: bool, costs: bool) -> Exit {
    let loaded = match load_config(config) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let catalog = loaded.as_ref().map(Loaded::catalog);
    let paths: Vec<PathBuf> = if paths.is_empty() {
        match loaded.as_ref().and_then(Loaded::policy_path) {
            Some(p) => vec![p],
            None => {
                eprintln!("error: give a policy file or directory, or a config with `policy:`");
                return Exit::CannotRun;
            }
        }
    } else {
        paths.to_vec()
    };
    let entries = match expand(&paths) {
        Ok(e) => e,
        Err(e) => return e,
    };
    if catalog.is_none() && format == Format::Human {
        eprintln!("note: no config (./yardmaster.yaml or --config), so model names are not checked against a catalog");
    }
    let mut json = Vec::new();
    let (mut errors, mut warnings) = (0, 0);
    let mut cannot_run = false;
    for entry in &entries {
        let source = load::load(entry, &load::Fs);
        let outcome = policy::check(source, catalog.as_ref(), CheckOptions { costs });
        for d in &outcome.diagnostics {
            match d.severity() {
                Severity::Error => errors += 1,
                Severity::Warning => warnings += 1,
                Severity::Advice => {}
            }
            if d.code == Code::UnreadableFile && outcome.sources.files().len() <= 1 {
                cannot_run = true;
            }
        }
        print_diagnostics(&outcome.diagnostics, &outcome.sources, format);
        json.extend(outcome.diagnostics.iter().map(|d| d.to_json(&outcome.sources)));
    }
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&json).unwrap_or_else(|_| "[]".into()));
    } else {
        let files = entries.len();
        println!(
            "{} {} checked: {errors} error{}, {warnings} warning{}",
            files,
            if files == 1 { "policy" } else { "policies" },
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" }
        );
    }
    if cannot_run {
        Exit::CannotRun
    } else if errors > 0 || (deny_warnings && warnings > 0) {
        Exit::Findings
    } else {
        Exit::Ok
    }
}

fn route_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Exit> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
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
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    Ok(out)
}

fn fmt(paths: &[PathBuf], check: bool) -> Exit {
    let files = match route_files(paths) {
        Ok(f) => f,
        Err(e) => return e,
    };
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
                if check {
                    println!("would reformat {}", f.display());
                } else if let Err(e) = std::fs::write(f, out) {
                    eprintln!("error: cannot write {}: {e}", f.display());
                    return Exit::CannotRun;
                } else {
                    println!("formatted {}", f.display());
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
    } else if check && changed > 0 {
        Exit::Findings
    } else {
        Exit::Ok
    }
}

/// The facts `explain` can be given.
#[derive(Debug, Default)]
pub struct ExplainArgs {
    key: Option<String>,
    tier: Option<String>,
    down: Vec<String>,
    header: Vec<String>,
    user_id: Option<String>,
    budget_remaining: Option<String>,
    latency: Vec<String>,
    time: Option<String>,
}

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

fn explain(request: &Path, policy: Option<&Path>, config: Option<&Path>, args: ExplainArgs, format: Format) -> Exit {
    let loaded = match load_config(config) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let entry = match policy.map(Path::to_path_buf).or_else(|| loaded.as_ref().and_then(Loaded::policy_path)) {
        Some(p) => p,
        None => {
            eprintln!("error: give --policy, or a config with `policy:`");
            return Exit::CannotRun;
        }
    };
    let body = if request == Path::new("-") {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s);
        s
    } else {
        match std::fs::read_to_string(request) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", request.display());
                return Exit::CannotRun;
            }
        }
    };
    let body: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {} is not JSON: {e}", request.display());
            return Exit::CannotRun;
        }
    };
    let catalog = loaded.as_ref().map(Loaded::catalog);
    let program = match build(&entry, catalog.as_ref()) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut headers = std::collections::BTreeMap::new();
    for h in &args.header {
        let Some((k, v)) = h.split_once('=') else {
            eprintln!("error: --header takes K=V, not `{h}`");
            return Exit::CannotRun;
        };
        headers.insert(k.to_string(), v.to_string());
    }
    let mut latency = std::collections::BTreeMap::new();
    for l in &args.latency {
        let Some((k, v)) = l.split_once('=') else {
            eprintln!("error: --latency takes MODEL=DURATION, not `{l}`");
            return Exit::CannotRun;
        };
        latency.insert(k.to_string(), v.to_string());
    }
    let case = Case {
        name: "explain".into(),
        request: body,
        key: args.key,
        tier: args.tier,
        headers,
        user_id: args.user_id,
        budget_remaining: args.budget_remaining,
        down: args.down,
        latency,
        time: args.time,
        expect: Expect { rule: None, model: None, deny: None },
    };
    let keys = keys_of(loaded.as_ref());
    let inputs = match testing::case_inputs(&program, &case, &keys) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::CannotRun;
        }
    };
    let ctx = inputs.context();
    let req = &inputs.req;
    let trace = program.explain(req, &ctx);
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&trace).unwrap_or_default());
        return Exit::Ok;
    }
    let mut out = String::new();
    out.push_str(&format!("policy {} ({})\n", trace.version, entry.display()));
    out.push_str(&format!(
        "request: {} message{}, {} bytes, model {}\n\n",
        req.messages,
        if req.messages == 1 { "" } else { "s" },
        req.prompt.len(),
        req.model.as_deref().map_or("none".into(), |m| format!("{m:?}"))
    ));
    let width = trace
        .rules
        .iter()
        .flat_map(|r| r.conditions.iter().map(|c| c.condition.chars().count()))
        .max()
        .unwrap_or(10)
        .min(60);
    let mut reached = true;
    for r in &trace.rules {
        let mark = if r.matched {
            "→"
        } else if reached {
            "✗"
        } else {
            "·"
        };
        let tail = if r.matched {
            "  ← matched"
        } else if !reached {
            "  (after the match)"
        } else {
            ""
        };
        let title = if r.name == "default" { "default".to_string() } else { format!("rule {:?}", r.name) };
        out.push_str(&format!("{mark} {title}{tail}\n"));
        for c in &r.conditions {
            let fact = c.fact.as_ref().map(|f| format!("   ({f})")).unwrap_or_default();
            out.push_str(&format!("    {:<width$}  {}{}\n", c.condition, c.value, fact, width = width));
        }
        if r.matched {
            reached = false;
        }
    }
    if !trace.lets.is_empty() {
        out.push_str("\nnamed conditions:\n");
        for l in &trace.lets {
            out.push_str(&format!("    {} = {}\n", l.name, l.value));
        }
    }
    out.push_str(&format!("\nplan for {:?}:\n", trace.rule));
    if trace.plan.is_empty() {
        out.push_str("    (no target)\n");
    }
    for (i, s) in trace.plan.iter().enumerate() {
        match s.deny {
            Some((status, msg)) => out.push_str(&format!("    {}. deny {status} {msg:?}\n", i + 1)),
            None => out.push_str(&format!("    {}. {:<20} {}\n", i + 1, s.name, s.reason)),
        }
    }
    for n in &trace.notes {
        out.push_str(&format!("\nnote: {n}\n"));
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    Exit::Ok
}

fn test(dir: Option<&Path>, config: Option<&Path>, coverage: bool) -> Exit {
    let loaded = match load_config(config) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let dir = dir
        .map(Path::to_path_buf)
        .or_else(|| loaded.as_ref().and_then(Loaded::policy_path).and_then(|p| p.parent().map(Path::to_path_buf)))
        .unwrap_or_else(|| PathBuf::from("rules"));
    let entries = match expand(std::slice::from_ref(&dir)) {
        Ok(e) => e,
        Err(e) => return e,
    };
    let catalog = loaded.as_ref().map(Loaded::catalog);
    let keys = keys_of(loaded.as_ref());
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut any = false;
    for entry in &entries {
        let tests = tests_path(entry);
        if !tests.exists() {
            continue;
        }
        any = true;
        let program = match build(entry, catalog.as_ref()) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let text = match std::fs::read_to_string(&tests) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", tests.display());
                return Exit::CannotRun;
            }
        };
        let cases = match testing::parse_cases(&text) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {}: {e}", tests.display());
                return Exit::CannotRun;
            }
        };
        println!("running {} test{} from {}", cases.len(), if cases.len() == 1 { "" } else { "s" }, tests.display());
        let results = testing::run(&program, &cases, &keys);
        let mut failures = Vec::new();
        for r in &results {
            match &r.failure {
                None => {
                    passed += 1;
                    println!("test {} ... ok", r.name);
                }
                Some(f) => {
                    failed += 1;
                    println!("test {} ... FAILED", r.name);
                    failures.push((r.name.clone(), f.clone()));
                }
            }
        }
        if !failures.is_empty() {
            println!("\nfailures:");
            for (n, f) in &failures {
                println!("    {n}: {f}");
            }
        }
        if coverage {
            print_coverage(&program, &results);
        }
        println!();
    }
    if !any {
        eprintln!("error: no policy under {} has a .tests.yaml beside it", dir.display());
        return Exit::CannotRun;
    }
    println!("test result: {}. {passed} passed; {failed} failed", if failed == 0 { "ok" } else { "FAILED" });
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        Exit::Findings
    } else {
        Exit::Ok
    }
}

pub use crate::policy::testing::tests_path;

fn print_coverage(program: &Program, results: &[testing::CaseResult]) {
    let mut lines = Vec::new();
    for (i, r) in program.checked.rules.iter().enumerate() {
        let cases: Vec<&testing::CaseResult> = results.iter().filter(|c| c.rule == Some(i)).collect();
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
        println!("\ncoverage: every rule and target is reached by a test");
    } else {
        println!("\ncoverage: not reached by any test:");
        for l in lines {
            println!("{l}");
        }
    }
}
