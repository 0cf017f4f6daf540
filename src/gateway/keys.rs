//! Gateway keys made at run time: the [`KeyRing`] that authentication consults next to the
//! config's keys, and the `/admin/keys` endpoints that create, list, update and revoke them.
//! Input: the state store's key records (SPEC §13); output: the live keys, and JSON for the admin
//! page and scripts. A secret is shown once, in the answer that creates it, and stored only as
//! its SHA-256. Every instance re-reads the records when their version moves (it checks every
//! 250 ms), so a revocation holds everywhere within a second. Keys in the config file are listed
//! but cannot be changed here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::admin::admin;
use super::admit::read_body;
use super::error::ApiError;
use super::record::Record;
use super::settle::answer;
use super::AppState;
use crate::config::{BudgetConfig, LimitsConfig};
use crate::reload::{sha256, Key, Snapshot};
use crate::state::keys::KeyRecord;
use crate::state::{StateError, StateStore, Store};

/// How often an instance checks whether the run-time keys changed.
pub const KEYS_CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long Redis must have answered before an instance trusts it to say which keys exist: four
/// checks, time enough for an instance with a copy to put back what a restarted Redis lost.
pub const CONFIRM_SHARED: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// The run-time keys that work now (neither revoked nor, at load, expired), by secret hash, and
/// what the gateway may conclude from them: it is open only while the store can be read and has
/// never held a key (a revoked one included).
#[derive(Debug, Default)]
pub struct KeyRing {
    live: ArcSwap<HashMap<[u8; 32], Arc<Key>>>,
    version: AtomicU64,
    /// The last read of the store succeeded.
    readable: AtomicBool,
    /// When the store became readable (Unix ms); a shared store's empty answer is trusted only
    /// [`CONFIRM_SHARED`] later, once the instances that hold a copy had time to put back what
    /// Redis lost.
    readable_since: AtomicU64,
    /// How long a shared store must have been readable before its answers are trusted.
    confirm_ms: AtomicU64,
    /// The store has held a key: the gateway stays closed, even with every key revoked.
    had: AtomicBool,
}

impl KeyRing {
    /// True when there is no live run-time key.
    pub fn is_empty(&self) -> bool {
        self.live.load().is_empty()
    }

    /// How many run-time keys are live.
    pub fn live(&self) -> usize {
        self.live.load().len()
    }

    /// True when the keys can vouch that the gateway is open: the store was read (a shared one
    /// for long enough to trust an empty answer) and has never held a key. A store that cannot
    /// be read, or that held keys once, keeps the gateway closed.
    pub fn open(&self) -> bool {
        self.confirmed() && !self.had()
    }

    /// Not open, and not known to be closed either: no key was ever seen and the store cannot
    /// vouch for that yet (it cannot be read, or a shared store answered only just now).
    pub fn unsure(&self) -> bool {
        !self.had() && !self.confirmed()
    }

    /// Whether the last read of the store succeeded (an unknown key is then a wrong one).
    pub fn readable(&self) -> bool {
        self.readable.load(Ordering::Acquire)
    }

    /// Readable, and for long enough to trust what it says.
    fn confirmed(&self) -> bool {
        let since = self.readable_since.load(Ordering::Acquire);
        self.readable() && now_ms().saturating_sub(since) >= self.confirm_ms.load(Ordering::Relaxed)
    }

    /// Whether the store has held a key (the gateway is closed for good).
    pub fn had(&self) -> bool {
        self.had.load(Ordering::Acquire)
    }

    /// Why the keys cannot vouch for requests now (for `/readyz`), if they cannot.
    pub fn unready(&self) -> Option<&'static str> {
        if !self.readable() {
            Some("the run-time keys cannot be read")
        } else if self.unsure() {
            Some("the run-time keys are being confirmed")
        } else {
            None
        }
    }

    /// The run-time key with this secret hash.
    pub fn find(&self, hash: &[u8; 32]) -> Option<Arc<Key>> {
        self.live.load().get(hash).cloned()
    }

    /// Every live run-time key.
    pub fn all(&self) -> Vec<Arc<Key>> {
        self.live.load().values().cloned().collect()
    }

    /// The live run-time key with this name.
    pub fn named(&self, name: &str) -> Option<Arc<Key>> {
        self.live.load().values().find(|k| k.name == name).cloned()
    }

    /// Re-reads the records when their version moved (or always, with `force`).
    pub async fn refresh(&self, store: &Store, force: bool) -> Result<(), StateError> {
        let read = self.read(store, force).await;
        let was = self.readable.swap(read.is_ok(), Ordering::AcqRel);
        if read.is_ok() && !was {
            self.readable_since.store(now_ms(), Ordering::Release);
        }
        match (&read, was) {
            (Err(e), true) => {
                tracing::warn!(error = %e, "the run-time keys cannot be read: requests without a key known before are refused (503) until they can")
            }
            (Ok(()), false) if self.version.load(Ordering::Acquire) != 0 || matches!(store, Store::Shared(_)) => {
                tracing::info!("the run-time keys can be read again");
            }
            _ => {}
        }
        read
    }

    async fn read(&self, store: &Store, force: bool) -> Result<(), StateError> {
        let version = store.keys_version().await?;
        if !force && self.readable() && version == self.version.load(Ordering::Acquire) {
            return Ok(());
        }
        let records = store.keys().await?;
        if !records.is_empty() {
            self.had.store(true, Ordering::Release);
        }
        let live = records.iter().filter(|r| r.revoked_at_ms.is_none()).filter_map(|r| {
            let hash = hash_of(r)?;
            Some((hash, Arc::new(Key { hash, ..key_of(r) })))
        });
        self.live.store(Arc::new(live.collect()));
        self.version.store(version, Ordering::Release);
        Ok(())
    }

    /// The keys in `store` now, kept up to date by [`KeyRing::watch`]. A store that cannot be
    /// read at start leaves the ring empty until it can.
    pub async fn start(store: Arc<Store>) -> Arc<KeyRing> {
        let ring = Arc::new(KeyRing::default());
        if matches!(*store, Store::Shared(_)) {
            ring.confirm_ms.store(CONFIRM_SHARED.as_millis() as u64, Ordering::Relaxed);
        }
        ring.readable_since.store(now_ms(), Ordering::Release);
        if let Err(e) = ring.read(&store, true).await {
            tracing::warn!(error = %e, "the run-time keys could not be read at start: requests without a config key are refused (503) until they can; they are read again every 250 ms");
        } else {
            ring.readable.store(true, Ordering::Release);
        }
        ring.watch(store);
        ring
    }

    /// Checks for changes every [`KEYS_CHECK_EVERY`] for as long as the runtime lives. A store
    /// that cannot be read keeps the keys last read.
    pub fn watch(self: &Arc<Self>, store: Arc<Store>) {
        let ring = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(KEYS_CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(ring) = ring.upgrade() else { return };
                if let Err(e) = ring.refresh(&store, false).await {
                    tracing::debug!(error = %e, "the run-time keys could not be read; the last ones stay");
                }
            }
        });
    }
}

/// A record's secret hash, when its hex is one.
fn hash_of(r: &KeyRecord) -> Option<[u8; 32]> {
    hex::decode(&r.sha256).ok()?.try_into().ok()
}

fn key_of(r: &KeyRecord) -> Key {
    Key {
        name: r.name.clone(),
        account: r.id.clone(),
        hash: [0; 32],
        tier: r.tier.clone(),
        budget: r.budget,
        limits: r.limits,
        models: r.models.clone(),
        cache: true,
        expires_at_ms: r.expires_at_ms,
    }
}

fn unavailable(e: StateError) -> ApiError {
    ApiError::state_unavailable(&e.to_string())
}

fn rfc3339(ms: Option<i64>) -> Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis).map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

/// A key as the admin endpoints show it: its settings, its standing, and where it comes from.
async fn shown(st: &AppState, source: &str, id: Option<&str>, key: &Key, record: Option<&KeyRecord>) -> Value {
    let standing = match key.budget {
        Some(b) => st.state.standing(&key.account, b.per).await.ok(),
        None => st.state.standing(&key.account, crate::config::Period::Month).await.ok(),
    };
    let spent = standing.map(|s| crate::accounting::usage::usd(s.spent));
    let reserved = standing.map(|s| crate::accounting::usage::usd(s.reserved));
    let now = chrono::Utc::now().timestamp_millis();
    let state = match record {
        Some(r) if r.revoked_at_ms.is_some() => "revoked",
        _ if key.expires_at_ms.is_some_and(|t| t <= now) => "expired",
        _ => "active",
    };
    json!({
        "id": id, "source": source, "name": key.name, "state": state, "tier": key.tier,
        "budget": key.budget, "limits": key.limits, "models": key.models,
        "spend_usd": spent, "reserved_usd": reserved,
        "prefix": record.map(|r| r.prefix.as_str()),
        "expires_at": rfc3339(key.expires_at_ms),
        "created_at": rfc3339(record.map(|r| r.created_at_ms)),
        "revoked_at": rfc3339(record.and_then(|r| r.revoked_at_ms)),
    })
}

/// `GET /admin/keys`: the config's keys, then the run-time ones (revoked ones included), each
/// with its spend this period.
pub async fn list(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let result = async {
        admin(&snap, &headers)?;
        let records = st.state.keys().await.map_err(unavailable)?;
        let mut data = Vec::new();
        for k in &snap.config.config.keys {
            let mut shown = shown(&st, "config", None, &Key::from_config(k, [0; 32]), None).await;
            if !snap.keys.iter().any(|c| c.name == k.name) {
                // Its secret's variable is unset: listed, but no request can use it.
                shown["state"] = "disabled".into();
            }
            data.push(shown);
        }
        for r in &records {
            data.push(shown(&st, "runtime", Some(&r.id), &key_of(r), Some(r)).await);
        }
        Ok::<_, ApiError>(
            axum::Json(json!({"object": "list", "stored_in": st.state.keys_home(), "data": data})).into_response(),
        )
    }
    .await;
    answer(&st, Record::new(snap.version()), result)
}

/// The settings a create or an update names; `None` for a field it leaves alone, `Some(None)` for
/// one it clears.
#[derive(Default)]
struct Fields {
    name: Option<String>,
    tier: Option<Option<String>>,
    budget: Option<Option<BudgetConfig>>,
    limits: Option<Option<LimitsConfig>>,
    models: Option<Option<Vec<String>>>,
    expires_at_ms: Option<Option<i64>>,
}

fn field<T: serde::de::DeserializeOwned>(
    body: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<Option<T>>, ApiError> {
    match body.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => serde_json::from_value(v.clone())
            .map(|t| Some(Some(t)))
            .map_err(|e| ApiError::bad_request(format!("`{name}`: {e}")).param(name.to_string())),
    }
}

fn fields(bytes: &[u8], snap: &Snapshot) -> Result<Fields, ApiError> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(body) = body else { return Err(ApiError::bad_request("the request body must be a JSON object")) };
    const KNOWN: [&str; 6] = ["name", "tier", "budget", "limits", "models", "expires_at"];
    if let Some(k) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown field `{k}` (expected one of {})", KNOWN.join(", ")))
            .param(k.clone()));
    }
    let expires_at_ms = match field::<String>(&body, "expires_at")? {
        None => None,
        Some(None) => Some(None),
        Some(Some(t)) => Some(Some(
            chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|e| {
                    ApiError::bad_request(format!("`expires_at`: `{t}` is not an RFC 3339 time: {e}"))
                        .param("expires_at")
                })?
                .timestamp_millis(),
        )),
    };
    let name = match field::<String>(&body, "name")? {
        Some(None) => return Err(ApiError::bad_request("`name` cannot be null").param("name")),
        Some(Some(n)) if n.trim().is_empty() || n.len() > 128 => {
            return Err(ApiError::bad_request("`name` must be 1 to 128 characters").param("name"))
        }
        n => n.flatten(),
    };
    let budget: Option<Option<BudgetConfig>> = field(&body, "budget")?;
    if let Some(Some(b)) = budget {
        if !(b.usd.is_finite() && b.usd >= 0.0) {
            return Err(ApiError::bad_request("`budget.usd` must be a number of dollars, 0 or more").param("budget"));
        }
    }
    let limits: Option<Option<LimitsConfig>> = field(&body, "limits")?;
    if let Some(Some(l)) = limits {
        if l.rpm == Some(0) || l.tpm == Some(0) {
            return Err(ApiError::bad_request(
                "`limits`: `rpm` and `tpm` must be at least 1 (to stop a key, revoke it or give it an `expires_at`)",
            )
            .param("limits"));
        }
    }
    // The same check as the config's keys: an allowlist names catalog models (or families).
    let models: Option<Option<Vec<String>>> = field(&body, "models")?;
    let catalog = &snap.config.config.models;
    if let Some(m) = models.iter().flatten().flatten().find(|m| !catalog.contains_key(m.as_str())) {
        return Err(ApiError::bad_request(format!("`models`: `{m}` is not a model of the catalog")).param("models"));
    }
    Ok(Fields { name, tier: field(&body, "tier")?, budget, limits, models, expires_at_ms })
}

impl Fields {
    fn apply(self, r: &mut KeyRecord) {
        if let Some(n) = self.name {
            r.name = n;
        }
        if let Some(t) = self.tier {
            r.tier = t;
        }
        if let Some(b) = self.budget {
            r.budget = b;
        }
        if let Some(l) = self.limits {
            r.limits = l;
        }
        if let Some(m) = self.models {
            r.models = m;
        }
        if let Some(e) = self.expires_at_ms {
            r.expires_at_ms = e;
        }
    }
}

/// Refuses a name that a config key has (the store itself refuses one that another live
/// run-time key has, atomically).
fn not_in_config(snap: &Snapshot, name: &str) -> Result<(), ApiError> {
    if snap.config.config.keys.iter().any(|k| k.name == name) {
        return Err(ApiError::key_name_taken(name));
    }
    Ok(())
}

/// Stores a record, or answers 409 when another live key took its name first.
async fn store(st: &AppState, record: &KeyRecord) -> Result<(), ApiError> {
    if !st.state.put_key(record).await.map_err(unavailable)? {
        return Err(ApiError::key_name_taken(&record.name));
    }
    st.keys.refresh(&st.state, true).await.map_err(unavailable)
}

/// `POST /admin/keys`: makes a key; the answer holds its secret, the only time it is shown.
pub async fn create(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let snap = st.reloader.snapshot();
    let result = async {
        admin(&snap, &headers)?;
        let bytes = read_body(&st, &snap, body).await?;
        let fields = fields(&bytes, &snap)?;
        let name = fields.name.clone().ok_or_else(|| ApiError::bad_request("`name` is required").param("name"))?;
        not_in_config(&snap, &name)?;
        let secret = format!("ym-{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let mut record = KeyRecord {
            id: format!("key_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            name,
            sha256: hex::encode(sha256(&secret)),
            prefix: secret[..7].to_string(),
            tier: None,
            budget: None,
            limits: None,
            models: None,
            expires_at_ms: None,
            created_at_ms: chrono::Utc::now().timestamp_millis(),
            revoked_at_ms: None,
        };
        fields.apply(&mut record);
        store(&st, &record).await?;
        tracing::info!(id = %record.id, name = %record.name, "gateway key created");
        let mut shown = shown(&st, "runtime", Some(&record.id), &key_of(&record), Some(&record)).await;
        shown["key"] = Value::String(secret);
        Ok::<_, ApiError>((StatusCode::CREATED, axum::Json(shown)).into_response())
    }
    .await;
    answer(&st, Record::new(snap.version()), result)
}

/// The run-time record `id` names; a config key's name is refused, anything else is not found.
async fn record_of(st: &AppState, snap: &Snapshot, id: &str) -> Result<KeyRecord, ApiError> {
    let records = st.state.keys().await.map_err(unavailable)?;
    if let Some(r) = records.into_iter().find(|r| r.id == id) {
        return Ok(r);
    }
    if snap.config.config.keys.iter().any(|k| k.name == id) {
        return Err(ApiError::key_in_config(id));
    }
    Err(ApiError::key_not_found(id))
}

/// `PATCH /admin/keys/{id}`: changes the fields the body names (`null` clears one).
pub async fn update(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let snap = st.reloader.snapshot();
    let result = async {
        admin(&snap, &headers)?;
        let bytes = read_body(&st, &snap, body).await?;
        let fields = fields(&bytes, &snap)?;
        let mut record = record_of(&st, &snap, &id).await?;
        if record.revoked_at_ms.is_some() {
            return Err(ApiError::new(StatusCode::CONFLICT, "key_revoked", format!("the key `{id}` is revoked")));
        }
        if let Some(n) = &fields.name {
            not_in_config(&snap, n)?;
        }
        fields.apply(&mut record);
        store(&st, &record).await?;
        tracing::info!(id = %record.id, "gateway key updated");
        Ok(axum::Json(shown(&st, "runtime", Some(&record.id), &key_of(&record), Some(&record)).await).into_response())
    }
    .await;
    answer(&st, Record::new(snap.version()), result)
}

/// `DELETE /admin/keys/{id}`: revokes the key (its record stays, for the spend it carries).
pub async fn revoke(State(st): State<Arc<AppState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let result = async {
        admin(&snap, &headers)?;
        let mut record = record_of(&st, &snap, &id).await?;
        if record.revoked_at_ms.is_none() {
            // SPEC §9 at every change: the last key is not revoked where that would leave the
            // gateway keyless (not loopback, no `allow_open`).
            let others = st.keys.live() - usize::from(hash_of(&record).is_some_and(|h| st.keys.find(&h).is_some()));
            if let Some(why) = super::leaves_no_key(&snap.config.config, st.listen, others) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "last_key",
                    format!("the key `{id}` is not revoked: {why}"),
                ));
            }
            record.revoked_at_ms = Some(chrono::Utc::now().timestamp_millis());
            store(&st, &record).await?;
            tracing::info!(id = %record.id, "gateway key revoked");
        }
        Ok::<_, ApiError>(
            axum::Json(json!({"id": record.id, "revoked": true, "revoked_at": rfc3339(record.revoked_at_ms)}))
                .into_response(),
        )
    }
    .await;
    answer(&st, Record::new(snap.version()), result)
}
