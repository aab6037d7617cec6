//! The decision at the heart of [`super::Status`]: what one poll outcome does to what is
//! known about a target. Pure: no IO, no clock, no logging, no metrics. The caller passes
//! the time and carries out the returned [`Event`]s (logs, transitions, metric samples,
//! the state file), so the decision can be tested with a table of cases.
//!
//! **Invariant:** findings, presence and fingerprint change only on an authoritative answer
//! (ErrorCode 0 or 100301); a failed poll changes `up`, the error and the timestamps only.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::drift::{self, Expected, Finding, Observed};
use crate::report::{self, ObservedView, Verdict};
use crate::tencent::{PollError, PollOutcome};

/// Everything known about one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Knowledge {
    /// The last authoritative observation since start; the raw URL stays in memory.
    /// Shared with the client's last answer (see [`crate::tencent::LastResponse`]).
    pub observed: Option<Arc<Observed>>,
    /// The redacted observation from the state file, shown until the first answer.
    pub saved_view: Option<ObservedView>,
    pub findings: Vec<Finding>,
    /// `None` until the first poll.
    pub up: Option<bool>,
    pub error: Option<PollError>,
    pub request_id: Option<String>,
    pub last_poll: Option<f64>,
    pub last_success: Option<f64>,
    pub fingerprint: Option<u64>,
    pub last_change: Option<f64>,
    pub changes: u64,
    /// Polled since it was configured (readiness).
    pub polled: bool,
    /// When the verdict (ok, drift, error) last became what it is.
    pub verdict_since: Option<f64>,
}

impl Knowledge {
    /// The observation as shown: the live one, else the saved one.
    pub fn view(&self) -> Option<ObservedView> {
        self.observed
            .as_deref()
            .map(ObservedView::from)
            .or_else(|| self.saved_view.clone())
    }
}

/// Something worth a log line and a transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An authoritative answer after failed polls.
    Up,
    /// The first failed poll after an answer (or at start); the error is the outcome's.
    Down,
    /// Another failed poll while down.
    StillDown,
    /// The observed configuration differs from the previous one (summaries, redacted).
    Changed {
        old: String,
        new: String,
    },
    DriftAppeared(Finding),
    DriftCleared(Finding),
}

/// What one outcome did.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    pub events: Vec<Event>,
    /// A new observation was taken in: presence, fingerprint, findings and commands changed
    /// or were derived for the first time.
    pub observation_changed: bool,
    /// Something the state file holds changed.
    pub state_changed: bool,
}

/// Takes one poll's outcome at time `now` into `known`.
pub fn decide(
    known: &mut Knowledge,
    expect: &Expected,
    outcome: &PollOutcome,
    now: f64,
) -> Decision {
    let mut decision = Decision::default();
    let verdict_before = known.polled.then(|| verdict(known));
    known.polled = true;
    known.last_poll = Some(now);
    known.request_id.clone_from(&outcome.request_id);
    match &outcome.result {
        Ok(observed) => {
            if known.up == Some(false) {
                decision.events.push(Event::Up);
            }
            known.up = Some(true);
            known.error = None;
            known.last_success = Some(now);
            take_observation(known, expect, observed, now, &mut decision);
        }
        Err(error) => {
            let event = if known.up == Some(false) {
                Event::StillDown
            } else {
                Event::Down
            };
            decision.events.push(event);
            known.up = Some(false);
            known.error = Some(error.clone());
        }
    }
    if verdict_before != Some(verdict(known)) {
        known.verdict_since = Some(now);
    }
    decision
}

fn verdict(known: &Knowledge) -> Verdict {
    Verdict::of(known.error.is_some(), &known.findings)
}

/// Re-applies (possibly new) expectations to what was last observed, after a reload.
pub fn recheck(known: &mut Knowledge, expect: &Expected) -> Vec<Event> {
    let mut events = Vec::new();
    if let Some(observed) = &known.observed {
        let findings = drift::check(expect, observed);
        replace_findings(known, findings, &mut events);
    }
    events
}

fn take_observation(
    known: &mut Knowledge,
    expect: &Expected,
    observed: &Arc<Observed>,
    now: f64,
    decision: &mut Decision,
) {
    // The common case: nothing changed since the last answer, and findings, commands and
    // the state file depend on nothing else (expectations are re-applied on reload).
    // Comparing the answers first spares a hash per poll.
    if known.observed.as_ref() == Some(observed) {
        return;
    }
    let fingerprint = observed.fingerprint();
    if known.observed.is_some() && known.fingerprint == Some(fingerprint) {
        return;
    }
    match known.fingerprint {
        Some(previous) if previous != fingerprint => {
            known.changes += 1;
            known.last_change = Some(now);
            let old = match (&known.observed, &known.saved_view) {
                (Some(o), _) => report::summary(o),
                (None, Some(view)) => view.to_string(),
                (None, None) => "unknown".to_owned(),
            };
            let new = report::summary(observed);
            decision.events.push(Event::Changed { old, new });
            decision.state_changed = true;
        }
        Some(_) => decision.state_changed |= known.observed.is_none(),
        None => decision.state_changed = true,
    }
    known.fingerprint = Some(fingerprint);
    known.observed = Some(observed.clone());
    known.saved_view = None;
    decision.observation_changed = true;
    let findings = drift::check(expect, observed);
    replace_findings(known, findings, &mut decision.events);
}

fn replace_findings(known: &mut Knowledge, findings: Vec<Finding>, events: &mut Vec<Event>) {
    let old: BTreeSet<&Finding> = known.findings.iter().collect();
    let new: BTreeSet<&Finding> = findings.iter().collect();
    events.extend(
        new.difference(&old)
            .map(|f| Event::DriftAppeared((*f).clone())),
    );
    events.extend(
        old.difference(&new)
            .map(|f| Event::DriftCleared((*f).clone())),
    );
    known.findings = findings;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tencent::ApiAnswer;

    const START: &str = "Call.CallbackAfterStartCall";
    const END: &str = "Call.CallbackAfterEndCall";

    fn present(url: &str, commands: &[&str]) -> Observed {
        Observed::Present {
            url: url.to_owned(),
            commands: commands.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn clean() -> Observed {
        present("https://h/cb", &[START, END])
    }

    fn answer(observed: Observed) -> PollOutcome {
        PollOutcome {
            result: Ok(Arc::new(observed)),
            request_id: Some("req".to_owned()),
            attempts: 1,
        }
    }

    fn failure() -> PollOutcome {
        PollOutcome {
            result: Err(PollError::Transient(ApiAnswer {
                code: 100_001,
                ..ApiAnswer::default()
            })),
            request_id: None,
            attempts: 3,
        }
    }

    /// Events as short words, so each case reads on one line.
    fn words(decision: &Decision) -> Vec<String> {
        decision
            .events
            .iter()
            .map(|e| match e {
                Event::Up => "up".to_owned(),
                Event::Down => "down".to_owned(),
                Event::StillDown => "still down".to_owned(),
                Event::Changed { old, new } => format!("changed {old} -> {new}"),
                Event::DriftAppeared(f) => format!("+{}", f.check),
                Event::DriftCleared(f) => format!("-{}", f.check),
            })
            .collect()
    }

    /// One decision in words: events, whether it took in a new observation, whether the
    /// state file must be written.
    type Row = (Vec<String>, bool, bool);

    /// Feeds the outcomes one a second and returns each decision in words, with whether it
    /// took in a new observation and whether the state file must be written.
    fn run(known: &mut Knowledge, outcomes: &[PollOutcome]) -> Vec<Row> {
        let expect = Expected::default();
        outcomes
            .iter()
            .enumerate()
            .map(|(i, outcome)| {
                let d = decide(known, &expect, outcome, i as f64);
                (words(&d), d.observation_changed, d.state_changed)
            })
            .collect()
    }

    fn row(events: &[&str], observed: bool, state: bool) -> Row {
        (
            events.iter().map(|e| (*e).to_owned()).collect(),
            observed,
            state,
        )
    }

    #[test]
    fn decisions_table() {
        let http = present("http://h/cb", &[START, END]);
        let reordered = present("https://h/cb", &[END, START]);
        let cases: Vec<(&str, Vec<PollOutcome>, Vec<Row>)> = vec![
            (
                "first clean answer",
                vec![answer(clean())],
                vec![row(&[], true, true)],
            ),
            (
                "first answer with drift",
                vec![answer(Observed::Absent)],
                vec![row(&["+config_missing"], true, true)],
            ),
            (
                "first poll fails",
                vec![failure()],
                vec![row(&["down"], false, false)],
            ),
            (
                "down, still down, back up with the same answer",
                vec![answer(clean()), failure(), failure(), answer(clean())],
                vec![
                    row(&[], true, true),
                    row(&["down"], false, false),
                    row(&["still down"], false, false),
                    row(&["up"], false, false),
                ],
            ),
            (
                "the same answer again changes nothing",
                vec![answer(clean()), answer(clean()), answer(reordered)],
                vec![
                    row(&[], true, true),
                    row(&[], false, false),
                    row(&[], false, false),
                ],
            ),
            (
                "a change that brings drift, and one that clears it",
                vec![answer(clean()), answer(http), answer(clean())],
                vec![
                    row(&[], true, true),
                    row(
                        &[
                            "changed https://h/cb [Call.CallbackAfterEndCall, Call.CallbackAfterStartCall] -> http://h/cb [Call.CallbackAfterEndCall, Call.CallbackAfterStartCall]",
                            "+url_scheme",
                        ],
                        true,
                        true,
                    ),
                    row(
                        &[
                            "changed http://h/cb [Call.CallbackAfterEndCall, Call.CallbackAfterStartCall] -> https://h/cb [Call.CallbackAfterEndCall, Call.CallbackAfterStartCall]",
                            "-url_scheme",
                        ],
                        true,
                        true,
                    ),
                ],
            ),
            (
                "a failed poll neither clears nor adds drift",
                vec![
                    answer(Observed::Absent),
                    failure(),
                    answer(Observed::Absent),
                ],
                vec![
                    row(&["+config_missing"], true, true),
                    row(&["down"], false, false),
                    row(&["up"], false, false),
                ],
            ),
        ];
        for (name, outcomes, expected) in cases {
            let mut known = Knowledge::default();
            assert_eq!(run(&mut known, &outcomes), expected, "{name}");
        }
    }

    #[test]
    fn the_verdict_is_dated_when_it_changes_not_at_every_poll() {
        let mut known = Knowledge::default();
        let expect = Expected::default();
        let http = present("http://h/cb", &[START, END]);
        let since = |known: &mut Knowledge, outcome: PollOutcome, now: f64| {
            decide(known, &expect, &outcome, now);
            known.verdict_since
        };
        assert_eq!(since(&mut known, answer(clean()), 10.0), Some(10.0));
        assert_eq!(since(&mut known, answer(clean()), 20.0), Some(10.0));
        assert_eq!(since(&mut known, answer(http.clone()), 30.0), Some(30.0));
        assert_eq!(since(&mut known, answer(http), 40.0), Some(30.0));
        assert_eq!(since(&mut known, failure(), 50.0), Some(50.0));
        assert_eq!(since(&mut known, failure(), 60.0), Some(50.0));
        assert_eq!(since(&mut known, answer(clean()), 70.0), Some(70.0));
    }

    #[test]
    fn a_failed_poll_keeps_what_was_observed() {
        let mut known = Knowledge::default();
        run(&mut known, &[answer(Observed::Absent)]);
        let before = known.clone();
        run(&mut known, &[failure()]);
        assert_eq!(known.observed, before.observed);
        assert_eq!(known.findings, before.findings);
        assert_eq!(known.fingerprint, before.fingerprint);
        assert_eq!(known.changes, before.changes);
        assert_eq!(known.up, Some(false));
        assert!(known.error.is_some());
    }

    #[test]
    fn changes_are_counted_against_the_saved_state() {
        let saved = |observed: &Observed| Knowledge {
            saved_view: Some(ObservedView::from(observed)),
            fingerprint: Some(observed.fingerprint()),
            changes: 4,
            ..Knowledge::default()
        };
        // The same configuration as before the restart: no change, but the state file
        // now gets the live observation.
        let mut known = saved(&clean());
        assert_eq!(
            run(&mut known, &[answer(clean())]),
            vec![row(&[], true, true)]
        );
        assert_eq!(known.changes, 4);
        assert_eq!(known.saved_view, None);
        // A change while calldrift was down is reported at the first answer.
        let mut known = saved(&Observed::Absent);
        let decisions = run(&mut known, &[answer(clean())]);
        assert_eq!(
            decisions[0].0,
            vec![
                "changed absent -> https://h/cb [Call.CallbackAfterEndCall, Call.CallbackAfterStartCall]"
            ]
        );
        assert_eq!((known.changes, known.last_change), (5, Some(0.0)));
    }

    #[test]
    fn recheck_applies_new_expectations_to_the_last_observation() {
        let mut known = Knowledge::default();
        run(&mut known, &[answer(present("http://h/cb", &[START, END]))]);
        assert_eq!(known.findings.len(), 1);
        let relaxed = Expected {
            url_scheme: "http".to_owned(),
            ..Expected::default()
        };
        let events = recheck(&mut known, &relaxed);
        assert!(matches!(events.as_slice(), [Event::DriftCleared(_)]));
        assert!(known.findings.is_empty());
        // Nothing observed yet: nothing to re-check.
        assert!(recheck(&mut Knowledge::default(), &relaxed).is_empty());
    }
}
