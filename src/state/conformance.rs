//! The suite every [`StateStore`] passes: the same assertions for the in-process store and for
//! any shared one. `cooldown` is a little more than the store's breaker cooldown.

use std::time::Duration;

use super::{Admission, BreakerState, Budget, StateStore};
use crate::config::Period;

/// Runs every check against `store`.
pub(crate) async fn run(store: &impl StateStore, cooldown: Duration) {
    reservations_never_overspend(store).await;
    rpm_allows_a_minute_of_burst_then_waits(store).await;
    tpm_admits_against_reservations_and_settles_with_usage(store).await;
    breakers_open_after_five_failures_and_probe_once(store, cooldown).await;
}

async fn reservations_never_overspend(s: &impl StateStore) {
    let budget = Budget { limit: 1_000, per: Period::Month };
    assert_eq!(s.standing("k", Period::Month).await.unwrap(), super::Standing::default());
    let a = s.reserve("k", budget, 600).await.unwrap().expect("600 fits");
    assert!(s.reserve("k", budget, 500).await.unwrap().is_none(), "600 + 500 reserved would pass the limit");
    let b = s.reserve("k", budget, 400).await.unwrap().expect("400 more fits");
    s.settle(a, 150);
    s.settle(b, 0);
    s.flush(Duration::from_secs(2)).await;
    assert_eq!(s.standing("k", Period::Month).await.unwrap(), super::Standing { spent: 150, reserved: 0 });
    let c = s.reserve("k", budget, 850).await.unwrap().expect("what remains fits");
    assert!(s.reserve("k", budget, 1).await.unwrap().is_none());
    s.settle(c, 0);
    s.flush(Duration::from_secs(2)).await;
    // Another key has an account of its own.
    let other = s.reserve("other", budget, 1_000).await.unwrap().expect("a fresh account");
    s.settle(other, 0);
}

async fn rpm_allows_a_minute_of_burst_then_waits(s: &impl StateStore) {
    for _ in 0..60 {
        assert!(s.check_rpm("r", 60).await.unwrap().is_ok());
    }
    let wait = s.check_rpm("r", 60).await.unwrap().unwrap_err();
    assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO, "{wait:?}");
    assert!(s.check_rpm("r-other", 60).await.unwrap().is_ok(), "another key is not affected");
}

async fn tpm_admits_against_reservations_and_settles_with_usage(s: &impl StateStore) {
    let first = s.reserve_tpm("t", 6_000, 5_000).await.unwrap().expect("a full bucket");
    let wait = s.reserve_tpm("t", 6_000, 5_000).await.unwrap().unwrap_err();
    // 4,000 tokens short at 100 tokens a second.
    assert!(wait > Duration::from_secs(39) && wait <= Duration::from_secs(40), "{wait:?}");
    // The first request used 500 of its 5,000: 4,500 come back.
    s.settle_tpm(first, 500);
    s.flush(Duration::from_secs(2)).await;
    let second = s.reserve_tpm("t", 6_000, 5_000).await.unwrap().expect("the unused tokens came back");
    s.settle_tpm(second, 5_000);
    // Larger than a minute: admitted only with a full bucket.
    let big = s.reserve_tpm("big", 1_000, 50_000).await.unwrap().expect("a full bucket admits it");
    assert!(s.reserve_tpm("big", 1_000, 1).await.unwrap().is_err());
    s.settle_tpm(big, 50_000);
}

async fn breakers_open_after_five_failures_and_probe_once(s: &impl StateStore, cooldown: Duration) {
    for _ in 0..4 {
        s.failure("m");
    }
    assert!(s.healthy("m"));
    s.failure("m");
    assert!(s.breakers().contains(&("m".to_string(), BreakerState::Open)));
    assert!(!s.healthy("m"));
    assert_eq!(s.admit("m"), Admission::No);
    tokio::time::sleep(cooldown).await;
    assert_eq!(s.admit("m"), Admission::Probe);
    assert_eq!(s.admit("m"), Admission::No, "only one probe");
    s.failure("m");
    assert_eq!(s.admit("m"), Admission::No, "a failed probe opens again");
    tokio::time::sleep(cooldown).await;
    assert_eq!(s.admit("m"), Admission::Probe);
    // A probe that ends without a verdict is given back, and the next request may probe.
    s.release("m");
    assert_eq!(s.admit("m"), Admission::Probe);
    s.success("m");
    assert!(s.breakers().contains(&("m".to_string(), BreakerState::Closed)));
    assert_eq!(s.admit("m"), Admission::Yes);
}
