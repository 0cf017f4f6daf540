//! The spend ledger: one SQLite row per request, written by one thread off the request path.
//! Requests hand their record to a channel and go on; the writer commits what has arrived every
//! [`BATCH_WINDOW`] in one transaction, and appends the request
//! log's lines in the same pass. A failed commit keeps its batch and is retried; the failure is
//! counted. Rows are keyed by request id and inserted with `OR IGNORE`, so a retried batch never
//! counts a request twice. A graceful shutdown drains the channel before it returns, so a crash
//! loses at most one batching window of records (20 ms).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use super::requestlog::Entry;

/// How long the writer sleeps when nothing is waiting (it also checks for shutdown then).
const IDLE_PARK: Duration = Duration::from_secs(1);
/// How long a record may wait before it is committed.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// How much lower than the gateway's threads the writer runs (see [`lower_priority`]). Nice 19
/// starved it at full load in `bench/load.sh`; nice 10 kept up and cut the concurrency-1 p99 from
/// about 830 to 500 µs on a 2-core VM.
const WRITER_NICE: i32 = 10;
/// Records kept in memory while the disk keeps failing, before new ones are dropped (and counted).
const PENDING_MAX: usize = 1_000_000;

/// One request, as the ledger keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// The request id (`x-request-id`), unique.
    pub id: String,
    /// When the request ended, in Unix milliseconds.
    pub ts_ms: i64,
    /// The key's name (none for an open gateway).
    pub key: Option<String>,
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
}

enum Msg {
    Record(Box<Row>, Option<Box<Entry>>),
    SpendSince { key: String, since_ms: i64, reply: tokio::sync::oneshot::Sender<u64> },
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The ledger's handle. Cloning shares the writer.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Msg>,
    writer: std::thread::Thread,
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
         CREATE INDEX IF NOT EXISTS requests_key_ts ON requests (key, ts_ms);",
    )?;
    Ok(conn)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn commit(conn: &mut Connection, batch: &[Row]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO requests
             (id, ts_ms, key, rule, model, provider, input_tokens, output_tokens, cost_micros, status, latency_ms, estimated, policy)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
            ])?;
        }
    }
    tx.commit()
}

fn spend_since(conn: &Connection, key: &str, since_ms: i64) -> rusqlite::Result<u64> {
    let sum: i64 = conn.query_row(
        "SELECT COALESCE(SUM(cost_micros), 0) FROM requests WHERE key = ?1 AND ts_ms >= ?2",
        params![key, since_ms],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(sum).unwrap_or(0))
}

struct Writer {
    conn: Connection,
    log: Option<std::io::BufWriter<std::fs::File>>,
    batch: Vec<Row>,
    lines: Vec<String>,
    first_at: Option<Instant>,
    stats: Arc<Stats>,
}

impl Writer {
    /// Commits the batch; on failure keeps it for the next try.
    fn flush(&mut self) -> bool {
        if !self.lines.is_empty() {
            if let Some(log) = &mut self.log {
                let mut ok = true;
                for l in &self.lines {
                    ok &= log.write_all(l.as_bytes()).and_then(|()| log.write_all(b"\n")).is_ok();
                }
                if !(ok && log.flush().is_ok()) {
                    tracing::warn!("the request log could not be written");
                }
            }
            self.lines.clear();
        }
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
            Msg::Record(r, line) => {
                self.first_at.get_or_insert_with(Instant::now);
                self.batch.push(*r);
                if let Some(mut entry) = line {
                    // Counting and serialising here keeps them off the request path.
                    entry.facts.count_tokens();
                    if let Ok(l) = serde_json::to_string(&entry) {
                        self.lines.push(l);
                    }
                }
            }
            Msg::SpendSince { key, since_ms, reply } => {
                self.flush_hard(Duration::from_secs(5));
                let spent = spend_since(&self.conn, &key, since_ms).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "the ledger could not be read");
                    0
                });
                let _ = reply.send(spent);
            }
            Msg::Flush(reply) => {
                self.flush_hard(Duration::from_secs(5));
                let _ = reply.send(());
            }
        }
    }

    /// The writer's loop. It sleeps through each batching window instead of waking for every
    /// record (a wake-up per request would cost more than the insert); senders that wait for an
    /// answer (reads, flushes) unpark it.
    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        let mut window = BATCH_WINDOW;
        loop {
            loop {
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.flush_hard(Duration::from_secs(10));
                        return;
                    }
                }
            }
            if self.first_at.is_some_and(|t| t.elapsed() >= window) {
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
            // Idle: sleep long (the first record of a batch unparks the writer); otherwise until
            // the window closes.
            let sleep = self.first_at.map_or(IDLE_PARK, |t| window.saturating_sub(t.elapsed()));
            std::thread::park_timeout(sleep.max(Duration::from_millis(1)));
        }
    }
}

/// Lowers the calling thread's priority by [`WRITER_NICE`] (on Linux the nice value is per
/// thread). A commit then never holds up a request that shares its core: the request's thread
/// preempts it as soon as it wakes. When the CPU is saturated the writer still gets about a tenth
/// of it (nice 10 weighs 110 against 1024), more than the ~5% it needs at full load. Failure
/// (a platform without per-thread nice values) leaves the default priority.
fn lower_priority() {
    #[cfg(unix)]
    let _ = rustix::process::nice(WRITER_NICE);
}

impl Ledger {
    /// Opens (or creates) the ledger and starts its writer.
    pub fn open(target: &Target) -> Result<Ledger, String> {
        let conn =
            open(&target.sqlite).map_err(|e| format!("cannot open the ledger {}: {e}", target.sqlite.display()))?;
        let log = match &target.request_log {
            Some(p) => Some(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("cannot open the request log {}: {e}", p.display()))?,
            )),
            None => None,
        };
        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::channel();
        let writer = Writer { conn, log, batch: Vec::new(), lines: Vec::new(), first_at: None, stats: stats.clone() };
        let handle = std::thread::Builder::new()
            .name("yardmaster-ledger".into())
            .spawn(move || {
                lower_priority();
                writer.run(&rx)
            })
            .map_err(|e| format!("cannot start the ledger writer: {e}"))?;
        Ok(Ledger { tx, writer: handle.thread().clone(), stats })
    }

    /// Hands a record (and its request-log entry) to the writer. Never waits on the disk.
    pub fn record(&self, record: Row, log_line: Option<Box<Entry>>) {
        let before = self.stats.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Msg::Record(Box::new(record), log_line)).is_err() {
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        } else if before == 0 {
            // The first record of a batch starts the window; later ones ride along.
            self.writer.unpark();
        }
    }

    /// The key's spend since `since_ms`, after everything handed over so far is committed.
    pub async fn spend_since(&self, key: &str, since_ms: i64) -> u64 {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::SpendSince { key: key.to_string(), since_ms, reply }).is_err() {
            return 0;
        }
        self.writer.unpark();
        rx.await.unwrap_or(0)
    }

    /// Waits until everything handed over so far is committed.
    pub async fn flush(&self) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(reply)).is_ok() {
            self.writer.unpark();
            let _ = rx.await;
        }
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
        "SELECT id, ts_ms, key, rule, model, provider, input_tokens, output_tokens, cost_micros, status, latency_ms, estimated, policy
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
        let l = Ledger::open(&Target { sqlite: dir.path().join("l.db"), request_log: None }).unwrap();
        // The writer answers a flush only once it runs, after lowering its priority.
        l.flush().await;
        let own = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
        let mut writers = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let Ok(name) = std::fs::read_to_string(task.join("comm")) else { continue };
            if name.trim() == "yardmaster-ledg" {
                let Ok(stat) = std::fs::read_to_string(task.join("stat")) else { continue };
                assert_eq!(nice_of(&stat), (own + WRITER_NICE).min(19), "{}", task.display());
                writers += 1;
            }
        }
        assert!(writers >= 1, "no ledger writer thread found");
    }

    #[tokio::test]
    async fn records_survive_a_reopen_and_are_never_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target { sqlite: dir.path().join("l.db"), request_log: Some(dir.path().join("r.jsonl")) };
        let l = Ledger::open(&target).unwrap();
        for i in 0..250 {
            let entry = Entry { request_id: format!("id{i}"), ..Entry::default() };
            l.record(rec(&format!("id{i}"), "a", 10), Some(Box::new(entry)));
        }
        // The same request handed over twice (a retried batch) is one row.
        l.record(rec("id0", "a", 10), None);
        assert_eq!(l.spend_since("a", 0).await, 2_500);
        l.close().await;
        drop(l);
        let l = Ledger::open(&target).unwrap();
        assert_eq!(l.spend_since("a", 0).await, 2_500);
        assert_eq!(l.spend_since("b", 0).await, 0);
        assert_eq!(l.spend_since("a", i64::MAX).await, 0);
        l.close().await;
        assert_eq!(read_all(&target.sqlite).unwrap().len(), 250);
        let log = std::fs::read_to_string(dir.path().join("r.jsonl")).unwrap();
        assert_eq!(log.lines().count(), 250);
        // Lines are whole entries, in order, with the prompt's tokens counted by the writer.
        let first: Entry = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        assert_eq!((first.request_id.as_str(), first.facts.prompt_tokens), ("id0", Some(0)));
    }

    #[tokio::test]
    async fn a_failed_commit_is_counted_and_retried_without_losing_rows() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target { sqlite: dir.path().join("l.db"), request_log: None };
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
        assert_eq!(l.spend_since("a", 0).await, 21);
    }

    #[tokio::test]
    async fn a_record_is_committed_within_the_window_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target { sqlite: dir.path().join("l.db"), request_log: None };
        let l = Ledger::open(&target).unwrap();
        for round in 0..3 {
            // After an idle spell the writer sleeps long; the first record must wake it.
            tokio::time::sleep(Duration::from_millis(300)).await;
            l.record(rec(&format!("r{round}"), "a", 1), None);
            // The window is 20 ms; without the wake-up a record would wait up to a second.
            let deadline = Instant::now() + Duration::from_millis(400);
            while read_all(&target.sqlite).unwrap().len() < round + 1 {
                assert!(Instant::now() < deadline, "a record waited more than 400 ms");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        assert_eq!(l.stats.written.load(Ordering::Relaxed), 3);
    }
}
