//! The deployment files under `deploy/` (SPEC §13): every YAML file parses; the Kubernetes
//! manifests hold a Deployment with probes on `/healthz` and `/readyz`, a Service and the policy as
//! a ConfigMap that matches `rules/`; the configs the files ship load and their policy passes its
//! tests; `promtool` accepts the alert rules and their unit tests; the dashboard and the alerts
//! name only metrics that a real gateway's `/metrics` exports; and the Dockerfile builds with the
//! same command as a local release build, and runs as a non-root user.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;

use crate::gateway_support::{config, gateway_custom, sha};
use crate::shared::Redis;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_docs(path: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|d| serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let mut seen = 0;
    let mut stack = vec![root().join("deploy")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                let rel = p.strip_prefix(root()).unwrap().to_str().unwrap().to_string();
                assert!(!yaml_docs(&rel).is_empty(), "{rel} is empty");
                seen += 1;
            }
        }
    }
    assert!(seen >= 9, "found only {seen} YAML files under deploy/");
    let compose = &yaml_docs("deploy/compose.yaml")[0];
    let services: BTreeSet<&str> =
        compose["services"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
    for s in ["gateway", "redis", "prometheus", "grafana"] {
        assert!(services.contains(s), "compose has no `{s}`: {services:?}");
    }
    // Every file compose mounts is in the repository.
    for (name, svc) in compose["services"].as_mapping().unwrap() {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let src = v.as_str().unwrap().split(':').next().unwrap();
            if src.starts_with('.') {
                assert!(root().join("deploy").join(src).exists(), "{name:?} mounts {src}, which does not exist");
            }
        }
    }
}

#[test]
fn the_kubernetes_manifests_probe_health_and_carry_the_policy_as_a_config_map() {
    let docs = yaml_docs("deploy/k8s/yardmaster.yaml");
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap_or_else(|| panic!("no {k}")).clone();
    let deployment = kind("Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(kind("Service")["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
    let cm = kind("ConfigMap");
    assert_eq!(
        cm["data"]["main.route"].as_str().unwrap(),
        read("rules/main.route"),
        "the ConfigMap's policy is rules/main.route"
    );
    assert_eq!(cm["data"]["main.tests.yaml"].as_str().unwrap(), read("rules/main.tests.yaml"));
    let mut ours: serde_yaml::Value = serde_yaml::from_str(&read("deploy/config/yardmaster.yaml")).unwrap();
    ours["policy"] = "main.route".into();
    let theirs: serde_yaml::Value = serde_yaml::from_str(cm["data"]["yardmaster.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(theirs, ours, "the ConfigMap's config is deploy/config/yardmaster.yaml");
    // The args name the file where the ConfigMap is mounted, as a directory (not a subPath, whose
    // files never change: the ConfigMap swap would not reach the gateway).
    let mount = container["volumeMounts"].as_sequence().unwrap().iter().find(|m| m["name"] == "config").unwrap();
    assert!(mount.get("subPath").is_none());
    let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&format!("{}/yardmaster.yaml", mount["mountPath"].as_str().unwrap()).as_str()), "{args:?}");
    assert!(yaml_docs("deploy/k8s/secret.example.yaml")[0]["stringData"]["YARDMASTER_ADMIN_KEY"].is_string());

    // The ConfigMap, written out as the kubelet mounts it, loads.
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in cm["data"].as_mapping().unwrap() {
        std::fs::write(dir.path().join(name.as_str().unwrap()), text.as_str().unwrap()).unwrap();
    }
    loads(&dir.path().join("yardmaster.yaml"));
}

/// The config loads, its policy compiles and its tests pass (`reload.require_tests`).
fn loads(path: &Path) {
    std::env::set_var("YARDMASTER_KEY_DEFAULT", "sk-deploy-test-default");
    std::env::set_var("YARDMASTER_ADMIN_KEY", "sk-deploy-test-admin");
    let loaded = yardmaster::config::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let snap = yardmaster::reload::build(loaded, &reqwest::Client::new())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(snap.keys.len(), 1);
    assert!(snap.admin.is_some());
}

#[test]
fn the_configs_the_deployment_files_ship_load() {
    // The image puts deploy/config/yardmaster.yaml beside rules/, as compose mounts its own.
    for cfg in ["deploy/config/yardmaster.yaml", "deploy/compose/yardmaster.yaml"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(root().join(cfg), dir.path().join("yardmaster.yaml")).unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        for f in ["main.route", "main.tests.yaml"] {
            std::fs::copy(root().join("rules").join(f), dir.path().join("rules").join(f)).unwrap();
        }
        loads(&dir.path().join("yardmaster.yaml"));
    }
    let compose: serde_yaml::Value = serde_yaml::from_str(&read("deploy/compose/yardmaster.yaml")).unwrap();
    assert_eq!(compose["storage"]["redis"]["url_env"], "YARDMASTER_REDIS_URL");
}

fn promtool(args: &[&str]) {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .expect("promtool (Debian's prometheus package) is needed; .ci/run installs it");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_alert_rules_their_unit_tests_and_the_prometheus_config() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
    promtool(&["check", "config", "prometheus.yml"]);
    let alerts = &yaml_docs("deploy/prometheus/alerts.yml")[0];
    let names: BTreeSet<&str> =
        alerts["groups"][0]["rules"].as_sequence().unwrap().iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for a in [
        "YardmasterBudgetNearlySpent",
        "YardmasterBreakerOpen",
        "YardmasterReloadFailed",
        "YardmasterErrorRateHigh",
        "YardmasterRedisDown",
    ] {
        assert!(names.contains(a), "no alert {a}: {names:?}");
    }
}

/// Every `yardmaster_*` metric an expression names, histogram suffixes taken off.
fn metrics_named(expr: &str, into: &mut BTreeSet<String>) {
    let re = regex::Regex::new(r"yardmaster_[a-z_]+").unwrap();
    for m in re.find_iter(expr) {
        let name = m.as_str();
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        into.insert(base.to_string());
    }
}

fn exprs(v: &serde_json::Value, into: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" {
                    metrics_named(v.as_str().unwrap(), into);
                } else {
                    exprs(v, into);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, into)),
        _ => {}
    }
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_metrics_that_metrics_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/yardmaster.json")).unwrap();
    assert_eq!(dashboard["uid"], "yardmaster");
    let mut named = BTreeSet::new();
    exprs(&dashboard, &mut named);
    assert!(named.len() >= 15, "the dashboard names {named:?}");
    let ds = &yaml_docs("deploy/grafana/provisioning/datasources/prometheus.yml")[0];
    assert_eq!(ds["datasources"][0]["uid"], "prometheus", "the dashboard's data source uid");
    let alerts = &yaml_docs("deploy/prometheus/alerts.yml")[0];
    for r in alerts["groups"][0]["rules"].as_sequence().unwrap() {
        metrics_named(r["expr"].as_str().unwrap(), &mut named);
    }

    // A gateway with everything on that a metric depends on: Redis, traces, a budgeted key, and
    // traffic through a rule with a cache.
    let redis = Redis::start();
    let env = redis.env();
    let g = gateway_custom(
        "rule \"faq\" {\n  when header(\"x-test\") == \"faq\"\n  then ok-model\n  cache 1h\n}\ndefault { then ok-model }\n",
        false,
        move |addr| {
            config(addr, "ok").replace(
                "  - { name: plain,",
                &format!("  - {{ name: capped, key_sha256: {}, budget: {{ usd: 5, per: day }} }}\n  - {{ name: plain,", sha("sk-capped")),
            ) + &format!(
                "storage: {{ sqlite: yardmaster.db, redis: {{ url_env: {env}, prefix: \"d:\" }} }}\ntelemetry: {{ otlp: {{ endpoint: \"http://127.0.0.1:9\" }} }}\n"
            )
        },
    )
    .await;
    for test in ["faq", "faq", "none"] {
        let r = g
            .post("/v1/chat/completions", Some("sk-capped"))
            .header("x-test", test)
            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "hello"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let text = g.http.get(format!("{}/metrics", g.url)).send().await.unwrap().text().await.unwrap();
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}\nexported: {exported:?}");
    assert!(text.contains("yardmaster_key_spend_usd{key=\"capped\"}"), "{text}");
    assert!(text.contains("yardmaster_key_budget_usd{key=\"capped\"} 5"));
}

#[test]
fn the_dockerfile_builds_like_a_local_release_build_and_runs_as_a_user() {
    let docker = read("deploy/Dockerfile");
    let runs: Vec<&str> = docker.lines().filter(|l| l.starts_with("RUN ")).collect();
    assert!(runs.iter().any(|r| r.contains("cargo build --release --locked")), "{runs:?}");
    let froms = docker.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(froms, 2, "a build stage and a runtime stage");
    let user = docker.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(!user.starts_with("root") && !user.starts_with("0"), "runs as {user}");
    for l in docker.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let src = l.split_whitespace().nth(1).unwrap();
        if src != "." {
            assert!(root().join(src).exists(), "the Dockerfile copies {src}, which does not exist");
        }
    }
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim_end_matches('/') == "target"), "target/ stays out of the build context");
    let unit = read("deploy/systemd/yardmaster.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/yardmaster serve --config /etc/yardmaster/yardmaster.yaml"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("DynamicUser=yes"), "not as root");
}
