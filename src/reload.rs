//! Hot reload: prepare fallibly, then swap infallibly. A snapshot (config, catalog, compiled
//! policy, providers, keys) is built off the request path; only when parsing, checking,
//! compiling and the policy's own tests all succeed is it stored in the `ArcSwap`. A request keeps
//! the snapshot it started with. A failed reload never changes the live policy: its reason is
//! logged, counted and shown at `/admin/policy`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::config::{self, BudgetConfig, LimitsConfig, Loaded};
use crate::policy::{self, Program};
use crate::providers::Provider;

/// A gateway key, as the gateway checks it.
#[derive(Clone, Debug)]
pub struct Key {
    /// Its name.
    pub name: String,
    /// What its spend, limits and cache entries are kept under: a config key's name, a run-time
    /// key's id (so that a new key that takes a revoked key's name starts afresh).
    pub account: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// Its tier.
    pub tier: Option<String>,
    /// Its budget.
    pub budget: Option<BudgetConfig>,
    /// Its rate limits.
    pub limits: Option<LimitsConfig>,
    /// The only models it may name.
    pub models: Option<Vec<String>>,
    /// Whether it uses the response cache.
    pub cache: bool,
    /// When it stops working (run-time keys; Unix milliseconds).
    pub expires_at_ms: Option<i64>,
}

impl Key {
    /// Whether the key may use the catalog model `model` (its allowlist names it, or a family
    /// it falls under; a key without an allowlist may use any).
    pub fn may_use(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|list| {
            list.iter().any(|n| n == model || (config::is_family(n) && model.starts_with(n.trim_end_matches('*'))))
        })
    }

    /// A config key with the hash of its secret.
    pub fn from_config(k: &config::KeyConfig, hash: [u8; 32]) -> Key {
        Key {
            name: k.name.clone(),
            account: k.name.clone(),
            hash,
            tier: k.tier.clone(),
            budget: k.budget,
            limits: k.limits,
            models: k.models.clone(),
            cache: k.cache,
            expires_at_ms: None,
        }
    }
}

/// Everything a request needs, loaded and checked as one.
pub struct Snapshot {
    /// The compiled policy.
    pub program: Program,
    /// The config.
    pub config: Loaded,
    /// Providers by name.
    pub providers: HashMap<String, Provider>,
    /// The config's gateway keys (run-time keys are the gateway's `KeyRing`).
    pub keys: Vec<Arc<Key>>,
    /// SHA-256 of the admin key, when admin access is enabled.
    pub admin: Option<[u8; 32]>,
    /// When it was loaded.
    pub loaded_at: chrono::DateTime<chrono::Utc>,
    /// The policy's files, in include order, and the config and tests files: what the watcher watches.
    pub files: Vec<PathBuf>,
}

impl Snapshot {
    /// The policy version.
    pub fn version(&self) -> &str {
        self.program.version()
    }

    /// The key with this bearer token.
    pub fn key(&self, hash: &[u8; 32]) -> Option<&Arc<Key>> {
        self.keys.iter().find(|k| k.hash == *hash)
    }

    /// Whether the token is the admin key.
    pub fn is_admin(&self, token: &str) -> bool {
        self.admin.is_some_and(|a| a == sha256(token))
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("version", &self.version()).field("keys", &self.keys.len()).finish()
    }
}

/// SHA-256 of a string.
pub fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn secret_hash(key_env: Option<&String>, key_sha256: Option<&String>) -> Option<[u8; 32]> {
    if let Some(env) = key_env {
        let v = std::env::var(env).ok().filter(|v| !v.is_empty())?;
        return Some(sha256(&v));
    }
    let h = hex::decode(key_sha256?).ok()?;
    h.try_into().ok()
}

/// Loads a snapshot: config, policy (parse, check, compile), the policy's tests, providers, keys.
pub fn load(config_path: &Path, http: &reqwest::Client) -> Result<Snapshot, String> {
    build(config::load(config_path).map_err(|e| e.to_string())?, http)
}

/// Builds a snapshot from a loaded config: the policy (parse, check, compile), its tests,
/// providers and keys.
pub fn build(loaded: Loaded, http: &reqwest::Client) -> Result<Snapshot, String> {
    let config_path = loaded.path.clone();
    let config_path = config_path.as_path();
    let entry = loaded.policy_path().ok_or_else(|| format!("{}: no `policy:` given", config_path.display()))?;
    let catalog = loaded.catalog();
    let (program, diags, sources) = policy::build(&entry, Some(&catalog));
    let Some(program) = program else {
        let errors: Vec<String> = diags.iter().filter(|d| d.is_error()).map(|d| d.one_line(&sources)).collect();
        return Err(format!("the policy does not load:\n{}", errors.join("\n")));
    };
    let mut files: Vec<PathBuf> = program.checked.sources.files().iter().map(|f| f.path.clone()).collect();
    files.push(config_path.to_path_buf());
    let tests = policy::testing::tests_path(&entry);
    if tests.exists() {
        files.push(tests.clone());
        if loaded.config.reload.require_tests {
            let text = std::fs::read_to_string(&tests).map_err(|e| format!("{}: {e}", tests.display()))?;
            let cases = policy::testing::parse_cases(&text).map_err(|e| format!("{}: {e}", tests.display()))?;
            let keys: Vec<policy::testing::KeyInfo> = loaded
                .config
                .keys
                .iter()
                .map(|k| policy::testing::KeyInfo {
                    name: k.name.clone(),
                    tier: k.tier.clone(),
                    budget_usd: k.budget.map(|b| b.usd),
                })
                .collect();
            let failed: Vec<String> = policy::testing::run(&program, &cases, &keys)
                .into_iter()
                .filter_map(|r| r.failure.map(|f| format!("{}: {f}", r.name)))
                .collect();
            if !failed.is_empty() {
                return Err(format!("{} of the policy's tests fail:\n{}", failed.len(), failed.join("\n")));
            }
        }
    }
    let providers = loaded
        .config
        .providers
        .iter()
        .map(|(name, cfg)| (name.clone(), Provider::from_config(name, cfg, http)))
        .collect();
    let keys = loaded
        .config
        .keys
        .iter()
        .filter_map(|k| {
            let hash = secret_hash(k.key_env.as_ref(), k.key_sha256.as_ref())?;
            Some(Arc::new(Key::from_config(k, hash)))
        })
        .collect();
    let admin = loaded.config.admin.as_ref().and_then(|a| secret_hash(a.key_env.as_ref(), a.key_sha256.as_ref()));
    Ok(Snapshot { program, config: loaded, providers, keys, admin, loaded_at: chrono::Utc::now(), files })
}

/// The live snapshot, the previous good one, and the state of reloads.
pub struct Reloader {
    config_path: PathBuf,
    http: reqwest::Client,
    live: ArcSwap<Snapshot>,
    previous: Mutex<Option<Arc<Snapshot>>>,
    last_error: Mutex<Option<String>>,
    /// Successful reloads.
    pub reloads_ok: AtomicU64,
    /// Failed reloads.
    pub reloads_failed: AtomicU64,
    /// Serialises reloads.
    lock: tokio::sync::Mutex<()>,
    /// The last [`HISTORY_MAX`] reloads and rollbacks, newest last.
    history: Mutex<std::collections::VecDeque<ReloadEvent>>,
    /// A last check of a snapshot before it goes live (the gateway's: SPEC §9's open-gateway rule).
    guard: Mutex<Option<Guard>>,
}

/// Why a snapshot may not go live, if it may not.
pub type Guard = Box<dyn Fn(&Snapshot) -> Option<String> + Send + Sync>;

/// How many reloads and rollbacks `/admin/reloads` remembers.
pub const HISTORY_MAX: usize = 50;

/// One reload or rollback, for `/admin/reloads`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReloadEvent {
    /// When (RFC 3339).
    pub at: String,
    /// `reload` or `rollback`.
    pub action: &'static str,
    /// Whether it took effect.
    pub ok: bool,
    /// The version live afterwards.
    pub version: String,
    /// Why it was rejected.
    pub error: Option<String>,
}

/// Why a rollback did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// No reload has succeeded yet.
    #[error("there is no previous version to roll back to")]
    Nothing,
    /// The previous version may not go live now (the reason).
    #[error("the rollback was refused: {0}")]
    Refused(String),
}

/// What `/admin/policy` shows.
#[derive(Debug, serde::Serialize)]
pub struct PolicyStatus {
    /// The live version.
    pub version: String,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// Its files.
    pub files: Vec<String>,
    /// Why the last reload failed (null when it succeeded).
    pub last_error: Option<String>,
}

impl Reloader {
    /// Builds the first snapshot from the config that the command line loaded (the file is not
    /// read again).
    pub fn start(loaded: Loaded, http: reqwest::Client) -> Result<Reloader, String> {
        let config_path = loaded.path.clone();
        let first = build(loaded, &http)?;
        Ok(Reloader {
            config_path,
            http,
            live: ArcSwap::from_pointee(first),
            previous: Mutex::new(None),
            last_error: Mutex::new(None),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            lock: tokio::sync::Mutex::new(()),
            history: Mutex::default(),
            guard: Mutex::default(),
        })
    }

    /// Sets the check every new snapshot must pass before it goes live, by reload or rollback.
    pub fn guard(&self, guard: Guard) {
        *lock(&self.guard) = Some(guard);
    }

    fn refused(&self, snap: &Snapshot) -> Option<String> {
        lock(&self.guard).as_ref().and_then(|g| g(snap))
    }

    /// The live snapshot. Load it once per request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Reloads: builds a new snapshot off the request path and swaps it in when it is good.
    pub async fn reload(&self) -> Result<String, String> {
        let _guard = self.lock.lock().await;
        let path = self.config_path.clone();
        let http = self.http.clone();
        let built = tokio::task::spawn_blocking(move || load(&path, &http)).await.map_err(|e| e.to_string())?;
        let built = built.and_then(|snap| match self.refused(&snap) {
            Some(why) => Err(why),
            None => Ok(snap),
        });
        match built {
            Ok(snap) => {
                let old = self.live.load_full();
                let restart = restart_notes(&old.config, &snap.config);
                for note in &restart {
                    tracing::warn!("{note}");
                }
                let version = snap.version().to_string();
                self.live.store(Arc::new(snap));
                *lock(&self.previous) = Some(old);
                *lock(&self.last_error) = None;
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.remember("reload", true, &version, None);
                tracing::info!(version = %version, "policy reloaded");
                Ok(version)
            }
            Err(e) => {
                *lock(&self.last_error) = Some(e.clone());
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                self.remember("reload", false, self.snapshot().version(), Some(e.clone()));
                tracing::error!(error = %e, "reload rejected; the running policy stays");
                Err(e)
            }
        }
    }

    /// Brings back the previous good snapshot: its version, and `true` when that version is the
    /// one already live (then nothing changes, and the previous one is kept).
    pub async fn rollback(&self) -> Result<(String, bool), RollbackError> {
        let _guard = self.lock.lock().await;
        let mut previous = lock(&self.previous);
        let prev = previous.as_ref().ok_or(RollbackError::Nothing)?;
        if prev.version() == self.snapshot().version() {
            return Ok((prev.version().to_string(), true));
        }
        if let Some(why) = self.refused(prev) {
            tracing::error!(error = %why, "rollback refused; the running policy stays");
            return Err(RollbackError::Refused(why));
        }
        let prev = previous.take().ok_or(RollbackError::Nothing)?;
        drop(previous);
        let version = prev.version().to_string();
        let old = self.live.swap(prev);
        *lock(&self.previous) = Some(old);
        self.remember("rollback", true, &version, None);
        tracing::info!(version = %version, "rolled back");
        Ok((version, false))
    }

    fn remember(&self, action: &'static str, ok: bool, version: &str, error: Option<String>) {
        let mut h = lock(&self.history);
        if h.len() == HISTORY_MAX {
            h.pop_front();
        }
        h.push_back(ReloadEvent {
            at: chrono::Utc::now().to_rfc3339(),
            action,
            ok,
            version: version.to_string(),
            error,
        });
    }

    /// The recent reloads and rollbacks, newest first.
    pub fn history(&self) -> Vec<ReloadEvent> {
        lock(&self.history).iter().rev().cloned().collect()
    }

    /// The state `/admin/policy` shows.
    pub fn status(&self) -> PolicyStatus {
        let s = self.snapshot();
        PolicyStatus {
            version: s.version().to_string(),
            loaded_at: s.loaded_at.to_rfc3339(),
            files: s.program.checked.sources.files().iter().map(|f| f.path.display().to_string()).collect(),
            last_error: lock(&self.last_error).clone(),
        }
    }

    /// Watches the config, the policy's files and its tests, and reloads after they have been
    /// quiet for `debounce` and read the same twice. Runs until the process ends.
    pub fn watch(self: &Arc<Self>) -> Result<(), String> {
        use notify::{RecursiveMode, Watcher};
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        // The directories also hold the ledger and the request log, which change all the time:
        // their events are not policy changes. (Everything else counts, so that a Kubernetes
        // ConfigMap's `..data` symlink swap still triggers a reload.)
        let noise_of = |snap: &Snapshot| -> HashSet<OsString> {
            let mut names = HashSet::new();
            if let Some(db) = snap.config.ledger_path().and_then(|p| p.file_name().map(OsString::from)) {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut n = db.clone();
                    n.push(suffix);
                    names.insert(n);
                }
            }
            if let Some(log) = snap.config.request_log_path().and_then(|p| p.file_name().map(OsString::from)) {
                names.insert(log);
            }
            names
        };
        let noise = Arc::new(Mutex::new(noise_of(&self.snapshot())));
        let seen_noise = Arc::clone(&noise);
        // The server's own log, when stdout or stderr is a file beside the policy: its writes are
        // not changes (at trace level, each one logged would be another write, in a loop).
        let logs = own_log_files();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Reads (ours included) are not changes.
            if let Ok(ev) = ev {
                let ours = {
                    let n = lock(&seen_noise);
                    ev.paths.iter().any(|p| p.file_name().is_none_or(|f| !n.contains(f)) && !is_one_of(p, &logs))
                };
                if ours
                    && matches!(
                        ev.kind,
                        notify::EventKind::Create(_) | notify::EventKind::Modify(_) | notify::EventKind::Remove(_)
                    )
                {
                    let _ = tx.send(());
                }
            }
        })
        .map_err(|e| e.to_string())?;
        let dirs = |snap: &Snapshot| -> Vec<PathBuf> {
            let mut d: Vec<PathBuf> = snap
                .files
                .iter()
                .map(|f| {
                    f.parent()
                        .map(Path::to_path_buf)
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or_else(|| PathBuf::from("."))
                })
                .collect();
            d.sort();
            d.dedup();
            d
        };
        let mut watched = dirs(&self.snapshot());
        for d in &watched {
            watcher.watch(d, RecursiveMode::NonRecursive).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _keep = &mut watcher;
            let mut last_loaded = read_all(&this.snapshot().files);
            while rx.recv().await.is_some() {
                let debounce = Duration::from_millis(this.snapshot().config.config.reload.debounce);
                loop {
                    // Drain until quiet.
                    while let Ok(Some(())) = tokio::time::timeout(debounce, rx.recv()).await {}
                    let files = this.snapshot().files.clone();
                    let a = read_all(&files);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if read_all(&files) == a {
                        break;
                    }
                }
                let now_files = read_all(&this.snapshot().files);
                if now_files == last_loaded {
                    // Touched but not changed since the last attempt.
                    continue;
                }
                last_loaded = now_files;
                let before = this.snapshot().version().to_string();
                let _ = this.reload().await;
                *lock(&noise) = noise_of(&this.snapshot());
                let now = dirs(&this.snapshot());
                if now != watched {
                    for d in now.iter().filter(|d| !watched.contains(d)) {
                        let _ = _keep.watch(d, RecursiveMode::NonRecursive);
                    }
                    watched = now;
                }
                tracing::debug!(before = %before, after = %this.snapshot().version(), "watcher handled a change");
            }
        });
        Ok(())
    }
}

/// The files that this process's stdout and stderr write to (device and inode), if they are files.
fn own_log_files() -> Vec<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        ["/proc/self/fd/1", "/proc/self/fd/2", "/dev/fd/1", "/dev/fd/2"]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .filter(std::fs::Metadata::is_file)
            .map(|m| (m.dev(), m.ino()))
            .collect()
    }
    #[cfg(not(unix))]
    Vec::new()
}

/// Whether `path` is one of `files` (by device and inode).
fn is_one_of(path: &Path, files: &[(u64, u64)]) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        !files.is_empty() && std::fs::metadata(path).is_ok_and(|m| files.contains(&(m.dev(), m.ino())))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, files);
        false
    }
}

fn read_all(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|f| std::fs::read(f).ok()).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Settings that only take effect after a restart.
fn restart_notes(old: &Loaded, new: &Loaded) -> Vec<String> {
    let mut out = Vec::new();
    if old.config.listen != new.config.listen {
        out.push(format!("`listen` changed to {}; it takes effect after a restart", new.config.listen));
    }
    if old.ledger_path() != new.ledger_path() {
        out.push("`storage` changed; it takes effect after a restart".into());
    }
    let log = |l: &Loaded| {
        (l.request_log_path(), l.config.log.prompts, l.config.log.format.clone(), l.config.log.headers.clone())
    };
    if log(old) != log(new) {
        out.push("`log` changed; it takes effect after a restart".into());
    }
    out
}
