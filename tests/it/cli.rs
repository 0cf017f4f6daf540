//! The command line, run as a user runs it: exit codes, output formats and files touched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::path::Path;
use std::process::Command;

fn ym(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_yardmaster"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const QUICKSTART: &str = "examples/quickstart.yaml";

#[test]
fn lint_exit_codes() {
    let (code, out, _) = ym(&["lint", "rules/", "--config", QUICKSTART]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 errors, 0 warnings"), "{out}");
    let (code, out, _) = ym(&["lint", "tests/lint/E0201_unknown_model.route", "--config", "tests/lint/catalog.yaml"]);
    assert_eq!(code, 1);
    assert!(out.contains("E0201") && out.contains("did you mean `claude-sonnet`?"), "{out}");
    // Warnings pass, unless --deny-warnings.
    let (code, _, _) = ym(&["lint", "tests/lint/W0104_always_true.route", "--config", "tests/lint/catalog.yaml"]);
    assert_eq!(code, 0);
    let (code, _, _) =
        ym(&["lint", "tests/lint/W0104_always_true.route", "--config", "tests/lint/catalog.yaml", "--deny-warnings"]);
    assert_eq!(code, 1);
    // A missing file or a broken config cannot run.
    assert_eq!(ym(&["lint", "no/such.route"]).0, 2);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listen: x\nmodels:\n  m: { provider: p, colour: red }\n").unwrap();
    let (code, _, err) = ym(&["lint", "rules/", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.yaml:3:") && err.contains("colour"), "{err}");
}

#[test]
fn lint_json_is_a_flat_array() {
    let (code, out, _) = ym(&[
        "lint",
        "tests/lint/E0301_type_mismatch.route",
        "--config",
        "tests/lint/catalog.yaml",
        "--format",
        "json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first = &v.as_array().unwrap()[0];
    assert_eq!(first["code"], "E0301");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["file"], "tests/lint/E0301_type_mismatch.route");
    assert_eq!((first["line"].as_u64(), first["column"].as_u64()), (Some(2), Some(8)));
    assert!(first["help"].as_str().unwrap().contains("quote it"));
}

#[test]
fn lint_costs() {
    let (code, out, _) = ym(&["lint", "rules/", "--config", QUICKSTART, "--costs"]);
    assert_eq!(code, 0);
    assert!(out.contains("A0101") && out.contains("costs at most $"), "{out}");
}

#[test]
fn fmt_check_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.route");
    std::fs::write(&f, "# keep me\ndefault {   then gpt-4o-mini->claude-haiku   # and me\n}\n").unwrap();
    let path = f.to_str().unwrap();
    assert_eq!(ym(&["fmt", "--check", path]).0, 1);
    assert_eq!(ym(&["fmt", path]).0, 0);
    let text = std::fs::read_to_string(&f).unwrap();
    assert_eq!(text, "# keep me\ndefault {\n  then gpt-4o-mini -> claude-haiku  # and me\n}\n");
    assert_eq!(ym(&["fmt", "--check", path]).0, 0);
}

#[test]
fn shipped_policies_are_formatted() {
    for dir in ["rules", "examples", "tests/lint/ok"] {
        let (code, out, err) = ym(&["fmt", "--check", dir]);
        assert_eq!(code, 0, "{dir}: {out}{err}");
    }
}

#[test]
fn test_command_passes_on_the_shipped_rules() {
    let (code, out, _) = ym(&["test", "rules/", "--config", QUICKSTART, "--coverage"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 failed"), "{out}");
    assert!(out.contains("coverage"), "{out}");
}

#[test]
fn test_command_fails_on_a_wrong_expectation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.route"),
        "rule \"premium\" { when user.tier == \"premium\" then gpt-4o }\ndefault { then gpt-4o-mini }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.tests.yaml"),
        "- name: premium\n  request: { model: auto, messages: [{ role: user, content: hi }] }\n  tier: premium\n  expect: { rule: premium, model: claude-sonnet }\n",
    )
    .unwrap();
    let (code, out, _) = ym(&["test", dir.path().to_str().unwrap(), "--config", QUICKSTART]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("expected model `claude-sonnet`, got `gpt-4o`"), "{out}");
}

#[test]
fn explain_json_matches_the_spec_shape() {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.json");
    std::fs::write(
        &req,
        r#"{"model": "auto", "messages": [{"role": "user", "content": "Traceback (most recent call last)"}]}"#,
    )
    .unwrap();
    let (code, out, err) = ym(&[
        "explain",
        "--request",
        req.to_str().unwrap(),
        "--config",
        QUICKSTART,
        "--down",
        "codestral",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rule"], "code");
    let rules = v["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 9);
    assert!(rules
        .iter()
        .all(|r| r.get("name").is_some() && r.get("matched").is_some() && r.get("conditions").is_some()));
    let plan = v["plan"].as_array().unwrap();
    assert_eq!(plan[0]["model"], "codestral");
    assert_eq!(plan[0]["taken"], false);
    assert_eq!(plan[1]["model"], "gpt-4o-mini");
    assert_eq!(plan[1]["taken"], true);
    // Every fact can be set from the command line.
    let (code, out, err) = ym(&[
        "explain",
        "--request",
        req.to_str().unwrap(),
        "--config",
        QUICKSTART,
        "--tier",
        "premium",
        "--header",
        "x-team=a",
        "--user-id",
        "u1",
        "--budget-remaining",
        "5%",
        "--latency",
        "gpt-4o=300ms",
        "--time",
        "sat 23:00",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("→ rule \"premium\""), "{out}");
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/main.route").exists());
}
