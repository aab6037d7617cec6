//! The one gate every gateway call passes: a global limit and a per-SDKAppID limit.
//!
//! Two mechanisms work together. Pacing (governor, one cell every 1/limit, a bucket of a
//! quarter of a second's calls) spreads calls out; waits for it end on a grid, so waiting
//! calls wake together and pass as one batch, and a late wake-up costs no throughput.
//! A sliding window (the send times of the last `limit` calls) is the hard cap: a call
//! waits until the call `limit` places before it is more than [`WINDOW`] old, so no
//! 1-second window ever holds more calls than the limit. The pacing bucket starts with
//! one cell, so there is no burst at start-up.
//!
//! **Invariant:** a call is sent right after it passes [`RateLimits::acquire`]; nothing
//! reaches the gateway any other way.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::clock::{Grid, later};

/// The hard cap's window: one second plus a margin for the jitter between passing the
/// limiter here and the request's arrival at the gateway.
pub const WINDOW: Duration = Duration::from_millis(1010);

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;
type Keyed = RateLimiter<u64, DefaultKeyedStateStore<u64>, DefaultClock>;

/// Cells the pacing bucket holds: two of the scheduler's longest dispatch steps of calls,
/// so a step's polls pass together even when wake-ups jitter; far too few to matter
/// against the hard cap.
fn bucket(per_second: u32) -> NonZeroU32 {
    let steps = 2.0 * crate::clock::DISPATCH_STEP.as_secs_f64();
    NonZeroU32::new(((f64::from(per_second) * steps) as u32).max(1)).unwrap_or(NonZeroU32::MIN)
}

/// Pacing waits end on a grid of half a dispatch step: waiting calls wake together (and
/// with the scheduler, whose grid this divides), and the bucket, two steps deep, never
/// fills between two wake-ups, so no cell is lost to the grid.
fn pacing_grid() -> Grid {
    Grid::shared(crate::clock::DISPATCH_STEP / 2)
}

/// Waits for room in a window end on a grid of this step: calls sent about together leave
/// the window together and pass on one wake-up. It costs at most a step of throughput per
/// window (0.4 %).
const WINDOW_GRID: Duration = Duration::from_millis(4);

fn pacing(per_second: u32) -> Quota {
    let period = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(bucket(per_second))
}

/// The send times of the last `limit` calls.
#[derive(Debug)]
struct Window {
    limit: usize,
    sent: VecDeque<Instant>,
}

impl Window {
    fn new(limit: u32) -> Self {
        Self {
            limit: limit.max(1) as usize,
            sent: VecDeque::new(),
        }
    }

    /// When one more call fits, or `None` if it fits now.
    fn free_at(&self, now: Instant) -> Option<Instant> {
        if self.sent.len() < self.limit {
            return None;
        }
        let free_at = *self.sent.front()? + WINDOW;
        (free_at > now).then_some(free_at)
    }

    fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
        while self.sent.len() > self.limit {
            self.sent.pop_front();
        }
    }

    fn idle(&self, now: Instant) -> bool {
        self.sent
            .back()
            .is_none_or(|last| now.duration_since(*last) > WINDOW)
    }
}

#[derive(Debug)]
struct PerApp {
    pacing: Keyed,
    windows: HashMap<u64, Window>,
    limit: u32,
}

#[derive(Debug)]
pub struct RateLimits {
    pacing: Direct,
    per_second: u32,
    /// Where pacing waits end; see [`pacing_grid`].
    grid: Grid,
    /// Where window waits end; see [`WINDOW_GRID`].
    window_grid: Grid,
    /// Serialises the final waits, so calls pass in order and the windows see every call.
    gate: tokio::sync::Mutex<Windows>,
    /// Apps the gateway told to slow down (60011 and friends): no call before the instant.
    cooldown: Mutex<HashMap<u64, Instant>>,
}

#[derive(Debug)]
struct Windows {
    global: Window,
    /// `None` when the per-app limit is not below the global one: the global cap then
    /// bounds every app too.
    per_app: Option<PerApp>,
}

impl RateLimits {
    pub fn new(per_second: u32, per_app_per_second: u32) -> Self {
        let pacing = RateLimiter::direct(pacing(per_second));
        // Start with one cell in the bucket: the first call goes at once, the rest are
        // paced, so there is no burst at start-up.
        if let Some(all_but_one) = NonZeroU32::new(bucket(per_second).get() - 1) {
            let _ = pacing.check_n(all_but_one);
        }
        let per_app = (per_app_per_second < per_second).then(|| PerApp {
            pacing: RateLimiter::keyed(pacing_quota_without_burst(per_app_per_second)),
            windows: HashMap::new(),
            limit: per_app_per_second,
        });
        Self {
            pacing,
            per_second,
            grid: pacing_grid(),
            window_grid: Grid::shared(WINDOW_GRID),
            gate: tokio::sync::Mutex::new(Windows {
                global: Window::new(per_second),
                per_app,
            }),
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
            let mut windows = self.gate.lock().await;
            if let Some(per_app) = &mut windows.per_app {
                let app_wait = per_app
                    .windows
                    .get(&sdkappid)
                    .and_then(|w| w.free_at(Instant::now()))
                    .map(|free_at| {
                        self.window_grid
                            .at_or_after(free_at)
                            .saturating_duration_since(Instant::now())
                    });
                let not_before = match app_wait {
                    Some(wait) => Some(wait),
                    None => per_app
                        .pacing
                        .check_key(&sdkappid)
                        .err()
                        .map(|n| n.wait_time_from(DefaultClock::default().now())),
                };
                if let Some(wait) = not_before {
                    drop(windows);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            // governor's own `until_ready` sleeps on a timer thread of its own; one wake-up
            // there per call costs more CPU than the call itself, so sleep on tokio's timer.
            while let Err(not_until) = self.pacing.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                tokio::time::sleep_until(self.grid.at_or_after(later(Instant::now(), wait)).into())
                    .await;
            }
            while let Some(free_at) = windows.global.free_at(Instant::now()) {
                tokio::time::sleep_until(self.window_grid.at_or_after(free_at).into()).await;
            }
            let now = Instant::now();
            windows.global.record(now);
            if let Some(per_app) = &mut windows.per_app {
                let limit = per_app.limit;
                per_app
                    .windows
                    .entry(sdkappid)
                    .or_insert_with(|| Window::new(limit))
                    .record(now);
                // Apps quiet for a whole window need no memory of their calls.
                if per_app.windows.len() > 1024 {
                    per_app.windows.retain(|_, w| !w.idle(now));
                }
            }
            return started.elapsed();
        }
    }

    /// Keeps calls for `sdkappid` back for `pause`, after the gateway said it is over its limit.
    pub fn slow_down(&self, sdkappid: u64, pause: Duration) {
        let until = later(Instant::now(), pause);
        let mut cooldown = self.cooldown.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cooldown.entry(sdkappid).or_insert(until);
        *entry = (*entry).max(until);
        // Forget apps whose pause is over, so the map stays as small as the set of throttled apps.
        let now = Instant::now();
        cooldown.retain(|_, until| *until > now);
    }
}

/// Per-app pacing has no bucket: each app's calls are few, and its window is the cap.
fn pacing_quota_without_burst(per_second: u32) -> Quota {
    let period = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN)
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sustained_demand_reaches_the_limit_and_never_exceeds_it() {
        let limits = std::sync::Arc::new(RateLimits::new(100, 100));
        let until = Instant::now() + Duration::from_millis(2500);
        let mut tasks = Vec::new();
        for i in 0..20u64 {
            let limits = limits.clone();
            tasks.push(tokio::spawn(async move {
                let mut times = Vec::new();
                while Instant::now() < until {
                    limits.acquire(i).await;
                    times.push(Instant::now());
                }
                times
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.extend(t.await.expect("task"));
        }
        times.sort();
        assert!(
            max_in_any_second(&times) <= 100,
            "{}",
            max_in_any_second(&times)
        );
        // Over the steady last two seconds, close to the limit: the benchmark measures the
        // real figure; this guards against losing throughput wholesale on a loaded machine.
        let steady = times
            .iter()
            .filter(|t| **t + Duration::from_secs(2) >= until && **t < until)
            .count();
        assert!(steady >= 190, "{steady} calls in 2 s at 100/s");
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
