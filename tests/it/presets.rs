//! Every provider preset under examples/presets/ (and the failover example) loads, builds a
//! gateway snapshot, and lints clean (no errors, no warnings) against its own catalog.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};

use yardmaster::config::ProviderKind;
use yardmaster::providers::Provider;

fn check(config: &Path) -> yardmaster::reload::Snapshot {
    let loaded = yardmaster::config::load(config).unwrap_or_else(|e| panic!("{e}"));
    let catalog = loaded.catalog();
    let entry = loaded.policy_path().unwrap();
    let (program, diags, _) = yardmaster::policy::build(&entry, Some(&catalog));
    assert!(program.is_some(), "{}: the policy does not compile", config.display());
    assert!(diags.is_empty(), "{}: {} diagnostics", config.display(), diags.len());
    yardmaster::reload::load(config, &reqwest::Client::new()).unwrap_or_else(|e| panic!("{}: {e}", config.display()))
}

#[test]
fn every_preset_loads_and_lints_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/presets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["anthropic", "deepseek", "gemini", "groq", "mistral", "ollama", "openai", "openrouter", "together", "vllm"]
    );
    for name in &names {
        let path: PathBuf = dir.join(format!("{name}.yaml"));
        let snap = check(&path);
        let loaded = yardmaster::config::load(&path).unwrap();
        let (pname, p) = loaded.config.providers.first().unwrap();
        let expected = match name.as_str() {
            "anthropic" => ProviderKind::Anthropic,
            "gemini" => ProviderKind::Gemini,
            _ => ProviderKind::Openai,
        };
        assert_eq!(p.kind, expected, "{name}");
        // Local servers need no key, so their provider is ready; the others wait for theirs.
        let ready = !matches!(snap.providers[pname], Provider::Unavailable(_));
        assert_eq!(
            ready,
            p.api_key_env.is_none() || std::env::var_os(p.api_key_env.as_ref().unwrap()).is_some(),
            "{name}"
        );
    }
}

#[test]
fn the_failover_example_loads_and_lints_clean() {
    let snap = check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/failover.yaml"));
    let kinds: Vec<ProviderKind> = snap.config.config.providers.values().map(|p| p.kind).collect();
    assert_eq!(kinds, [ProviderKind::Openai, ProviderKind::Anthropic, ProviderKind::Gemini]);
}
