//! The gateway: an axum router served by hyper with header-read and body timeouts, graceful
//! shutdown, and one policy snapshot per request. Only `main` (through `serve`) and the tests
//! use this module.
//!
//! A chat or embeddings request moves through one file per stage (`path` strings them
//! together): its front door (`door`: body -> the internal request), `admit` (key, body,
//! allowlist, limits -> an admitted request), `route` (facts and the policy -> a routing),
//! `crate::dispatch` (the plan's targets -> an answer), `reply` (JSON, and `stream` for SSE), and
//! `settle` (the one place a request ends, from its `record`). `info` and `admin` answer the
//! other endpoints.

mod admin;
mod admit;
pub mod busy;
mod cache;
pub mod conn;
pub mod door;
pub mod edge;
pub mod error;
mod info;
pub mod keys;
pub mod messages;
pub mod metrics;
mod page;
mod path;
pub mod record;
mod reply;
pub mod responses;
mod route;
pub mod settle;
mod stream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::accounting::{ledger, Accounting, Ledger};
use crate::config::Loaded;
use crate::dispatch::Latencies;
use crate::reload::Reloader;
use crate::state::Store;
pub use error::ApiError;

/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may stall while sending its body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle time allowed between two chunks of an upstream stream.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Shared state of the server.
#[derive(Clone)]
pub struct AppState {
    /// The live snapshot and reloads.
    pub reloader: Arc<Reloader>,
    /// Budgets, rate limits and breakers.
    pub state: Arc<Store>,
    /// Latency averages (per instance).
    pub latency: Arc<Latencies>,
    /// Counters.
    pub metrics: Arc<metrics::Metrics>,
    /// The ledger and the request log (kept across reloads).
    pub accounting: Arc<Accounting>,
    /// Set once the listener is up and a policy is loaded.
    pub ready: Arc<AtomicBool>,
    /// Header-read and body timeouts (shorter in tests).
    pub timeouts: Timeouts,
    /// Busy polling, when `serve --busy-poll` asks for it.
    pub busy: Option<Arc<busy::BusyPoll>>,
    /// Open, refused and idle-closed connections.
    pub conns: Arc<conn::ConnStats>,
    /// Raised when a shutdown's drain times out: streams still running end with an error event.
    pub cut: tokio::sync::watch::Receiver<bool>,
    /// The response cache (sized at start: `cache.max_bytes` needs a restart).
    pub cache: Arc<crate::cache::ResponseCache>,
    /// The trace exporter, with `telemetry.otlp` (started once: a change needs a restart).
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// Gateway keys made at run time (`/admin/keys`).
    pub keys: Arc<keys::KeyRing>,
    /// The address the gateway listens on (SPEC §9's open-gateway rule depends on it).
    pub listen: SocketAddr,
}

/// Server timings.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Request headers.
    pub header_read: Duration,
    /// Request body stalls.
    pub body_read: Duration,
    /// Between stream chunks.
    pub stream_idle: Duration,
    /// How long an open breaker waits before a probe.
    pub breaker_cooldown: Duration,
    /// How long after a request the runtime keeps polling for I/O instead of sleeping
    /// (`serve --busy-poll`; off by default, see [`busy`]).
    pub busy_poll: Option<Duration>,
    /// How long a shutdown waits for the requests in flight.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: HEADER_READ_TIMEOUT,
            body_read: BODY_READ_TIMEOUT,
            stream_idle: STREAM_IDLE_TIMEOUT,
            breaker_cooldown: crate::state::BREAKER_COOLDOWN,
            busy_poll: None,
            drain: DRAIN_TIMEOUT,
        }
    }
}

/// The router. Handlers load the snapshot once per request; the state is shared, not copied.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(path::chat))
        .route("/v1/embeddings", post(path::embeddings))
        .route("/v1/moderations", post(path::moderations))
        .route("/moderations", post(path::moderations))
        .route("/v1/messages", post(path::messages))
        .route("/v1/responses", post(path::responses))
        .route("/v1/responses/{id}", get(path::stored_response))
        .route("/v1/messages/count_tokens", post(path::count_tokens))
        .route("/v1/models", get(info::models))
        .route("/v1/models/{id}", get(info::model))
        // Some clients are configured with a base URL without `/v1`.
        .route("/chat/completions", post(path::chat))
        .route("/embeddings", post(path::embeddings))
        .route("/models", get(info::models))
        .route("/models/{id}", get(info::model))
        .route("/v1/key", get(info::key))
        .route("/v1/providers", get(info::providers))
        .route("/providers", get(info::providers))
        .route("/healthz", get(info::healthz))
        // Claude Code checks the base URL with `HEAD /` (a GET route answers HEAD too).
        .route("/", get(info::healthz))
        .route("/readyz", get(info::readyz))
        .route("/metrics", get(info::metrics))
        .route("/admin/policy", get(admin::policy))
        .route("/admin/reload", post(admin::reload))
        .route("/admin/rollback", post(admin::rollback))
        .route("/admin/explain", post(admin::explain))
        .route("/admin/rules", get(admin::rules))
        .route("/admin/models", get(admin::models))
        .route("/admin/reloads", get(admin::reloads))
        .route("/admin/", get(page::index))
        .route("/admin", get(page::redirect))
        .route("/admin/assets/{file}", get(page::asset))
        .route("/admin/keys", get(keys::list).post(keys::create))
        .route("/admin/keys/{id}", axum::routing::patch(keys::update).delete(keys::revoke))
        .fallback(info::not_found)
        .layer(axum::middleware::map_response(never_cached))
        .with_state(Arc::new(state))
}

/// Every answer says `nosniff`; the admin endpoints' and `/v1/key`'s, which carry secrets, spend
/// and keys, also say `no-store`, so that no browser or proxy keeps them.
async fn never_cached(uri: axum::http::Uri, mut r: axum::response::Response) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let h = r.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let path = uri.path();
    if (path.starts_with("/admin") && !path.starts_with("/admin/assets/")) || path == "/v1/key" {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains requests in flight for up
/// to the drain timeout ([`conn::run`]). With `busy`, one poller per runtime thread runs as long
/// as the server.
pub async fn run(
    listener: TcpListener,
    router: Router,
    settings: conn::Settings,
    stats: Arc<conn::ConnStats>,
    cut: tokio::sync::watch::Sender<bool>,
    busy: Option<Arc<busy::BusyPoll>>,
    shutdown: impl Future<Output = ()>,
) {
    let _pollers = busy.map(|b| b.spawn(tokio::runtime::Handle::current().metrics().num_workers()));
    conn::run(listener, router, settings, stats, cut, shutdown).await;
}

/// Why a gateway with these config keys, on `addr`, would be left with no key at all where SPEC §9
/// forbids it (not loopback, no `allow_open: true`), given the run-time keys `live_runtime`.
/// Checked at start, on every reload and rollback, and on every revocation.
pub(crate) fn leaves_no_key(config: &crate::config::Config, addr: SocketAddr, live_runtime: usize) -> Option<String> {
    if !config.keys.is_empty() || live_runtime > 0 || addr.ip().is_loopback() || config.allow_open {
        return None;
    }
    Some(format!(
        "no `keys` are configured and no run-time key is live, so the gateway would be open on {addr} (not loopback); add a key or set `allow_open: true`"
    ))
}

/// With no key in the config and none made at run time the gateway is open: allowed on loopback
/// (with a warning), refused elsewhere unless `allow_open: true`.
fn refuse_open(snap: &crate::reload::Snapshot, addr: SocketAddr, ring: &keys::KeyRing) -> Result<(), String> {
    if !snap.config.config.keys.is_empty() || !ring.open() {
        return Ok(());
    }
    if let Some(why) = leaves_no_key(&snap.config.config, addr, ring.live()) {
        return Err(format!("{why}; it refuses to listen"));
    }
    tracing::warn!("no `keys` are configured: the gateway is open to anyone who can reach {addr}");
    Ok(())
}

/// A running server (for tests and embedding).
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, drains the requests in flight, then commits the ledger's last records.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
        if let Some(t) = &self.state.telemetry {
            t.flush(Duration::from_secs(2)).await;
        }
        // A shared store's last settlements, before the process goes.
        crate::state::StateStore::flush(&*self.state.state, Duration::from_secs(2)).await;
        if let Some(l) = &self.state.accounting.ledger {
            l.close().await;
        }
    }
}

/// The state store the config asks for: Redis with `storage.redis`, else in this process.
fn store(snap: &crate::reload::Snapshot, ledger: Option<Ledger>, cooldown: Duration) -> Result<Store, String> {
    let Some(r) = snap.config.config.storage.as_ref().and_then(|s| s.redis.as_ref()) else {
        return Ok(Store::local(ledger, cooldown));
    };
    let url = std::env::var(&r.url_env)
        .map_err(|_| format!("storage.redis.url_env: the environment variable `{}` is not set", r.url_env))?;
    let settings = crate::state::shared::Settings {
        url,
        open_on_error: r.on_error == crate::config::OnError::Open,
        prefix: r.prefix.clone(),
        cooldown,
        queued_bytes: r.max_queued_bytes,
    };
    Ok(Store::Shared(crate::state::shared::Shared::new(settings, ledger)?))
}

/// The trace exporter `telemetry.otlp` asks for; its headers' values come from the environment.
fn telemetry(
    config: &crate::config::Config,
    http: reqwest::Client,
) -> Result<Option<crate::telemetry::Telemetry>, String> {
    let Some(t) = &config.telemetry else { return Ok(None) };
    let mut headers = Vec::new();
    for (name, var) in &t.otlp.headers_env {
        let value = std::env::var(var)
            .map_err(|_| format!("telemetry.otlp.headers_env: the environment variable `{var}` is not set"))?;
        headers.push((name.clone(), value));
    }
    let settings = crate::telemetry::Settings {
        endpoint: t.otlp.endpoint.clone(),
        headers,
        timeout: Duration::from_millis(t.otlp.timeout),
        service: t.service_name.clone(),
    };
    crate::telemetry::Telemetry::start(&settings, http).map(Some)
}

/// Starts a server for a loaded config on `listen` (use port 0 for an ephemeral port).
pub async fn start(config: Loaded, listen: &str, timeouts: Timeouts, watch: bool) -> Result<Running, String> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| e.to_string())?;
    let reloader = Arc::new(Reloader::start(config, http.clone())?);
    let snap = reloader.snapshot();
    // A name (`localhost:8090`) is resolved, and listened on at its first IPv4 address (else its
    // first address).
    let addr: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(_) => {
            let all: Vec<SocketAddr> = tokio::net::lookup_host(listen)
                .await
                .map_err(|e| format!("listen: `{listen}` cannot be resolved: {e}"))?
                .collect();
            all.iter()
                .find(|a| a.is_ipv4())
                .or(all.first())
                .copied()
                .ok_or_else(|| format!("listen: `{listen}` resolves to no address"))?
        }
    };
    for w in &snap.config.warnings {
        tracing::warn!("{w}");
    }
    let ledger = match snap.config.ledger_path() {
        Some(sqlite) => Some(Ledger::open(&ledger::Target::new(sqlite, snap.config.request_log_path()))?),
        None => {
            tracing::warn!("`storage: {{ ledger: false }}`: spend is kept in memory only and is lost at restart");
            None
        }
    };
    let state = Arc::new(store(&snap, ledger.clone(), timeouts.breaker_cooldown)?);
    let ring = keys::KeyRing::start(state.clone()).await;
    refuse_open(&snap, addr, &ring)?;
    let accounting = Arc::new(Accounting {
        request_log: ledger.is_some() && snap.config.config.log.requests.is_some(),
        log_prompts: snap.config.config.log.prompts,
        log_headers: snap
            .config
            .config
            .log
            .headers
            .as_ref()
            .map(|h| h.iter().map(|n| n.to_ascii_lowercase()).collect()),
        access_log: snap.config.config.log.access,
        ledger,
    });
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // SPEC §9 holds at every change, not only here: a reload or a rollback that would leave the
    // gateway with no key where it may not be open is rejected.
    let guard_ring = ring.clone();
    reloader.guard(Box::new(move |next| leaves_no_key(&next.config.config, addr, guard_ring.live())));
    if watch {
        reloader.watch()?;
    }
    let (cut_tx, cut) = tokio::sync::watch::channel(false);
    let conns = Arc::new(conn::ConnStats::default());
    let settings = conn::Settings {
        idle: timeouts.header_read,
        max: snap.config.config.limits.max_connections.unwrap_or_else(conn::default_max),
        drain: timeouts.drain,
    };
    let state = AppState {
        reloader,
        state,
        latency: Arc::new(Latencies::default()),
        metrics: Arc::new(metrics::Metrics::default()),
        accounting,
        ready: Arc::new(AtomicBool::new(false)),
        timeouts,
        busy: timeouts.busy_poll.map(busy::BusyPoll::new),
        conns: conns.clone(),
        cut,
        cache: Arc::new(crate::cache::ResponseCache::new(snap.config.config.cache.max_bytes)),
        telemetry: telemetry(&snap.config.config, http)?.map(Arc::new),
        keys: ring,
        listen: addr,
    };
    if state.state.shares_cache() {
        // Exact entries go to the shared store too, so that every instance finds them.
        let store = state.state.clone();
        state.cache.share_with(Box::new(move |k, bytes, ttl| store.cache_put(&hex::encode(k), bytes, ttl)));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = app(state.clone());
    state.ready.store(true, Ordering::SeqCst);
    let task = tokio::spawn(run(listener, router, settings, conns, cut_tx, state.busy.clone(), async move {
        let _ = stopped.await;
    }));
    Ok(Running { addr, state, stop: Some(stop), task })
}

/// `yardmaster serve`: runs until SIGTERM or Ctrl-C; SIGHUP reloads.
pub async fn serve(config: Loaded, listen: Option<String>, busy_poll: Option<Duration>) -> Result<(), String> {
    let listen = listen.unwrap_or(config.config.listen.clone());
    let running = start(config, &listen, Timeouts { busy_poll, ..Timeouts::default() }, true).await?;
    tracing::info!(addr = %running.addr, version = %running.state.reloader.snapshot().version(), "yardmaster is listening");
    let reloader = running.state.reloader.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading");
                let _ = reloader.reload().await;
            }
        });
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: draining"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        let _ = tokio::signal::ctrl_c().await;
    }
    running.shutdown().await;
    Ok(())
}
