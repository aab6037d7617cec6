//! The per-target report shared by `check --format json`, `check`'s text output and
//! `/api/v1/targets`. Everything in it is safe to show: URLs are redacted, no secrets.

use serde::{Deserialize, Serialize};

use crate::config::TargetKey;
use crate::drift::{Finding, Observed};
use crate::redact;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Drift,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Drift => "drift",
            Status::Error => "error",
        }
    }
}

/// The observed configuration as shown: redacted URL, commands as returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedView {
    pub present: bool,
    pub url: Option<String>,
    pub commands: Vec<String>,
}

impl From<&Observed> for ObservedView {
    fn from(observed: &Observed) -> Self {
        match observed {
            Observed::Absent => ObservedView {
                present: false,
                url: None,
                commands: Vec::new(),
            },
            Observed::Present { url, commands } => ObservedView {
                present: true,
                url: Some(redact::url(url)),
                commands: commands.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    pub app: String,
    pub sdkappid: u64,
    pub region: String,
    pub status: Status,
    /// The last authoritative observation, if any.
    pub observed: Option<ObservedView>,
    /// Findings of the last authoritative observation; kept while polls fail.
    pub findings: Vec<Finding>,
    /// Why the last poll failed, if it did.
    pub error: Option<String>,
    /// The failure class (`auth`, `timeout`, …) of `error`.
    #[serde(default)]
    pub error_class: Option<String>,
    pub request_id: Option<String>,
    /// Unix time of the last completed poll (daemon only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll: Option<f64>,
}

impl TargetReport {
    pub fn key(&self) -> TargetKey {
        TargetKey {
            app: self.app.clone(),
            sdkappid: self.sdkappid,
            region: self.region.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub targets: usize,
    pub clean: usize,
    pub drifted: usize,
    pub errors: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub summary: Summary,
    pub targets: Vec<TargetReport>,
}

impl Report {
    pub fn new(targets: Vec<TargetReport>) -> Self {
        let count = |status| targets.iter().filter(|t| t.status == status).count();
        let summary = Summary {
            targets: targets.len(),
            clean: count(Status::Ok),
            drifted: count(Status::Drift),
            errors: count(Status::Error),
        };
        Report { summary, targets }
    }

    /// `check`'s exit status: 1 if any target could not be checked, else 2 on drift, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.summary.errors > 0 {
            1
        } else if self.summary.drifted > 0 {
            2
        } else {
            0
        }
    }

    /// The human-readable form `check` prints.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for t in &self.targets {
            out.push_str(&format!(
                "{} ({}, {}): {}",
                t.app,
                t.sdkappid,
                t.region,
                t.status.as_str()
            ));
            if let Some(error) = &t.error {
                out.push_str(&format!(
                    " [{}] {error}",
                    t.error_class.as_deref().unwrap_or("error")
                ));
            }
            if let (Some(id), None) = (&t.request_id, &t.error) {
                out.push_str(&format!(" (RequestId {id})"));
            }
            out.push('\n');
            if let Some(observed) = &t.observed {
                let shown = match &observed.url {
                    Some(url) => format!("{url} [{}]", observed.commands.join(", ")),
                    None => "no callback configuration".to_owned(),
                };
                out.push_str(&format!("    observed: {shown}\n"));
            }
            for finding in &t.findings {
                out.push_str(&format!("    {finding}\n"));
            }
        }
        let s = &self.summary;
        out.push_str(&format!(
            "{} targets: {} clean, {} drifted, {} errors\n",
            s.targets, s.clean, s.drifted, s.errors
        ));
        out
    }
}
