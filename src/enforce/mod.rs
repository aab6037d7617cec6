//! The daemon's opt-in `remediate:` mode: after each poll, [`guard`] says whether to write
//! the target back to its expectation; `dry-run` logs and shows that decision, `enforce`
//! makes the write through the client (and so the one rate limiter), and the caller reads
//! the target again at once.
//!
//! **Invariant:** nothing is written while a reload is pending or for a poll dispatched
//! under an earlier config (its expectation may be the one being replaced); nothing is
//! written for a failed poll or an unmanaged target; a write whose answer was lost is not
//! repeated before a read (see [`guard`]).

mod audit;
pub mod guard;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use self::guard::{Guard, Seen, Verdict};
use crate::clock::Clock;
use crate::config::{Config, Remediate, RemediateMode, TargetKey};
use crate::metrics::{Metrics, RemediationResult};
use crate::remedy::{self, Remedy, Write};
use crate::report::{ObservedView, RemediationEvent, RemediationReport};
use crate::state::{SavedTargetWrites, SavedWrites};
use crate::status::Status;
use crate::tencent::{Client, PollOutcome, Target, WriteError};

/// What a poll led to, decided under the lock and carried out after it.
enum Step {
    Nothing,
    /// `dry-run` decided this write.
    Report(Write),
    /// `enforce`: make this write (already counted against the limits).
    Write(Write),
}

#[derive(Debug)]
struct Inner {
    guard: Guard<Write>,
    /// Each app's settings, by name.
    apps: HashMap<String, Remediate>,
    /// The global settings: `max_total`'s pause is reported against these.
    global: Remediate,
    /// Bumped by every reload: a poll dispatched before it acts on nothing.
    generation: u64,
    /// A reload is being read: its expectations may replace the running ones.
    reload_pending: bool,
    /// The last write or dry-run decision per target, for the report.
    last: BTreeMap<TargetKey, RemediationEvent>,
}

/// Remediation for the whole daemon; one for its lifetime.
#[derive(Debug)]
pub struct Enforcer {
    inner: Mutex<Inner>,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl Enforcer {
    /// Remediation for `config`'s targets, with the writes the state file kept.
    pub fn new(
        config: &Config,
        saved: SavedWrites,
        status: Arc<Status>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut guard = Guard::default();
        let targets = saved
            .targets
            .into_iter()
            .map(|t| (t.key(), t.writes))
            .collect();
        guard.restore(targets, saved.total);
        let enforcer = Enforcer {
            inner: Mutex::new(Inner {
                guard,
                apps: HashMap::new(),
                global: config.remediate,
                generation: 0,
                reload_pending: false,
                last: BTreeMap::new(),
            }),
            status,
            metrics,
            clock,
        };
        enforcer.configure(config, false);
        enforcer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The config generation a poll is dispatched under; pass it to [`Enforcer::after_poll`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// A reload is being read: act on nothing until it is swapped in or fails.
    pub fn reload_started(&self) {
        self.lock().reload_pending = true;
    }

    /// The reload failed: the running config stays, and so do streaks and blocks.
    pub fn reload_failed(&self) {
        self.lock().reload_pending = false;
    }

    /// The reloaded `config` is in: streaks and blocks start over, polls dispatched before
    /// act on nothing.
    pub fn reloaded(&self, config: &Config) {
        self.configure(config, true);
    }

    fn configure(&self, config: &Config, reload: bool) {
        let now = self.clock.unix_f64();
        let mut inner = self.lock();
        inner.apps = config
            .apps
            .iter()
            .map(|a| (a.name.clone(), a.remediate))
            .collect();
        inner.global = config.remediate;
        if reload {
            inner.guard.reload();
            inner.generation += 1;
        }
        inner.reload_pending = false;
        let keep = |key: &TargetKey| {
            config.apps.iter().any(|a| {
                a.name == key.app
                    && a.sdkappid == key.sdkappid
                    && a.regions.contains(&key.region)
                    && a.products.contains_key(&key.product)
            })
        };
        inner.guard.retain(keep);
        inner.last.retain(|k, _| keep(k));
        for app in &config.apps {
            for region in &app.regions {
                for product in app.products.keys() {
                    let key = TargetKey::new(&app.name, app.sdkappid, region, *product);
                    let report = (app.remediate.mode != RemediateMode::Off).then(|| {
                        let state = Shown::initial(&inner.guard, &key, &app.remediate, now);
                        inner.report(&key, &app.remediate, state, now)
                    });
                    self.status.set_remediation(&key, report, None);
                }
            }
        }
        let paused = inner.guard.paused(&inner.global, now);
        self.metrics.remediation_paused.set(i64::from(paused));
    }

    /// What the state file keeps: the recent writes.
    pub fn saved(&self) -> SavedWrites {
        let (targets, total) = self.lock().guard.writes();
        SavedWrites {
            total,
            targets: targets
                .into_iter()
                .map(|(k, writes)| SavedTargetWrites {
                    app: k.app,
                    sdkappid: k.sdkappid,
                    region: k.region,
                    product: k.product,
                    writes,
                })
                .collect(),
        }
    }

    /// Takes in one poll of `target` (dispatched under `generation`) and carries out what
    /// the guard decides; true if a write was sent, so the caller reads the target again.
    pub async fn after_poll(
        &self,
        client: &Client,
        target: &Target,
        outcome: &PollOutcome,
        generation: u64,
    ) -> bool {
        let now = self.clock.unix_f64();
        let (step, limits) = self.decide(target, outcome, generation, now);
        let observed = outcome.result.as_deref().ok();
        match step {
            Step::Nothing => false,
            Step::Report(write) => {
                audit::dry_run(&target.key, &write, observed, outcome.request_id.as_deref());
                let event = RemediationEvent {
                    at: now,
                    action: write.action().to_owned(),
                    result: RemediationResult::DryRun.as_str().to_owned(),
                    error: None,
                    request_id: outcome.request_id.clone(),
                };
                self.finish(target, limits, event, RemediationResult::DryRun);
                false
            }
            Step::Write(write) => {
                let written = Box::pin(client.write(target, &write)).await;
                let result = if written.is_written() {
                    RemediationResult::Applied
                } else {
                    RemediationResult::Failed
                };
                audit::wrote(&target.key, &write, observed, &written, result);
                let event = RemediationEvent {
                    at: self.clock.unix_f64(),
                    action: write.action().to_owned(),
                    result: result.as_str().to_owned(),
                    error: written.result.as_ref().err().map(WriteError::to_string),
                    request_id: written.request_id.clone(),
                };
                self.finish(target, limits, event, result);
                true
            }
        }
    }

    /// The guard's decision on one poll, and the report it leaves.
    fn decide(
        &self,
        target: &Target,
        outcome: &PollOutcome,
        generation: u64,
        now: f64,
    ) -> (Step, Remediate) {
        let key = &target.key;
        let mut inner = self.lock();
        let Some(limits) = inner.apps.get(&key.app).copied() else {
            return (Step::Nothing, Remediate::default());
        };
        if limits.mode == RemediateMode::Off
            || inner.reload_pending
            || generation != inner.generation
        {
            return (Step::Nothing, limits);
        }
        let Ok(observed) = outcome.result.as_deref() else {
            // Says nothing about the configuration: the streak and what is shown stay.
            inner.guard.observe(key, &limits, now, Seen::Failed);
            return (Step::Nothing, limits);
        };
        let remedy = remedy::decide(key.product, &target.expect, observed);
        let seen = match &remedy {
            Remedy::None => Seen::Clean,
            Remedy::Unmanaged(_) => Seen::Unmanaged,
            Remedy::Write(write) => Seen::Drift {
                fingerprint: observed.fingerprint(),
                write: write.clone(),
            },
        };
        let verdict = inner.guard.observe(key, &limits, now, seen);
        let planned = match &remedy {
            Remedy::Write(write) => Some(write.clone()),
            _ => None,
        };
        let step = match (verdict, planned) {
            (Verdict::Act, Some(write)) if limits.mode == RemediateMode::DryRun => {
                Step::Report(write)
            }
            (Verdict::Act, Some(write)) => {
                // Counted before the write goes out, so no other poll sees room that this
                // write is about to take.
                inner.guard.wrote(key, now);
                self.status.state_changed.notify_one();
                Step::Write(write)
            }
            _ => Step::Nothing,
        };
        let shown = Shown::of(verdict, &remedy);
        let report = inner.report(key, &limits, shown, now);
        self.status.set_remediation(key, Some(report), None);
        let paused = inner.guard.paused(&inner.global, now);
        self.metrics.remediation_paused.set(i64::from(paused));
        (step, limits)
    }

    /// Records a write or dry-run decision: its count, and the report with it as `last`.
    fn finish(
        &self,
        target: &Target,
        limits: Remediate,
        event: RemediationEvent,
        result: RemediationResult,
    ) {
        let now = self.clock.unix_f64();
        let mut inner = self.lock();
        inner.last.insert(target.key.clone(), event);
        let mut report = self
            .status
            .remediation(&target.key)
            .unwrap_or_else(|| inner.report(&target.key, &limits, Shown::default(), now));
        report.last = inner.last.get(&target.key).cloned();
        report.blocked = inner.guard.blocked(&target.key, &limits, now);
        report.writes_in_window = inner.guard.recent_writes(&target.key, &limits, now);
        self.status
            .set_remediation(&target.key, Some(report), Some(result));
    }
}

/// What the report shows of the guard's last verdict and the planned write.
#[derive(Debug, Default)]
struct Shown {
    action: String,
    reason: Option<String>,
    desired: Option<ObservedView>,
    state: &'static str,
    streak: u32,
    until: Option<f64>,
}

impl Shown {
    fn of(verdict: Verdict, remedy: &Remedy) -> Self {
        let (action, reason, desired) = match remedy {
            Remedy::Write(w) => (
                w.action().to_owned(),
                None,
                Some(ObservedView::from(&w.outcome())),
            ),
            Remedy::Unmanaged(u) => ("unmanaged".to_owned(), Some(u.as_str().to_owned()), None),
            Remedy::None => ("none".to_owned(), None, None),
        };
        let (streak, until) = match verdict {
            Verdict::Waiting { streak } => (streak, None),
            Verdict::Blocked { until } | Verdict::Paused { until } => (0, Some(until)),
            _ => (0, None),
        };
        Shown {
            action,
            reason,
            desired,
            state: verdict.as_str(),
            streak,
            until,
        }
    }

    /// Before the first poll: blocked, paused or idle.
    fn initial(guard: &Guard<Write>, key: &TargetKey, limits: &Remediate, now: f64) -> Self {
        let state = if guard.blocked(key, limits, now) {
            "blocked"
        } else if guard.paused(limits, now) {
            "paused"
        } else {
            "idle"
        };
        Shown {
            action: "none".to_owned(),
            state,
            ..Shown::default()
        }
    }
}

impl Inner {
    fn report(
        &self,
        key: &TargetKey,
        limits: &Remediate,
        shown: Shown,
        now: f64,
    ) -> RemediationReport {
        RemediationReport {
            mode: limits.mode.as_str().to_owned(),
            action: shown.action,
            reason: shown.reason,
            desired: shown.desired,
            state: shown.state.to_owned(),
            streak: shown.streak,
            after: limits.after,
            blocked: self.guard.blocked(key, limits, now),
            paused: self.guard.paused(limits, now),
            until: shown.until,
            writes_in_window: self.guard.recent_writes(key, limits, now),
            last: self.last.get(key).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::clock::FixedClock;
    use crate::drift::Observed;

    /// Its region is a loopback port nothing listens on: every request fails at once.
    const CONFIG: &str = "poll:\n  timeout: 1s\n  retries: 0\nremediate:\n  mode: enforce\n  after: 1\nregions:\n  closed: \"http://127.0.0.1:1\"\napps:\n  - name: a\n    sdkappid: 1400000001\n    regions: [closed]\n    secret_key_env: K\n    expect:\n      url: https://h/cb\n      commands: [Call.CallbackAfterEndCall]\n";

    fn enforcer() -> (Enforcer, Config, Target) {
        let (config, _) = crate::config::parse(CONFIG, "c.yaml", Path::new("/")).expect("valid");
        let (secrets, _) =
            crate::config::resolve_secrets(&config, &|_| Some("k".into())).expect("secrets");
        let targets: Vec<Arc<Target>> = crate::tencent::targets(&config, &secrets)
            .into_iter()
            .map(Arc::new)
            .collect();
        let metrics = Arc::new(Metrics::new("test", "test"));
        let clock: Arc<dyn Clock> = Arc::new(FixedClock::at_unix(1_800_000_000));
        let status = Arc::new(Status::new(metrics.clone(), clock.clone()));
        status.apply_targets(&targets, &BTreeMap::new());
        let enforcer = Enforcer::new(&config, SavedWrites::default(), status, metrics, clock);
        (enforcer, config, Target::clone(&targets[0]))
    }

    /// The config is absent: a set would repair it.
    fn absent() -> PollOutcome {
        PollOutcome {
            result: Ok(Arc::new(Observed::Absent)),
            request_id: None,
            attempts: 1,
        }
    }

    fn writes(step: &Step) -> bool {
        matches!(step, Step::Write(Write::Set(_)))
    }

    #[test]
    fn nothing_is_written_while_a_reload_is_pending_or_for_a_poll_of_an_earlier_config() {
        let (enforcer, config, target) = enforcer();
        let now = 1_800_000_000.0;
        enforcer.reload_started();
        let (step, _) = enforcer.decide(&target, &absent(), 0, now);
        assert!(!writes(&step), "a reload is pending");
        enforcer.reload_failed();
        enforcer.reloaded(&config);
        assert_eq!(enforcer.generation(), 1);
        let (step, _) = enforcer.decide(&target, &absent(), 0, now);
        assert!(!writes(&step), "dispatched under the replaced config");
        let (step, _) = enforcer.decide(&target, &absent(), 1, now);
        assert!(writes(&step), "the current config's poll acts");
        assert_eq!(
            enforcer.saved().total,
            vec![now],
            "counted before it goes out"
        );
        let report = enforcer.status.remediation(&target.key).expect("shown");
        assert_eq!(
            (report.action.as_str(), report.writes_in_window),
            ("set", 1)
        );
    }

    #[tokio::test]
    async fn a_write_that_fails_is_counted_failed_and_not_repeated_before_a_read() {
        let (enforcer, config, target) = enforcer();
        let clock: Arc<dyn Clock> = Arc::new(FixedClock::at_unix(1_800_000_000));
        let client = crate::check::client(&config, clock).expect("client");
        assert!(enforcer.after_poll(&client, &target, &absent(), 0).await);
        let report = enforcer.status.remediation(&target.key).expect("shown");
        let last = report.last.expect("last write");
        assert_eq!(
            (last.action.as_str(), last.result.as_str()),
            ("set", "failed")
        );
        assert!(last.error.is_some());
        assert_eq!(report.writes_in_window, 1, "a failed write counts");
        let metrics = String::from_utf8(enforcer.status.render_metrics()).expect("utf8");
        assert!(
            metrics.contains(r#"region="closed",sdkappid="1400000001",result="failed"} 1"#),
            "{metrics}"
        );
        // The read that follows decides; it never writes again itself.
        assert!(!enforcer.after_poll(&client, &target, &absent(), 0).await);
        assert!(enforcer.after_poll(&client, &target, &absent(), 0).await);
    }

    #[test]
    fn a_failed_poll_is_never_acted_on() {
        let (enforcer, _, target) = enforcer();
        let failed = PollOutcome {
            result: Err(crate::tencent::PollError::HttpStatus { status: 502 }),
            request_id: None,
            attempts: 1,
        };
        for _ in 0..3 {
            let (step, _) = enforcer.decide(&target, &failed, 0, 1_800_000_000.0);
            assert!(matches!(step, Step::Nothing));
        }
        assert!(enforcer.saved().is_empty());
    }
}
