//! What calldrift currently knows about each target. Every poll result passes
//! [`Status::record`]: the pure decision of [`knowledge`] says what changed, and this shell
//! carries it out (metric samples, transition logs and history, the state writer's wake-up).
//!
//! **Invariant:** findings, presence and fingerprint change only on an authoritative answer
//! (ErrorCode 0 or 100301); a failed poll changes `up`, the error and the timestamps only.

pub mod knowledge;
pub mod transitions;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use self::knowledge::{Decision, Knowledge};
use self::transitions::{History, carry_out};
pub use self::transitions::{TRANSITION_HISTORY, Transition, TransitionKind};
use crate::clock::Clock;
use crate::config::TargetKey;
use crate::drift::Check;
use crate::metrics::{
    self, EndpointSample, MAX_OBSERVED_COMMAND_SERIES, Metrics, RemediationResult, TargetSample,
};
use crate::probe::{Endpoint, ProbeResult, ProbeTargets};
use crate::report::{EndpointReport, ExpectedView, RemediationReport, Report, TargetReport};
use crate::state::SavedTarget;
use crate::tencent::PollOutcome;
use crate::tencent::Target;

#[derive(Debug)]
struct Entry {
    /// Shared with the scheduler's plan: one copy per target.
    target: Arc<Target>,
    /// What the target exports; rendered at scrape time.
    sample: TargetSample,
    known: Knowledge,
    /// The `host:port` of the observed `https` callback URL, probed by `probe`.
    endpoint: Option<Endpoint>,
    /// The last probe of `endpoint`.
    probe: Option<ProbeResult>,
    /// What `remediate:` plans or did; `None` while the app has it off.
    /// Boxed: most targets have none, and the report is large.
    remediation: Option<Box<RemediationReport>>,
}

impl Entry {
    fn new(target: &Arc<Target>, saved: Option<&SavedTarget>) -> Self {
        let commands = target
            .expect
            .commands
            .iter()
            .chain(&target.expect.ignore_commands)
            .map(String::as_str);
        let mut sample = TargetSample::new(&target.key, commands);
        let mut known = Knowledge::default();
        if let Some(s) = saved {
            sample.changes = s.changes;
            sample.last_change = s.last_change.unwrap_or(0.0);
            sample.fingerprint = s.fingerprint;
            known.saved_view = Some(s.observed.clone());
            known.fingerprint = Some(s.fingerprint);
            known.last_change = s.last_change;
            known.changes = s.changes;
        }
        Entry {
            target: target.clone(),
            sample,
            known,
            endpoint: None,
            probe: None,
            remediation: None,
        }
    }

    /// Brings the sample in line with what one decision changed; true if the callback
    /// endpoint changed.
    fn sync_sample(&mut self, decision: &Decision, error_code: i64) -> bool {
        let (known, sample) = (&self.known, &mut self.sample);
        sample.last_poll = known.last_poll.unwrap_or(0.0);
        sample.last_success = known.last_success.unwrap_or(0.0);
        sample.error_code = error_code;
        sample.up = known.up == Some(true);
        sample.changes = known.changes;
        sample.last_change = known.last_change.unwrap_or(0.0);
        // Findings change only with the observation (see `knowledge`).
        decision.observation_changed && self.sync_observation()
    }

    /// Presence, fingerprint, findings, `command_enabled` for every expected, ignored and
    /// (capped) observed word, and the callback endpoint; true if the endpoint changed.
    fn sync_observation(&mut self) -> bool {
        self.sync_findings();
        let Some(observed) = &self.known.observed else {
            return false;
        };
        let endpoint = observed.url().and_then(Endpoint::of_url);
        let endpoint_changed = endpoint != self.endpoint;
        if endpoint_changed {
            // The old endpoint's series go; the new one's come with its first probe.
            self.endpoint = endpoint;
            self.probe = None;
            self.sample.endpoint = None;
        }
        let sample = &mut self.sample;
        sample.fingerprint = self.known.fingerprint.unwrap_or(0);
        sample.present = observed.is_present();
        sample.url_https = observed.url_is_https();
        let enabled = observed.command_set();
        let expect = &self.target.expect;
        let configured: BTreeSet<&str> = expect
            .commands
            .iter()
            .chain(&expect.ignore_commands)
            .map(String::as_str)
            .collect();
        let extra = enabled
            .iter()
            .copied()
            .filter(|c| !configured.contains(c))
            .take(MAX_OBSERVED_COMMAND_SERIES);
        let words: Vec<&str> = configured.iter().copied().chain(extra).collect();
        sample.set_commands(words.into_iter().map(|c| (c, enabled.contains(c))));
        endpoint_changed
    }

    /// Takes the endpoint's last probe, if another target's endpoint got one: a target that
    /// joins a probed endpoint shows its state at once, not an interval later.
    fn adopt_probe(&mut self, last: Option<&LastProbe>) {
        let Some(last) = last else { return };
        self.probe = Some(last.result.clone());
        self.sample.endpoint = Some(EndpointSample {
            up: last.result.up(),
            cert_expiry: last.cert_expiry,
            last_probe: last.result.at,
            failures: [0; 6],
        });
    }

    /// What the report shows of the endpoint's last probe.
    fn endpoint_report(&self) -> Option<EndpointReport> {
        let (endpoint, probe) = (self.endpoint.as_ref()?, self.probe.as_ref()?);
        let expiry = self.sample.endpoint.as_ref().and_then(|e| e.cert_expiry);
        Some(EndpointReport::new(endpoint, probe, expiry))
    }

    fn sync_findings(&mut self) {
        for (on, check) in self.sample.drift.iter_mut().zip(Check::ALL) {
            *on = self.known.findings.iter().any(|f| f.check == check);
        }
    }
}

/// An endpoint's last probe and the last expiry it presented.
#[derive(Debug)]
struct LastProbe {
    result: ProbeResult,
    cert_expiry: Option<f64>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Boxed: an entry is large, and a map node keeps room for eleven of them inline.
    entries: BTreeMap<TargetKey, Box<Entry>>,
    history: History,
    /// The last probe of every endpoint some target points at.
    probes: BTreeMap<Endpoint, LastProbe>,
}

/// The daemon's knowledge of every target.
#[derive(Debug)]
pub struct Status {
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// Woken whenever something the state file holds has changed.
    pub state_changed: tokio::sync::Notify,
    /// Woken whenever a target's callback endpoint may have changed.
    endpoints_changed: tokio::sync::Notify,
}

impl Status {
    pub fn new(metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            metrics,
            clock,
            state_changed: tokio::sync::Notify::new(),
            endpoints_changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `targets` the configured set: new ones get series at 0 (and their saved state),
    /// dropped ones lose their series, remaining ones keep what is known and are re-checked
    /// against their possibly new expectations.
    pub fn apply_targets(&self, targets: &[Arc<Target>], saved: &BTreeMap<TargetKey, SavedTarget>) {
        let now = self.clock.unix_f64();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let wanted: BTreeSet<&TargetKey> = targets.iter().map(|t| &t.key).collect();
        inner.entries.retain(|key, _| wanted.contains(key));
        for target in targets {
            let Some(entry) = inner.entries.get_mut(&target.key) else {
                let entry = Entry::new(target, saved.get(&target.key));
                inner.entries.insert(target.key.clone(), Box::new(entry));
                continue;
            };
            entry.target = target.clone();
            let events = knowledge::recheck(&mut entry.known, &target.expect);
            for event in &events {
                if let Some(t) = carry_out(&target.key, event, None, now) {
                    inner.history.push(t);
                }
            }
            entry.sync_observation();
        }
        self.metrics.targets.set(inner.entries.len() as i64);
        drop(guard);
        // Targets came or went: their endpoints with them.
        self.endpoints_changed.notify_one();
    }

    /// Counts a tick skipped because the target's previous poll was still running.
    pub fn skipped(&self, key: &TargetKey) {
        if let Some(entry) = self.lock().entries.get_mut(key) {
            entry.sample.polls_skipped += 1;
        }
    }

    /// Takes in one poll's outcome: the decision, then its metrics, logs and transitions.
    pub fn record(&self, key: &TargetKey, outcome: &PollOutcome) {
        let now = self.clock.unix_f64();
        let (state_changed, endpoint_changed) = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let Some(entry) = inner.entries.get_mut(key) else {
                return;
            };
            let decision = knowledge::decide(&mut entry.known, &entry.target.expect, outcome, now);
            let endpoint_changed = entry.sync_sample(&decision, outcome.error_code());
            if endpoint_changed {
                let last = entry.endpoint.as_ref().and_then(|e| inner.probes.get(e));
                entry.adopt_probe(last);
            }
            if decision.observation_changed {
                if let Some(observed) = &entry.known.observed {
                    tracing::debug!(app = %key.app, region = %key.region, product = key.product.as_str(), observed = %crate::report::summary(observed), "polled");
                }
            }
            for event in &decision.events {
                if let Some(t) = carry_out(key, event, Some(outcome), now) {
                    inner.history.push(t);
                }
            }
            (decision.state_changed, endpoint_changed)
        };
        if state_changed {
            self.state_changed.notify_one();
        }
        if endpoint_changed {
            self.endpoints_changed.notify_one();
        }
    }

    /// Shows what `remediate:` plans for `key` (`None`: off, no series), counting
    /// `result` if a write or dry-run decision was made.
    pub fn set_remediation(
        &self,
        key: &TargetKey,
        report: Option<RemediationReport>,
        result: Option<RemediationResult>,
    ) {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(key) else {
            return;
        };
        match &report {
            None => entry.sample.remediation = None,
            Some(r) => {
                let sample = entry
                    .sample
                    .remediation
                    .get_or_insert_with(Default::default);
                sample.blocked = r.blocked;
                if let Some(result) = result {
                    sample.count(result);
                }
            }
        }
        entry.remediation = report.map(Box::new);
    }

    /// What `remediate:` last showed for `key`.
    pub fn remediation(&self, key: &TargetKey) -> Option<RemediationReport> {
        self.lock()
            .entries
            .get(key)?
            .remediation
            .as_deref()
            .cloned()
    }

    /// Renders the metrics: the process-wide ones, then every target's families.
    pub fn render_metrics(&self) -> Vec<u8> {
        let inner = self.lock();
        self.metrics.render(|out| {
            metrics::write_target_families(out, inner.entries.values().map(|e| &e.sample))
        })
    }

    /// True once every configured target has been polled since it was configured.
    pub fn ready(&self) -> bool {
        self.lock().entries.values().all(|e| e.known.polled)
    }

    /// The same report as `check --format json`, from what is known now.
    pub fn report(&self) -> Report {
        let inner = self.lock();
        let targets = inner
            .entries
            .values()
            .map(|e| {
                let k = &e.known;
                TargetReport {
                    last_poll: k.last_poll,
                    expected: Some(ExpectedView::from(&e.target.expect)),
                    status_since: k.verdict_since,
                    changes: Some(k.changes),
                    last_change: k.last_change,
                    endpoint: e.endpoint_report(),
                    remediation: e.remediation.as_deref().cloned(),
                    ..TargetReport::new(
                        &e.target.key,
                        k.view(),
                        k.findings.clone(),
                        k.error.as_ref(),
                        k.request_id.clone(),
                    )
                }
            })
            .collect();
        Report::new(targets)
    }

    /// The last transitions, newest first.
    pub fn transitions(&self) -> Vec<Transition> {
        self.lock().history.newest_first()
    }

    /// What the state file should hold now.
    pub fn saved(&self) -> Vec<SavedTarget> {
        let inner = self.lock();
        inner
            .entries
            .values()
            .filter_map(|e| {
                let k = &e.known;
                Some(SavedTarget {
                    app: e.target.key.app.clone(),
                    sdkappid: e.target.key.sdkappid,
                    region: e.target.key.region.clone(),
                    product: e.target.key.product,
                    observed: k.view()?,
                    fingerprint: k.fingerprint?,
                    last_change: k.last_change,
                    changes: k.changes,
                })
            })
            .collect()
    }
}

impl ProbeTargets for Status {
    fn endpoints(&self) -> BTreeSet<Endpoint> {
        let mut inner = self.lock();
        let wanted: BTreeSet<Endpoint> = inner
            .entries
            .values()
            .filter_map(|e| e.endpoint.clone())
            .collect();
        inner.probes.retain(|e, _| wanted.contains(e));
        wanted
    }

    fn endpoints_changed(&self) -> &tokio::sync::Notify {
        &self.endpoints_changed
    }

    fn record(&self, endpoint: &Endpoint, result: &ProbeResult) {
        let mut inner = self.lock();
        let known_expiry = inner.probes.get(endpoint).and_then(|p| p.cert_expiry);
        inner.probes.insert(
            endpoint.clone(),
            LastProbe {
                result: result.clone(),
                cert_expiry: result.not_after.or(known_expiry),
            },
        );
        for entry in inner.entries.values_mut() {
            if entry.endpoint.as_ref() == Some(endpoint) {
                entry.probe = Some(result.clone());
                entry
                    .sample
                    .endpoint
                    .get_or_insert_with(EndpointSample::default)
                    .record(result);
            }
        }
    }

    fn forget_probes(&self) {
        let mut inner = self.lock();
        inner.probes.clear();
        for entry in inner.entries.values_mut() {
            entry.probe = None;
            entry.sample.endpoint = None;
        }
    }
}
