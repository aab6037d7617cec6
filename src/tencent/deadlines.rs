//! Request deadlines on a coarse grid: one timer per grid step, shared by every request
//! whose deadline falls in that step, instead of a timer per request.
//!
//! Why: a tokio timer registered while the runtime's next wake-up is unknown (right after
//! its timers fired, which is when polls are dispatched) unparks the driver, an eventfd
//! write and an extra wake-up each. At 200 polls/s that cost more than the HTTP exchange.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::clock::DISPATCH_STEP;
use crate::clock::{Grid, later, power_of_two_ms};

#[derive(Debug)]
pub(crate) struct Deadlines {
    grid: Grid,
    pending: Mutex<BTreeMap<Instant, CancellationToken>>,
}

impl Deadlines {
    /// Deadlines for requests that time out after `timeout`: a thirty-second of it late at
    /// most, and no more than the scheduler's step, in power-of-two milliseconds, so that
    /// the step's timers fire with the scheduler's (see [`crate::clock::grid_origin`]).
    pub(crate) fn for_timeout(timeout: Duration) -> Self {
        let step = power_of_two_ms((timeout / 32).min(DISPATCH_STEP));
        Self {
            grid: Grid::shared(step),
            pending: Mutex::new(BTreeMap::new()),
        }
    }

    /// A token cancelled once `after` has passed, at most one grid step later. Must be
    /// called within a tokio runtime: the step's timer is a task of its own.
    pub(crate) fn after(&self, after: Duration) -> CancellationToken {
        let now = Instant::now();
        let at = self.grid.at_or_after(later(now, after));
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(token) = pending.get(&at) {
            return token.clone();
        }
        // Steps already past have fired; forget them now, while one is being added anyway.
        *pending = pending.split_off(&now);
        let token = CancellationToken::new();
        pending.insert(at, token.clone());
        let fire = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            fire.cancel();
        });
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_no_earlier_than_asked_and_at_most_a_step_later() {
        let deadlines = Deadlines::for_timeout(Duration::from_millis(500));
        let step = Duration::from_millis(10);
        for after in [Duration::from_millis(30), Duration::from_millis(65)] {
            let started = Instant::now();
            deadlines.after(after).cancelled().await;
            let took = started.elapsed();
            // Timer resolution is a millisecond; a loaded machine may add more on top.
            assert!(took >= after, "{took:?} < {after:?}");
            assert!(took < after + step + Duration::from_millis(100), "{took:?}");
        }
    }

    #[tokio::test]
    async fn requests_in_one_step_share_a_token_and_fired_steps_are_forgotten() {
        let deadlines = Deadlines::for_timeout(Duration::from_secs(50));
        let first = deadlines.after(Duration::from_millis(20));
        let second = deadlines.after(Duration::from_millis(20));
        second.cancel();
        assert!(first.is_cancelled(), "the same step shares one token");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _later = deadlines.after(Duration::from_millis(20));
        let pending = deadlines.pending.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(pending.len(), 1, "only the new step is kept");
    }
}
