//! The state seam: what a request reserves, spends and counts, and what every request shares
//! about the models' health. Input: a key's name with its budget and limits, or a model's name;
//! output: standings, reservations, admissions and breaker verdicts. Budgets (spend and
//! reservations per key and period), rate limits (rpm and tpm per key) and breaker state are
//! reached only through [`StateStore`], so that a store shared by several instances (Redis,
//! SPEC §11) is a second implementation of it, not a rewrite of its callers. [`local`] is the
//! in-process store, and `conformance` the suite every implementation must pass.
//!
//! Admissions (`standing`, `reserve`, `check_rpm`, `reserve_tpm`) are async and may fail with
//! [`StateError`] (a shared store that cannot be reached); settlements (`settle`, `settle_tpm`)
//! and the breaker's bookkeeping never wait, so that a guard's `Drop` can call them. Breaker
//! verdicts are synchronous, because the policy reads health while it evaluates.

#[cfg(test)]
mod conformance;
pub mod keys;
pub mod local;
pub mod shared;

use std::future::Future;
use std::time::Duration;

use crate::config::Period;

/// How long an open breaker waits before letting one probe through (SPEC §6a).
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(30);

/// A key's standing this period, for `budget.*` and `/v1/key`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// Settled spend this period, micro-USD.
    pub spent: u64,
    /// Reserved by requests in flight, micro-USD.
    pub reserved: u64,
}

/// A key's budget as the store applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The limit per period, micro-USD.
    pub limit: u64,
    /// The period.
    pub per: Period,
}

/// Money held for one attempt until the request settles. It can only be given back through
/// [`StateStore::settle`], which consumes it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation must be settled or released"]
pub struct Reservation {
    /// The key that holds it.
    pub key: String,
    /// How much, micro-USD.
    pub micros: u64,
    /// Where a shared store holds it (none in the in-process store).
    pub slot: Option<Slot>,
}

/// A reservation's place in a shared store: its account and its member there (empty when it was
/// made on local state while the shared store could not be reached).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The account's key.
    pub account: String,
    /// The reservation's member in it.
    pub member: String,
}

/// Tokens admitted against a key's `tpm` until the request settles.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a token hold must be settled"]
pub struct TokenHold {
    /// The key.
    pub key: String,
    /// Tokens admitted (the request's worst case).
    pub tokens: u64,
    /// The shared store's bucket that admitted them (none: this process's).
    pub slot: Option<String>,
}

/// What a request holds in the store: at most one budget reservation (that of the attempt in
/// flight) and its `tpm` admission. The gateway's settle guard owns it; dispatch fills and
/// empties the budget slot attempt by attempt.
#[derive(Debug, Default)]
pub struct Holds {
    /// The attempt's budget reservation.
    pub budget: Option<Reservation>,
    /// The request's `tpm` admission.
    pub tokens: Option<TokenHold>,
    /// The worst-case cost (micro-USD) of the upstream call in flight, while one is: what a
    /// request abandoned during the call is charged, as the provider bills it regardless.
    pub in_flight: Option<u64>,
}

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests are refused until the cooldown ends.
    Open,
    /// One probe may go through.
    HalfOpen,
}

impl BreakerState {
    /// As the JSON endpoints name it: `closed`, `half_open` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    /// The named model's state in a [`StateStore::breakers`] list (closed when it is not there).
    pub fn of(breakers: &[(String, BreakerState)], model: &str) -> BreakerState {
        breakers.iter().find(|(n, _)| n == model).map_or(BreakerState::Closed, |(_, b)| *b)
    }
}

/// May a call go to a model now?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Yes: the breaker is closed.
    Yes,
    /// Yes, as the half-open breaker's one probe: the call must end in `success`, `failure` or
    /// `release`.
    Probe,
    /// No: the breaker is open (or its probe is taken).
    No,
}

/// A store that cannot be reached (a shared store; the in-process one never fails).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the shared state cannot be reached: {0}")]
pub struct StateError(pub String);

/// The operations of a state store.
pub trait StateStore: Send + Sync {
    /// The key's standing this period (the first time a key is seen, its period's spend is read
    /// back from the ledger, so restarts lose nothing).
    fn standing(&self, key: &str, per: Period) -> impl Future<Output = Result<Standing, StateError>> + Send;

    /// Reserves `micros` against the key's budget if `spent + reserved + micros` fits the limit;
    /// `Ok(None)` when it does not. Concurrent reservations never overspend.
    fn reserve(
        &self,
        key: &str,
        budget: Budget,
        micros: u64,
    ) -> impl Future<Output = Result<Option<Reservation>, StateError>> + Send;

    /// Settles a reservation with the real cost (`0` releases it). Never waits.
    fn settle(&self, reservation: Reservation, cost_micros: u64);

    /// Counts one request against the key's `rpm`; `Ok(Err(wait))` when it must wait.
    fn check_rpm(&self, key: &str, rpm: u32) -> impl Future<Output = Result<Result<(), Duration>, StateError>> + Send;

    /// Admits `tokens` (the worst case) against the key's `tpm`; `Ok(Err(wait))` when they do not
    /// fit yet.
    fn reserve_tpm(
        &self,
        key: &str,
        tpm: u64,
        tokens: u64,
    ) -> impl Future<Output = Result<Result<TokenHold, Duration>, StateError>> + Send;

    /// Replaces a `tpm` admission with the tokens really used. Never waits.
    fn settle_tpm(&self, hold: TokenHold, used: u64);

    /// False while the model's breaker is open (a half-open breaker is healthy for its probe).
    fn healthy(&self, model: &str) -> bool;

    /// Claims the right to call the model now.
    fn admit(&self, model: &str) -> Admission;

    /// A call succeeded: the breaker closes.
    fn success(&self, model: &str);

    /// A call failed in a way that counts against the breaker.
    fn failure(&self, model: &str);

    /// A call ended without a verdict (a client error, a cancelled request): a half-open probe
    /// is given back.
    fn release(&self, model: &str);

    /// Every known model's breaker state (for `/metrics`).
    fn breakers(&self) -> Vec<(String, BreakerState)>;

    /// Waits until the settlements made so far are applied (a shared store applies them in the
    /// background; at shutdown, and for tests). Gives up after `limit`.
    fn flush(&self, limit: Duration) -> impl Future<Output = ()> + Send {
        let _ = limit;
        async {}
    }
}

/// The configured store: in this process, or shared by several instances through Redis.
#[derive(Debug)]
pub enum Store {
    /// In this process.
    Local(local::Local),
    /// In Redis (SPEC §11).
    Shared(shared::Shared),
}

impl Store {
    /// An in-process store whose breakers wait `cooldown` before a probe, reading spend back from
    /// `ledger`.
    pub fn local(ledger: Option<crate::accounting::Ledger>, cooldown: Duration) -> Store {
        Store::Local(local::Local::new(ledger, cooldown))
    }

    /// Whether requests that need the state can be served (`/readyz`).
    pub fn ready(&self) -> Result<(), String> {
        match self {
            Store::Local(_) => Ok(()),
            Store::Shared(s) => s.ready(),
        }
    }

    /// The shared store's health, when there is one (`/metrics`).
    pub fn shared_health(&self) -> Option<&shared::Health> {
        match self {
            Store::Local(_) => None,
            Store::Shared(s) => Some(s.health()),
        }
    }

    /// An exact cache entry kept in the shared store (`key` in hex), with the time it has left;
    /// the in-process store keeps none (the cache holds its own).
    pub async fn cache_get(&self, key: &str) -> Result<Option<(Vec<u8>, Duration)>, StateError> {
        match self {
            Store::Local(_) => Ok(None),
            Store::Shared(s) => s.cache_get(key).await,
        }
    }

    /// Keeps an exact cache entry in the shared store for `ttl` (never waits).
    pub fn cache_put(&self, key: &str, bytes: Vec<u8>, ttl: Duration) {
        if let Store::Shared(s) = self {
            s.cache_put(key, bytes, ttl);
        }
    }

    /// The run-time keys' version: it changes with every write, on any instance.
    pub async fn keys_version(&self) -> Result<u64, StateError> {
        match self {
            Store::Local(s) => Ok(s.keys.version()),
            Store::Shared(s) => s.keys_version().await,
        }
    }

    /// Every run-time key's record, revoked ones included.
    pub async fn keys(&self) -> Result<Vec<keys::KeyRecord>, StateError> {
        match self {
            Store::Local(s) => s.keys.all().await,
            Store::Shared(s) => s.keys().await,
        }
    }

    /// Stores a run-time key's record, replacing the one with its id, unless another live key
    /// has its name (`Ok(false)`, nothing written): atomically, on every store and across
    /// instances.
    pub async fn put_key(&self, record: &keys::KeyRecord) -> Result<bool, StateError> {
        match self {
            Store::Local(s) => s.keys.put(record).await,
            Store::Shared(s) => s.put_key(record).await,
        }
    }

    /// Where run-time keys are kept: `redis`, `ledger` or `memory`.
    pub fn keys_home(&self) -> &'static str {
        match self {
            Store::Local(s) if s.keys.persistent() => "ledger",
            Store::Local(_) => "memory",
            Store::Shared(_) => "redis",
        }
    }

    /// Whether exact cache entries are kept here (and so shared).
    pub fn shares_cache(&self) -> bool {
        matches!(self, Store::Shared(_))
    }
}

impl StateStore for Store {
    async fn standing(&self, key: &str, per: Period) -> Result<Standing, StateError> {
        match self {
            Store::Local(s) => s.standing(key, per).await,
            Store::Shared(s) => s.standing(key, per).await,
        }
    }

    async fn reserve(&self, key: &str, budget: Budget, micros: u64) -> Result<Option<Reservation>, StateError> {
        match self {
            Store::Local(s) => s.reserve(key, budget, micros).await,
            Store::Shared(s) => s.reserve(key, budget, micros).await,
        }
    }

    fn settle(&self, reservation: Reservation, cost_micros: u64) {
        match self {
            Store::Local(s) => s.settle(reservation, cost_micros),
            Store::Shared(s) => s.settle(reservation, cost_micros),
        }
    }

    async fn check_rpm(&self, key: &str, rpm: u32) -> Result<Result<(), Duration>, StateError> {
        match self {
            Store::Local(s) => s.check_rpm(key, rpm).await,
            Store::Shared(s) => s.check_rpm(key, rpm).await,
        }
    }

    async fn reserve_tpm(&self, key: &str, tpm: u64, tokens: u64) -> Result<Result<TokenHold, Duration>, StateError> {
        match self {
            Store::Local(s) => s.reserve_tpm(key, tpm, tokens).await,
            Store::Shared(s) => s.reserve_tpm(key, tpm, tokens).await,
        }
    }

    fn settle_tpm(&self, hold: TokenHold, used: u64) {
        match self {
            Store::Local(s) => s.settle_tpm(hold, used),
            Store::Shared(s) => s.settle_tpm(hold, used),
        }
    }

    fn healthy(&self, model: &str) -> bool {
        match self {
            Store::Local(s) => s.healthy(model),
            Store::Shared(s) => s.healthy(model),
        }
    }

    fn admit(&self, model: &str) -> Admission {
        match self {
            Store::Local(s) => s.admit(model),
            Store::Shared(s) => s.admit(model),
        }
    }

    fn success(&self, model: &str) {
        match self {
            Store::Local(s) => s.success(model),
            Store::Shared(s) => s.success(model),
        }
    }

    fn failure(&self, model: &str) {
        match self {
            Store::Local(s) => s.failure(model),
            Store::Shared(s) => s.failure(model),
        }
    }

    fn release(&self, model: &str) {
        match self {
            Store::Local(s) => s.release(model),
            Store::Shared(s) => s.release(model),
        }
    }

    fn breakers(&self) -> Vec<(String, BreakerState)> {
        match self {
            Store::Local(s) => s.breakers(),
            Store::Shared(s) => s.breakers(),
        }
    }

    async fn flush(&self, limit: Duration) {
        match self {
            Store::Local(s) => s.flush(limit).await,
            Store::Shared(s) => s.flush(limit).await,
        }
    }
}
