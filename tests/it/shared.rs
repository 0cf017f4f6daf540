//! Several instances on one Redis (SPEC §11), each test with a `redis-server` of its own on a free
//! 127.0.0.1 port: budgets and rpm limits hold across two gateways, a cache entry stored through
//! one is a hit on the other, a breaker opened by one is skipped by the other, Redis stopped and
//! started again (fail closed, `on_error: open`, recovery without a restart), and an instance
//! killed with a reservation in flight.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::gateway_support::{config, gateway_custom, header, sha, Gateway};

/// A `redis-server` on 127.0.0.1, stopped on drop.
pub struct Redis {
    child: Option<std::process::Child>,
    port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Redis { child: None, port };
        r.restart();
        r
    }

    /// Starts it (again) on its port, empty.
    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) is needed; .ci/run installs it");
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
    }

    /// Stops it (and everything it held: it keeps nothing on disk).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stalls it (SIGSTOP): connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a stalled server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The environment variable that holds its URL (one per server: tests run side by side).
    pub fn env(&self) -> String {
        let name = format!("YM_TEST_REDIS_{}", self.port);
        std::env::set_var(&name, format!("redis://127.0.0.1:{}/", self.port));
        name
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub const POLICY: &str = r#"
rule "faq" {
  when header("x-test") == "faq"
  then ok-model
  cache 1h
}

rule "breaker" {
  when header("x-test") == "breaker"
  then fail500 -> ok-model
}

rule "stall" {
  when header("x-test") == "stall"
  then stall-priced
}

default { then ok-model }
"#;

pub fn shared_config(addr: std::net::SocketAddr, env: &str, on_error: &str) -> String {
    config(addr, "ok")
        .replace(
            "models:\n",
            "models:\n  stall-priced: { provider: up, id: stream-stall, price: { input: 1, output: 2 }, context: 100000 }\n",
        )
        .replace(
            "  - { name: plain,",
            &format!(
                "  - {{ name: capped, key_sha256: {}, budget: {{ usd: 0.0005, per: day }} }}\n  - {{ name: limited, key_sha256: {}, limits: {{ rpm: 5 }} }}\n  - {{ name: plain,",
                sha("sk-capped"),
                sha("sk-limited")
            ),
        )
        + &format!("storage: {{ sqlite: yardmaster.db, redis: {{ url_env: {env}, on_error: {on_error}, prefix: \"t:\" }} }}\n")
}

pub async fn instance(redis: &Redis, on_error: &str) -> Gateway {
    let env = redis.env();
    let on_error = on_error.to_string();
    gateway_custom(POLICY, false, move |addr| shared_config(addr, &env, &on_error)).await
}

pub fn ask(text: &str) -> Value {
    json!({"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": text}]})
}

pub async fn send(g: &Gateway, key: &str, rule: &str, text: &str) -> reqwest::Response {
    g.post("/v1/chat/completions", Some(key)).header("x-test", rule).json(&ask(text)).send().await.unwrap()
}

pub async fn key_info(g: &Gateway, key: &str) -> Value {
    g.http.get(format!("{}/v1/key", g.url)).bearer_auth(key).send().await.unwrap().json().await.unwrap()
}

pub fn micros(usd: &Value) -> u64 {
    (usd.as_f64().unwrap() * 1e6).round() as u64
}

#[tokio::test]
async fn two_instances_never_overspend_a_budget_and_settle_exactly_what_was_spent() {
    let redis = Redis::start();
    let (a, b) = (instance(&redis, "closed").await, instance(&redis, "closed").await);
    let calls = (0..60).map(|i| {
        let g = if i % 2 == 0 { &a } else { &b };
        async move {
            let r = send(g, "sk-capped", "none", &format!("question {i}")).await;
            let status = r.status().as_u16();
            let cost = if status == 200 {
                micros(&json!(header(&r, "x-yardmaster-cost-usd").parse::<f64>().unwrap()))
            } else {
                0
            };
            (status, cost)
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused = results.iter().filter(|(s, _)| *s == 402).count();
    assert_eq!(ok + refused, 60, "{results:?}");
    assert!(ok > 0 && refused > 0, "the budget admits some and refuses the rest: {ok} and {refused}");
    let spent: u64 = results.iter().map(|(_, c)| c).sum();
    assert!(spent <= 500, "admitted {spent} micro-USD against a budget of 500");
    // Both instances show the shared spend, and it is the sum of the real costs, exactly.
    for g in [&a, &b] {
        yardmaster::state::StateStore::flush(&*g.running.state.state, Duration::from_secs(2)).await;
    }
    for g in [&a, &b] {
        let k = key_info(g, "sk-capped").await;
        assert_eq!(micros(&k["spend_usd"]), spent, "{k}");
        assert_eq!(micros(&k["reserved_usd"]), 0, "{k}");
    }
    // And the two ledgers together hold the same rows and costs.
    let mut ledgered = 0;
    for g in [a, b] {
        let db = g.dir.path().join("yardmaster.db");
        g.running.shutdown().await;
        let rows = yardmaster::accounting::ledger::read_all(&db).unwrap();
        ledgered += rows.iter().filter(|r| r.key.as_deref() == Some("capped")).map(|r| r.cost_micros).sum::<u64>();
    }
    assert_eq!(ledgered, spent);
}

#[tokio::test]
async fn an_rpm_limit_holds_across_instances_and_cache_entries_and_breakers_are_shared() {
    let redis = Redis::start();
    let (a, b) = (instance(&redis, "closed").await, instance(&redis, "closed").await);
    let mut statuses = Vec::new();
    for i in 0..10 {
        let g = if i % 2 == 0 { &a } else { &b };
        let r = send(g, "sk-limited", "none", &format!("q{i}")).await;
        if r.status() == 429 {
            assert!(header(&r, "retry-after").parse::<u64>().unwrap() >= 1);
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 5, "{statuses:?}");

    // An exact cache entry stored through one instance is a hit on the other.
    let miss = send(&a, "sk-team-a", "faq", "What are your opening hours?").await;
    assert_eq!(header(&miss, "x-yardmaster-cache"), "miss");
    let answer: Value = miss.json().await.unwrap();
    yardmaster::state::StateStore::flush(&*a.running.state.state, Duration::from_secs(2)).await;
    let before = b.up.calls("ok");
    let hit = send(&b, "sk-team-a", "faq", "What are your opening hours?").await;
    assert_eq!(header(&hit, "x-yardmaster-cache"), "hit");
    assert_eq!(header(&hit, "x-yardmaster-attempts"), "0");
    let hit: Value = hit.json().await.unwrap();
    assert_eq!(hit["choices"], answer["choices"]);
    assert_eq!(b.up.calls("ok"), before, "the hit did not reach b's upstream");

    // Five failures open the breaker on a; b skips the model from then on.
    for _ in 0..5 {
        assert_eq!(send(&a, "sk-team-a", "breaker", "x").await.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = send(&b, "sk-team-a", "breaker", "x").await;
        if header(&r, "x-yardmaster-attempts") == "1" && header(&r, "x-yardmaster-model") == "ok-model" {
            break;
        }
        assert!(Instant::now() < deadline, "b still calls the model a saw fail");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = b.http.get(format!("{}/metrics", b.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("yardmaster_redis_up 1"), "{metrics}");
}

#[tokio::test]
async fn without_redis_budgeted_keys_fail_closed_or_with_open_are_served_and_both_recover() {
    let mut redis = Redis::start();
    let (closed, open) = (instance(&redis, "closed").await, instance(&redis, "open").await);
    assert_eq!(send(&closed, "sk-capped", "none", "before").await.status(), 200);
    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = send(&closed, "sk-capped", "none", "during").await;
        if r.status() == 503 {
            assert_eq!(header(&r, "x-should-retry"), "true");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "state_unavailable", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still {} with redis stopped", r.status());
    }
    // A key with neither a budget nor a limit is always served.
    assert_eq!(send(&closed, "sk-plain", "none", "during").await.status(), 200);
    // `on_error: open` serves budgeted keys on local state.
    let served = send(&open, "sk-capped", "none", "during, open").await;
    assert_eq!(served.status(), 200);
    let cost_while_down = micros(&json!(header(&served, "x-yardmaster-cost-usd").parse::<f64>().unwrap()));
    let readyz = |g: &Gateway| {
        let url = format!("{}/readyz", g.url);
        let http = g.http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while readyz(&closed).await != 503 {
        assert!(Instant::now() < deadline, "readyz stays ready with redis down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(readyz(&open).await, 200, "on_error: open stays ready");
    let metrics = closed.http.get(format!("{}/metrics", closed.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("yardmaster_redis_up 0"), "{metrics}");
    let errors: u64 =
        metrics.lines().find_map(|l| l.strip_prefix("yardmaster_redis_errors_total ")).unwrap().parse().unwrap();
    assert!(errors > 0);

    // Redis comes back: both recover without a restart, and the open instance's settlement made
    // during the outage reaches the shared spend.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if send(&closed, "sk-capped", "none", "after").await.status() == 200 && readyz(&closed).await == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the closed instance did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    yardmaster::state::StateStore::flush(&*open.running.state.state, Duration::from_secs(5)).await;
    yardmaster::state::StateStore::flush(&*closed.running.state.state, Duration::from_secs(5)).await;
    // The restarted Redis kept nothing (no persistence here): what it has is what was settled
    // after it came back, the outage's request among it.
    let spend = micros(&key_info(&open, "sk-capped").await["spend_usd"]);
    assert!(spend >= cost_while_down && cost_while_down > 0, "{spend} against {cost_while_down}");
}

#[tokio::test]
async fn a_killed_instances_reservation_frees_within_15_seconds() {
    let redis = Redis::start();
    let b = instance(&redis, "closed").await;
    // Instance a is the real binary, on b's config in a directory of its own, killed with -9.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(b.dir.path().join("yardmaster.yaml")).unwrap();
    std::fs::write(dir.path().join("yardmaster.yaml"), text).unwrap();
    std::fs::write(dir.path().join("main.route"), POLICY).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_yardmaster"))
        .args(["serve", "--config"])
        .arg(dir.path().join("yardmaster.yaml"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let addr = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.split("addr=").nth(1).map(|a| a.split_whitespace().next().unwrap_or("").to_string()));
        // Keep reading, so that the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        addr
    })
    .await
    .unwrap()
    .expect("the gateway says where it listens");
    let mut body = ask("hold on");
    body["stream"] = json!(true);
    let mut stream = b
        .http
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth("sk-capped")
        .header("x-test", "stall")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let _ = stream.chunk().await.unwrap();
    let held = micros(&key_info(&b, "sk-capped").await["reserved_usd"]);
    assert!(held > 0, "the stalled stream holds its reservation");
    let killed = Instant::now();
    child.kill().unwrap();
    let _ = child.wait();
    loop {
        let k = key_info(&b, "sk-capped").await;
        if micros(&k["reserved_usd"]) == 0 {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(17), "still reserved after {:?}: {k}", killed.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(killed.elapsed() > Duration::from_secs(5), "freed before its lifetime could end: the renewals worked?");
}

#[tokio::test]
async fn a_key_made_on_one_instance_works_on_the_other_and_its_revocation_holds_there_within_a_second() {
    let redis = Redis::start();
    let (a, b) = (instance(&redis, "closed").await, instance(&redis, "closed").await);
    let made: Value = a
        .post("/admin/keys", Some("sk-admin"))
        .json(&json!({"name": "roaming", "budget": {"usd": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (secret, id) = (made["key"].as_str().unwrap().to_string(), made["id"].as_str().unwrap().to_string());
    let status = |g: &Gateway| {
        let r = g.post("/v1/chat/completions", Some(&secret)).json(&ask("hello")).send();
        async move { r.await.unwrap().status().as_u16() }
    };
    let started = Instant::now();
    while status(&b).await != 200 {
        assert!(started.elapsed() < Duration::from_secs(1), "the key reached the other instance within a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = b.http.get(format!("{}/admin/keys", b.url)).bearer_auth("sk-admin").send().await.unwrap();
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["stored_in"], "redis");
    let r = a.http.delete(format!("{}/admin/keys/{id}", a.url)).bearer_auth("sk-admin").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let revoked = Instant::now();
    assert_eq!(status(&a).await, 401, "at once on the instance that revoked it");
    while status(&b).await != 401 {
        assert!(revoked.elapsed() < Duration::from_secs(1), "revoked on the other instance within a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
