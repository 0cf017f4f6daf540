//! Budgets per key. Each key's account holds what it has spent this period (settled) and what
//! requests in flight have reserved. An attempt reserves its worst-case cost before it is made;
//! a reservation that does not fit `limit − spent − reserved` is refused, so concurrent requests
//! cannot overspend. When the response ends the reservation is settled with the real cost.
//! Periods are UTC calendar days and months (or `total`); an account rolls over lazily, the first
//! time it is touched in a new period. The spend of a period is read from the ledger the first
//! time a key is seen (after a restart, say), so restarts lose nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::Utc;

use crate::accounting::budget::period_start;
use crate::accounting::Ledger;
use crate::config::Period;
use crate::state::Standing;

#[derive(Clone, Copy, Debug)]
struct Account {
    per: Period,
    period: i64,
    spent: u64,
    reserved: u64,
}

impl Account {
    fn roll(&mut self, now_ms: i64) {
        let p = period_start(self.per, now_ms);
        if p != self.period {
            self.period = p;
            self.spent = 0;
        }
    }
}

/// Every key's account.
#[derive(Debug, Default)]
pub(super) struct Budgets {
    accounts: Mutex<HashMap<String, Account>>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Budgets {
    fn with<R>(&self, key: &str, f: impl FnOnce(Option<&mut Account>) -> R) -> R {
        let mut a = self.accounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(a.get_mut(key))
    }

    /// Makes sure the key's account is loaded for `per` (reading the period's spend from the ledger
    /// the first time), and returns its standing.
    pub(super) async fn standing(&self, key: &str, per: Period, ledger: Option<&Ledger>) -> Result<Standing, String> {
        let now = now_ms();
        let loaded = self.with(key, |a| {
            a.filter(|a| a.per == per).map(|a| {
                a.roll(now);
                Standing { spent: a.spent, reserved: a.reserved }
            })
        });
        if let Some(s) = loaded {
            return Ok(s);
        }
        let period = period_start(per, now);
        let spent = match ledger {
            Some(l) => l.spend_since(key, period).await?,
            None => 0,
        };
        let mut a = self.accounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let acct = a.entry(key.to_string()).or_insert(Account { per, period, spent, reserved: 0 });
        if acct.per != per {
            // The key's period changed on reload: its spend is that of the new period.
            *acct = Account { per, period, spent, reserved: acct.reserved };
        }
        Ok(Standing { spent: acct.spent, reserved: acct.reserved })
    }

    /// Reserves `micros` against `limit` if it fits. The account must have been loaded.
    pub(super) fn try_reserve(&self, key: &str, limit: u64, micros: u64) -> bool {
        let now = now_ms();
        self.with(key, |a| match a {
            Some(a) => {
                a.roll(now);
                let fits = a.spent.saturating_add(a.reserved).saturating_add(micros) <= limit;
                if fits {
                    a.reserved += micros;
                }
                fits
            }
            None => false,
        })
    }

    /// Settles a reservation with the real cost (0 to release it).
    pub(super) fn settle(&self, key: &str, reserved: u64, cost: u64) {
        let now = now_ms();
        self.with(key, |a| {
            if let Some(a) = a {
                a.roll(now);
                a.reserved = a.reserved.saturating_sub(reserved);
                a.spent = a.spent.saturating_add(cost);
            }
        });
    }
}
