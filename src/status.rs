//! What calldrift currently knows about each target: the last authoritative observation,
//! its findings, up or down, changes. Every poll result passes [`Status::record`], which
//! updates the metrics, logs transitions and keeps the last 100 of them.
//!
//! **Invariant:** findings, presence and fingerprint change only on an authoritative answer
//! (ErrorCode 0 or 100301); a failed poll changes `up`, the error and the timestamps only.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::clock::Clock;
use crate::config::TargetKey;
use crate::drift::{self, Check, Finding, Observed};
use crate::metrics::{self, MAX_OBSERVED_COMMAND_SERIES, Metrics, TargetSample};
use crate::report::{ObservedView, Report, Status as ReportStatus, TargetReport};
use crate::state::SavedTarget;
use crate::tencent::{PollError, PollOutcome, Target};

/// How many transitions the page and API keep.
pub const TRANSITION_HISTORY: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    DriftAppeared,
    DriftCleared,
    Changed,
    Down,
    Up,
}

impl TransitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::DriftAppeared => "drift appeared",
            TransitionKind::DriftCleared => "drift cleared",
            TransitionKind::Changed => "config changed",
            TransitionKind::Down => "target down",
            TransitionKind::Up => "target up",
        }
    }
}

/// One transition, safe to show (URLs redacted, no secrets).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub time: f64,
    pub app: String,
    pub sdkappid: u64,
    pub region: String,
    pub kind: TransitionKind,
    pub detail: String,
}

#[derive(Debug)]
struct Entry {
    target: Target,
    /// What the target exports; rendered at scrape time.
    sample: TargetSample,
    /// The last authoritative observation since start; the raw URL stays in memory.
    observed: Option<Observed>,
    /// The redacted observation from the state file, shown until the first poll.
    saved_view: Option<ObservedView>,
    findings: Vec<Finding>,
    up: Option<bool>,
    error: Option<PollError>,
    request_id: Option<String>,
    last_poll: Option<f64>,
    fingerprint: Option<u64>,
    last_change: Option<f64>,
    changes: u64,
    polled: bool,
}

impl Entry {
    fn view(&self) -> Option<ObservedView> {
        self.observed
            .as_ref()
            .map(ObservedView::from)
            .or_else(|| self.saved_view.clone())
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<TargetKey, Entry>,
    transitions: VecDeque<Transition>,
}

/// The daemon's knowledge of every target.
#[derive(Debug)]
pub struct Status {
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// Woken whenever something the state file holds has changed.
    pub state_changed: tokio::sync::Notify,
}

impl Status {
    pub fn new(metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            metrics,
            clock,
            state_changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `targets` the configured set: new ones get series at 0 (and their saved state),
    /// dropped ones lose their series, remaining ones keep what is known and are re-checked
    /// against their possibly new expectations.
    pub fn apply_targets(&self, targets: &[Target], saved: &BTreeMap<TargetKey, SavedTarget>) {
        let mut inner = self.lock();
        let wanted: BTreeSet<&TargetKey> = targets.iter().map(|t| &t.key).collect();
        let dropped: Vec<TargetKey> = inner
            .entries
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for key in dropped {
            inner.entries.remove(&key);
        }
        for target in targets {
            let now = self.clock.unix_f64();
            if let Some(entry) = inner.entries.get_mut(&target.key) {
                entry.target = target.clone();
                if let Some(observed) = entry.observed.clone() {
                    let findings = drift::check(&target.expect, &observed);
                    let mut transitions = Vec::new();
                    self.update_findings(entry, findings, now, &mut transitions);
                    self.update_commands(entry, &observed);
                    inner.transitions.extend(transitions);
                }
                continue;
            }
            let commands = target
                .expect
                .commands
                .iter()
                .chain(&target.expect.ignore_commands)
                .map(String::as_str);
            let mut sample = TargetSample::new(&target.key, commands);
            let saved = saved.get(&target.key);
            if let Some(s) = saved {
                sample.changes = s.changes;
                sample.last_change = s.last_change.unwrap_or(0.0);
                sample.fingerprint = s.fingerprint;
            }
            inner.entries.insert(
                target.key.clone(),
                Entry {
                    target: target.clone(),
                    sample,
                    observed: None,
                    saved_view: saved.map(|s| s.observed.clone()),
                    findings: Vec::new(),
                    up: None,
                    error: None,
                    request_id: None,
                    last_poll: None,
                    fingerprint: saved.map(|s| s.fingerprint),
                    last_change: saved.and_then(|s| s.last_change),
                    changes: saved.map_or(0, |s| s.changes),
                    polled: false,
                },
            );
        }
        self.metrics.targets.set(inner.entries.len() as i64);
        trim(&mut inner.transitions);
    }

    /// Counts a tick skipped because the target's previous poll was still running.
    pub fn skipped(&self, key: &TargetKey) {
        if let Some(entry) = self.lock().entries.get_mut(key) {
            entry.sample.polls_skipped += 1;
        }
    }

    /// Takes in one poll's outcome: metrics, findings, change detection, transition logs.
    pub fn record(&self, key: &TargetKey, outcome: &PollOutcome) {
        let now = self.clock.unix_f64();
        let mut transitions = Vec::new();
        let mut state_changed = false;
        {
            let mut inner = self.lock();
            let Some(entry) = inner.entries.get_mut(key) else {
                return;
            };
            entry.polled = true;
            entry.last_poll = Some(now);
            entry.request_id = outcome.request_id.clone();
            entry.sample.last_poll = now;
            entry.sample.error_code = outcome.error_code();
            match &outcome.result {
                Ok(observed) => {
                    if entry.up != Some(true) {
                        if entry.up == Some(false) {
                            tracing::info!(app = %key.app, sdkappid = key.sdkappid, region = %key.region, request_id = outcome.request_id.as_deref().unwrap_or(""), "target is back up");
                            transitions.push(transition(
                                key,
                                now,
                                TransitionKind::Up,
                                "authoritative answer again".to_owned(),
                            ));
                        }
                        entry.up = Some(true);
                        entry.sample.up = true;
                    }
                    entry.error = None;
                    entry.sample.last_success = now;
                    state_changed |= self.update_observation(
                        entry,
                        observed,
                        outcome.request_id.as_deref(),
                        now,
                        &mut transitions,
                    );
                }
                Err(error) => {
                    if entry.up != Some(false) {
                        let answer = error.answer();
                        tracing::warn!(
                            app = %key.app, sdkappid = key.sdkappid, region = %key.region,
                            reason = error.reason(),
                            error_code = error.error_code(),
                            error_info = answer.map_or("", |a| a.info.as_str()),
                            request_id = outcome.request_id.as_deref().unwrap_or(""),
                            "target is down: {error}"
                        );
                        transitions.push(transition(
                            key,
                            now,
                            TransitionKind::Down,
                            error.to_string(),
                        ));
                        entry.up = Some(false);
                        entry.sample.up = false;
                    } else {
                        tracing::debug!(app = %key.app, region = %key.region, "poll failed again: {error}");
                    }
                    entry.error = Some(error.clone());
                }
            }
            inner.transitions.extend(transitions);
            trim(&mut inner.transitions);
        }
        if state_changed {
            self.state_changed.notify_one();
        }
    }

    /// Applies an authoritative observation; returns whether the saved state changed.
    fn update_observation(
        &self,
        entry: &mut Entry,
        observed: &Observed,
        request_id: Option<&str>,
        now: f64,
        transitions: &mut Vec<Transition>,
    ) -> bool {
        // The common case: nothing changed since the last answer, and findings, commands
        // and the state file depend on nothing else (expectations are re-applied on reload).
        // Comparing the answers first spares a hash per poll.
        if entry.observed.as_ref() == Some(observed) {
            return false;
        }
        let fingerprint = observed.fingerprint();
        if entry.observed.is_some() && entry.fingerprint == Some(fingerprint) {
            return false;
        }
        let key = entry.target.key.clone();
        let mut state_changed = entry.observed.is_none();
        if let Some(previous) = entry.fingerprint {
            if previous != fingerprint {
                entry.changes += 1;
                entry.last_change = Some(now);
                entry.sample.changes = entry.changes;
                entry.sample.last_change = now;
                let old = match (&entry.observed, &entry.saved_view) {
                    (Some(o), _) => o.describe(),
                    (None, Some(view)) => describe_view(view),
                    (None, None) => "unknown".to_owned(),
                };
                let new = observed.describe();
                tracing::warn!(app = %key.app, sdkappid = key.sdkappid, region = %key.region, old = %old, new = %new, request_id = request_id.unwrap_or(""), "callback config changed");
                transitions.push(transition(
                    &key,
                    now,
                    TransitionKind::Changed,
                    format!("{old} → {new}"),
                ));
                state_changed = true;
            }
        } else {
            state_changed = true;
        }
        entry.fingerprint = Some(fingerprint);
        entry.sample.fingerprint = fingerprint;
        entry.sample.present = observed.is_present();
        entry.sample.url_https = observed.url_is_https();
        tracing::debug!(app = %key.app, region = %key.region, observed = %observed.describe(), "polled");
        entry.observed = Some(observed.clone());
        entry.saved_view = None;
        let findings = drift::check(&entry.target.expect, observed);
        self.update_findings(entry, findings, now, transitions);
        self.update_commands(entry, observed);
        state_changed
    }

    fn update_findings(
        &self,
        entry: &mut Entry,
        findings: Vec<Finding>,
        now: f64,
        transitions: &mut Vec<Transition>,
    ) {
        let key = entry.target.key.clone();
        let old: BTreeSet<&Finding> = entry.findings.iter().collect();
        let new: BTreeSet<&Finding> = findings.iter().collect();
        for f in new.difference(&old) {
            tracing::warn!(app = %key.app, sdkappid = key.sdkappid, region = %key.region, check = f.check.as_str(), expected = f.expected.as_deref().unwrap_or(""), actual = f.actual.as_deref().unwrap_or(""), "drift appeared");
            transitions.push(transition(
                &key,
                now,
                TransitionKind::DriftAppeared,
                f.to_string(),
            ));
        }
        for f in old.difference(&new) {
            tracing::info!(app = %key.app, sdkappid = key.sdkappid, region = %key.region, check = f.check.as_str(), expected = f.expected.as_deref().unwrap_or(""), actual = f.actual.as_deref().unwrap_or(""), "drift cleared");
            transitions.push(transition(
                &key,
                now,
                TransitionKind::DriftCleared,
                f.to_string(),
            ));
        }
        for (on, check) in entry.sample.drift.iter_mut().zip(Check::ALL) {
            *on = findings.iter().any(|f| f.check == check);
        }
        entry.findings = findings;
    }

    /// `command_enabled` for every expected, ignored and (capped) observed word.
    fn update_commands(&self, entry: &mut Entry, observed: &Observed) {
        let enabled = observed.command_set();
        let configured: BTreeSet<&str> = entry
            .target
            .expect
            .commands
            .iter()
            .chain(&entry.target.expect.ignore_commands)
            .map(String::as_str)
            .collect();
        let extra = enabled
            .iter()
            .copied()
            .filter(|c| !configured.contains(c))
            .take(MAX_OBSERVED_COMMAND_SERIES);
        let words: Vec<&str> = configured.iter().copied().chain(extra).collect();
        entry
            .sample
            .set_commands(words.into_iter().map(|c| (c, enabled.contains(c))));
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
        self.lock().entries.values().all(|e| e.polled)
    }

    /// The same report as `check --format json`, from what is known now.
    pub fn report(&self) -> Report {
        let inner = self.lock();
        let targets = inner
            .entries
            .values()
            .map(|e| {
                let status = match (&e.error, e.findings.is_empty()) {
                    (Some(_), _) => ReportStatus::Error,
                    (None, false) => ReportStatus::Drift,
                    (None, true) => ReportStatus::Ok,
                };
                TargetReport {
                    app: e.target.key.app.clone(),
                    sdkappid: e.target.key.sdkappid,
                    region: e.target.key.region.clone(),
                    status,
                    observed: e.view(),
                    findings: e.findings.clone(),
                    error: e.error.as_ref().map(ToString::to_string),
                    error_class: e.error.as_ref().map(|err| err.class().to_owned()),
                    request_id: e.request_id.clone(),
                    last_poll: e.last_poll,
                }
            })
            .collect();
        Report::new(targets)
    }

    /// The last transitions, newest first.
    pub fn transitions(&self) -> Vec<Transition> {
        self.lock().transitions.iter().rev().cloned().collect()
    }

    /// What the state file should hold now.
    pub fn saved(&self) -> Vec<SavedTarget> {
        let inner = self.lock();
        inner
            .entries
            .values()
            .filter_map(|e| {
                Some(SavedTarget {
                    app: e.target.key.app.clone(),
                    sdkappid: e.target.key.sdkappid,
                    region: e.target.key.region.clone(),
                    observed: e.view()?,
                    fingerprint: e.fingerprint?,
                    last_change: e.last_change,
                    changes: e.changes,
                })
            })
            .collect()
    }
}

fn describe_view(view: &ObservedView) -> String {
    match &view.url {
        Some(url) => {
            let mut commands = view.commands.clone();
            commands.sort();
            commands.dedup();
            format!("{url} [{}]", commands.join(", "))
        }
        None => "absent".to_owned(),
    }
}

fn transition(key: &TargetKey, time: f64, kind: TransitionKind, detail: String) -> Transition {
    Transition {
        time,
        app: key.app.clone(),
        sdkappid: key.sdkappid,
        region: key.region.clone(),
        kind,
        detail,
    }
}

fn trim(transitions: &mut VecDeque<Transition>) {
    while transitions.len() > TRANSITION_HISTORY {
        transitions.pop_front();
    }
}
