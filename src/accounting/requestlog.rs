//! The request log: one JSON object per request (JSONL), appended by the ledger's writer when
//! `log: { requests: FILE }` is set. Each line holds the outcome (rule, model, status, tokens,
//! cost, latency) and the facts a policy can read, so that `yardmaster simulate` can replay it
//! against another policy. Prompt text is kept only with `log: { prompts: true }`; without it the
//! log keeps the prompt's lengths and token count, and rules that search the text cannot be
//! replayed. Only the headers that the live policy reads are kept, and never `authorization`.
//!
//! Lines are written by a thread of their own ([`Writer`]), which counts the prompt's tokens (when
//! no rule did) and serialises each entry, off the request path and off the ledger's writer. The
//! lines waiting for it may hold at most [`QUEUE_BYTES_MAX`] bytes of prompt text (and
//! [`QUEUE_MAX`] lines); past that, new lines are dropped and counted
//! (`yardmaster_request_log_dropped_total`): the request log is for analysis, and never holds up a
//! request or a ledger row.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long a written line may wait before the file is flushed.
pub const FLUSH_WINDOW: Duration = Duration::from_millis(10);

/// Bytes of prompt text that the lines waiting to be written may hold.
pub const QUEUE_BYTES_MAX: usize = 64 << 20;
/// Lines that may wait to be written.
pub const QUEUE_MAX: usize = 16_384;
/// How much lower than the gateway's threads the log's writer runs: the lowest, below the
/// ledger's writer, so that counting tokens for the log never delays a ledger commit.
pub const WRITER_NICE: i32 = 19;

use crate::catalog::Endpoint;

/// One line of the request log.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// When the request ended (RFC 3339, UTC).
    pub time: String,
    /// `x-request-id`.
    pub request_id: String,
    /// The key's name.
    pub key: Option<String>,
    /// The policy version that routed it.
    pub policy: String,
    /// The rule that routed it.
    pub rule: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// Its provider.
    pub provider: Option<String>,
    /// The status the client got.
    pub status: u16,
    /// Input tokens.
    pub tokens_in: u64,
    /// Output tokens.
    pub tokens_out: u64,
    /// Cost in USD.
    pub cost_usd: f64,
    /// Time from arrival to end.
    pub latency_ms: u64,
    /// The cache's verdict (`hit`, `miss`, `bypass`), for a rule with `cache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// A semantic hit's cosine similarity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_similarity: Option<f32>,
    /// What the policy could read.
    pub facts: Facts,
}

/// The facts of a request, as the log keeps them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Facts {
    /// `chat` or `embeddings`.
    pub endpoint: Endpoint,
    /// The client API: `chat`, `responses` or `messages` (`chat` in logs from before it).
    pub api: crate::catalog::Api,
    /// The model the client named.
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// Tools offered.
    pub tools: bool,
    /// Images present.
    pub images: bool,
    /// The client's `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Number of messages.
    pub messages: u64,
    /// `prompt.length` (characters).
    pub prompt_chars: u64,
    /// The prompt's bytes (what budgets reserve against).
    pub prompt_bytes: u64,
    /// `prompt.tokens` (o200k).
    pub prompt_tokens: Option<u64>,
    /// OpenAI's `user`.
    pub user_id: Option<String>,
    /// The key's tier.
    pub tier: Option<String>,
    /// The key's budget per period, USD.
    pub budget_usd: Option<f64>,
    /// Spent this period when the request came, USD.
    pub budget_spent_usd: f64,
    /// UTC hour.
    pub hour: u8,
    /// UTC weekday, 0 = Monday.
    pub weekday: u8,
    /// The headers the policy read, those the request had.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The names of the headers the policy read (a name here that is not in `headers` was absent,
    /// unless it is in `headers_redacted`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers_read: Vec<String>,
    /// The headers the request had whose values the log does not keep (credentials, or headers
    /// outside `log: { headers }`): a rule that reads one cannot be replayed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers_redacted: Vec<String>,
    /// `metadata`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The prompt text (only with `log: { prompts: true }`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The last user message (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_last: Option<String>,
    /// The system messages (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_system: Option<String>,
    /// The prompt, held only until its tokens are counted (off the request path, by the ledger's
    /// writer), when the log does not keep it.
    #[serde(skip)]
    pub uncounted: Option<String>,
    /// SHA-256 (hex) of the canonical request without the fields that cannot change an answer:
    /// with the scope and the rule, the exact cache key, for `simulate`'s cache figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_sha256: Option<String>,
}

/// Whether a header's value is a credential, which the request log never keeps unless the config
/// lists it: `authorization`, cookies, and names that speak of keys, tokens, secrets, sessions,
/// passwords, signatures or credentials.
pub fn is_credential(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(n.as_str(), "authorization" | "proxy-authorization" | "cookie" | "set-cookie")
        || ["key", "token", "secret", "auth", "password", "passwd", "session", "signature", "credential"]
            .iter()
            .any(|w| n.contains(w))
}

impl Facts {
    /// Counts the prompt's tokens if nobody has (the log's writer calls this before writing).
    pub fn count_tokens(&mut self) {
        let held = self.uncounted.take();
        if self.prompt_tokens.is_none() {
            let text = held.as_deref().or(self.prompt.as_deref()).unwrap_or("");
            self.prompt_tokens = Some(crate::util::tokens::count(text));
        }
    }

    /// Whether the prompt text was kept.
    pub fn has_text(&self) -> bool {
        self.prompt.is_some()
    }
}

impl Entry {
    /// What a waiting line holds, about: its texts and a little for the rest.
    fn weight(&self) -> usize {
        let f = &self.facts;
        let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
        512 + text(&f.prompt) + text(&f.prompt_last) + text(&f.prompt_system) + text(&f.uncounted)
    }
}

enum LogMsg {
    Line(Box<Entry>, usize),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The request log's writer: a thread that counts, serialises and appends lines, and flushes the
/// file within a batching window of the first line it has not flushed.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::SyncSender<LogMsg>,
    budget: usize,
    thread: std::thread::Thread,
    /// Its counters.
    pub stats: Arc<LogStats>,
}

/// The request log's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Lines written.
    pub written: AtomicU64,
    /// Lines dropped (the waiting lines over their budget, or the file failed).
    pub dropped: AtomicU64,
    /// Bytes held by the lines waiting to be written.
    pub queued_bytes: AtomicU64,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("requestlog::Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Opens (appending) the log at `path` and starts its thread; the lines waiting for it may
    /// hold `budget` bytes.
    pub fn open(path: &Path, budget: usize) -> Result<Writer, String> {
        let stats = Arc::new(LogStats::default());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the request log {}: {e}", path.display()))?;
        let (tx, rx) = mpsc::sync_channel(QUEUE_MAX);
        let worker = stats.clone();
        let handle = std::thread::Builder::new()
            .name("yardmaster-log".into())
            .spawn(move || {
                crate::util::thread::lower_priority(WRITER_NICE);
                run(std::io::BufWriter::new(file), &rx, &worker);
            })
            .map_err(|e| format!("cannot start the request log's writer: {e}"))?;
        Ok(Writer { tx, budget, thread: handle.thread().clone(), stats })
    }

    /// Hands a line over, or drops it (counted) when the waiting lines are over their budget.
    pub fn push(&self, line: Box<Entry>) {
        let weight = line.weight();
        let queued = self.stats.queued_bytes.fetch_add(weight as u64, Ordering::AcqRel);
        if queued as usize + weight > self.budget || self.tx.try_send(LogMsg::Line(line, weight)).is_err() {
            self.stats.queued_bytes.fetch_sub(weight as u64, Ordering::AcqRel);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        } else if queued == 0 {
            self.thread.unpark();
        }
    }

    /// Waits until every line handed over so far is written and flushed.
    pub async fn flush(&self) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(LogMsg::Flush(reply)).is_ok() {
            self.thread.unpark();
            let _ = rx.await;
        }
    }
}

/// The writer's loop: take what has arrived (counting and serialising each line), flush within
/// [`FLUSH_WINDOW`] of the first unflushed line, and sleep when idle (the first line wakes it).
fn run(mut file: std::io::BufWriter<std::fs::File>, rx: &mpsc::Receiver<LogMsg>, stats: &LogStats) {
    let mut unflushed: Option<Instant> = None;
    let flush = |file: &mut std::io::BufWriter<std::fs::File>, unflushed: &mut Option<Instant>| {
        if unflushed.take().is_some() && file.flush().is_err() {
            tracing::warn!("the request log could not be written");
        }
    };
    loop {
        loop {
            match rx.try_recv() {
                Ok(LogMsg::Line(mut entry, weight)) => {
                    entry.facts.count_tokens();
                    let ok = serde_json::to_vec(&entry)
                        .map_err(std::io::Error::other)
                        .and_then(|mut l| {
                            l.push(b'\n');
                            file.write_all(&l)
                        })
                        .is_ok();
                    stats.queued_bytes.fetch_sub(weight as u64, Ordering::AcqRel);
                    let counter = if ok { &stats.written } else { &stats.dropped };
                    counter.fetch_add(1, Ordering::Relaxed);
                    unflushed.get_or_insert_with(Instant::now);
                }
                Ok(LogMsg::Flush(reply)) => {
                    flush(&mut file, &mut unflushed);
                    let _ = reply.send(());
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    flush(&mut file, &mut unflushed);
                    return;
                }
            }
            if unflushed.is_some_and(|t| t.elapsed() >= FLUSH_WINDOW) {
                flush(&mut file, &mut unflushed);
            }
        }
        if unflushed.is_some_and(|t| t.elapsed() >= FLUSH_WINDOW) {
            flush(&mut file, &mut unflushed);
        }
        let sleep = unflushed.map_or(Duration::from_secs(1), |t| FLUSH_WINDOW.saturating_sub(t.elapsed()));
        std::thread::park_timeout(sleep.max(Duration::from_millis(1)));
    }
}
