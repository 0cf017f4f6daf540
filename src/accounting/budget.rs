//! Budget arithmetic: the UTC period a time falls in, and the worst case an attempt can cost
//! (SPEC §9). The accounts themselves (spend and reservations per key) are state, reached
//! through `crate::state`.

use chrono::{Datelike, TimeZone, Utc};

use crate::accounting::Usage;
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

/// The input tokens an image may count for, at most, when a reply's usage is capped: more than
/// the largest image any provider prices today.
pub const IMAGE_TOKENS: u64 = 8_192;

/// The input tokens a provider may add when a request declares tools (the instructions it puts
/// around them, which the body does not hold), at most, when a reply's usage is capped.
pub const TOOLS_TOKENS: u64 = 1_024;

/// The most a reply may be charged for: what its reservation allowed (SPEC §9). Input up to
/// the request body's bytes plus [`IMAGE_TOKENS`] for each image it names and [`TOOLS_TOKENS`]
/// when it declares tools (a byte is at least a token of text; the prompt, tools, tool calls and
/// base64 images are all in the body), output
/// up to `max_tokens` or, without one, the reservation's `min(4096, context − prompt)`. A client
/// that expects longer answers sets `max_tokens`, and is reserved and charged for it.
pub fn charge_cap(
    body_bytes: u64,
    prompt_bytes: u64,
    (images, tools): (u64, bool),
    max_tokens: Option<u64>,
    context: Option<u64>,
) -> Usage {
    let declared = images.saturating_mul(IMAGE_TOKENS).saturating_add(if tools { TOOLS_TOKENS } else { 0 });
    let input = body_bytes.saturating_add(declared);
    let (_, output) = worst_case_tokens(prompt_bytes, max_tokens, context);
    Usage { input, output, estimated: false }
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
    fn a_reply_is_charged_at_most_what_its_reservation_allowed() {
        let cap = charge_cap(500, 300, (2, true), Some(100), Some(128_000));
        assert_eq!((cap.input, cap.output), (500 + 2 * IMAGE_TOKENS + TOOLS_TOKENS, 100));
        assert_eq!(charge_cap(500, 300, (0, false), None, Some(128_000)).output, 4_096);
        assert_eq!(charge_cap(500, 6_000, (0, false), None, Some(8_000)).output, 2_000);
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
