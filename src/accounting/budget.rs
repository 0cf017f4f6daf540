//! Budgets per key. Each key's account holds what it has spent this period (settled) and what
//! requests in flight have reserved. An attempt reserves its worst-case cost before it is made;
//! a reservation that does not fit `limit − spent − reserved` is refused, so concurrent requests
//! cannot overspend. When the response ends the reservation is settled with the real cost.
//! Periods are UTC calendar days and months (or `total`); an account rolls over lazily, the first
//! time it is touched in a new period. The spend of a period is read from the ledger the first
//! time a key is seen (after a restart, say), so restarts lose nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{Datelike, TimeZone, Utc};

use super::ledger::Ledger;
use crate::config::Period;

/// The first millisecond of the period that contains `now_ms`.
pub fn period_start(per: Period, now_ms: i64) -> i64 {
    let Some(now) = Utc.timestamp_millis_opt(now_ms).single() else { return 0 };
    let start = match per {
        Period::Total => return 0,
        Period::Day => now.date_naive().and_hms_opt(0, 0, 0),
        Period::Month => now.date_naive().with_day(1).and_then(|d| d.and_hms_opt(0, 0, 0)),
    };
    start.map_or(0, |s| s.and_utc().timestamp_millis())
}

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

/// A key's standing, for `budget.*` and `/v1/key`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// Settled spend this period, micro-USD.
    pub spent: u64,
    /// Reserved by requests in flight, micro-USD.
    pub reserved: u64,
}

/// Every key's account.
#[derive(Debug, Default)]
pub struct Budgets {
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
    pub async fn standing(&self, key: &str, per: Period, ledger: Option<&Ledger>) -> Standing {
        let now = now_ms();
        let loaded = self.with(key, |a| {
            a.filter(|a| a.per == per).map(|a| {
                a.roll(now);
                Standing { spent: a.spent, reserved: a.reserved }
            })
        });
        if let Some(s) = loaded {
            return s;
        }
        let period = period_start(per, now);
        let spent = match ledger {
            Some(l) => l.spend_since(key, period).await,
            None => 0,
        };
        let mut a = self.accounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let acct = a.entry(key.to_string()).or_insert(Account { per, period, spent, reserved: 0 });
        if acct.per != per {
            // The key's period changed on reload: its spend is that of the new period.
            *acct = Account { per, period, spent, reserved: acct.reserved };
        }
        Standing { spent: acct.spent, reserved: acct.reserved }
    }

    /// Reserves `micros` against `limit` if it fits. The account must have been loaded.
    pub fn try_reserve(&self, key: &str, limit: u64, micros: u64) -> bool {
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
    pub fn settle(&self, key: &str, reserved: u64, cost: u64) {
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

/// One key's budget as an attempt sees it: reserve before the call, release on failure.
#[derive(Clone, Copy, Debug)]
pub struct Gate<'a> {
    /// The accounts.
    pub budgets: &'a Budgets,
    /// The key.
    pub key: &'a str,
    /// Its limit this period, micro-USD.
    pub limit: u64,
}

impl Gate<'_> {
    /// Reserves `micros` if it fits.
    pub fn try_reserve(&self, micros: u64) -> bool {
        self.budgets.try_reserve(self.key, self.limit, micros)
    }

    /// Gives a reservation back (the attempt failed, nothing was spent).
    pub fn release(&self, micros: u64) {
        self.budgets.settle(self.key, micros, 0);
    }
}

/// The worst case an attempt can cost (SPEC §9): the prompt's byte length as its input tokens,
/// plus `max_tokens` or, without one, `min(4096, context − prompt)` output tokens.
pub fn worst_case_tokens(prompt_bytes: u64, max_tokens: Option<u64>, context: Option<u64>) -> (u64, u64) {
    let output = match max_tokens {
        Some(m) => m,
        None => context.map_or(4096, |c| c.saturating_sub(prompt_bytes).min(4096)),
    };
    (prompt_bytes, output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_days_and_months() {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 15, 30, 0).unwrap().timestamp_millis();
        assert_eq!(
            period_start(Period::Day, t),
            Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap().timestamp_millis()
        );
        assert_eq!(
            period_start(Period::Month, t),
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap().timestamp_millis()
        );
        assert_eq!(period_start(Period::Total, t), 0);
    }

    #[tokio::test]
    async fn reservations_never_overspend() {
        let b = Budgets::default();
        assert_eq!(b.standing("k", Period::Month, None).await, Standing::default());
        let gate = Gate { budgets: &b, key: "k", limit: 1_000 };
        assert!(gate.try_reserve(600));
        assert!(!gate.try_reserve(500), "600 + 500 reserved would pass the limit");
        assert!(gate.try_reserve(400));
        b.settle("k", 600, 150);
        gate.release(400);
        assert_eq!(b.standing("k", Period::Month, None).await, Standing { spent: 150, reserved: 0 });
        assert!(gate.try_reserve(850));
        assert!(!gate.try_reserve(1));
        assert!(!Gate { budgets: &b, key: "unknown", limit: 1_000 }.try_reserve(1));
    }

    #[test]
    fn worst_case_follows_the_spec() {
        assert_eq!(worst_case_tokens(1_000, Some(200), Some(128_000)), (1_000, 200));
        assert_eq!(worst_case_tokens(1_000, None, Some(128_000)), (1_000, 4_096));
        assert_eq!(worst_case_tokens(6_000, None, Some(8_000)), (6_000, 2_000));
        assert_eq!(worst_case_tokens(9_000, None, Some(8_000)), (9_000, 0));
        assert_eq!(worst_case_tokens(10, None, None), (10, 4_096));
    }
}
