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
fn what_a_newcomer_runs_into_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    // A policy that is not UTF-8 is a finding (exit 1, "1 error"); a file that is not there
    // cannot run (exit 2).
    std::fs::write(path("bin.route"), b"default { then \xff }\n").unwrap();
    let (code, out, _) = ym(&["lint", &path("bin.route")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not valid UTF-8") && out.contains("1 error"), "{out}");
    assert_eq!(ym(&["lint", &path("missing.route")]).0, 2);
    // Junk that nests deep further down gets its first syntax error.
    std::fs::write(path("junk.route"), format!("rule \"a\" {{ when prompt ==== 3 then x }}\n{}", "(".repeat(100)))
        .unwrap();
    let (code, out, _) = ym(&["lint", &path("junk.route")]);
    assert_eq!(code, 1);
    assert!(out.contains("E0101") && !out.contains("nested too deeply"), "{out}");
    // A misspelt pick is an unknown function, with the pick it meant.
    std::fs::write(path("pick.route"), "default { then cheapset(tagged(\"cheap\")) }\n").unwrap();
    let (code, out, _) = ym(&["lint", &path("pick.route")]);
    assert_eq!(code, 1);
    assert!(out.contains("unknown function `cheapset`") && out.contains("did you mean `cheapest`?"), "{out}");
    // `test` without a config says what it runs without.
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy("rules/main.route", rules.join("main.route")).unwrap();
    std::fs::copy("rules/main.tests.yaml", rules.join("main.tests.yaml")).unwrap();
    let (_, _, err) = ym(&["test", rules.to_str().unwrap()]);
    assert!(err.contains("without a catalog"), "{err}");
    // `explain --key` with a key the config does not have is an error.
    let req = path("req.json");
    std::fs::write(&req, r#"{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}"#).unwrap();
    let (code, _, err) = ym(&["explain", "--config", QUICKSTART, "--request", &req, "--key", "nobody"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no key named `nobody`"), "{err}");
    // Without a config, `healthy` and tags are unknown, not empty.
    let (code, out, _) = ym(&["lint", "examples/presets/any.route", "examples/cost-aware.route"]);
    assert_eq!(code, 0, "{out}");
    // `lint --config` warns of provider key variables that are unset, as serve would.
    std::fs::write(
        path("keys.yaml"),
        "providers:\n  o: { kind: openai, base_url: \"http://127.0.0.1:9/v1\", api_key_env: YM_TEST_UNSET_VAR_4F2 }\nmodels:\n  gpt-4o-mini: { provider: o }\n",
    )
    .unwrap();
    std::fs::write(path("k.route"), "default { then gpt-4o-mini }\n").unwrap();
    let (_, _, err) = ym(&["lint", &path("k.route"), "--config", &path("keys.yaml")]);
    assert!(err.contains("warning:") && err.contains("$YM_TEST_UNSET_VAR_4F2 is not set"), "{err}");
    // A config with several mistakes names each, with its line.
    std::fs::write(
        path("y.yaml"),
        "listen: localhost\nproviders:\n  p: { kind: mock, fail_rate: 2 }\nmodels:\n  m: { provider: q }\n",
    )
    .unwrap();
    let (code, _, err) = ym(&["lint", "rules/", "--config", &path("y.yaml")]);
    assert_eq!(code, 2);
    for line in [":1:", ":3:", ":5:"] {
        assert!(err.contains(&format!("y.yaml{line}")), "{err}");
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::io::{Read, Write};
    let request = br#"{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}"#;
    let commands: [&[&str]; 3] = [
        &["explain", "--config", QUICKSTART, "--request", "-", "--format", "json"],
        &["lint", "rules/", "tests/lint/", "--config", "tests/lint/catalog.yaml", "--format", "json"],
        &["lint", "tests/lint/", "--config", "tests/lint/catalog.yaml"],
    ];
    for args in commands {
        let mut child = Command::new(env!("CARGO_BIN_EXE_yardmaster"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader closes before the output is written.
        drop(child.stdout.take());
        let _ = child.stdin.take().unwrap().write_all(request);
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = child.wait().unwrap();
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
        assert!(status.code().is_some(), "{args:?}: killed by a signal");
    }
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
    assert_eq!(
        rules.len(),
        14,
        "rules/main.route: the spec's nine, the cached FAQ, the support questions, moderations and the two for Claude's names"
    );
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

/// Out of file descriptors, the accept loop backs off instead of spinning: with `ulimit -n 64`
/// and 200 idle connections, the gateway spends little CPU. (The binary before this fix spent
/// 2.0 s of CPU in these 2 s; 365 such sockets once made real clients time out.)
#[cfg(target_os = "linux")]
#[test]
fn out_of_descriptors_the_accept_loop_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "listen: 127.0.0.1:{port}\npolicy: p.route\nproviders:\n  m: {{ kind: mock }}\nmodels:\n  a: {{ provider: m }}\n\
         storage: {{ ledger: false }}\nlimits: {{ max_connections: 10000 }}\n"
    );
    std::fs::write(dir.path().join("y.yaml"), config).unwrap();
    std::fs::write(dir.path().join("p.route"), "default { then a }\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_yardmaster");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n 64 && exec {bin} serve --config {}", dir.path().join("y.yaml").display()))
        .env("YARDMASTER_LOG", "error")
        .env("YARDMASTER_WORKERS", "1")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the gateway did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut idle = Vec::new();
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    for _ in 0..200 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&sock, std::time::Duration::from_millis(200)) {
            idle.push(s);
        }
    }
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        let f: Vec<&str> = after.split_whitespace().collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let before = cpu(child.id());
    std::thread::sleep(std::time::Duration::from_secs(2));
    let spent = cpu(child.id()) - before;
    let _ = child.kill();
    let _ = child.wait();
    assert!(spent < 0.5, "the gateway spent {spent} s of CPU in 2 s with its descriptors exhausted");
}

/// SIGTERM with 50 streams open: the gateway stops taking connections, lets every stream finish
/// (each ends with `[DONE]`), writes a ledger row for each and exits 0.
#[cfg(target_os = "linux")]
#[test]
fn sigterm_drains_and_settles_every_open_stream() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "listen: 127.0.0.1:{port}\npolicy: p.route\nproviders:\n  m: {{ kind: mock, tokens_per_second: 20 }}\n\
         models:\n  a: {{ provider: m, price: {{ input: 1, output: 1 }} }}\n"
    );
    std::fs::write(dir.path().join("y.yaml"), config).unwrap();
    std::fs::write(dir.path().join("p.route"), "default { then a }\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_yardmaster"))
        .args(["serve", "--config"])
        .arg(dir.path().join("y.yaml"))
        .env("YARDMASTER_LOG", "error")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ids, ends) = rt.block_on(async {
        let http = reqwest::Client::new();
        let started = std::time::Instant::now();
        while http.get(format!("{url}/healthz")).send().await.is_err() {
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "the gateway did not start");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let body = serde_json::json!({"model": "auto", "stream": true, "messages": [{"role": "user", "content": "x"}]});
        let mut ids = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..50 {
            let r = http.post(format!("{url}/v1/chat/completions")).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            ids.push(r.headers()["x-request-id"].to_str().unwrap().to_string());
            readers.push(tokio::spawn(async move { r.text().await.unwrap() }));
        }
        let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(term.success());
        let mut ends = Vec::new();
        for r in readers {
            ends.push(r.await.unwrap());
        }
        (ids, ends)
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    for text in &ends {
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    }
    let rows = yardmaster::accounting::ledger::read_all(&dir.path().join("yardmaster.db")).unwrap();
    for id in &ids {
        let row = rows.iter().find(|r| &r.id == id).unwrap_or_else(|| panic!("no ledger row for {id}"));
        assert_eq!(row.status, 200, "{row:?}");
        assert!(row.output_tokens > 0, "{row:?}");
    }
    assert_eq!(rows.len(), 50);
}

#[test]
fn serve_listens_on_a_host_name_and_logs_without_colour_to_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "listen: localhost:{port}\npolicy: p.route\nproviders:\n  m: {{ kind: mock }}\nmodels:\n  a: {{ provider: m }}\n"
    );
    std::fs::write(dir.path().join("y.yaml"), config).unwrap();
    std::fs::write(dir.path().join("p.route"), "default { then a }\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_yardmaster"))
        .args(["serve", "--config"])
        .arg(dir.path().join("y.yaml"))
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let ready = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            break out;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the gateway did not start on localhost");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    child.wait().unwrap();
    // The open gateway's warning is there, in plain text.
    assert!(log.contains("WARN") && log.contains("no `keys` are configured"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a piped log: {log:?}");
}

#[test]
fn explain_shows_the_matched_rules_cache() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.route");
    std::fs::write(
        &policy,
        "rule \"support\" {\n  when header(\"x-app\") == \"support\"\n  then claude-haiku\n  cache 24h similar 95% using embed-small\n}\n\ndefault { then gpt-4o-mini\n  cache 1h shared\n}\n",
    )
    .unwrap();
    let req = dir.path().join("r.json");
    std::fs::write(&req, r#"{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}"#).unwrap();
    let p = policy.to_str().unwrap();
    let r = req.to_str().unwrap();
    let (code, out, err) =
        ym(&["explain", "--config", QUICKSTART, "--policy", p, "--request", r, "--header", "x-app=support"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cache: semantic, 86400s, per key, similar 95% using embed-small"), "{out}");
    let (_, out, _) = ym(&["explain", "--config", QUICKSTART, "--policy", p, "--request", r, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["cache"], serde_json::json!({"kind": "exact", "ttl_s": 3600.0, "scope": "tier"}), "{out}");
}

/// The log of a `serve` on a mock catalog (with `extra` in its config) after one chat request
/// with `prompt`, and the request's id.
fn served_log(extra: &str, prompt: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "listen: 127.0.0.1:{port}\npolicy: p.route\nproviders:\n  m: {{ kind: mock, latency: 0ms }}\nmodels:\n  a: {{ provider: m, price: {{ input: 1, output: 2 }} }}\n{extra}"
    );
    std::fs::write(dir.path().join("y.yaml"), config).unwrap();
    std::fs::write(dir.path().join("p.route"), "default { then a }\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_yardmaster"))
        .args(["serve", "--config"])
        .arg(dir.path().join("y.yaml"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let body = serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": prompt}]}).to_string();
    let answer = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let req = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            break out;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the gateway did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let id = answer.lines().find_map(|l| l.strip_prefix("x-request-id: ")).unwrap().trim().to_string();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    child.wait().unwrap();
    (log, id)
}

#[test]
fn each_request_gets_one_access_line_at_info_without_its_prompt_unless_turned_off() {
    let prompt = "PROMPT-TEXT-never-in-the-log";
    let (log, id) = served_log("", prompt);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&id)).collect();
    assert_eq!(lines.len(), 1, "{log}");
    let line = lines[0];
    assert!(line.contains("INFO") && line.contains("yardmaster::access"), "{line}");
    for field in ["door=chat", "rule=default", "model=a", "status=200", "tokens_in=", "cost_usd=", "latency_ms="] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(!log.contains(prompt), "{log}");
    let (log, id) = served_log("log: { access: false }\n", prompt);
    assert!(!log.contains(&id), "{log}");
}

#[test]
fn explain_takes_a_body_of_any_door_and_policy_tests_take_api() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "rule \"agents\" {\n  when request.api == \"messages\"\n  then claude-haiku\n}\n\ndefault {\n  then gpt-4o-mini\n}\n";
    std::fs::write(dir.path().join("p.route"), policy).unwrap();
    let body = r#"{"model": "auto", "max_tokens": 100, "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]}"#;
    std::fs::write(dir.path().join("m.json"), body).unwrap();
    let p = dir.path().join("p.route");
    let m = dir.path().join("m.json");
    let args = |api: &str| {
        let p = p.to_str().unwrap().to_string();
        let m = m.to_str().unwrap().to_string();
        ym(&["explain", "--config", QUICKSTART, "--policy", &p, "--request", &m, "--api", api, "--format", "json"])
    };
    let (code, out, err) = args("messages");
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rule"], "agents", "{v}");
    // As a chat body it is not one (no `messages` list of chat messages with text): a clear error.
    let (code, _, err) = args("responses");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a responses body"), "{err}");
    // A policy test sets the fact with `api:`.
    std::fs::write(
        dir.path().join("p.tests.yaml"),
        "- name: through the Messages door\n  api: messages\n  request: { model: auto, messages: [{ role: user, content: hi }] }\n  expect: { rule: agents, model: claude-haiku }\n- name: through chat\n  request: { model: auto, messages: [{ role: user, content: hi }] }\n  expect: { rule: default, model: gpt-4o-mini }\n",
    )
    .unwrap();
    let (code, out, err) = ym(&["test", dir.path().to_str().unwrap(), "--config", QUICKSTART]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
}
