//! The poll loop: every target every `poll.interval`, start times spread evenly over the
//! interval, at most `max_concurrency` polls in flight, a tick skipped (and counted) when
//! the target's previous poll is still running.
//!
//! When the targets need more calls than the rate limit allows, the loop runs at the limit:
//! the client's [`crate::ratelimit::RateLimits`] holds polls back, the loop falls behind,
//! `calldrift_schedule_lag_seconds` says by how much, and one warning says what interval is
//! really achieved.
//!
//! Dispatch runs on a grid (a fifth of the interval, at most 128 ms): everything due by a
//! grid instant goes out at that instant, so the loop and the rate limiter wake once for a
//! handful of polls.
//!
//! **Invariant:** a target's next tick is one interval after the grid instant of its last
//! dispatch or, when the loop is behind, after the dispatch itself, so a loop that falls
//! behind does not try to catch up with a burst.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{DISPATCH_STEP, Grid, later, power_of_two_ms};
use crate::config::TargetKey;
use crate::enforce::Enforcer;
use crate::metrics::Metrics;
use crate::status::Status;
use crate::tencent::{Client, Target};

/// What the loop polls and how; replaced as a whole on reload.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Shared, so a dispatch costs a reference count, not a copy of the target.
    pub targets: Vec<Arc<Target>>,
    pub interval: Duration,
    pub max_concurrency: usize,
    pub client: Arc<Client>,
    /// The reload generation the targets' expectations belong to (see
    /// [`Enforcer::generation`]): remediation acts only on polls of the current one.
    pub generation: u64,
}

/// Lag below this counts as on time; it is the loop's own dispatch jitter.
const ON_TIME: Duration = Duration::from_millis(1);

/// Runs until `shutdown`; polls are spawned on `tracker` so the caller can wait for them.
pub async fn run(
    mut plans: watch::Receiver<Arc<Plan>>,
    status: Arc<Status>,
    enforcer: Arc<Enforcer>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let plan = plans.borrow_and_update().clone();
    let mut dispatcher = Dispatcher::new(plan, status, enforcer, metrics, tracker);
    loop {
        let grid = Grid::shared(dispatch_step(dispatcher.plan.interval));
        let (tick, behind) = dispatcher.next_tick(&grid);
        let until_tick = async {
            match tick {
                Some(tick) => tokio::time::sleep_until(tick).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = plans.changed() => {
                if changed.is_err() { return; }
                dispatcher.replan(plans.borrow_and_update().clone());
                continue;
            }
            _ = until_tick => {}
        }
        if let Some(tick) = tick {
            if dispatcher
                .dispatch_due(tick, behind, &grid, &shutdown)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// The loop's state between ticks.
struct Dispatcher {
    plan: Arc<Plan>,
    slots: Arc<Semaphore>,
    queue: Queue,
    in_flight: Arc<Mutex<HashSet<Running>>>,
    warned_behind: bool,
    status: Arc<Status>,
    enforcer: Arc<Enforcer>,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
}

/// Shutdown came while waiting for a concurrency slot.
struct Stopped;

impl Dispatcher {
    fn new(
        plan: Arc<Plan>,
        status: Arc<Status>,
        enforcer: Arc<Enforcer>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
    ) -> Self {
        let mut queue = Queue::default();
        queue.replan(plan_keys(&plan), plan.interval, Instant::now());
        Dispatcher {
            slots: Arc::new(Semaphore::new(plan.max_concurrency.max(1))),
            plan,
            queue,
            in_flight: Arc::default(),
            warned_behind: false,
            status,
            enforcer,
            metrics,
            tracker,
        }
    }

    fn replan(&mut self, plan: Arc<Plan>) {
        self.slots = Arc::new(Semaphore::new(plan.max_concurrency.max(1)));
        self.queue
            .replan(plan_keys(&plan), plan.interval, Instant::now());
        self.plan = plan;
        self.warned_behind = false;
    }

    /// When to wake next, and whether the loop is behind. Work already due (the first poll
    /// after start or reload, or a loop behind) goes at once; waiting for the grid only
    /// pays when polls are ahead of schedule.
    fn next_tick(&self, grid: &Grid) -> (Option<Instant>, bool) {
        let now = Instant::now();
        let next_due = self.queue.next_due();
        let behind = next_due.is_some_and(|due| due <= now);
        let tick = next_due.map(|due| {
            if behind {
                now
            } else {
                Instant::from_std(grid.at_or_after(due.into_std()))
            }
        });
        (tick, behind)
    }

    /// Dispatches every target due by `tick`.
    async fn dispatch_due(
        &mut self,
        tick: Instant,
        behind: bool,
        grid: &Grid,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        while let Some((due, index)) = self.queue.pop_due(tick) {
            let Some(target) = self.plan.targets.get(index).cloned() else {
                continue;
            };
            let already_running = !self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(Running(target.clone()));
            if already_running {
                self.status.skipped(&target.key);
                self.queue.push(after(due, self.plan.interval), index);
                continue;
            }
            let slot = tokio::select! {
                _ = shutdown.cancelled() => return Err(Stopped),
                slot = self.slots.clone().acquire_owned() => slot.map_err(|_| Stopped)?,
            };
            let now = Instant::now();
            // Late against the grid instant it was deferred to, or, behind, against its due
            // time.
            let lag = now.saturating_duration_since(if behind { due } else { tick });
            self.observe_lag(lag);
            // On time, the next tick keeps to the grid; behind, it counts from now, so the
            // loop does not catch up with a burst.
            let since = if lag < grid.step() { tick } else { now };
            self.queue.push(after(since, self.plan.interval), index);
            self.spawn_poll(target, slot);
        }
        Ok(())
    }

    fn observe_lag(&mut self, lag: Duration) {
        let plan = &self.plan;
        self.metrics.schedule_lag.set(if lag < ON_TIME {
            0.0
        } else {
            lag.as_secs_f64()
        });
        if lag > plan.interval / 10 && lag > Duration::from_secs(1) && !self.warned_behind {
            self.warned_behind = true;
            tracing::warn!(
                interval = %humantime::format_duration(plan.interval),
                effective = %humantime::format_duration(Duration::from_secs(plan.interval.saturating_add(lag).as_secs())),
                targets = plan.targets.len(),
                per_second = plan.client.limits().per_second(),
                "the poll interval cannot be met at the rate limit; polls run behind schedule"
            );
        }
    }

    fn spawn_poll(&self, target: Arc<Target>, slot: OwnedSemaphorePermit) {
        let client = self.plan.client.clone();
        let status = self.status.clone();
        let enforcer = self.enforcer.clone();
        let in_flight = self.in_flight.clone();
        let generation = self.plan.generation;
        self.tracker.spawn(async move {
            // Boxed: a poll's future is large, and a task moves its future several times
            // (spawn, completion); moving a pointer costs nothing.
            let outcome = Box::pin(client.get_callback(&target)).await;
            status.record(&target.key, &outcome);
            let wrote = enforcer
                .after_poll(&client, &target, &outcome, generation)
                .await;
            if wrote {
                // A write is read back at once, still holding this target's slot; that
                // read never writes again (see `enforce::guard`).
                let outcome = Box::pin(client.get_callback(&target)).await;
                status.record(&target.key, &outcome);
                enforcer
                    .after_poll(&client, &target, &outcome, generation)
                    .await;
            }
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&target.key);
            drop(slot);
        });
    }
}

/// A target with a poll in flight, known by its key: a target of a replaced plan is the
/// same target as its successor. Holds the target, so marking it costs a reference count,
/// not a copy of the key.
struct Running(Arc<Target>);

impl std::borrow::Borrow<TargetKey> for Running {
    fn borrow(&self) -> &TargetKey {
        &self.0.key
    }
}

impl std::hash::Hash for Running {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.key.hash(state);
    }
}

impl PartialEq for Running {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for Running {}

fn plan_keys(plan: &Plan) -> Vec<TargetKey> {
    plan.targets.iter().map(|t| t.key.clone()).collect()
}

/// `instant + by`, which cannot panic however long `by` is (see [`later`]).
fn after(instant: Instant, by: Duration) -> Instant {
    Instant::from_std(later(instant.into_std(), by))
}

/// Polls are dispatched on a grid of this step, all that are due at once: one wake-up
/// for a batch of polls instead of one each, which is most of a poll's CPU at 200/s.
/// A fifth of the interval at most, so short intervals keep their spread, rounded down to
/// a power of two milliseconds (see [`crate::clock::grid_origin`]).
fn dispatch_step(interval: Duration) -> Duration {
    power_of_two_ms((interval / 5).min(DISPATCH_STEP))
}

/// Targets ordered by their next due time.
#[derive(Debug, Default)]
struct Queue {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Each target's next due time, by index into `keys`; kept across re-plans (by key) so
    /// a reload does not reset the schedule.
    due: Vec<Instant>,
    keys: Vec<TargetKey>,
}

impl Queue {
    /// Takes a new plan: targets that stay keep their next due time, new ones are spread
    /// evenly over one interval from `now`.
    fn replan(&mut self, keys: Vec<TargetKey>, interval: Duration, now: Instant) {
        let old_keys = std::mem::take(&mut self.keys);
        let old_due = std::mem::take(&mut self.due);
        let previous: HashMap<&TargetKey, Instant> = old_keys.iter().zip(old_due).collect();
        self.heap.clear();
        self.keys = keys;
        let new_count = self
            .keys
            .iter()
            .filter(|key| !previous.contains_key(key))
            .count();
        let spacing = interval
            .checked_div(new_count.max(1) as u32)
            .unwrap_or_default();
        let mut position = 0;
        for (index, key) in self.keys.iter().enumerate() {
            let due = match previous.get(key) {
                // A shorter new interval must not leave a target waiting for the old one.
                Some(due) => (*due).min(after(now, interval)),
                None => {
                    position += 1;
                    after(now, spacing.saturating_mul(position - 1))
                }
            };
            self.heap.push(Reverse((due, index)));
            self.due.push(due);
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }

    /// The next target due at or before `tick`.
    fn pop_due(&mut self, tick: Instant) -> Option<(Instant, usize)> {
        match self.heap.peek() {
            Some(Reverse((due, _))) if *due <= tick => self.heap.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }

    fn push(&mut self, due: Instant, index: usize) {
        if let Some(slot) = self.due.get_mut(index) {
            *slot = due;
        }
        self.heap.push(Reverse((due, index)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<TargetKey> {
        names
            .iter()
            .map(|name| TargetKey::new(name, 1, "r", crate::product::Product::Call))
            .collect()
    }

    fn drain(queue: &mut Queue, tick: Instant) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((_, index)) = queue.pop_due(tick) {
            out.push(queue.keys[index].app.clone());
        }
        out
    }

    #[test]
    fn new_targets_are_spread_over_the_interval_and_kept_across_replans() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let mut queue = Queue::default();
        queue.replan(keys(&["a", "b", "c", "d"]), 4 * second, now);
        let mut due: Vec<_> = queue.due.clone();
        due.sort();
        assert_eq!(
            due,
            vec![now, now + second, now + 2 * second, now + 3 * second]
        );

        // "b" was polled and is next due at +5 s; a reload adds "e" and drops "d".
        let b = queue.keys.iter().position(|k| k.app == "b").expect("b");
        queue.push(now + 5 * second, b);
        queue.replan(keys(&["a", "b", "c", "e"]), 4 * second, now);
        let due_of = |q: &Queue, app: &str| {
            let i = q.keys.iter().position(|k| k.app == app).expect("key");
            q.due[i]
        };
        assert_eq!(due_of(&queue, "a"), now);
        // A shorter interval than the wait left: no longer than one new interval.
        assert_eq!(due_of(&queue, "b"), now + 4 * second);
        assert_eq!(due_of(&queue, "c"), now + 2 * second);
        // The only new target starts at once.
        assert_eq!(due_of(&queue, "e"), now);
        assert_eq!(queue.heap.len(), 4, "dropped targets leave the queue");
    }

    #[test]
    fn pop_due_takes_everything_due_by_the_tick_in_order() {
        let now = Instant::now();
        let mut queue = Queue::default();
        queue.replan(keys(&["a", "b", "c", "d"]), Duration::from_millis(400), now);
        let tick = now + Duration::from_millis(150);
        assert_eq!(drain(&mut queue, tick), vec!["a", "b"]);
        assert_eq!(queue.next_due(), Some(now + Duration::from_millis(200)));
    }

    #[test]
    fn an_absurd_interval_schedules_without_panicking() {
        let now = Instant::now();
        let mut queue = Queue::default();
        queue.replan(keys(&["a", "b", "c"]), Duration::MAX, now);
        let mut popped = Vec::new();
        while let Some((due, index)) = queue.pop_due(now) {
            popped.push(index);
            queue.push(after(due, Duration::MAX), index);
        }
        assert_eq!(popped.len(), 1, "the others are spread decades away");
        queue.replan(keys(&["a", "b", "c", "d"]), Duration::MAX, now);
        assert_eq!(dispatch_step(Duration::MAX), DISPATCH_STEP);
    }

    #[test]
    fn a_running_target_is_found_by_its_key_across_plans() {
        let target = |app: &str| {
            let key = TargetKey::new(app, 1, "r", crate::product::Product::Call);
            let usersig = Arc::new(crate::tencent::usersig::UserSigCache::new(
                crate::secret::SecretKey::new("k"),
                1,
                "admin".to_owned(),
                86_400,
            ));
            Arc::new(Target {
                identifier: "admin".to_owned(),
                bases: crate::tencent::BaseUrls::new("http://127.0.0.1:1".to_owned(), None),
                usersig,
                expect: crate::drift::Expected::default_for(key.product),
                last_response: Arc::default(),
                key,
            })
        };
        let mut running = HashSet::new();
        assert!(running.insert(Running(target("a"))));
        // The same target of a reloaded plan is another allocation with an equal key.
        assert!(!running.insert(Running(target("a"))));
        assert!(running.contains(&target("a").key));
        assert!(!running.contains(&target("b").key));
        assert!(running.remove(&target("a").key));
        assert!(running.is_empty());
    }

    #[test]
    fn the_dispatch_step_is_a_fifth_of_the_interval_in_power_of_two_milliseconds() {
        for (interval_ms, step_ms) in [(0, 1), (5, 1), (100, 16), (1000, 128), (60_000, 128)] {
            assert_eq!(
                dispatch_step(Duration::from_millis(interval_ms)),
                Duration::from_millis(step_ms),
                "interval {interval_ms} ms"
            );
        }
    }
}
