//! Rate limits per key. Requests per minute use governor: one GCRA quota per key, with a burst of
//! the whole minute's allowance. Tokens per minute cannot be counted before the reply, which
//! governor cannot express, so they are a token bucket here: a request is admitted against its
//! reservation (the worst case, as for budgets), and the difference is given back when the real
//! usage is known. The bucket holds a minute's tokens and refills continuously.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

#[derive(Debug)]
struct Bucket {
    tpm: u64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        #[expect(clippy::cast_precision_loss, reason = "token rates are far below 2^52")]
        let cap = self.tpm as f64;
        let rate = cap / 60.0;
        self.level = (self.level + rate * now.duration_since(self.at).as_secs_f64()).min(cap);
        self.at = now;
    }
}

/// Every key's limiters.
#[derive(Default)]
pub(super) struct RateLimits {
    rpm: Mutex<HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>>,
    tpm: Mutex<HashMap<String, Bucket>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

impl RateLimits {
    /// Counts one request against the key's `rpm`; `Err` holds how long until one is allowed.
    pub(super) fn check_rpm(&self, key: &str, rpm: u32) -> Result<(), Duration> {
        let Some(n) = NonZeroU32::new(rpm) else { return Err(Duration::from_secs(60)) };
        let limiter = {
            let mut m = self.rpm.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match m.get(key) {
                Some((r, l)) if *r == rpm => l.clone(),
                // New key, or its limit changed on reload: a fresh quota.
                _ => {
                    let l = Arc::new(RateLimiter::direct(Quota::per_minute(n)));
                    m.insert(key.to_string(), (rpm, l.clone()));
                    l
                }
            }
        };
        limiter.check().map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Admits `tokens` against the key's `tpm`; `Err` holds how long until they fit. A request
    /// larger than a whole minute's tokens is admitted when the bucket is full.
    pub(super) fn reserve_tpm(&self, key: &str, tpm: u64, tokens: u64) -> Result<(), Duration> {
        let now = Instant::now();
        let mut m = self.tpm.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        #[expect(clippy::cast_precision_loss, reason = "token counts are far below 2^52")]
        let (cap, want) = (tpm as f64, tokens as f64);
        let b = m.entry(key.to_string()).or_insert(Bucket { tpm, level: cap, at: now });
        if b.tpm != tpm {
            *b = Bucket { tpm, level: cap, at: now };
        }
        b.refill(now);
        let need = want.min(cap);
        if tpm > 0 && b.level >= need {
            b.level -= want;
            Ok(())
        } else if tpm == 0 {
            Err(Duration::from_secs(60))
        } else {
            Err(Duration::from_secs_f64((need - b.level) / (cap / 60.0)))
        }
    }

    /// Gives back what a reservation did not use (or takes more, when usage exceeded it).
    pub(super) fn settle_tpm(&self, key: &str, reserved: u64, used: u64) {
        let mut m = self.tpm.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = m.get_mut(key) {
            b.refill(Instant::now());
            #[expect(clippy::cast_precision_loss, reason = "token counts are far below 2^52")]
            let delta = reserved as f64 - used as f64;
            #[expect(clippy::cast_precision_loss, reason = "token rates are far below 2^52")]
            let cap = b.tpm as f64;
            b.level = (b.level + delta).min(cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_allows_a_minute_of_burst_then_waits() {
        let l = RateLimits::default();
        for _ in 0..60 {
            assert!(l.check_rpm("k", 60).is_ok());
        }
        let wait = l.check_rpm("k", 60).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO, "{wait:?}");
        // Another key is not affected.
        assert!(l.check_rpm("other", 60).is_ok());
    }

    #[test]
    fn tpm_admits_against_reservations_and_settles_with_usage() {
        let l = RateLimits::default();
        assert!(l.reserve_tpm("k", 6_000, 5_000).is_ok());
        let wait = l.reserve_tpm("k", 6_000, 5_000).unwrap_err();
        // 4,000 tokens short at 100 tokens a second.
        assert!(wait > Duration::from_secs(39) && wait <= Duration::from_secs(40), "{wait:?}");
        // The first request used 500 of its 5,000: 4,500 come back.
        l.settle_tpm("k", 5_000, 500);
        assert!(l.reserve_tpm("k", 6_000, 5_000).is_ok());
        // Larger than a minute: admitted only with a full bucket.
        assert!(l.reserve_tpm("big", 1_000, 50_000).is_ok());
        assert!(l.reserve_tpm("big", 1_000, 1).is_err());
    }
}
