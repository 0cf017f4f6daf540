//! The shared store (SPEC §11): the state seam's second implementation, in Redis, for several
//! instances behind one load balancer. Input: the same calls as [`super::local`]; output: the
//! same answers, agreed by every instance.
//!
//! - **Budgets**: an account per key and calendar period (a hash of `spent`, `reserved` and one
//!   field per reservation, in integer micro-USD) and a sorted set of the reservations' expiries.
//!   Reserving and settling are one script each ([`scripts`]). A reservation lives 15 s and its
//!   instance renews it every 5 s while the request lives, so one held by an instance that died
//!   frees within 15 s. A settlement is sent once: it carries a marker, so a retry after a lost
//!   reply cannot count it twice.
//! - **Rate limits**: GCRA for rpm and a token bucket for tpm, each one script, on Redis's clock.
//! - **Breakers**: each instance keeps its own (and its own latency averages); an opening is
//!   written to a hash and published, and every instance treats the model as open until the
//!   opener's cooldown ends. An instance that (re)connects reads the openings still running.
//! - **Cache**: exact entries as strings with the rule's lifetime as their TTL.
//! - **Faults**: every call has a short timeout. Settlements, token settlements, cache stores and
//!   breaker openings never wait: they go to one writer task, which applies them in order, in
//!   pipelines, and keeps them until Redis takes them. When Redis cannot be reached, admissions
//!   fail with [`StateError`] (the gateway answers 503 `state_unavailable`), or with
//!   `on_error: open` are made on this instance's own state, with a warning, and their
//!   settlements are applied to Redis when it returns. A health task pings every second; the
//!   connection manager reconnects with backoff by itself.

mod scripts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Script;
use tokio::sync::mpsc;

use super::local::Local;
use super::{Admission, BreakerState, Budget, Reservation, Slot, Standing, StateError, StateStore, TokenHold};
use crate::accounting::budget::period_start;
use crate::accounting::Ledger;
use crate::config::Period;

/// How long a reservation lives without renewal.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(15);
/// How often an instance renews the reservations of its requests in flight.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How long one call to Redis may take.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// The budget, limit and breaker writes that may wait for Redis before admissions fail closed
/// (503 `state_unavailable`, or local state under `on_error: open`).
pub const QUEUED_WRITES: usize = 20_000;
/// Past this many waiting writes even a settlement is dropped (and counted): only reached under
/// `on_error: open`, whose local reservations settle into the queue.
const QUEUED_WRITES_MAX: usize = 2 * QUEUED_WRITES;

/// How the shared store is reached and what it does when it cannot be.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `redis://...` (from the environment: it may hold a password).
    pub url: String,
    /// Serve on local state when Redis cannot be reached (`on_error: open`).
    pub open_on_error: bool,
    /// Prefix of every key (`ym:`).
    pub prefix: String,
    /// The breakers' cooldown.
    pub cooldown: Duration,
    /// The bytes of cache entries that may wait for Redis (`max_queued_bytes`).
    pub queued_bytes: usize,
}

/// What the writer task applies, in order.
#[derive(Debug)]
enum Write {
    Settle {
        account: String,
        member: String,
        cost: u64,
    },
    Tokens {
        bucket: String,
        delta: i64,
    },
    Cache {
        key: String,
        bytes: Vec<u8>,
        ttl: Duration,
    },
    Open {
        model: String,
        message: String,
        cooldown_ms: u64,
    },
    /// Answered once everything before it is applied.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Whether Redis answers, and how many calls failed.
#[derive(Debug, Default)]
pub struct Health {
    up: AtomicBool,
    errors: AtomicU64,
    /// Round trips to Redis (a call, or a pipeline of them).
    trips: AtomicU64,
    /// When a fallback to local state was last logged (ms since start), to log it once a second.
    warned: AtomicU64,
    /// Writes waiting for Redis, and the cache bytes among them.
    queued: AtomicUsize,
    queued_cache_bytes: AtomicUsize,
    /// Writes dropped because the queue was at its bound: cache stores, and state writes.
    dropped_cache: AtomicU64,
    dropped_state: AtomicU64,
}

impl Health {
    /// Redis answered the last ping or call.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Calls that failed since start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Round trips to Redis since start.
    pub fn round_trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    fn trip(&self) {
        self.trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes waiting for Redis, and the cache bytes among them.
    pub fn queued(&self) -> (usize, usize) {
        (self.queued.load(Ordering::Relaxed), self.queued_cache_bytes.load(Ordering::Relaxed))
    }

    /// Writes dropped at the queue's bound: cache stores, and budget, limit and breaker writes.
    pub fn dropped(&self) -> (u64, u64) {
        (self.dropped_cache.load(Ordering::Relaxed), self.dropped_state.load(Ordering::Relaxed))
    }

    /// A write left the queue (applied or given up).
    fn dequeued(&self, w: &Write) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        if let Write::Cache { bytes, .. } = w {
            self.queued_cache_bytes.fetch_sub(bytes.len(), Ordering::AcqRel);
        }
    }
}

struct Scripts {
    reserve: Script,
    settle: Script,
    renew: Script,
    rpm: Script,
    tpm: Script,
    tpm_settle: Script,
    open: Script,
    openings: Script,
    put_key: Script,
    restore_keys: Script,
}

impl Scripts {
    /// Loads the scripts that pipelines call by their hash (after a start, or a Redis restart
    /// that emptied its script cache).
    async fn load(&self, conn: &ConnectionManager) -> redis::RedisResult<()> {
        for s in [&self.settle, &self.renew, &self.tpm_settle, &self.open] {
            s.prepare_invoke().load_async(&mut conn.clone()).await?;
        }
        Ok(())
    }
}

/// The Redis store.
pub struct Shared {
    conn: ConnectionManager,
    settings: Settings,
    scripts: Arc<Scripts>,
    /// Breakers (always), and budgets and limits while Redis is down under `on_error: open`.
    local: Arc<Local>,
    health: Arc<Health>,
    writes: mpsc::UnboundedSender<Write>,
    /// Reservations in flight: member -> expiry set, renewed every 5 s.
    live: Arc<Mutex<HashMap<String, String>>>,
    /// The run-time keys as this instance last read them (see [`Shared::keys`]).
    key_copy: Mutex<Vec<super::keys::KeyRecord>>,
    ledger: Option<Ledger>,
    instance: String,
    next: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("prefix", &self.settings.prefix).field("up", &self.health.up()).finish()
    }
}

fn error(e: &redis::RedisError) -> StateError {
    // The URL (and its password) is never part of a message.
    StateError(format!("redis: {}", what(e)))
}

/// Redis cannot be reached (as opposed to answering with an error).
fn unreachable(e: &redis::RedisError) -> bool {
    e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error()
}

/// What went wrong, in words that never hold the URL.
fn what(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if unreachable(e) {
        "unreachable".into()
    } else {
        format!("{:?}", e.kind()).to_lowercase()
    }
}

impl Shared {
    /// A store on `settings.url`, with `ledger` to start accounts that Redis does not have yet.
    /// Connects lazily: a Redis that is down at start-up is retried in the background.
    pub fn new(settings: Settings, ledger: Option<Ledger>) -> Result<Shared, String> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|_| "storage.redis: the URL is not a redis:// URL".to_string())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| format!("storage.redis: {}", what(&e)))?;
        let scripts = Arc::new(Scripts {
            reserve: Script::new(&scripts::reserve()),
            settle: Script::new(scripts::SETTLE),
            renew: Script::new(&scripts::renew()),
            rpm: Script::new(&scripts::rpm()),
            tpm: Script::new(&scripts::tpm()),
            tpm_settle: Script::new(&scripts::tpm_settle()),
            open: Script::new(&scripts::open()),
            openings: Script::new(&scripts::openings()),
            put_key: Script::new(scripts::PUT_KEY),
            restore_keys: Script::new(scripts::RESTORE_KEYS),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let store = Shared {
            conn,
            local: Arc::new(Local::new(ledger.clone(), settings.cooldown)),
            settings,
            scripts,
            health: Arc::new(Health::default()),
            writes: tx,
            live: Arc::default(),
            key_copy: Mutex::default(),
            ledger,
            instance: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            next: AtomicU64::new(0),
            started: Instant::now(),
        };
        store.spawn(client, rx);
        Ok(store)
    }

    /// Whether Redis answers, and the error count.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Whether requests that need the shared state can be served now.
    pub fn ready(&self) -> Result<(), String> {
        if self.health.up() || self.settings.open_on_error {
            Ok(())
        } else {
            Err("redis cannot be reached (storage.redis.on_error: closed)".into())
        }
    }

    /// Queues a write for the writer task, within the queue's bounds: a cache store past
    /// `max_queued_bytes` is dropped, anything past [`QUEUED_WRITES_MAX`] too; both counted.
    fn write(&self, w: Write) {
        let h = &self.health;
        let over = match &w {
            Write::Cache { bytes, .. } => {
                let held = h.queued_cache_bytes.fetch_add(bytes.len(), Ordering::AcqRel);
                if held + bytes.len() > self.settings.queued_bytes || h.queued.load(Ordering::Acquire) >= QUEUED_WRITES
                {
                    h.queued_cache_bytes.fetch_sub(bytes.len(), Ordering::AcqRel);
                    h.dropped_cache.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                false
            }
            Write::Flush(_) => false,
            _ => h.queued.load(Ordering::Acquire) >= QUEUED_WRITES_MAX,
        };
        if over {
            h.dropped_state.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("a write for redis was dropped: the queue is at its bound");
            return;
        }
        h.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(w)) = self.writes.send(w) {
            h.dequeued(&w);
        }
    }

    /// Fails an admission while the writes waiting for Redis are at their bound: what it would
    /// add could not be kept.
    fn room(&self) -> Result<(), StateError> {
        if self.health.queued.load(Ordering::Acquire) >= QUEUED_WRITES {
            return Err(StateError("redis: the writes waiting for it are at their bound".into()));
        }
        Ok(())
    }

    /// The connection, for one more round trip.
    fn trip_conn(&self) -> ConnectionManager {
        self.health.trip();
        self.conn.clone()
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.settings.prefix.clone();
        k.push_str(&parts.join(":"));
        k
    }

    fn account(&self, key: &str, per: Period) -> String {
        let start = period_start(per, chrono::Utc::now().timestamp_millis());
        self.key(&["budget", key, per.as_str(), &start.to_string()])
    }

    fn member(&self) -> String {
        format!("{}-{}", self.instance, self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn failed(&self, e: &redis::RedisError) -> StateError {
        self.health.errors.fetch_add(1, Ordering::Relaxed);
        if unreachable(e) {
            self.health.up.store(false, Ordering::Relaxed);
        }
        error(e)
    }

    /// Under `on_error: open`, says (once a second) that a request is served on local state.
    fn fall_back(&self, e: &StateError) -> bool {
        if !self.settings.open_on_error {
            return false;
        }
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.health.warned.load(Ordering::Relaxed);
        if (now.saturating_sub(last) >= 1000 || last == 0)
            && self.health.warned.compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(error = %e, "the shared state cannot be reached: serving on this instance's state (on_error: open)");
        }
        true
    }

    /// The spend to start a new account with: this instance's ledger's this period.
    async fn seed(&self, key: &str, per: Period) -> Result<u64, StateError> {
        match &self.ledger {
            Some(l) => {
                let since = period_start(per, chrono::Utc::now().timestamp_millis());
                l.spend_since(key, since).await.map_err(StateError)
            }
            None => Ok(0),
        }
    }

    /// Runs the reserve script for `micros` (0: only the standing), seeding the account from the
    /// ledger when Redis does not have it (the first time, or after Redis lost it).
    async fn reserve_call(
        &self,
        key: &str,
        budget: Budget,
        micros: u64,
        member: &str,
    ) -> Result<(bool, Standing), StateError> {
        let account = self.account(key, budget.per);
        let mut seed: Option<u64> = None;
        loop {
            let (fits, spent, reserved): (i8, u64, u64) = self
                .scripts
                .reserve
                .key(&account)
                .key(format!("{account}:exp"))
                .key(self.settled(member))
                .arg(budget.limit)
                .arg(micros)
                .arg(member)
                .arg(RESERVATION_LIFETIME.as_millis() as u64)
                .arg(seed.map_or_else(|| "-".to_string(), |s| s.to_string()))
                .invoke_async(&mut self.trip_conn())
                .await
                .map_err(|e| self.failed(&e))?;
            if fits >= 0 || seed.is_some() {
                return Ok((fits == 1, Standing { spent, reserved }));
            }
            seed = Some(self.seed(key, budget.per).await?);
        }
    }

    /// The marker a reservation's settlement leaves (it stops a late reservation script too).
    fn settled(&self, member: &str) -> String {
        format!("{}settled:{member}", self.settings.prefix)
    }

    async fn reserve_shared(&self, key: &str, budget: Budget, micros: u64) -> Result<Option<Reservation>, StateError> {
        self.room()?;
        let account = self.account(key, budget.per);
        let member = self.member();
        let expiries = format!("{account}:exp");
        let fits = match self.reserve_call(key, budget, micros, &member).await {
            Ok((fits, _)) => fits,
            Err(e) => {
                // The script may still run once a stalled Redis resumes: settle the reservation at
                // 0 now, so that it is released if it was made and never made if it was not.
                if micros > 0 {
                    self.write(Write::Settle { account, member, cost: 0 });
                }
                return Err(e);
            }
        };
        if !fits {
            return Ok(None);
        }
        if micros > 0 {
            self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(member.clone(), expiries);
        }
        Ok(Some(Reservation { key: key.to_string(), micros, slot: Some(Slot { account, member }) }))
    }

    async fn standing_shared(&self, key: &str, per: Period) -> Result<Standing, StateError> {
        let budget = Budget { limit: u64::MAX, per };
        self.reserve_call(key, budget, 0, "-").await.map(|(_, s)| s)
    }

    fn spawn(&self, client: redis::Client, rx: mpsc::UnboundedReceiver<Write>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(writer(self.conn.clone(), self.scripts.clone(), self.health.clone(), self.prefix_of(), rx));
        rt.spawn(renewer(self.conn.clone(), self.scripts.clone(), self.live.clone(), self.health.clone()));
        rt.spawn(pinger(self.conn.clone(), self.health.clone()));
        rt.spawn(listener(
            client,
            self.conn.clone(),
            self.scripts.clone(),
            self.local.clone(),
            self.prefix_of(),
            self.instance.clone(),
        ));
    }

    fn prefix_of(&self) -> String {
        self.settings.prefix.clone()
    }

    /// The exact cache's entry `key` (hex), with the time it has left.
    pub async fn cache_get(&self, key: &str) -> Result<Option<(Vec<u8>, Duration)>, StateError> {
        let k = self.key(&["cache", key]);
        let (bytes, ttl): (Option<Vec<u8>>, i64) =
            redis::pipe().get(&k).pttl(&k).query_async(&mut self.conn.clone()).await.map_err(|e| self.failed(&e))?;
        Ok(bytes.map(|b| (b, Duration::from_millis(u64::try_from(ttl).unwrap_or(0)))))
    }

    /// The run-time keys' version (0 before the first key).
    pub async fn keys_version(&self) -> Result<u64, StateError> {
        let v: Option<u64> = redis::cmd("GET")
            .arg(self.key(&["keys", "version"]))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(v.unwrap_or(0))
    }

    /// Every run-time key's record. Redis is the truth, and this instance keeps a copy of what it
    /// last read (in memory, and in its ledger): when Redis lost records (it restarted empty), or
    /// when `storage.redis` is added to a deployment whose keys were in the ledger, the copy's
    /// missing records are put back, so that keys are carried over and never silently dropped
    /// (which would open a gateway without config keys).
    pub async fn keys(&self) -> Result<Vec<super::keys::KeyRecord>, StateError> {
        let mut records = self.read_keys().await?;
        let copy = self.key_copy().await;
        let lost: Vec<&super::keys::KeyRecord> =
            copy.iter().filter(|c| !records.iter().any(|r| r.id == c.id)).collect();
        if !lost.is_empty() {
            let mut call = self.scripts.restore_keys.prepare_invoke();
            call.key(self.key(&["keys"])).key(self.key(&["keys", "version"]));
            for r in &lost {
                call.arg(&r.id).arg(super::keys::json(r));
            }
            let n: u64 = call.invoke_async(&mut self.trip_conn()).await.map_err(|e| self.failed(&e))?;
            if n > 0 {
                tracing::warn!(
                    restored = n,
                    "run-time keys missing from redis were put back from this instance's copy"
                );
            }
            records = self.read_keys().await?;
        }
        if records != copy {
            self.keep_copy(&records).await;
        }
        Ok(records)
    }

    async fn read_keys(&self) -> Result<Vec<super::keys::KeyRecord>, StateError> {
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(&["keys"]))
            .query_async(&mut self.trip_conn())
            .await
            .map_err(|e| self.failed(&e))?;
        let mut records: Vec<super::keys::KeyRecord> =
            all.values().filter_map(|r| serde_json::from_str(r).ok()).collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    /// This instance's copy of the records: in memory once read, else its ledger's.
    async fn key_copy(&self) -> Vec<super::keys::KeyRecord> {
        let memory = self.key_copy.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if !memory.is_empty() {
            return memory;
        }
        let mut from_ledger = self.local.keys.all().await.unwrap_or_default();
        from_ledger.sort_by(|a, b| a.id.cmp(&b.id));
        from_ledger
    }

    async fn keep_copy(&self, records: &[super::keys::KeyRecord]) {
        *self.key_copy.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = records.to_vec();
        for r in records {
            if let Err(e) = self.local.keys.copy(r).await {
                tracing::debug!(error = %e, "the ledger's copy of the run-time keys could not be written");
            }
        }
    }

    /// Stores a run-time key's record and moves the version on, in one script, unless another
    /// live key has its name (`Ok(false)`).
    pub async fn put_key(&self, record: &super::keys::KeyRecord) -> Result<bool, StateError> {
        let stored: u8 = self
            .scripts
            .put_key
            .key(self.key(&["keys"]))
            .key(self.key(&["keys", "version"]))
            .arg(&record.id)
            .arg(super::keys::json(record))
            .arg(&record.name)
            .arg(if record.revoked_at_ms.is_none() { "1" } else { "0" })
            .invoke_async(&mut self.trip_conn())
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(stored == 1)
    }

    /// Stores an exact cache entry for `ttl` (never waits).
    pub fn cache_put(&self, key: &str, bytes: Vec<u8>, ttl: Duration) {
        self.write(Write::Cache { key: self.key(&["cache", key]), bytes, ttl });
    }
}

/// The writer: applies settlements, token settlements, cache stores and breaker openings in
/// order, up to 256 at a time in one pipeline, and keeps a batch until Redis takes it.
async fn writer(
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    health: Arc<Health>,
    prefix: String,
    mut rx: mpsc::UnboundedReceiver<Write>,
) {
    let mut batch: Vec<Write> = Vec::new();
    let mut flushed: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(w) => batch.push(w),
                None => return,
            }
        }
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        for w in std::mem::take(&mut batch) {
            match w {
                Write::Flush(done) => flushed.push(done),
                w => batch.push(w),
            }
        }
        if batch.is_empty() {
            for f in flushed.drain(..) {
                let _ = f.send(());
            }
            continue;
        }
        let mut pipe = redis::pipe();
        for w in &batch {
            match w {
                Write::Flush(_) => {}
                Write::Settle { account, member, cost } => {
                    // The same marker as `Shared::settled`.
                    let marker = format!("{prefix}settled:{member}");
                    pipe.invoke_script(
                        scripts.settle.key(account).key(format!("{account}:exp")).key(marker).arg(member).arg(*cost),
                    );
                }
                Write::Tokens { bucket, delta } => {
                    pipe.invoke_script(scripts.tpm_settle.key(bucket).arg(*delta));
                }
                Write::Cache { key, bytes, ttl } => {
                    pipe.pset_ex(key, bytes.as_slice(), u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
                }
                Write::Open { model, message, cooldown_ms } => {
                    let channel = format!("{prefix}breakers");
                    pipe.invoke_script(
                        scripts.open.key(&channel).arg(model).arg(*cooldown_ms).arg(message).arg(&channel),
                    );
                }
            }
        }
        let mut c = conn.clone();
        health.trip();
        match pipe.query_async::<redis::Value>(&mut c).await {
            Ok(_) => {
                for w in batch.drain(..) {
                    health.dequeued(&w);
                }
                for f in flushed.drain(..) {
                    let _ = f.send(());
                }
                backoff = Duration::from_millis(50);
            }
            Err(e) if e.to_string().contains("NoScript") && scripts.load(&conn).await.is_ok() => {
                // Scripts that ran before the batch are applied again: each is safe to repeat
                // but for token settlements, which limits tolerate.
            }
            Err(e) => {
                health.errors.fetch_add(1, Ordering::Relaxed);
                health.up.store(false, Ordering::Relaxed);
                tracing::debug!(error = %error(&e).0, pending = batch.len(), "the shared state's writes wait for redis");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Renews the reservations of this instance's requests in flight, every 5 s.
async fn renewer(
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    live: Arc<Mutex<HashMap<String, String>>>,
    health: Arc<Health>,
) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    loop {
        tick.tick().await;
        let by_set: HashMap<String, Vec<String>> = {
            let live = live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut m: HashMap<String, Vec<String>> = HashMap::new();
            for (member, set) in live.iter() {
                m.entry(set.clone()).or_default().push(member.clone());
            }
            m
        };
        if by_set.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for (set, members) in &by_set {
            let mut call = scripts.renew.key(set);
            call.arg(RESERVATION_LIFETIME.as_millis() as u64);
            for m in members {
                call.arg(m);
            }
            pipe.invoke_script(&call);
        }
        health.trip();
        if let Err(e) = pipe.query_async::<redis::Value>(&mut conn.clone()).await {
            if e.to_string().contains("NoScript") && scripts.load(&conn).await.is_ok() {
                let _ = pipe.query_async::<redis::Value>(&mut conn.clone()).await;
            } else {
                health.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Pings Redis every second: `up` is what the last ping said.
async fn pinger(conn: ConnectionManager, health: Arc<Health>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        health.trip();
        let ok = redis::cmd("PING").query_async::<String>(&mut conn.clone()).await.is_ok();
        let was = health.up.swap(ok, Ordering::Relaxed);
        if !ok {
            health.errors.fetch_add(1, Ordering::Relaxed);
        }
        match (was, ok) {
            (true, false) => tracing::warn!("redis cannot be reached; reconnecting"),
            (false, true) => tracing::info!("redis answers"),
            _ => {}
        }
    }
}

/// Listens for breaker openings published by the other instances, and on every (re)connection
/// reads the openings still running.
async fn listener(
    client: redis::Client,
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    local: Arc<Local>,
    prefix: String,
    instance: String,
) {
    use futures_util::StreamExt;
    let channel = format!("{prefix}breakers");
    let mut backoff = Duration::from_millis(100);
    loop {
        let subscribed = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            let running: Vec<(String, u64)> = scripts.openings.key(&channel).invoke_async(&mut conn.clone()).await?;
            for (model, left) in running {
                local.opened_elsewhere(&model, Duration::from_millis(left));
            }
            Ok::<_, redis::RedisError>(ps)
        };
        let ps = match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
            Ok(Ok(ps)) => ps,
            _ => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut messages = ps.into_on_message();
        while let Some(m) = messages.next().await {
            let Ok(text) = m.get_payload::<String>() else { continue };
            let mut parts = text.splitn(3, '\t');
            let (Some(from), Some(model), Some(left)) = (parts.next(), parts.next(), parts.next()) else { continue };
            if from != instance {
                if let Ok(ms) = left.parse::<u64>() {
                    local.opened_elsewhere(model, Duration::from_millis(ms));
                }
            }
        }
    }
}

impl StateStore for Shared {
    async fn standing(&self, key: &str, per: Period) -> Result<Standing, StateError> {
        match self.standing_shared(key, per).await {
            Err(e) if self.fall_back(&e) => self.local.standing(key, per).await,
            r => r,
        }
    }

    async fn reserve(&self, key: &str, budget: Budget, micros: u64) -> Result<Option<Reservation>, StateError> {
        match self.reserve_shared(key, budget, micros).await {
            Err(e) if self.fall_back(&e) => {
                // Held here; its settlement goes to Redis when it returns.
                let r = self.local.reserve(key, budget, micros).await?;
                Ok(r.map(|r| Reservation {
                    slot: Some(Slot { account: self.account(key, budget.per), member: String::new() }),
                    ..r
                }))
            }
            r => r,
        }
    }

    fn settle(&self, reservation: Reservation, cost_micros: u64) {
        let Some(slot) = reservation.slot.clone() else { return self.local.settle(reservation, cost_micros) };
        let member = if slot.member.is_empty() {
            // Reserved on local state while Redis was down: settled here too (so that this
            // instance's own account counts it while the outage lasts), and spent there later.
            self.local.settle(Reservation { slot: None, ..reservation }, cost_micros);
            self.member()
        } else {
            self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&slot.member);
            slot.member
        };
        self.write(Write::Settle { account: slot.account, member, cost: cost_micros });
    }

    async fn check_rpm(&self, key: &str, rpm: u32) -> Result<Result<(), Duration>, StateError> {
        if rpm == 0 {
            return Ok(Err(Duration::from_secs(60)));
        }
        let call = match self.room() {
            Err(e) => Err(e),
            Ok(()) => self
                .scripts
                .rpm
                .key(self.key(&["rpm", key]))
                .arg(rpm)
                .invoke_async::<(u8, u64)>(&mut self.trip_conn())
                .await
                .map_err(|e| self.failed(&e)),
        };
        match call {
            Ok((1, _)) => Ok(Ok(())),
            Ok((_, wait)) => Ok(Err(Duration::from_millis(wait.max(1)))),
            Err(e) if self.fall_back(&e) => self.local.check_rpm(key, rpm).await,
            Err(e) => Err(e),
        }
    }

    async fn reserve_tpm(&self, key: &str, tpm: u64, tokens: u64) -> Result<Result<TokenHold, Duration>, StateError> {
        let bucket = self.key(&["tpm", key]);
        let call = match self.room() {
            Err(e) => Err(e),
            Ok(()) => self
                .scripts
                .tpm
                .key(&bucket)
                .arg(tpm)
                .arg(tokens)
                .invoke_async::<(u8, u64)>(&mut self.trip_conn())
                .await
                .map_err(|e| self.failed(&e)),
        };
        match call {
            Ok((1, _)) => Ok(Ok(TokenHold { key: key.to_string(), tokens, slot: Some(bucket) })),
            Ok((_, wait)) => Ok(Err(Duration::from_millis(wait.max(1)))),
            Err(e) if self.fall_back(&e) => self.local.reserve_tpm(key, tpm, tokens).await,
            Err(e) => Err(e),
        }
    }

    fn settle_tpm(&self, hold: TokenHold, used: u64) {
        match hold.slot {
            Some(bucket) => {
                let delta = i64::try_from(hold.tokens)
                    .unwrap_or(i64::MAX)
                    .saturating_sub(i64::try_from(used).unwrap_or(i64::MAX));
                self.write(Write::Tokens { bucket, delta });
            }
            None => self.local.settle_tpm(hold, used),
        }
    }

    fn healthy(&self, model: &str) -> bool {
        self.local.healthy(model)
    }

    fn admit(&self, model: &str) -> Admission {
        self.local.admit(model)
    }

    fn success(&self, model: &str) {
        self.local.success(model);
    }

    fn failure(&self, model: &str) {
        if self.local.fail(model) {
            let cooldown_ms = u64::try_from(self.settings.cooldown.as_millis()).unwrap_or(u64::MAX);
            let message = format!("{}\t{model}\t{cooldown_ms}", self.instance);
            self.write(Write::Open { model: model.to_string(), message, cooldown_ms });
        }
    }

    fn release(&self, model: &str) {
        self.local.release(model);
    }

    fn breakers(&self) -> Vec<(String, BreakerState)> {
        self.local.breakers()
    }

    async fn flush(&self, limit: Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.writes.send(Write::Flush(tx)).is_ok() {
            // (A flush is not counted: it holds nothing.)
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    /// A `redis-server` of its own on a free 127.0.0.1 port, stopped on drop.
    pub(crate) struct Server {
        child: std::process::Child,
        pub(crate) port: u16,
    }

    impl Server {
        pub(crate) fn start() -> Server {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            Server::on(port)
        }

        pub(crate) fn on(port: u16) -> Server {
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (Debian's redis-server package) must be installed for the shared-state tests");
            for _ in 0..200 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Server { child, port }
        }

        pub(crate) fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn the_redis_store_passes_the_conformance_suite() {
        let server = Server::start();
        let settings = super::Settings {
            url: server.url(),
            open_on_error: false,
            prefix: "ym-test:".into(),
            cooldown: Duration::from_millis(30),
            queued_bytes: 1 << 20,
        };
        let store = super::Shared::new(settings, None).unwrap();
        crate::state::conformance::run(&store, Duration::from_millis(40)).await;
    }

    #[tokio::test]
    async fn a_settlement_sent_twice_counts_once_and_a_dead_instances_reservation_expires() {
        use crate::state::{Budget, StateStore};
        let server = Server::start();
        let settings = |prefix: &str| super::Settings {
            url: server.url(),
            open_on_error: false,
            prefix: prefix.into(),
            cooldown: Duration::from_secs(30),
            queued_bytes: 1 << 20,
        };
        let store = super::Shared::new(settings("ym-a:"), None).unwrap();
        let budget = Budget { limit: 1_000, per: crate::config::Period::Month };
        let r = store.reserve("k", budget, 400).await.unwrap().unwrap();
        let slot = r.slot.clone().unwrap();
        store.settle(r, 100);
        // The same settlement again (as after a lost reply): its marker stops it.
        store.write(super::Write::Settle { account: slot.account, member: slot.member, cost: 100 });
        store.flush(Duration::from_secs(2)).await;
        let s = store.standing("k", crate::config::Period::Month).await.unwrap();
        assert_eq!((s.spent, s.reserved), (100, 0));
        // A reservation whose instance stopped renewing it is purged once its lifetime ends (its
        // expiry is set in the past here, as 15 s without renewal would).
        let held = store.reserve("k", budget, 900).await.unwrap().unwrap();
        assert!(store.reserve("k", budget, 1).await.unwrap().is_none(), "the budget is held");
        let slot = held.slot.clone().unwrap();
        let mut conn = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("ZADD")
            .arg(format!("{}:exp", slot.account))
            .arg(1)
            .arg(&slot.member)
            .query_async(&mut conn)
            .await
            .unwrap();
        let again = store.reserve("k", budget, 900).await.unwrap();
        assert!(again.is_some(), "the dead reservation was purged");
        std::mem::forget(held);
    }
}
