//! Busy polling (`serve --busy-poll WINDOW`, off by default).
//!
//! A runtime thread with nothing to run sleeps in `epoll_wait`, and on a virtual machine a vCPU
//! that sleeps is halted: the next packet pays an inter-processor interrupt and a VM entry before
//! the gateway sees it (tens of microseconds each way, twice per proxied request). With busy
//! polling, for WINDOW after each request a poller task keeps yielding, so the runtime polls its
//! I/O driver with a zero timeout instead of sleeping; the upstream's reply is then picked up as
//! it lands. Outside the window the pollers sleep, so an idle gateway costs no CPU. This is
//! HAProxy's `busy-polling` trade: CPU time for latency, worth it only on a core of its own.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The window and when the last request arrived.
#[derive(Debug)]
pub struct BusyPoll {
    window_us: u64,
    epoch: Instant,
    /// One more than the microseconds since `epoch` at the last [`BusyPoll::touch`]; 0: never.
    last: AtomicU64,
    wake: Notify,
    /// Pollers about to sleep or asleep.
    asleep: AtomicUsize,
    /// Yields made so far.
    spins: AtomicU64,
}

impl BusyPoll {
    /// Pollers that keep going for `window` after each request.
    pub fn new(window: Duration) -> Arc<BusyPoll> {
        Arc::new(BusyPoll {
            window_us: u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1),
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            wake: Notify::new(),
            asleep: AtomicUsize::new(0),
            spins: AtomicU64::new(0),
        })
    }

    /// One more than the microseconds since `epoch`, so that 0 can mean "never".
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1) + 1
    }

    fn active(&self) -> bool {
        let last = self.last.load(Ordering::SeqCst);
        last != 0 && self.now_us().saturating_sub(last) < self.window_us
    }

    /// Records a request; wakes the pollers that went to sleep.
    pub fn touch(&self) {
        // Store, then look for sleepers; a poller announces itself, then looks at the store
        // (`poll`). In that order (SeqCst) at least one of the two sees the other, so a poller
        // never sleeps through a window that a request has opened.
        self.last.store(self.now_us(), Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst) > 0 {
            self.wake.notify_waiters();
        }
    }

    /// One poller: yields while a request came within the window (each yield makes the runtime
    /// poll for I/O without blocking), and sleeps until the next request otherwise.
    pub async fn poll(self: Arc<Self>) {
        loop {
            // Registered before the check, so a touch after the check still wakes it.
            let woken = self.wake.notified();
            self.asleep.fetch_add(1, Ordering::SeqCst);
            if self.active() {
                self.asleep.fetch_sub(1, Ordering::SeqCst);
                self.spins.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            } else {
                woken.await;
                self.asleep.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Yields made so far (each one a zero-timeout poll of the runtime's I/O driver).
    pub fn spins(&self) -> u64 {
        self.spins.load(Ordering::Relaxed)
    }

    /// Starts `threads` pollers (one per runtime thread); they stop when the handles are dropped.
    pub fn spawn(self: &Arc<Self>, threads: usize) -> Pollers {
        Pollers((0..threads.max(1)).map(|_| tokio::spawn(self.clone().poll()).abort_handle()).collect())
    }
}

/// Running pollers, aborted on drop.
#[derive(Debug)]
pub struct Pollers(Vec<tokio::task::AbortHandle>);

impl Drop for Pollers {
    fn drop(&mut self) {
        for p in &self.0 {
            p.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]
    use super::*;

    async fn spins_during(busy: &BusyPoll, d: Duration) -> u64 {
        let before = busy.spins();
        tokio::time::sleep(d).await;
        busy.spins() - before
    }

    #[tokio::test(flavor = "current_thread")]
    async fn polls_only_within_the_window_after_a_request() {
        let busy = BusyPoll::new(Duration::from_millis(40));
        let pollers = busy.spawn(1);
        assert_eq!(spins_during(&busy, Duration::from_millis(20)).await, 0, "no request yet: asleep");
        busy.touch();
        let during = spins_during(&busy, Duration::from_millis(20)).await;
        assert!(during > 100, "within the window the runtime keeps polling ({during} yields in 20 ms)");
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(spins_during(&busy, Duration::from_millis(20)).await, 0, "the window has passed: asleep");
        busy.touch();
        assert!(spins_during(&busy, Duration::from_millis(10)).await > 50, "the next request wakes it");
        drop(pollers);
        tokio::task::yield_now().await;
        let stopped = busy.spins();
        busy.touch();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(busy.spins(), stopped, "dropping the handles stops the pollers");
    }
}
