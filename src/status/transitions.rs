//! Transitions: the events of [`super::knowledge`] as the operator sees them, one log line
//! and one entry of the page's history each.

use std::collections::VecDeque;

use serde::Serialize;

use super::knowledge::Event;
use crate::config::TargetKey;
use crate::product::Product;
use crate::tencent::PollOutcome;

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
    pub product: Product,
    pub kind: TransitionKind,
    pub detail: String,
}

/// The last [`TRANSITION_HISTORY`] transitions, oldest first.
#[derive(Debug, Default)]
pub struct History(VecDeque<Transition>);

impl History {
    pub fn push(&mut self, transition: Transition) {
        if self.0.len() == TRANSITION_HISTORY {
            self.0.pop_front();
        }
        self.0.push_back(transition);
    }

    /// Newest first.
    pub fn newest_first(&self) -> Vec<Transition> {
        self.0.iter().rev().cloned().collect()
    }
}

/// Logs `event` and returns its transition; `outcome` is the poll it came from, if any
/// (a re-check after a reload has none).
pub fn carry_out(
    key: &TargetKey,
    event: &Event,
    outcome: Option<&PollOutcome>,
    time: f64,
) -> Option<Transition> {
    // Absent fields are left out of the event rather than logged empty.
    let request_id = outcome.and_then(|o| o.request_id.as_deref());
    let error = outcome.and_then(|o| o.result.as_ref().err());
    let (kind, detail) = match event {
        Event::Up => {
            tracing::info!(app = %key.app, sdkappid = key.sdkappid, region = %key.region, product = key.product.as_str(), request_id, "target is back up");
            (TransitionKind::Up, "authoritative answer again".to_owned())
        }
        Event::Down => {
            let error = error?;
            let answer = error.answer();
            tracing::warn!(
                app = %key.app, sdkappid = key.sdkappid, region = %key.region, product = key.product.as_str(),
                reason = error.metric_reason(),
                error_code = error.error_code(),
                error_info = answer.map(|a| a.info.as_str()).filter(|i| !i.is_empty()),
                request_id,
                "target is down: {error}"
            );
            (TransitionKind::Down, error.to_string())
        }
        Event::StillDown => {
            if let Some(error) = error {
                tracing::debug!(app = %key.app, region = %key.region, product = key.product.as_str(), "poll failed again: {error}");
            }
            return None;
        }
        Event::Changed { old, new } => {
            tracing::warn!(app = %key.app, sdkappid = key.sdkappid, region = %key.region, product = key.product.as_str(), old = %old, new = %new, request_id, "callback config changed");
            (TransitionKind::Changed, format!("{old} → {new}"))
        }
        Event::DriftAppeared(f) => {
            tracing::warn!(app = %key.app, sdkappid = key.sdkappid, region = %key.region, product = key.product.as_str(), check = f.check.as_str(), expected = f.expected.as_deref().unwrap_or("none"), actual = f.actual.as_deref().unwrap_or("none"), "drift appeared");
            (TransitionKind::DriftAppeared, f.to_string())
        }
        Event::DriftCleared(f) => {
            tracing::info!(app = %key.app, sdkappid = key.sdkappid, region = %key.region, product = key.product.as_str(), check = f.check.as_str(), expected = f.expected.as_deref().unwrap_or("none"), actual = f.actual.as_deref().unwrap_or("none"), "drift cleared");
            (TransitionKind::DriftCleared, f.to_string())
        }
    };
    Some(Transition {
        time,
        app: key.app.clone(),
        sdkappid: key.sdkappid,
        region: key.region.clone(),
        product: key.product,
        kind,
        detail,
    })
}
