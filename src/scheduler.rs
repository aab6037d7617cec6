//! The poll loop: every target every `poll.interval`, start times spread evenly over the
//! interval, at most `max_concurrency` polls in flight, a tick skipped (and counted) when
//! the target's previous poll is still running.
//!
//! When the targets need more calls than the rate limit allows, the loop runs at the limit:
//! the client's [`crate::ratelimit::RateLimits`] holds polls back, the loop falls behind,
//! `calldrift_schedule_lag_seconds` says by how much, and one warning says what interval is
//! really achieved.
//!
//! **Invariant:** a target's next tick is one interval after its last dispatch, so a loop
//! that falls behind does not try to catch up with a burst.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Target, TargetKey};
use crate::metrics::Metrics;
use crate::status::Status;
use crate::tencent::Client;

/// What the loop polls and how; replaced as a whole on reload.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Shared, so a dispatch costs a reference count, not a copy of the target.
    pub targets: Vec<Arc<Target>>,
    pub interval: Duration,
    pub max_concurrency: usize,
    pub client: Arc<Client>,
}

/// Lag below this counts as on time; it is the loop's own dispatch jitter.
const ON_TIME: Duration = Duration::from_millis(1);

/// Runs until `shutdown`; polls are spawned on `tracker` so the caller can wait for them.
pub async fn run(
    mut plans: watch::Receiver<Arc<Plan>>,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let in_flight: Arc<Mutex<HashSet<TargetKey>>> = Arc::default();
    let mut plan = plans.borrow_and_update().clone();
    let mut slots = Arc::new(Semaphore::new(plan.max_concurrency.max(1)));
    let mut queue = Queue::default();
    queue.replan(&plan, Instant::now());
    let mut warned_behind = false;

    loop {
        let next_due = queue.next_due();
        let until_due = async {
            match next_due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = plans.changed() => {
                if changed.is_err() { return; }
                plan = plans.borrow_and_update().clone();
                slots = Arc::new(Semaphore::new(plan.max_concurrency.max(1)));
                queue.replan(&plan, Instant::now());
                warned_behind = false;
                continue;
            }
            _ = until_due => {}
        }
        let Some((due, index)) = queue.pop() else {
            continue;
        };
        let Some(target) = plan.targets.get(index).cloned() else {
            continue;
        };

        let already_running = !in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.key.clone());
        if already_running {
            status.skipped(&target.key);
            queue.push(due + plan.interval, index);
            continue;
        }
        let slot = tokio::select! {
            _ = shutdown.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot { Ok(slot) => slot, Err(_) => return },
        };
        let now = Instant::now();
        let lag = now.saturating_duration_since(due);
        metrics.schedule_lag.set(if lag < ON_TIME {
            0.0
        } else {
            lag.as_secs_f64()
        });
        if lag > plan.interval / 10 && lag > Duration::from_secs(1) && !warned_behind {
            warned_behind = true;
            tracing::warn!(
                interval = %humantime::format_duration(plan.interval),
                effective = %humantime::format_duration(Duration::from_secs((plan.interval + lag).as_secs())),
                targets = plan.targets.len(),
                per_second = plan.client.limits().per_second(),
                "the poll interval cannot be met at the rate limit; polls run behind schedule"
            );
        }
        queue.push(now + plan.interval, index);

        let client = plan.client.clone();
        let status = status.clone();
        let in_flight = in_flight.clone();
        tracker.spawn(async move {
            let outcome = client.get_callback(&target).await;
            status.record(&target.key, &outcome);
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&target.key);
            drop(slot);
        });
    }
}

/// Targets ordered by their next due time.
#[derive(Debug, Default)]
struct Queue {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Due times by key, kept across re-plans so a reload does not reset the schedule.
    due_by_key: BTreeMap<TargetKey, Instant>,
    keys: Vec<TargetKey>,
}

impl Queue {
    /// Takes a new plan: targets that stay keep their next due time, new ones are spread
    /// evenly over one interval from `now`.
    fn replan(&mut self, plan: &Plan, now: Instant) {
        let previous = std::mem::take(&mut self.due_by_key);
        self.heap.clear();
        self.keys = plan.targets.iter().map(|t| t.key.clone()).collect();
        let new: Vec<usize> = (0..plan.targets.len())
            .filter(|i| !previous.contains_key(&self.keys[*i]))
            .collect();
        let spacing = plan
            .interval
            .checked_div(new.len().max(1) as u32)
            .unwrap_or_default();
        for (index, key) in self.keys.iter().enumerate() {
            let due = match previous.get(key) {
                // A shorter new interval must not leave a target waiting for the old one.
                Some(due) => (*due).min(now + plan.interval),
                None => {
                    let position = new.iter().position(|i| *i == index).unwrap_or(0) as u32;
                    now + spacing * position
                }
            };
            self.heap.push(Reverse((due, index)));
            self.due_by_key.insert(key.clone(), due);
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }

    fn pop(&mut self) -> Option<(Instant, usize)> {
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    fn push(&mut self, due: Instant, index: usize) {
        if let Some(key) = self.keys.get(index) {
            self.due_by_key.insert(key.clone(), due);
        }
        self.heap.push(Reverse((due, index)));
    }
}
