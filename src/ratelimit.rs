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
//! **Invariant:** a call is sent right after it passes [`RateLimits::acquire`], or, when it
//! first had to open a connection, reported with [`RateLimits::sent_late`] as it is sent;
//! nothing reaches the gateway any other way.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard};
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

    /// The call recorded at `from` was sent at `to`, which is no earlier than any record:
    /// the records stay in order. If `from` has already left (`limit` calls passed since),
    /// the late call is still among the last `limit` sent.
    fn moved(&mut self, from: Instant, to: Instant) {
        if let Some(i) = self.sent.iter().rposition(|t| *t == from) {
            self.sent.remove(i);
        }
        self.record(to);
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
    gate: tokio::sync::Mutex<()>,
    /// Held briefly, never across a wait: a call sent late moves its send time while
    /// others wait at the gate.
    windows: Mutex<Windows>,
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

impl Windows {
    /// When the app's window has room again, or `None` if it has room now.
    fn app_free_at(&self, sdkappid: u64, now: Instant) -> Option<Instant> {
        self.per_app.as_ref()?.windows.get(&sdkappid)?.free_at(now)
    }

    fn record(&mut self, sdkappid: u64, now: Instant) {
        self.global.record(now);
        if let Some(per_app) = &mut self.per_app {
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
    }
}

/// Whether a call fits in the windows now.
enum Room {
    Passed(Instant),
    /// The global window has room again then.
    GlobalAt(Instant),
    AppFull,
}

/// What passing [`RateLimits::acquire`] gives: when the call passed, and how long it
/// waited for that.
#[derive(Debug, Clone, Copy)]
pub struct Passed {
    pub at: Instant,
    pub waited: Duration,
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
            gate: tokio::sync::Mutex::new(()),
            windows: Mutex::new(Windows {
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

    /// Waits until a call for `sdkappid` may be sent now.
    pub async fn acquire(&self, sdkappid: u64) -> Passed {
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
            if let Some(wait) = self.app_wait(sdkappid) {
                drop(gate);
                tokio::time::sleep(wait).await;
                continue;
            }
            // governor's own `until_ready` sleeps on a timer thread of its own; one wake-up
            // there per call costs more CPU than the call itself, so sleep on tokio's timer.
            while let Err(not_until) = self.pacing.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                tokio::time::sleep_until(self.grid.at_or_after(later(Instant::now(), wait)).into())
                    .await;
            }
            loop {
                match self.pass_now(sdkappid) {
                    Room::Passed(at) => {
                        return Passed {
                            at,
                            waited: started.elapsed(),
                        };
                    }
                    Room::GlobalAt(free_at) => {
                        tokio::time::sleep_until(self.window_grid.at_or_after(free_at).into())
                            .await;
                    }
                    // The app's window filled while this call waited for the global one:
                    // a call of the same app was sent late.
                    Room::AppFull => break,
                }
            }
            drop(gate);
        }
    }

    /// Records the call if both windows have room now. Checked and recorded under one
    /// lock: a call sent late may move a send time (see `sent_late`) between the two.
    fn pass_now(&self, sdkappid: u64) -> Room {
        let mut windows = self.windows();
        let now = Instant::now();
        if let Some(free_at) = windows.global.free_at(now) {
            return Room::GlobalAt(free_at);
        }
        if windows.app_free_at(sdkappid, now).is_some() {
            return Room::AppFull;
        }
        windows.record(sdkappid, now);
        Room::Passed(now)
    }

    /// How long a call for `sdkappid` must wait for its app's window or pacing, if at all;
    /// takes a pacing cell when it need not wait.
    fn app_wait(&self, sdkappid: u64) -> Option<Duration> {
        let windows = self.windows();
        let per_app = windows.per_app.as_ref()?;
        let now = Instant::now();
        if let Some(free_at) = per_app.windows.get(&sdkappid).and_then(|w| w.free_at(now)) {
            return Some(
                self.window_grid
                    .at_or_after(free_at)
                    .saturating_duration_since(now),
            );
        }
        per_app
            .pacing
            .check_key(&sdkappid)
            .err()
            .map(|n| n.wait_time_from(DefaultClock::default().now()))
    }

    /// A call that passed at `passed` is sent only now: it waited for a connection of its
    /// own (TCP and TLS handshakes, two round trips to a gateway far away). Its place in
    /// the windows moves to now, so the calls after it keep a window away from when it
    /// really left, and the gateway never sees more than the limit.
    pub fn sent_late(&self, sdkappid: u64, passed: Instant) {
        let now = Instant::now();
        let mut windows = self.windows();
        windows.global.moved(passed, now);
        if let Some(window) = windows
            .per_app
            .as_mut()
            .and_then(|per_app| per_app.windows.get_mut(&sdkappid))
        {
            window.moved(passed, now);
        }
    }

    fn windows(&self) -> MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
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

    #[test]
    fn a_call_sent_late_moves_to_when_it_was_sent() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut window = Window::new(3);
        for ms in [0, 100, 200] {
            window.record(at(ms));
        }
        window.moved(at(0), at(300));
        assert_eq!(window.sent, [at(100), at(200), at(300)]);
        assert_eq!(window.free_at(at(400)), Some(at(100) + WINDOW));
        // Gone from the window already: still one of the last three sent.
        window.moved(at(50), at(350));
        assert_eq!(window.sent, [at(200), at(300), at(350)]);
    }

    #[tokio::test]
    async fn calls_after_one_sent_late_keep_a_window_from_it() {
        // Limit 4, paced 250 ms apart: the fifth call waits for the first to leave the
        // window. The first was sent 200 ms late, so the fifth waits for the second.
        let limits = RateLimits::new(4, 4);
        let started = Instant::now();
        let first = limits.acquire(1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        limits.sent_late(1, first.at);
        for _ in 0..3 {
            limits.acquire(1).await;
        }
        limits.acquire(1).await;
        let fifth = started.elapsed();
        // The second passed at about 250 ms; without the move the fifth would pass at
        // about 1.01 s.
        assert!(fifth >= Duration::from_millis(1200), "{fifth:?}");
        assert!(fifth < Duration::from_millis(1500), "{fifth:?}");
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
