//! `yardmaster explain`: a request body and the facts around it -> every rule with the value of
//! each condition, the matched rule and its plan (`policy::eval::explain` builds and renders the
//! trace; this file reads the arguments).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{build, keys_of, load_config, try_exit, Exit, Format};
use crate::config::Loaded;
use crate::policy::eval::explain::render;
use crate::policy::testing::{self, Case, Expect};

/// `explain`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A request body (JSON file, or `-` for stdin): OpenAI chat, or the `--api` door's.
    #[arg(long)]
    request: PathBuf,
    /// The door the body is for: `chat` (default), `responses` or `messages`; it is decoded as
    /// that door decodes it, and `request.api` is set.
    #[arg(long, default_value = "chat", value_parser = ["chat", "responses", "messages"])]
    api: String,
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
}

/// The request body, from a file or `-` (stdin).
fn read_request(request: &Path) -> Result<serde_json::Value, Exit> {
    let body = if request == Path::new("-") {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s);
        s
    } else {
        std::fs::read_to_string(request).map_err(|e| {
            eprintln!("error: cannot read {}: {e}", request.display());
            Exit::CannotRun
        })?
    };
    serde_json::from_str(&body).map_err(|e| {
        eprintln!("error: {} is not JSON: {e}", request.display());
        Exit::CannotRun
    })
}

/// `K=V` pairs of a repeatable flag.
fn pairs(flag: &str, shape: &str, values: &[String]) -> Result<BTreeMap<String, String>, Exit> {
    let mut out = BTreeMap::new();
    for v in values {
        let Some((k, val)) = v.split_once('=') else {
            eprintln!("error: --{flag} takes {shape}, not `{v}`");
            return Err(Exit::CannotRun);
        };
        out.insert(k.to_string(), val.to_string());
    }
    Ok(out)
}

/// The arguments as a policy test case (which is what sets every fact).
fn case(args: Args, request: serde_json::Value) -> Result<Case, Exit> {
    let (api, request) = match args.api.as_str() {
        "messages" => (crate::catalog::Api::Messages, crate::gateway::messages::to_chat(request)),
        "responses" => (crate::catalog::Api::Responses, crate::gateway::responses::to_chat(request)),
        _ => (crate::catalog::Api::Chat, Ok(request)),
    };
    let request = request.map_err(|e| {
        eprintln!("error: the request is not a {} body: {}", args.api, e.message);
        Exit::CannotRun
    })?;
    Ok(Case {
        api: Some(api),
        name: "explain".into(),
        request,
        headers: pairs("header", "K=V", &args.header)?,
        latency: pairs("latency", "MODEL=DURATION", &args.latency)?,
        key: args.key,
        tier: args.tier,
        user_id: args.user_id,
        budget_remaining: args.budget_remaining,
        down: args.down,
        time: args.time,
        expect: Expect { rule: None, model: None, deny: None },
    })
}

/// Runs `explain`.
pub fn run(args: Args) -> Exit {
    let loaded = try_exit!(load_config(args.config.as_deref()));
    let Some(entry) = args.policy.clone().or_else(|| loaded.as_ref().and_then(Loaded::policy_path)) else {
        eprintln!("error: give --policy, or a config with `policy:`");
        return Exit::CannotRun;
    };
    let request = try_exit!(read_request(&args.request));
    let catalog = loaded.as_ref().map(Loaded::catalog);
    let program = try_exit!(build(&entry, catalog.as_ref()));
    let format = args.format;
    let keys = keys_of(loaded.as_ref());
    if let Some(name) = &args.key {
        if !keys.iter().any(|k| k.name == *name) {
            let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
            match (loaded.is_some(), crate::util::fuzzy::did_you_mean(name, names.iter().copied())) {
                (false, _) => eprintln!("error: --key `{name}` needs a config with `keys:` (--config)"),
                (true, Some(close)) => {
                    eprintln!("error: the config has no key named `{name}`; did you mean `{close}`?")
                }
                (true, None) if names.is_empty() => {
                    eprintln!("error: the config has no key named `{name}` (it has no `keys:`)")
                }
                (true, None) => {
                    eprintln!("error: the config has no key named `{name}` (its keys: {})", names.join(", "))
                }
            }
            return Exit::CannotRun;
        }
    }
    let case = try_exit!(case(args, request));
    let inputs = match testing::case_inputs(&program, &case, &keys) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::CannotRun;
        }
    };
    let trace = program.explain(&inputs.req, &inputs.context());
    let out = match format {
        Format::Json => serde_json::to_string_pretty(&trace).unwrap_or_default() + "\n",
        Format::Human => render(&trace, &inputs.req, &entry.display().to_string()),
    };
    out!("{out}");
    Exit::Ok
}
