//! Wall-clock time behind a trait, so time-dependent logic can be tested with a clock the
//! test controls.

use std::fmt::Debug;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> SystemTime;

    /// Seconds since the Unix epoch (0 for a clock set before 1970).
    fn unix_secs(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// Seconds since the Unix epoch with sub-second precision, for timestamp gauges.
    fn unix_f64(&self) -> f64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock stopped at one instant, for tests whose answers depend on the time.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(SystemTime);

impl FixedClock {
    pub fn at_unix(secs: u64) -> Self {
        Self(UNIX_EPOCH + Duration::from_secs(secs))
    }
}

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// The origin of [`Grid::shared`], fixed by the first call.
///
/// Call it just before building the tokio runtime: tokio's timer wheel counts whole
/// milliseconds from the runtime's start and wakes at the start of each 64 ms block that
/// holds a later timer, to re-file it. With the origin a fraction of a millisecond before
/// that start, grid instants whose steps are powers of two milliseconds land exactly on
/// those block starts, so such a wake-up is the timer's own, not an extra one.
pub fn grid_origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// The longest step between the scheduler's dispatches, two of tokio's 64 ms timer-wheel
/// blocks. The rate limiter's bucket holds two steps of calls and its grid and the request
/// deadlines' are derived from it, so it lives here, below all three.
pub const DISPATCH_STEP: Duration = Duration::from_millis(128);

/// The largest power-of-two number of milliseconds not above `at_most` (1 ms at least):
/// a step that divides, or is a multiple of, tokio's 64 ms timer-wheel blocks.
pub fn power_of_two_ms(at_most: Duration) -> Duration {
    let ms = u64::try_from(at_most.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(1 << (63 - ms.leading_zeros()))
}

/// How far [`later`] looks ahead at most: about 30 years, like tokio's own "far future".
/// Later than any timer calldrift means, and representable wherever an `Instant` is.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// `instant + by`, except that it cannot panic: a duration beyond about 30 years counts as
/// 30 years. Durations from the config are bounded by validation, but the types that carry
/// them (`Plan`, `ClientSettings`, …) are public and take any value.
pub fn later(instant: Instant, by: Duration) -> Instant {
    instant.checked_add(by.min(FAR_FUTURE)).unwrap_or(instant)
}

/// Instants `origin + k·step`. Timers set on a grid fire together, so tasks due at about
/// the same time share one wake-up of the runtime instead of having one each.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    origin: Instant,
    step: Duration,
}

impl Grid {
    /// A grid of `step` through an origin shared by the whole process: grids whose steps
    /// divide one another then fire together, so the scheduler, the rate limiter and the
    /// request deadlines cost one wake-up between them, not one each.
    pub fn shared(step: Duration) -> Self {
        Self::new(grid_origin(), step)
    }

    /// A grid of `step` (at least a microsecond) through `origin`.
    pub fn new(origin: Instant, step: Duration) -> Self {
        Self {
            origin,
            step: step.max(Duration::from_micros(1)),
        }
    }

    pub fn step(&self) -> Duration {
        self.step
    }

    /// The first grid instant not before `instant` (the origin for anything before it).
    ///
    /// Exact for any uptime: the step count is not narrowed, so the answer is never before
    /// `instant` (a narrowed count once sent timers into the past after ~199 days).
    pub fn at_or_after(&self, instant: Instant) -> Instant {
        let offset = instant.saturating_duration_since(self.origin);
        let step = self.step.as_nanos();
        let rounded = offset.as_nanos().div_ceil(step).saturating_mul(step);
        let secs = u64::try_from(rounded / 1_000_000_000).unwrap_or(u64::MAX);
        // Below a second: the cast cannot truncate.
        let nanos = (rounded % 1_000_000_000) as u32;
        self.origin
            .checked_add(Duration::new(secs, nanos))
            .unwrap_or(instant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_rounds_up_to_the_next_step() {
        let origin = Instant::now();
        let grid = Grid::new(origin, Duration::from_millis(50));
        let ms = |n| origin + Duration::from_millis(n);
        for (instant, expected) in [
            (origin, origin),
            (ms(1), ms(50)),
            (ms(49), ms(50)),
            (ms(50), ms(50)),
            (ms(51), ms(100)),
            (ms(1_000_001), ms(1_000_050)),
        ] {
            assert_eq!(grid.at_or_after(instant), expected);
        }
        // Before the origin: the origin.
        if let Some(before) = origin.checked_sub(Duration::from_secs(1)) {
            assert_eq!(grid.at_or_after(before), origin);
        }
    }

    #[test]
    fn grid_stays_exact_after_years_of_uptime() {
        let origin = Instant::now();
        let grid = Grid::new(origin, Duration::from_millis(4));
        let day = Duration::from_secs(86_400);
        for days in [198, 199, 200, 365, 3 * 365, 30 * 365] {
            let Some(instant) = origin.checked_add(day * days + Duration::from_micros(1)) else {
                continue;
            };
            let at = grid.at_or_after(instant);
            assert!(
                at >= instant,
                "{days} days: grid instant before the asked one"
            );
            assert!(
                at - instant < grid.step(),
                "{days} days: more than a step late"
            );
        }
    }

    #[test]
    fn power_of_two_steps() {
        for (at_most, step) in [
            (0, 1),
            (1, 1),
            (3, 2),
            (64, 64),
            (100, 64),
            (128, 128),
            (5000, 4096),
        ] {
            assert_eq!(
                power_of_two_ms(Duration::from_millis(at_most)),
                Duration::from_millis(step),
                "{at_most} ms"
            );
        }
    }

    #[test]
    fn later_never_panics_and_caps_at_the_far_future() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let far = later(now, Duration::MAX);
        assert_eq!(far, later(now, FAR_FUTURE));
        assert!(far > now + Duration::from_secs(86_400 * 365 * 29));
    }

    #[test]
    fn a_zero_step_is_a_microsecond() {
        let origin = Instant::now();
        let grid = Grid::new(origin, Duration::ZERO);
        assert_eq!(grid.step(), Duration::from_micros(1));
        assert_eq!(
            grid.at_or_after(origin + Duration::from_nanos(1500)),
            origin + Duration::from_micros(2)
        );
    }
}
