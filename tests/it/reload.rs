//! Hot reload under load: while 5,000 requests run (bounded, about 10 s), the policy file is
//! rewritten 20 times, valid and broken versions alternating. No request fails, every response was
//! routed by one complete policy (its rule belongs to the version in its header), and the broken
//! versions never take effect.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gateway_support::{gateway_with, header, msg};
use sha2::Digest;

fn valid(k: usize) -> String {
    format!("rule \"other-{k}\" {{\n  when header(\"x-none\") == \"zz\"\n  then code-model\n}}\n\nrule \"hit-{k}\" {{\n  when user.tier == \"premium\"\n  then premium-model\n}}\n\ndefault {{\n  then ok-model\n}}\n")
}

fn broken(k: usize) -> String {
    format!("rule \"broken-{k}\" {{\n  when user.tier ==\n  then premium-model\n}}\n")
}

fn version(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))[..12].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_never_serves_half_a_policy() {
    let g = Arc::new(gateway_with("ok", true, &valid(0)).await);
    let mut versions: HashMap<String, usize> = HashMap::new();
    versions.insert(version(&valid(0)), 0);
    let mut broken_versions = Vec::new();
    for k in 1..=10 {
        versions.insert(version(&valid(k)), k);
        broken_versions.push(version(&broken(k)));
    }
    let sent = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(15);
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (g, sent) = (g.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                // Paced: request n starts 2 ms after request n-1, so 5,000 spread over 10 s.
                let n = sent.fetch_add(1, Ordering::SeqCst);
                if n >= 5_000 || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep_until((start + Duration::from_millis(2 * n as u64)).into()).await;
                let r = g.chat(msg("hi"), "sk-team-a", None).await;
                seen.push((r.status().as_u16(), header(&r, "x-yardmaster-policy"), header(&r, "x-yardmaster-rule")));
            }
            seen
        }));
    }
    let path = g.dir.path().join("main.route");
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(450)).await;
        let k = i / 2 + 1;
        let text = if i % 2 == 0 { broken(k) } else { valid(k) };
        std::fs::write(&path, text).unwrap();
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    assert!(all.len() >= 4_000, "only {} requests ran", all.len());
    let mut seen_versions = std::collections::HashSet::new();
    for (status, ver, rule) in &all {
        assert_eq!(*status, 200, "a request failed during reloads");
        assert!(!broken_versions.contains(ver), "a broken policy took effect: {ver}");
        let k = versions.get(ver).unwrap_or_else(|| panic!("unknown version {ver}"));
        assert_eq!(rule, &format!("hit-{k}"), "version {ver} answered with a rule of another policy");
        seen_versions.insert(ver.clone());
    }
    assert!(seen_versions.len() >= 5, "too few reloads took effect: {}", seen_versions.len());
    // The last write was valid policy 10; it is live, and failed reloads were counted.
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A new connection: the pooled ones have been idle past the tests' 500 ms idle timeout, and
    // one the gateway is closing just then would fail for a reason this test is not about.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth("sk-team-a")
        .json(&msg("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-yardmaster-policy"), version(&valid(10)));
    let failed = g.running.state.reloader.reloads_failed.load(Ordering::Relaxed);
    assert!(failed >= 5, "broken versions were not all seen and rejected: {failed}");
    eprintln!(
        "{} requests, {} policy versions served, {failed} broken reloads rejected",
        all.len(),
        seen_versions.len()
    );
}

/// Kubernetes mounts a ConfigMap as symlinks into a `..data` directory link, and updates it by
/// swapping that link: no event names the policy file itself. The reload must still happen, while
/// the ledger's constant writes beside the config do not count as changes.
#[cfg(unix)]
#[tokio::test]
async fn a_configmap_style_symlink_swap_reloads() {
    use std::os::unix::fs::symlink;
    let (addr, _up) = crate::gateway_support::upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(d.join("..v1/main.route"), valid(1)).unwrap();
    symlink("..v1", d.join("..data")).unwrap();
    symlink("..data/main.route", d.join("main.route")).unwrap();
    std::fs::write(d.join("yardmaster.yaml"), crate::gateway_support::config(addr, "ok")).unwrap();
    std::env::set_var("YM_TEST_UPSTREAM_KEY", "sk-upstream-SECRET-7f3a");
    let running = crate::gateway_support::start_in(d, true).await;
    let url = format!("http://{}/v1/chat/completions", running.addr);
    let http = reqwest::Client::new();
    let ask = || http.post(&url).bearer_auth("sk-team-a").json(&msg("hi")).send();
    assert_eq!(header(&ask().await.unwrap(), "x-yardmaster-rule"), "hit-1");
    // The swap: a new directory, a new link, renamed over `..data` (atomic, as the kubelet does).
    std::fs::create_dir(d.join("..v2")).unwrap();
    std::fs::write(d.join("..v2/main.route"), valid(2)).unwrap();
    symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rule = header(&ask().await.unwrap(), "x-yardmaster-rule");
        if rule == "hit-2" {
            break;
        }
        assert!(Instant::now() < deadline, "the swap was not picked up (still {rule})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await;
}

#[test]
fn at_trace_level_the_watcher_ignores_the_servers_own_log_file_beside_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("yardmaster.yaml"),
        "listen: 127.0.0.1:0\npolicy: main.route\nproviders:\n  m: { kind: mock }\nmodels:\n  small: { provider: m }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("main.route"), "default { then small }\n").unwrap();
    let log = dir.path().join("yardmaster.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_yardmaster"))
        .args(["serve", "--config"])
        .arg(dir.path().join("yardmaster.yaml"))
        .env("YARDMASTER_LOG", "trace")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let size = || std::fs::metadata(&log).unwrap().len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap().contains("yardmaster is listening") {
        assert!(std::time::Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = size();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let grown = size() - before;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(grown < 64 * 1024, "the log grew {grown} bytes in 2 s with nothing to do");
    assert!(!text.contains("watcher handled a change"), "a log write was taken for a change");
}
