//! Budget arithmetic: the UTC period a time falls in, and the worst case an attempt can cost
//! (SPEC §9). The accounts themselves (spend and reservations per key) are state, reached
//! through `crate::state`.

use chrono::{Datelike, TimeZone, Utc};

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

    #[test]
    fn worst_case_follows_the_spec() {
        assert_eq!(worst_case_tokens(1_000, Some(200), Some(128_000)), (1_000, 200));
        assert_eq!(worst_case_tokens(1_000, None, Some(128_000)), (1_000, 4_096));
        assert_eq!(worst_case_tokens(6_000, None, Some(8_000)), (6_000, 2_000));
        assert_eq!(worst_case_tokens(9_000, None, Some(8_000)), (9_000, 0));
        assert_eq!(worst_case_tokens(10, None, None), (10, 4_096));
    }
}
