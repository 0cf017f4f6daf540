//! The in-process store: every key's account, rate limiters and every model's breaker, in this
//! process's memory behind short mutexes (kept across reloads, lost at restart except for the
//! spend, which the ledger holds). Each part is a file of its own.

mod breakers;
mod budgets;
mod limits;

use std::time::Duration;

use super::{Admission, BreakerState, Budget, Reservation, Standing, StateError, StateStore, TokenHold};
use crate::accounting::Ledger;
use crate::config::Period;

/// The in-process store.
#[derive(Debug)]
pub struct Local {
    budgets: budgets::Budgets,
    limits: limits::RateLimits,
    breakers: breakers::Breakers,
    ledger: Option<Ledger>,
    /// Run-time keys.
    pub keys: super::keys::LocalKeys,
}

impl Local {
    /// A store whose breakers wait `cooldown` before letting a probe through; a key's spend is
    /// read back from `ledger` the first time the key is seen.
    pub fn new(ledger: Option<Ledger>, cooldown: Duration) -> Local {
        Local {
            budgets: budgets::Budgets::default(),
            limits: limits::RateLimits::default(),
            breakers: breakers::Breakers::new(cooldown),
            keys: super::keys::LocalKeys::new(ledger.clone()),
            ledger,
        }
    }
}

impl Local {
    /// A call failed: true when this opened the breaker.
    pub fn fail(&self, model: &str) -> bool {
        self.breakers.failure(model)
    }

    /// Another instance opened the model's breaker, for `left` more: it is open here too (unless
    /// it already is).
    pub fn opened_elsewhere(&self, model: &str, left: Duration) {
        self.breakers.open_for(model, left);
    }
}

impl StateStore for Local {
    async fn standing(&self, key: &str, per: Period) -> Result<Standing, StateError> {
        self.budgets.standing(key, per, self.ledger.as_ref()).await.map_err(StateError)
    }

    async fn reserve(&self, key: &str, budget: Budget, micros: u64) -> Result<Option<Reservation>, StateError> {
        // The account must be loaded (from the ledger) before anything is reserved against it.
        self.budgets.standing(key, budget.per, self.ledger.as_ref()).await.map_err(StateError)?;
        let fits = self.budgets.try_reserve(key, budget.limit, micros);
        Ok(fits.then(|| Reservation { key: key.to_string(), micros, slot: None }))
    }

    fn settle(&self, reservation: Reservation, cost_micros: u64) {
        self.budgets.settle(&reservation.key, reservation.micros, cost_micros);
    }

    async fn check_rpm(&self, key: &str, rpm: u32) -> Result<Result<(), Duration>, StateError> {
        Ok(self.limits.check_rpm(key, rpm))
    }

    async fn reserve_tpm(&self, key: &str, tpm: u64, tokens: u64) -> Result<Result<TokenHold, Duration>, StateError> {
        Ok(self.limits.reserve_tpm(key, tpm, tokens).map(|()| TokenHold { key: key.to_string(), tokens, slot: None }))
    }

    fn settle_tpm(&self, hold: TokenHold, used: u64) {
        self.limits.settle_tpm(&hold.key, hold.tokens, used);
    }

    fn healthy(&self, model: &str) -> bool {
        self.breakers.healthy(model)
    }

    fn admit(&self, model: &str) -> Admission {
        self.breakers.admit(model)
    }

    fn success(&self, model: &str) {
        self.breakers.success(model);
    }

    fn failure(&self, model: &str) {
        self.breakers.failure(model);
    }

    fn release(&self, model: &str) {
        self.breakers.release(model);
    }

    fn breakers(&self) -> Vec<(String, BreakerState)> {
        self.breakers.states()
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_local_store_passes_the_conformance_suite() {
        let store = super::Local::new(None, std::time::Duration::from_millis(30));
        crate::state::conformance::run(&store, std::time::Duration::from_millis(40)).await;
    }

    /// A ledger that cannot be read fails closed: the key gets an error (503 at the gateway),
    /// never a spend of 0 and the whole budget back.
    #[tokio::test]
    async fn a_ledger_that_cannot_be_read_fails_closed() {
        use crate::accounting::ledger::{Ledger, Target};
        use crate::config::Period;
        use crate::state::{Budget, StateStore};
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(dir.path().join("l.db"), None);
        let ledger = Ledger::open(&target).unwrap();
        ledger.flush().await;
        rusqlite::Connection::open(&target.sqlite).unwrap().execute_batch("DROP TABLE requests").unwrap();
        let store = super::Local::new(Some(ledger), std::time::Duration::from_secs(30));
        assert!(store.standing("k", Period::Month).await.is_err());
        let budget = Budget { limit: 1_000, per: Period::Month };
        assert!(store.reserve("k", budget, 1).await.is_err());
    }
}
