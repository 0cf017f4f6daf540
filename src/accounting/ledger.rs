//! The spend ledger: one SQLite row per request, written by one thread off the request path.
//! Requests hand their row to a bounded channel and go on; the writer commits what has arrived
//! every [`BATCH_WINDOW`], or every [`BATCH_MAX`] rows, whichever comes first, in one
//! transaction: however fast rows arrive, a commit is never more than one window away. The
//! writer does nothing else costly (the request log's lines are counted and written by a thread
//! of their own, `requestlog::Writer`). A failed commit keeps its batch and is retried; the
//! failure is counted. Rows are keyed by request id and inserted with `OR IGNORE`, so a retried
//! batch never counts a request twice. A graceful shutdown drains the channel before it returns;
//! a crash loses the rows of the batch being gathered: `bash bench/crash.sh` (8 clients of 120 KB
//! prompts, then `kill -9`) lost 4 to 7 rows, 16 to 20 ms of answers.
//!
//! When [`QUEUE_MAX`] rows wait (the writer starved of CPU), a request that ends waits for the
//! writer to take one: the gateway slows down rather than lose a money record. Those waits are
//! counted (`yardmaster_ledger_backpressure_total`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use super::requestlog::{self, Entry};

/// How long the writer sleeps when nothing is waiting (it also checks for shutdown then).
const IDLE_PARK: Duration = Duration::from_secs(1);
/// How long a record may wait before it is committed.
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// How much lower than the gateway's threads the writer runs (per thread, on Linux). Nice 19
/// starved it at full load in `bench/load.sh`; nice 10 kept up and cut the concurrency-1 p99 from
/// about 830 to 500 µs on a 2-core VM.
const WRITER_NICE: i32 = 10;
/// Records kept in memory while the disk keeps failing, before new ones are dropped (and counted).
const PENDING_MAX: usize = 1_000_000;
/// Rows committed in one transaction at most.
pub const BATCH_MAX: usize = 4_096;
/// Rows that may wait in the channel (about 300 bytes each).
pub const QUEUE_MAX: usize = 100_000;

/// One request, as the ledger keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// The request id (`x-request-id`), unique.
    pub id: String,
    /// When the request ended, in Unix milliseconds.
    pub ts_ms: i64,
    /// The key's name (none for an open gateway).
    pub key: Option<String>,
    /// The account its spend counts to when it is not the name (a run-time key's id).
    pub account: Option<String>,
    /// The rule that routed it.
    pub rule: Option<String>,
    /// The model that answered (or was last tried).
    pub model: Option<String>,
    /// Its provider.
    pub provider: Option<String>,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in micro-USD.
    pub cost_micros: u64,
    /// The HTTP status the client got (499 when the client went away mid-stream).
    pub status: u16,
    /// Time from the request's arrival to its end.
    pub latency_ms: u64,
    /// Whether the tokens were counted here rather than reported by the provider.
    pub estimated: bool,
    /// The policy version.
    pub policy: String,
    /// The cache's verdict (`hit`, `miss`, `bypass`), for a rule with `cache`.
    pub cache: Option<String>,
    /// What a cache hit saved, micro-USD.
    pub saved_micros: u64,
}

/// Counters the writer keeps, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records committed.
    pub written: AtomicU64,
    /// Commits that failed (and were retried).
    pub write_failures: AtomicU64,
    /// Records dropped because the disk failed for too long.
    pub dropped: AtomicU64,
    /// Records waiting to be committed.
    pub pending: AtomicU64,
    /// Requests that waited because [`QUEUE_MAX`] rows were waiting.
    pub backpressure: AtomicU64,
}

enum Msg {
    Record(Box<Row>),
    SpendSince { key: String, since_ms: i64, reply: tokio::sync::oneshot::Sender<Result<u64, String>> },
    SavedSince { key: String, since_ms: i64, reply: tokio::sync::oneshot::Sender<Result<(u64, u64), String>> },
    Flush(tokio::sync::oneshot::Sender<()>),
    KeyPut { id: String, record: String, reply: tokio::sync::oneshot::Sender<Result<(), String>> },
    KeysLoad(tokio::sync::oneshot::Sender<Result<Vec<String>, String>>),
}

/// The ledger's handle. Cloning shares the writer.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::SyncSender<Msg>,
    writer: std::thread::Thread,
    log: Option<super::requestlog::Writer>,
    /// The writer's counters.
    pub stats: Arc<Stats>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("stats", &self.stats).finish()
    }
}

/// Where the ledger writes.
#[derive(Clone, Debug)]
pub struct Target {
    /// The SQLite file (`:memory:` keeps nothing across restarts).
    pub sqlite: PathBuf,
    /// The request log (JSONL), when enabled.
    pub request_log: Option<PathBuf>,
    /// Bytes that the lines waiting for the request log may hold ([`requestlog::QUEUE_BYTES_MAX`]).
    pub log_budget: usize,
}

impl Target {
    /// A ledger at `sqlite`, with the request log at `request_log` and the default budget.
    pub fn new(sqlite: PathBuf, request_log: Option<PathBuf>) -> Target {
        Target { sqlite, request_log, log_budget: requestlog::QUEUE_BYTES_MAX }
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL lets `sqlite3` and backups read while the gateway writes; NORMAL syncs at checkpoints.
    let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL;
         CREATE TABLE IF NOT EXISTS requests (
             id TEXT PRIMARY KEY,
             ts_ms INTEGER NOT NULL,
             key TEXT,
             rule TEXT,
             model TEXT,
             provider TEXT,
             input_tokens INTEGER NOT NULL,
             output_tokens INTEGER NOT NULL,
             cost_micros INTEGER NOT NULL,
             status INTEGER NOT NULL,
             latency_ms INTEGER NOT NULL,
             estimated INTEGER NOT NULL,
             policy TEXT
         );
         CREATE INDEX IF NOT EXISTS requests_key_ts ON requests (key, ts_ms);
         CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, record TEXT NOT NULL);",
    )?;
    // Ledgers written before the response cache lack its two columns: add them.
    let has_cache: bool =
        conn.prepare("SELECT 1 FROM pragma_table_info('requests') WHERE name = 'cache'")?.exists([])?;
    if !has_cache {
        conn.execute_batch(
            "ALTER TABLE requests ADD COLUMN cache TEXT;
             ALTER TABLE requests ADD COLUMN saved_micros INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    // And those written before run-time keys' spend was kept by id lack `account` (a row without
    // one counts to its key's name, as config keys' rows do).
    let has_account: bool =
        conn.prepare("SELECT 1 FROM pragma_table_info('requests') WHERE name = 'account'")?.exists([])?;
    if !has_account {
        conn.execute_batch("ALTER TABLE requests ADD COLUMN account TEXT;")?;
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS requests_account_ts ON requests (account, ts_ms);")?;
    Ok(conn)
}

fn load_keys(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT record FROM keys ORDER BY id")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn commit(conn: &mut Connection, batch: &[Row]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO requests
             (id, ts_ms, key, rule, model, provider, input_tokens, output_tokens, cost_micros, status, latency_ms, estimated, policy, cache, saved_micros, account)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        for r in batch {
            stmt.execute(params![
                r.id,
                r.ts_ms,
                r.key,
                r.rule,
                r.model,
                r.provider,
                to_i64(r.input_tokens),
                to_i64(r.output_tokens),
                to_i64(r.cost_micros),
                r.status,
                to_i64(r.latency_ms),
                r.estimated,
                r.policy,
                r.cache,
                to_i64(r.saved_micros),
                r.account,
            ])?;
        }
    }
    tx.commit()
}

/// The rows of account `?1`: its own, or a key's whose name it is (config keys, and rows from
/// before `account`).
const OF_ACCOUNT: &str = "(account = ?1 OR (account IS NULL AND key = ?1))";

fn saved_since(conn: &Connection, key: &str, since_ms: i64) -> rusqlite::Result<(u64, u64)> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT saved_micros FROM requests WHERE {OF_ACCOUNT} AND ts_ms >= ?2 AND cache = 'hit'"
    ))?;
    let saved = stmt.query_map(params![key, since_ms], |r| r.get::<_, i64>(0))?;
    let (mut hits, mut sum) = (0u64, 0u64);
    for s in saved {
        hits += 1;
        sum = sum.saturating_add(u64::try_from(s?).unwrap_or(0));
    }
    Ok((hits, sum))
}

fn spend_since(conn: &Connection, key: &str, since_ms: i64) -> rusqlite::Result<u64> {
    // Summed here, saturating: SQLite's SUM fails on overflow, and a negative sum is no spend.
    let mut stmt =
        conn.prepare_cached(&format!("SELECT cost_micros FROM requests WHERE {OF_ACCOUNT} AND ts_ms >= ?2"))?;
    let costs = stmt.query_map(params![key, since_ms], |r| r.get::<_, i64>(0))?;
    let mut sum = 0u64;
    for c in costs {
        sum = sum.saturating_add(u64::try_from(c?).unwrap_or(0));
    }
    Ok(sum)
}

struct Writer {
    conn: Connection,
    batch: Vec<Row>,
    first_at: Option<Instant>,
    stats: Arc<Stats>,
}

impl Writer {
    /// Commits the batch; on failure keeps it for the next try.
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            self.first_at = None;
            return true;
        }
        match commit(&mut self.conn, &self.batch) {
            Ok(()) => {
                let n = self.batch.len() as u64;
                self.stats.written.fetch_add(n, Ordering::Relaxed);
                self.stats.pending.fetch_sub(n, Ordering::Relaxed);
                self.batch.clear();
                self.first_at = None;
                true
            }
            Err(e) => {
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, pending = self.batch.len(), "the ledger could not commit; retrying");
                if self.batch.len() > PENDING_MAX {
                    let excess = self.batch.len() - PENDING_MAX;
                    self.batch.drain(..excess);
                    self.stats.dropped.fetch_add(excess as u64, Ordering::Relaxed);
                    self.stats.pending.fetch_sub(excess as u64, Ordering::Relaxed);
                }
                false
            }
        }
    }

    /// Flushes until it succeeds (used before reads and at shutdown), giving up after `patience`.
    fn flush_hard(&mut self, patience: Duration) {
        let until = Instant::now() + patience;
        let mut wait = Duration::from_millis(20);
        while !self.flush() && Instant::now() < until {
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }

    /// Handles one message.
    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Record(r) => {
                self.first_at.get_or_insert_with(Instant::now);
                self.batch.push(*r);
            }
            Msg::SpendSince { key, since_ms, reply } => {
                self.flush_hard(Duration::from_secs(5));
                let spent = spend_since(&self.conn, &key, since_ms).map_err(|e| {
                    tracing::warn!(error = %e, "the ledger could not be read");
                    format!("the ledger could not be read: {e}")
                });
                let _ = reply.send(spent);
            }
            Msg::SavedSince { key, since_ms, reply } => {
                self.flush_hard(Duration::from_secs(5));
                let saved =
                    saved_since(&self.conn, &key, since_ms).map_err(|e| format!("the ledger could not be read: {e}"));
                let _ = reply.send(saved);
            }
            Msg::Flush(reply) => {
                self.flush_hard(Duration::from_secs(5));
                let _ = reply.send(());
            }
            Msg::KeyPut { id, record, reply } => {
                let done = self
                    .conn
                    .execute("INSERT OR REPLACE INTO keys (id, record) VALUES (?1, ?2)", (&id, &record))
                    .map(|_| ())
                    .map_err(|e| format!("the ledger could not store the key: {e}"));
                let _ = reply.send(done);
            }
            Msg::KeysLoad(reply) => {
                let _ = reply.send(load_keys(&self.conn).map_err(|e| format!("the ledger could not be read: {e}")));
            }
        }
    }

    /// The writer's loop. It sleeps through each batching window instead of waking for every
    /// record (a wake-up per request would cost more than the insert); senders that wait for an
    /// answer (reads, flushes) unpark it.
    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        let mut window = BATCH_WINDOW;
        loop {
            // Take what has arrived, but never more than a batch: a commit is due at most one
            // window after the first row of a batch, however fast rows keep coming.
            let mut taken = 0;
            while taken < BATCH_MAX && self.batch.len() < BATCH_MAX + PENDING_MAX {
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.flush_hard(Duration::from_secs(10));
                        return;
                    }
                }
                taken += 1;
                if self.first_at.is_some_and(|t| t.elapsed() >= window) {
                    break;
                }
            }
            let full = self.batch.len() >= BATCH_MAX;
            if self.first_at.is_some_and(|t| t.elapsed() >= window) || (full && window == BATCH_WINDOW) {
                if self.flush() {
                    window = BATCH_WINDOW;
                } else {
                    // Back off, and count the wait from now.
                    window = (window * 2).min(Duration::from_secs(5));
                    self.first_at = Some(Instant::now());
                }
            }
            if self.first_at.is_none() && self.stats.pending.load(Ordering::Acquire) > 0 {
                // Records arrived while the batch was being committed: take them now.
                continue;
            }
            if taken == BATCH_MAX && self.batch.len() < BATCH_MAX {
                // More are waiting, and the batch has room.
                continue;
            }
            // Idle: sleep long (the first record of a batch unparks the writer); otherwise until
            // the window closes.
            let sleep = self.first_at.map_or(IDLE_PARK, |t| window.saturating_sub(t.elapsed()));
            std::thread::park_timeout(sleep.max(Duration::from_millis(1)));
        }
    }
}

impl Ledger {
    /// Opens (or creates) the ledger and starts its writer.
    pub fn open(target: &Target) -> Result<Ledger, String> {
        let conn =
            open(&target.sqlite).map_err(|e| format!("cannot open the ledger {}: {e}", target.sqlite.display()))?;
        let stats = Arc::new(Stats::default());
        let log = match &target.request_log {
            Some(p) => Some(requestlog::Writer::open(p, target.log_budget)?),
            None => None,
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE_MAX);
        let writer = Writer { conn, batch: Vec::new(), first_at: None, stats: stats.clone() };
        let handle = std::thread::Builder::new()
            .name("yardmaster-ledger".into())
            .spawn(move || {
                crate::util::thread::lower_priority(WRITER_NICE);
                writer.run(&rx)
            })
            .map_err(|e| format!("cannot start the ledger writer: {e}"))?;
        Ok(Ledger { tx, writer: handle.thread().clone(), log, stats })
    }

    /// Hands a record to the writer and its request-log entry to the log's writer. Never waits
    /// on the disk; waits for the writer only when [`QUEUE_MAX`] rows are waiting already.
    pub fn record(&self, record: Row, log_line: Option<Box<Entry>>) {
        let before = self.stats.pending.fetch_add(1, Ordering::AcqRel);
        let sent = match self.tx.try_send(Msg::Record(Box::new(record))) {
            Err(mpsc::TrySendError::Full(msg)) => {
                self.stats.backpressure.fetch_add(1, Ordering::Relaxed);
                self.writer.unpark();
                self.tx.send(msg).is_ok()
            }
            other => other.is_ok(),
        };
        if !sent {
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        } else if before == 0 {
            // The first record of a batch starts the window; later ones ride along.
            self.writer.unpark();
        }
        if let (Some(log), Some(line)) = (&self.log, log_line) {
            log.push(line);
        }
    }

    /// The key's spend since `since_ms`, after everything handed over so far is committed. An
    /// error (the ledger cannot be read) is an error, never a spend of 0: budgets fail closed.
    pub async fn spend_since(&self, key: &str, since_ms: i64) -> Result<u64, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::SpendSince { key: key.to_string(), since_ms, reply }).is_err() {
            return Err("the ledger's writer has stopped".into());
        }
        self.writer.unpark();
        rx.await.unwrap_or_else(|_| Err("the ledger's writer has stopped".into()))
    }

    /// The key's cache hits since `since_ms` and what they saved (micro-USD), after everything
    /// handed over so far is committed.
    pub async fn saved_since(&self, key: &str, since_ms: i64) -> Result<(u64, u64), String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::SavedSince { key: key.to_string(), since_ms, reply }).is_err() {
            return Err("the ledger's writer has stopped".into());
        }
        self.writer.unpark();
        rx.await.unwrap_or_else(|_| Err("the ledger's writer has stopped".into()))
    }

    /// Stores a run-time key's record (JSON) under its id, replacing the one before; returns once
    /// it is committed.
    pub async fn put_key(&self, id: &str, record: String) -> Result<(), String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::KeyPut { id: id.to_string(), record, reply }).is_err() {
            return Err("the ledger's writer has stopped".into());
        }
        self.writer.unpark();
        rx.await.unwrap_or_else(|_| Err("the ledger's writer has stopped".into()))
    }

    /// Every run-time key's record (JSON), in id order.
    pub async fn keys(&self) -> Result<Vec<String>, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::KeysLoad(reply)).is_err() {
            return Err("the ledger's writer has stopped".into());
        }
        self.writer.unpark();
        rx.await.unwrap_or_else(|_| Err("the ledger's writer has stopped".into()))
    }

    /// Waits until everything handed over so far is committed (and written to the request log).
    pub async fn flush(&self) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(reply)).is_ok() {
            self.writer.unpark();
            let _ = rx.await;
        }
        if let Some(log) = &self.log {
            log.flush().await;
        }
    }

    /// The request log's counters, when it is on.
    pub fn log_stats(&self) -> Option<&requestlog::LogStats> {
        self.log.as_ref().map(|l| &*l.stats)
    }

    /// Drains the writer (graceful shutdown): returns once every record handed over is committed.
    /// The writer thread itself ends, after a last commit, when the last handle is dropped.
    pub async fn close(&self) {
        self.flush().await;
    }
}

/// Reads every row (for tests and tools).
pub fn read_all(path: &Path) -> rusqlite::Result<Vec<Row>> {
    let conn = Connection::open(path)?;
    let mut stmt = conn.prepare(
        "SELECT id, ts_ms, key, rule, model, provider, input_tokens, output_tokens, cost_micros, status, latency_ms, estimated, policy, cache, saved_micros, account
         FROM requests ORDER BY ts_ms, id",
    )?;
    let rows = stmt.query_map([], |r| {
        let u = |i: usize| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
        Ok(Row {
            id: r.get(0)?,
            ts_ms: r.get(1)?,
            key: r.get(2)?,
            rule: r.get(3)?,
            model: r.get(4)?,
            provider: r.get(5)?,
            input_tokens: u(6)?,
            output_tokens: u(7)?,
            cost_micros: u(8)?,
            status: r.get(9)?,
            latency_ms: u(10)?,
            estimated: r.get(11)?,
            policy: r.get(12)?,
            cache: r.get(13)?,
            saved_micros: u(14)?,
            account: r.get(15)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, key: &str, cost: u64) -> Row {
        Row {
            id: id.into(),
            ts_ms: chrono::Utc::now().timestamp_millis(),
            key: Some(key.into()),
            account: None,
            rule: Some("r".into()),
            model: Some("m".into()),
            provider: Some("p".into()),
            input_tokens: 1,
            output_tokens: 2,
            cost_micros: cost,
            status: 200,
            latency_ms: 3,
            estimated: false,
            policy: "v".into(),
            cache: None,
            saved_micros: 0,
        }
    }

    /// A thread's nice value, from `/proc/self/task/TID/stat` (field 19; the name before it may
    /// hold spaces, so fields are counted from the closing parenthesis).
    #[cfg(target_os = "linux")]
    fn nice_of(stat: &str) -> i32 {
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        after.split_whitespace().nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_writer_runs_below_the_request_threads() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&Target::new(dir.path().join("l.db"), Some(dir.path().join("r.jsonl")))).unwrap();
        // The writers answer a flush only once they run, after lowering their priority.
        l.flush().await;
        let own = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
        let mut writers = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let Ok(name) = std::fs::read_to_string(task.join("comm")) else { continue };
            if name.trim() == "yardmaster-ledg" || name.trim() == "yardmaster-log" {
                let Ok(stat) = std::fs::read_to_string(task.join("stat")) else { continue };
                let want = if name.trim() == "yardmaster-log" { requestlog::WRITER_NICE } else { WRITER_NICE };
                assert_eq!(nice_of(&stat), (own + want).min(19), "{}", task.display());
                writers += 1;
            }
        }
        assert!(writers >= 2, "no ledger writer or request-log thread found");
    }

    #[tokio::test]
    async fn records_survive_a_reopen_and_are_never_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(dir.path().join("l.db"), Some(dir.path().join("r.jsonl")));
        let l = Ledger::open(&target).unwrap();
        for i in 0..250 {
            let entry = Entry { request_id: format!("id{i}"), ..Entry::default() };
            l.record(rec(&format!("id{i}"), "a", 10), Some(Box::new(entry)));
        }
        // The same request handed over twice (a retried batch) is one row.
        l.record(rec("id0", "a", 10), None);
        assert_eq!(l.spend_since("a", 0).await.unwrap(), 2_500);
        l.close().await;
        drop(l);
        let l = Ledger::open(&target).unwrap();
        assert_eq!(l.spend_since("a", 0).await.unwrap(), 2_500);
        assert_eq!(l.spend_since("b", 0).await.unwrap(), 0);
        assert_eq!(l.spend_since("a", i64::MAX).await.unwrap(), 0);
        l.close().await;
        assert_eq!(read_all(&target.sqlite).unwrap().len(), 250);
        let log = std::fs::read_to_string(dir.path().join("r.jsonl")).unwrap();
        assert_eq!(log.lines().count(), 250);
        // Lines are whole entries, in order, with the prompt's tokens counted by the log's writer.
        let first: Entry = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        assert_eq!((first.request_id.as_str(), first.facts.prompt_tokens), ("id0", Some(0)));
    }

    #[tokio::test]
    async fn a_failed_commit_is_counted_and_retried_without_losing_rows() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(dir.path().join("l.db"), None);
        let l = Ledger::open(&target).unwrap();
        l.record(rec("before", "a", 1), None);
        l.flush().await;
        // Another process breaks the table: commits fail until it is back.
        let other = Connection::open(&target.sqlite).unwrap();
        other.execute_batch("ALTER TABLE requests RENAME TO requests_away").unwrap();
        for i in 0..20 {
            l.record(rec(&format!("during{i}"), "a", 1), None);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while l.stats.write_failures.load(Ordering::Relaxed) < 2 {
            assert!(Instant::now() < deadline, "no failed commit was counted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(l.stats.pending.load(Ordering::Relaxed), 20);
        other.execute_batch("ALTER TABLE requests_away RENAME TO requests").unwrap();
        l.flush().await;
        assert_eq!(l.stats.pending.load(Ordering::Relaxed), 0);
        assert_eq!(l.stats.written.load(Ordering::Relaxed), 21);
        assert_eq!(read_all(&target.sqlite).unwrap().len(), 21);
        assert_eq!(l.spend_since("a", 0).await.unwrap(), 21);
    }

    #[tokio::test]
    async fn a_record_is_committed_within_the_window_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(dir.path().join("l.db"), None);
        let l = Ledger::open(&target).unwrap();
        for round in 0..3 {
            // After an idle spell the writer sleeps long; the first record must wake it.
            tokio::time::sleep(Duration::from_millis(300)).await;
            l.record(rec(&format!("r{round}"), "a", 1), None);
            // The window is 10 ms; without the wake-up a record would wait up to a second.
            let deadline = Instant::now() + Duration::from_millis(400);
            while read_all(&target.sqlite).unwrap().len() < round + 1 {
                assert!(Instant::now() < deadline, "a record waited more than 400 ms");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        assert_eq!(l.stats.written.load(Ordering::Relaxed), 3);
    }

    /// A flood of requests with large prompts in the request log (8 clients of 120 KB prompts
    /// once left 21,695 rows waiting, 2 GB of memory and no commit for 30 s): the rows are still
    /// committed within a bounded time, and the lines waiting for the log stay within their budget.
    #[tokio::test]
    async fn a_flood_of_large_log_lines_never_holds_up_the_commits() {
        let dir = tempfile::tempdir().unwrap();
        // A small budget for the waiting lines keeps the test short (each line's 120 KB is counted).
        let target =
            Target { log_budget: 2 << 20, ..Target::new(dir.path().join("l.db"), Some(dir.path().join("r.jsonl"))) };
        let l = Ledger::open(&target).unwrap();
        let prompt = "lorem ipsum dolor sit amet, consectetur adipiscing elit ".repeat(2_200);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = {
            let (l, stop, prompt) = (l.clone(), stop.clone(), prompt.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut entry = Entry { request_id: format!("f{n}"), ..Entry::default() };
                    entry.facts.uncounted = Some(prompt.clone());
                    l.record(rec(&format!("f{n}"), "a", 1), Some(Box::new(entry)));
                    n += 1;
                    std::thread::sleep(Duration::from_micros(500));
                }
                n
            })
        };
        let started = Instant::now();
        while l.stats.written.load(Ordering::Relaxed) == 0 {
            assert!(started.elapsed() < Duration::from_millis(500), "nothing was committed under the flood");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let sent = producer.join().unwrap();
        let log = l.log_stats().unwrap();
        assert!(log.queued_bytes.load(Ordering::Relaxed) <= target.log_budget as u64);
        l.close().await;
        // Every row is committed; log lines past the budget are dropped and counted, never rows.
        assert_eq!(read_all(&target.sqlite).unwrap().len() as u64, sent);
        let lines = std::fs::read_to_string(dir.path().join("r.jsonl")).unwrap().lines().count() as u64;
        assert_eq!(lines + l.log_stats().unwrap().dropped.load(Ordering::Relaxed), sent);
    }

    /// Rows whose costs add up past `i64::MAX` (an upstream reporting absurd usage once made the
    /// sum overflow, and the spend read back as 0): the sum saturates; and a ledger that cannot be
    /// read is an error, never a spend of 0.
    #[tokio::test]
    async fn the_spend_saturates_and_a_failed_read_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(dir.path().join("l.db"), None);
        let l = Ledger::open(&target).unwrap();
        // Each row is stored at most at i64::MAX; three of them pass u64::MAX.
        for id in ["big1", "big2", "big3"] {
            l.record(rec(id, "a", u64::MAX), None);
        }
        assert_eq!(l.spend_since("a", 0).await.unwrap(), u64::MAX);
        let other = Connection::open(&target.sqlite).unwrap();
        other.execute_batch("ALTER TABLE requests RENAME TO requests_away").unwrap();
        assert!(l.spend_since("a", 0).await.is_err());
    }
}
