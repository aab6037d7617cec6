//! When each endpoint is probed, without IO or a clock: the caller passes the time since
//! an origin of its choosing. Endpoints are deduplicated by construction (one slot per
//! `host:port`, however many targets point at it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::Endpoint;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    /// When its last probe started; `None` until one did.
    last_start: Option<Duration>,
    in_flight: bool,
}

impl Slot {
    /// When it is due next; `None` while a probe is running.
    fn due_at(&self, interval: Duration) -> Option<Duration> {
        if self.in_flight {
            return None;
        }
        Some(self.last_start.map_or(Duration::ZERO, |s| s + interval))
    }
}

/// Which endpoints are wanted and when each is due: at most one probe per endpoint per
/// `interval`, and never two at once.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval: Duration,
    slots: BTreeMap<Endpoint, Slot>,
}

impl Schedule {
    pub fn new(interval: Duration) -> Self {
        Schedule {
            interval,
            slots: BTreeMap::new(),
        }
    }

    /// A new interval counts from each endpoint's last start, so a shorter one applies at once.
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// Makes `wanted` the endpoints probed: new ones are due at once, kept ones keep their
    /// times; returns the ones no longer wanted.
    pub fn set_wanted(&mut self, wanted: &BTreeSet<Endpoint>) -> Vec<Endpoint> {
        let gone: Vec<Endpoint> = self
            .slots
            .keys()
            .filter(|e| !wanted.contains(*e))
            .cloned()
            .collect();
        for endpoint in &gone {
            self.slots.remove(endpoint);
        }
        for endpoint in wanted {
            self.slots.entry(endpoint.clone()).or_default();
        }
        gone
    }

    /// Starts at most `slots` endpoints due at `now`, the longest-waiting first.
    pub fn start_due(&mut self, now: Duration, slots: usize) -> Vec<Endpoint> {
        let interval = self.interval;
        let mut due: Vec<(Duration, Endpoint)> = self
            .slots
            .iter()
            .filter_map(|(e, s)| {
                s.due_at(interval)
                    .filter(|at| *at <= now)
                    .map(|at| (at, e.clone()))
            })
            .collect();
        due.sort();
        due.truncate(slots);
        let started: Vec<Endpoint> = due.into_iter().map(|(_, e)| e).collect();
        for endpoint in &started {
            if let Some(slot) = self.slots.get_mut(endpoint) {
                *slot = Slot {
                    last_start: Some(now),
                    in_flight: true,
                };
            }
        }
        started
    }

    /// Marks `endpoint`'s probe as done; true if the endpoint is still wanted.
    pub fn finished(&mut self, endpoint: &Endpoint) -> bool {
        match self.slots.get_mut(endpoint) {
            Some(slot) => {
                slot.in_flight = false;
                true
            }
            None => false,
        }
    }

    /// The earliest time an endpoint not in flight is due.
    pub fn next_due(&self) -> Option<Duration> {
        self.slots
            .values()
            .filter_map(|s| s.due_at(self.interval))
            .min()
    }

    /// How many endpoints are wanted.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no endpoint is wanted.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str) -> Endpoint {
        Endpoint {
            host: host.to_owned(),
            port: 443,
        }
    }

    fn set(hosts: &[&str]) -> BTreeSet<Endpoint> {
        hosts.iter().map(|h| ep(h)).collect()
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// One step of a table: an action at a time and what it must return.
    enum Step {
        Want(&'static [&'static str], &'static [&'static str]),
        Start(u64, usize, &'static [&'static str]),
        Finish(&'static str, bool),
        NextDue(Option<u64>),
    }
    use Step::*;

    fn names(endpoints: &[Endpoint]) -> Vec<&str> {
        endpoints.iter().map(|e| e.host.as_str()).collect()
    }

    fn run(steps: &[Step]) {
        let mut schedule = Schedule::new(s(300));
        for (i, step) in steps.iter().enumerate() {
            match step {
                Want(hosts, gone) => {
                    assert_eq!(names(&schedule.set_wanted(&set(hosts))), *gone, "step {i}");
                }
                Start(now, slots, want) => {
                    assert_eq!(
                        names(&schedule.start_due(s(*now), *slots)),
                        *want,
                        "step {i}"
                    );
                }
                Finish(host, wanted) => {
                    assert_eq!(schedule.finished(&ep(host)), *wanted, "step {i}")
                }
                NextDue(want) => assert_eq!(schedule.next_due(), want.map(s), "step {i}"),
            }
        }
    }

    #[test]
    fn each_endpoint_at_most_once_per_interval() {
        run(&[
            Want(&["a", "b"], &[]),
            NextDue(Some(0)),
            Start(0, 8, &["a", "b"]),
            NextDue(None),
            Start(1, 8, &[]),
            Finish("a", true),
            Finish("b", true),
            NextDue(Some(300)),
            Start(299, 8, &[]),
            Start(300, 8, &["a", "b"]),
        ]);
    }

    #[test]
    fn a_running_probe_is_never_started_again() {
        run(&[
            Want(&["a"], &[]),
            Start(0, 8, &["a"]),
            Start(900, 8, &[]),
            Finish("a", true),
            Start(900, 8, &["a"]),
        ]);
    }

    #[test]
    fn new_endpoints_are_due_at_once_and_gone_ones_forgotten() {
        run(&[
            Want(&["a"], &[]),
            Start(0, 8, &["a"]),
            Finish("a", true),
            Want(&["b"], &["a"]),
            NextDue(Some(0)),
            Start(5, 8, &["b"]),
            Finish("b", true),
            // Wanted again: a new slot, due at once.
            Want(&["a", "b"], &[]),
            Start(6, 8, &["a"]),
        ]);
    }

    #[test]
    fn a_result_for_a_forgotten_endpoint_is_not_wanted() {
        run(&[
            Want(&["a"], &[]),
            Start(0, 8, &["a"]),
            Want(&[], &["a"]),
            Finish("a", false),
            NextDue(None),
        ]);
    }

    #[test]
    fn slots_bound_the_starts_longest_waiting_first() {
        run(&[
            Want(&["a", "b", "c"], &[]),
            Start(0, 1, &["a"]),
            Finish("a", true),
            Start(10, 2, &["b", "c"]),
            Finish("b", true),
            Finish("c", true),
            // a was due at 300, b and c at 310.
            Start(400, 1, &["a"]),
            Start(400, 0, &[]),
        ]);
    }

    #[test]
    fn a_shorter_interval_applies_at_once() {
        let mut schedule = Schedule::new(s(300));
        schedule.set_wanted(&set(&["a"]));
        schedule.start_due(s(0), 8);
        schedule.finished(&ep("a"));
        schedule.set_interval(s(60));
        assert_eq!(schedule.next_due(), Some(s(60)));
        assert_eq!(names(&schedule.start_due(s(60), 8)), ["a"]);
    }

    #[test]
    fn a_thousand_targets_on_one_host_are_one_endpoint() {
        let mut schedule = Schedule::new(s(300));
        let wanted: BTreeSet<Endpoint> = (0..1000).map(|_| ep("hooks.example.com")).collect();
        schedule.set_wanted(&wanted);
        assert_eq!(schedule.len(), 1);
        assert_eq!(schedule.start_due(s(0), 8).len(), 1);
    }
}
