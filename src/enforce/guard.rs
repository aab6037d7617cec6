//! When the daemon may write a target back to its expectation: the pure decision, with the
//! time passed in, so that it is table-tested.
//!
//! Per target it counts consecutive authoritative polls showing the *same* drift (the
//! same observed fingerprint and the same planned write) and acts when that streak reaches
//! `after`. A clean answer, an unmanaged target or a different drift starts over; a failed
//! poll neither counts nor resets (it says nothing about the configuration). The read that
//! follows a write never acts: it counts as the first of a new streak, so a write whose
//! answer was lost is never repeated before a read has seen what it did. Writes are
//! counted per target and in total within `window`: at `max_per_target` the target is
//! blocked, at `max_total` everything pauses, until the window has passed.

use std::collections::{BTreeMap, VecDeque};

use crate::config::{Remediate, RemediateMode, TargetKey};

/// Write times are kept this long, whatever the window: the longest the config accepts.
const KEPT_SECONDS: f64 = 7.0 * 86_400.0;

/// What one poll showed, as far as remediation is concerned; `W` names the planned write.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen<W> {
    /// The poll failed: nothing is known of the configuration.
    Failed,
    /// An authoritative answer with nothing to write.
    Clean,
    /// Drift on a target whose expectation names no one configuration.
    Unmanaged,
    /// Drift that the write `write` would repair.
    Drift { fingerprint: u64, write: W },
}

/// What the guard says after one poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Nothing to repair (or the poll failed and nothing changed).
    Idle,
    /// Unmanaged drift: reported, never written.
    Unmanaged,
    /// The same drift seen `streak` times, fewer than `after` (or the read after a write).
    Waiting { streak: u32 },
    /// Act now: write (`enforce`) or report the write (`dry-run`).
    Act,
    /// `dry-run` already reported this drift.
    Reported,
    /// `max_per_target` writes within the window, until this Unix time.
    Blocked { until: f64 },
    /// `max_total` writes to all targets within the window, until this Unix time.
    Paused { until: f64 },
}

impl Verdict {
    /// The word shown on the status page and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Idle => "idle",
            Verdict::Unmanaged => "unmanaged",
            Verdict::Waiting { .. } => "waiting",
            Verdict::Act => "act",
            Verdict::Reported => "reported",
            Verdict::Blocked { .. } => "blocked",
            Verdict::Paused { .. } => "paused",
        }
    }
}

/// One target's streak and recent writes.
#[derive(Debug, Clone)]
struct TargetGuard<W> {
    /// The drift the streak counts: its fingerprint and planned write.
    drift: Option<(u64, W)>,
    streak: u32,
    /// A write was made (or its answer lost) and no authoritative read has followed yet.
    awaiting_read: bool,
    /// `dry-run` reported the current drift.
    reported: bool,
    /// Unix times of writes, oldest first.
    writes: VecDeque<f64>,
}

impl<W> Default for TargetGuard<W> {
    fn default() -> Self {
        TargetGuard {
            drift: None,
            streak: 0,
            awaiting_read: false,
            reported: false,
            writes: VecDeque::new(),
        }
    }
}

/// Every target's streak and the writes made within the windows.
#[derive(Debug, Clone)]
pub struct Guard<W> {
    targets: BTreeMap<TargetKey, TargetGuard<W>>,
    /// Unix times of writes to any target, oldest first.
    total: VecDeque<f64>,
}

impl<W> Default for Guard<W> {
    fn default() -> Self {
        Guard {
            targets: BTreeMap::new(),
            total: VecDeque::new(),
        }
    }
}

/// Writes within `window` of `now`, and when the count drops below `limit` if it is at
/// least that.
fn holds(writes: &VecDeque<f64>, limit: u32, window: f64, now: f64) -> Option<f64> {
    let recent: Vec<f64> = writes
        .iter()
        .copied()
        .filter(|t| *t > now - window)
        .collect();
    let limit = limit.max(1) as usize;
    (recent.len() >= limit).then(|| recent[recent.len() - limit] + window)
}

fn prune(writes: &mut VecDeque<f64>, now: f64) {
    while writes.front().is_some_and(|t| *t <= now - KEPT_SECONDS) {
        writes.pop_front();
    }
}

impl<W: PartialEq> Guard<W> {
    /// Takes in one poll of `key` at Unix time `now` under `limits`; says whether to act.
    pub fn observe(
        &mut self,
        key: &TargetKey,
        limits: &Remediate,
        now: f64,
        seen: Seen<W>,
    ) -> Verdict {
        let target = self.targets.entry(key.clone()).or_default();
        let (fingerprint, write) = match seen {
            Seen::Failed => return Verdict::Idle,
            Seen::Clean | Seen::Unmanaged => {
                let unmanaged = seen == Seen::Unmanaged;
                target.drift = None;
                target.streak = 0;
                target.awaiting_read = false;
                target.reported = false;
                return if unmanaged {
                    Verdict::Unmanaged
                } else {
                    Verdict::Idle
                };
            }
            Seen::Drift { fingerprint, write } => (fingerprint, write),
        };
        let same = target
            .drift
            .as_ref()
            .is_some_and(|(f, w)| *f == fingerprint && *w == write);
        if same {
            target.streak = target.streak.saturating_add(1);
        } else {
            target.drift = Some((fingerprint, write));
            target.streak = 1;
            target.reported = false;
        }
        if std::mem::take(&mut target.awaiting_read) || target.streak < limits.after {
            return Verdict::Waiting {
                streak: target.streak,
            };
        }
        let window = limits.window.as_secs_f64();
        prune(&mut target.writes, now);
        if let Some(until) = holds(&target.writes, limits.max_per_target, window, now) {
            return Verdict::Blocked { until };
        }
        prune(&mut self.total, now);
        if let Some(until) = holds(&self.total, limits.max_total, window, now) {
            return Verdict::Paused { until };
        }
        match limits.mode {
            RemediateMode::Off => Verdict::Idle,
            RemediateMode::DryRun if target.reported => Verdict::Reported,
            RemediateMode::DryRun => {
                target.reported = true;
                Verdict::Act
            }
            RemediateMode::Enforce => Verdict::Act,
        }
    }
}

impl<W> Guard<W> {
    /// Records a write to `key` at `now` (whatever its answer: a lost answer may have been
    /// a write): it counts against the limits, and the next read starts a new streak.
    pub fn wrote(&mut self, key: &TargetKey, now: f64) {
        let target = self.targets.entry(key.clone()).or_default();
        target.writes.push_back(now);
        target.awaiting_read = true;
        target.drift = None;
        target.streak = 0;
        self.total.push_back(now);
    }

    /// After a reload: every streak starts over and every block is lifted (the operator
    /// looked at the config); the writes in total still count towards `max_total`.
    pub fn reload(&mut self) {
        self.targets.clear();
    }

    /// Forgets the targets `keep` does not hold.
    pub fn retain(&mut self, keep: impl Fn(&TargetKey) -> bool) {
        self.targets.retain(|key, _| keep(key));
    }

    /// Whether `key` is blocked at `now` under `limits`.
    pub fn blocked(&self, key: &TargetKey, limits: &Remediate, now: f64) -> bool {
        self.targets.get(key).is_some_and(|t| {
            holds(
                &t.writes,
                limits.max_per_target,
                limits.window.as_secs_f64(),
                now,
            )
            .is_some()
        })
    }

    /// Whether writes to all targets reached `limits.max_total` within its window at `now`.
    pub fn paused(&self, limits: &Remediate, now: f64) -> bool {
        holds(
            &self.total,
            limits.max_total,
            limits.window.as_secs_f64(),
            now,
        )
        .is_some()
    }

    /// Writes within `window` of `now` to `key`.
    pub fn recent_writes(&self, key: &TargetKey, limits: &Remediate, now: f64) -> usize {
        let since = now - limits.window.as_secs_f64();
        self.targets
            .get(key)
            .map_or(0, |t| t.writes.iter().filter(|w| **w > since).count())
    }

    /// The write times to keep across restarts: per target, and in total.
    pub fn writes(&self) -> (BTreeMap<TargetKey, Vec<f64>>, Vec<f64>) {
        let targets = self
            .targets
            .iter()
            .filter(|(_, t)| !t.writes.is_empty())
            .map(|(k, t)| (k.clone(), t.writes.iter().copied().collect()))
            .collect();
        (targets, self.total.iter().copied().collect())
    }

    /// Takes back the write times kept by [`Guard::writes`] (at start).
    pub fn restore(&mut self, targets: BTreeMap<TargetKey, Vec<f64>>, total: Vec<f64>) {
        for (key, mut writes) in targets {
            writes.sort_by(f64::total_cmp);
            self.targets.entry(key).or_default().writes = writes.into();
        }
        let mut total = total;
        total.sort_by(f64::total_cmp);
        self.total = total.into();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::product::Product;

    const HOUR: f64 = 3600.0;

    fn key(app: &str) -> TargetKey {
        TargetKey::new(app, 1, "singapore", Product::Call)
    }

    fn limits(mode: RemediateMode) -> Remediate {
        Remediate {
            mode,
            ..Remediate::default()
        }
    }

    fn drift(fingerprint: u64, write: &'static str) -> Seen<&'static str> {
        Seen::Drift { fingerprint, write }
    }

    /// What was seen, whether the caller wrote, the verdict wanted.
    type Step = (Seen<&'static str>, bool, Verdict);

    /// Runs `steps` on one target, one poll a minute.
    fn run(mode: RemediateMode, steps: &[Step]) {
        let (mut guard, limits, k) = (Guard::default(), limits(mode), key("a"));
        for (i, (seen, wrote, want)) in steps.iter().enumerate() {
            let now = 1000.0 + 60.0 * i as f64;
            let got = guard.observe(&k, &limits, now, seen.clone());
            assert_eq!(got, *want, "step {i}: {seen:?}");
            if *wrote {
                guard.wrote(&k, now);
            }
        }
    }

    #[test]
    fn streaks_count_the_same_drift_only() {
        use Verdict::*;
        let w1 = Waiting { streak: 1 };
        let cases: Vec<(&str, Vec<Step>)> = vec![
            (
                "acts on the second sighting",
                vec![(drift(1, "set"), false, w1), (drift(1, "set"), false, Act)],
            ),
            (
                "a failed poll neither counts nor resets",
                vec![
                    (drift(1, "set"), false, w1),
                    (Seen::Failed, false, Idle),
                    (drift(1, "set"), false, Act),
                ],
            ),
            (
                "a clean answer resets",
                vec![
                    (drift(1, "set"), false, w1),
                    (Seen::Clean, false, Idle),
                    (drift(1, "set"), false, w1),
                ],
            ),
            (
                "another fingerprint starts over",
                vec![
                    (drift(1, "set"), false, w1),
                    (drift(2, "set"), false, w1),
                    (drift(2, "set"), false, Act),
                ],
            ),
            (
                "another planned write starts over",
                vec![
                    (drift(1, "set"), false, w1),
                    (drift(1, "update"), false, w1),
                ],
            ),
            (
                "unmanaged drift is never acted on, and resets",
                vec![
                    (drift(1, "set"), false, w1),
                    (Seen::Unmanaged, false, Unmanaged),
                    (Seen::Unmanaged, false, Unmanaged),
                    (drift(1, "set"), false, w1),
                ],
            ),
            (
                "the read after a write never acts",
                vec![
                    (drift(1, "set"), false, w1),
                    (drift(1, "set"), true, Act),
                    (drift(1, "set"), false, w1),
                    (drift(1, "set"), false, Act),
                ],
            ),
            (
                "a lost answer waits for a read, not a failed poll",
                vec![
                    (drift(1, "set"), false, w1),
                    (drift(1, "set"), true, Act),
                    (Seen::Failed, false, Idle),
                    (drift(1, "set"), false, w1),
                    (drift(1, "set"), true, Act),
                ],
            ),
            (
                "acting goes on while the drift stays and nothing was written",
                vec![
                    (drift(1, "set"), false, w1),
                    (drift(1, "set"), false, Act),
                    (drift(1, "set"), false, Act),
                ],
            ),
        ];
        for (name, steps) in cases {
            eprintln!("case: {name}");
            run(RemediateMode::Enforce, &steps);
        }
    }

    #[test]
    fn dry_run_reports_each_drift_once_and_off_never_acts() {
        use Verdict::*;
        let w1 = Waiting { streak: 1 };
        run(
            RemediateMode::DryRun,
            &[
                (drift(1, "set"), false, w1),
                (drift(1, "set"), false, Act),
                (drift(1, "set"), false, Reported),
                (drift(2, "set"), false, w1),
                (drift(2, "set"), false, Act),
                (Seen::Clean, false, Idle),
                (drift(2, "set"), false, w1),
                (drift(2, "set"), false, Act),
            ],
        );
        run(
            RemediateMode::Off,
            &[(drift(1, "set"), false, w1), (drift(1, "set"), false, Idle)],
        );
    }

    #[test]
    fn max_per_target_blocks_until_the_window_passes_or_a_reload() {
        let (mut guard, limits, k) = (Guard::default(), limits(RemediateMode::Enforce), key("a"));
        let mut now = 0.0;
        for _ in 0..3 {
            guard.wrote(&k, now);
            now += 60.0;
        }
        // The read after the third write, then the drift again.
        assert_eq!(
            guard.observe(&k, &limits, now, drift(1, "set")),
            Verdict::Waiting { streak: 1 }
        );
        let blocked = guard.observe(&k, &limits, now + 60.0, drift(1, "set"));
        assert_eq!(blocked, Verdict::Blocked { until: HOUR });
        assert!(guard.blocked(&k, &limits, now + 60.0));
        assert!(!guard.blocked(&key("b"), &limits, now));
        assert_eq!(guard.recent_writes(&k, &limits, now), 3);
        // The first write leaves the window: one write allowed again.
        assert_eq!(
            guard.observe(&k, &limits, HOUR + 1.0, drift(1, "set")),
            Verdict::Act
        );
        assert!(!guard.blocked(&k, &limits, HOUR + 1.0));
        // A reload lifts the block at once.
        let mut reloaded: Guard<&str> = Guard::default();
        for t in [0.0, 1.0, 2.0] {
            reloaded.wrote(&k, t);
        }
        assert!(reloaded.blocked(&k, &limits, 3.0));
        reloaded.reload();
        assert!(!reloaded.blocked(&k, &limits, 3.0));
    }

    #[test]
    fn max_total_pauses_every_target_and_survives_a_reload() {
        let limits = Remediate {
            max_total: 2,
            window: Duration::from_secs(600),
            ..limits(RemediateMode::Enforce)
        };
        let mut guard = Guard::default();
        guard.wrote(&key("a"), 10.0);
        guard.wrote(&key("b"), 20.0);
        guard.reload();
        assert!(guard.paused(&limits, 30.0));
        let c = key("c");
        guard.observe(&c, &limits, 30.0, drift(1, "set"));
        assert_eq!(
            guard.observe(&c, &limits, 40.0, drift(1, "set")),
            Verdict::Paused { until: 610.0 }
        );
        assert!(!guard.paused(&limits, 611.0));
        assert_eq!(
            guard.observe(&c, &limits, 611.0, drift(1, "set")),
            Verdict::Act
        );
    }

    #[test]
    fn writes_survive_through_restore_and_removed_targets_go() {
        let mut guard: Guard<&str> = Guard::default();
        guard.wrote(&key("a"), 1.0);
        guard.wrote(&key("b"), 3.0);
        guard.wrote(&key("a"), 5.0);
        let (targets, total) = guard.writes();
        let mut restored: Guard<&str> = Guard::default();
        restored.restore(targets.clone(), total.clone());
        assert_eq!(restored.writes().0, targets);
        assert_eq!(restored.writes().1, vec![1.0, 3.0, 5.0]);
        restored.retain(|k| k.app == "a");
        assert_eq!(restored.writes().0.len(), 1);
        assert_eq!(restored.writes().1.len(), 3);
    }
}
