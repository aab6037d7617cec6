//! The one gate every gateway call passes: a global limit and a per-SDKAppID limit, both
//! without bursts, so no 1-second window ever holds more calls than configured.
//!
//! **Invariant:** a call is sent right after it passes [`RateLimits::acquire`]; nothing
//! reaches the gateway any other way.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Cells are spaced this much wider than 1/limit, so scheduling jitter between the
/// limiter and the socket cannot squeeze limit + 1 calls into one second. Costs 0.4 %.
const SPACING_MARGIN: f64 = 1.004;

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;
type Keyed = RateLimiter<u64, DefaultKeyedStateStore<u64>, DefaultClock>;

/// A burst-free quota: one cell every `1/per_second` (plus the margin), never more.
fn burst_free(per_second: u32) -> Quota {
    let period = Duration::from_secs_f64(SPACING_MARGIN / f64::from(per_second.max(1)));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN)
}

#[derive(Debug)]
pub struct RateLimits {
    global: Direct,
    /// `None` when the per-app limit is not below the global one: the global limit then
    /// bounds every app too, and a second limiter would only add jitter-induced waits.
    per_app: Option<Keyed>,
    per_second: u32,
    /// Serialises the final wait on the global limiter, so the per-app cell taken just
    /// before it is at most one global period older than the send.
    gate: tokio::sync::Mutex<()>,
    /// Apps the gateway told to slow down (60011 and friends): no call before the instant.
    cooldown: Mutex<HashMap<u64, Instant>>,
}

impl RateLimits {
    pub fn new(per_second: u32, per_app_per_second: u32) -> Self {
        let per_app = (per_app_per_second < per_second)
            .then(|| RateLimiter::keyed(burst_free(per_app_per_second)));
        Self {
            global: RateLimiter::direct(burst_free(per_second)),
            per_app,
            per_second,
            gate: tokio::sync::Mutex::new(()),
            cooldown: Mutex::new(HashMap::new()),
        }
    }

    /// The global limit, calls per second.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Waits until a call for `sdkappid` may be sent now; returns how long it waited.
    pub async fn acquire(&self, sdkappid: u64) -> Duration {
        let started = Instant::now();
        loop {
            let cooldown_until = self
                .cooldown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&sdkappid)
                .copied();
            if let Some(until) = cooldown_until {
                let now = Instant::now();
                if until > now {
                    tokio::time::sleep(until - now).await;
                    continue;
                }
            }
            let gate = self.gate.lock().await;
            if let Some(per_app) = &self.per_app {
                if let Err(not_until) = per_app.check_key(&sdkappid) {
                    drop(gate);
                    tokio::time::sleep(not_until.wait_time_from(DefaultClock::default().now()))
                        .await;
                    continue;
                }
            }
            self.global.until_ready().await;
            return started.elapsed();
        }
    }

    /// Keeps calls for `sdkappid` back for `pause`, after the gateway said it is over its limit.
    pub fn slow_down(&self, sdkappid: u64, pause: Duration) {
        let until = Instant::now() + pause;
        let mut cooldown = self.cooldown.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cooldown.entry(sdkappid).or_insert(until);
        *entry = (*entry).max(until);
        // Forget apps whose pause is over, so the map stays as small as the set of throttled apps.
        let now = Instant::now();
        cooldown.retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest number of instants in any window of one second.
    fn max_in_any_second(times: &[Instant]) -> usize {
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= Duration::from_secs(1) {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    #[tokio::test]
    async fn no_burst_at_start_and_steady_rate_close_to_the_limit() {
        let limits = std::sync::Arc::new(RateLimits::new(50, 50));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..75u64 {
            let limits = limits.clone();
            tasks.push(tokio::spawn(async move {
                limits.acquire(i % 3).await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.expect("task"));
        }
        times.sort();
        assert!(
            max_in_any_second(&times) <= 50,
            "{}",
            max_in_any_second(&times)
        );
        let took = times[74] - started;
        // 75 calls at 50/s take ~1.5 s; a burst would make it ~0.5 s.
        assert!(
            took >= Duration::from_millis(1450) && took < Duration::from_millis(1700),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn per_app_limit_applies_when_below_the_global_one() {
        let limits = RateLimits::new(1000, 20);
        let started = Instant::now();
        for _ in 0..21 {
            limits.acquire(7).await;
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(990),
            "21 calls at 20/s take a second, took {took:?}"
        );
        // Another app is not held back by app 7's limit.
        let other = Instant::now();
        limits.acquire(8).await;
        assert!(other.elapsed() < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn slow_down_holds_one_app_back() {
        let limits = RateLimits::new(1000, 1000);
        limits.slow_down(1, Duration::from_millis(300));
        let started = Instant::now();
        limits.acquire(2).await;
        assert!(started.elapsed() < Duration::from_millis(100));
        limits.acquire(1).await;
        assert!(started.elapsed() >= Duration::from_millis(290));
    }
}
