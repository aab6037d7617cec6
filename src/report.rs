//! How a target is shown, in one place: the verdict, the observed configuration as a
//! redacted view and its one-line summary, and the per-target report shared by `check`
//! (text and JSON), `/api/v1/targets`, the status page, the logs and the state file.
//! Everything here is safe to show: URLs are redacted, no secrets.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::TargetKey;
use crate::drift::{Expected, ExtraCommands, Finding, Observed, Presence};
use crate::probe::{Endpoint, ProbeResult};
use crate::product::Product;
use crate::redact;
use crate::tencent::PollError;

/// A target's verdict: the `status` field of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Drift,
    Error,
}

impl Verdict {
    /// A failed last poll wins over drift, as `check`'s exit status does.
    pub fn of(failed: bool, findings: &[Finding]) -> Self {
        match (failed, findings.is_empty()) {
            (true, _) => Verdict::Error,
            (false, false) => Verdict::Drift,
            (false, true) => Verdict::Ok,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Drift => "drift",
            Verdict::Error => "error",
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

impl ObservedView {
    /// Commands sorted and without duplicates, as every summary shows them.
    fn sorted_commands(&self) -> Vec<&str> {
        let mut commands: Vec<&str> = self.commands.iter().map(String::as_str).collect();
        commands.sort_unstable();
        commands.dedup();
        commands
    }
}

/// The one-line summary in logs and transitions: `URL [commands]` or `absent`.
impl fmt::Display for ObservedView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.url {
            Some(url) => write!(f, "{url} [{}]", self.sorted_commands().join(", ")),
            None => f.write_str("absent"),
        }
    }
}

/// The summary of an observation, as [`ObservedView`] shows it.
pub fn summary(observed: &Observed) -> String {
    ObservedView::from(observed).to_string()
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
    /// `call`, `room` or `live`.
    #[serde(default)]
    pub product: Product,
    pub status: Verdict,
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
    /// What the configuration should be (daemon only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<ExpectedView>,
    /// Unix time since which `status` holds (daemon only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_since: Option<f64>,
    /// Observed changes, and the Unix time of the last (daemon only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<f64>,
    /// The callback endpoint's last probe (the daemon, or `check --endpoint`); absent
    /// when the URL is not `https` or no probe ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointReport>,
    /// What `remediate:` plans or did (daemon only, while its app has it on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<RemediationReport>,
}

/// What the daemon's `remediate:` mode plans for a target, and its last write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemediationReport {
    /// `dry-run` or `enforce`.
    pub mode: String,
    /// The write that would repair the target (`set`, `update`, `delete`), `unmanaged`
    /// when its drift is never written, `none` when there is nothing to repair.
    pub action: String,
    /// Why an unmanaged target is not written (`presence_any`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The configuration the write would leave (URL redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<ObservedView>,
    /// `idle`, `unmanaged`, `waiting`, `act`, `reported`, `blocked`, `paused`.
    pub state: String,
    /// Consecutive polls that showed this drift, and how many it takes to act.
    pub streak: u32,
    pub after: u32,
    /// `max_per_target` writes within the window.
    pub blocked: bool,
    /// `max_total` writes to all targets within the window.
    pub paused: bool,
    /// Unix time the block or pause ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<f64>,
    /// Writes to the target within the window.
    pub writes_in_window: usize,
    /// The last write or dry-run decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<RemediationEvent>,
}

/// One write or dry-run decision, as shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemediationEvent {
    pub at: f64,
    pub action: String,
    /// `applied`, `failed` or `dry_run`.
    pub result: String,
    /// Why it failed: the gateway's ErrorCode and ErrorInfo, or a lost answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An expectation as shown: URLs redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedView {
    /// `required`, `forbidden` or `any`.
    pub present: String,
    pub url_scheme: String,
    pub url: Option<String>,
    pub url_prefix: Option<String>,
    pub commands: Vec<String>,
    /// `drift` or `allow`.
    pub extra_commands: String,
    pub ignore_commands: Vec<String>,
}

impl From<&Expected> for ExpectedView {
    fn from(e: &Expected) -> Self {
        ExpectedView {
            present: match e.present {
                Presence::Required => "required",
                Presence::Forbidden => "forbidden",
                Presence::Any => "any",
            }
            .to_owned(),
            url_scheme: e.url_scheme.clone(),
            url: e.url.as_deref().map(redact::url),
            url_prefix: e.url_prefix.as_deref().map(redact::url),
            commands: e.commands.clone(),
            extra_commands: match e.extra_commands {
                ExtraCommands::Drift => "drift",
                ExtraCommands::Allow => "allow",
            }
            .to_owned(),
            ignore_commands: e.ignore_commands.clone(),
        }
    }
}

/// How a target's callback endpoint answered its last probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    /// `host:port`.
    pub endpoint: String,
    /// The last probe completed a verified TLS handshake.
    pub up: bool,
    /// Why the last probe failed: `dns`, `connect`, `timeout`, `tls_handshake`,
    /// `tls_verify` or `blocked_address`.
    pub failure: Option<String>,
    /// What went wrong, in words.
    pub detail: Option<String>,
    /// Unix time of the earliest notAfter presented (the last known one).
    pub cert_not_after: Option<f64>,
    /// Unix time of the last probe.
    pub last_probe: f64,
}

impl EndpointReport {
    /// The report of `endpoint` after `result`; `cert_not_after` is the last known expiry.
    pub fn new(endpoint: &Endpoint, result: &ProbeResult, cert_not_after: Option<f64>) -> Self {
        EndpointReport {
            endpoint: endpoint.to_string(),
            up: result.up(),
            failure: result.failure.map(|r| r.as_str().to_owned()),
            detail: result.detail.clone(),
            cert_not_after: cert_not_after.or(result.not_after),
            last_probe: result.at,
        }
    }

    /// Days from `now` until the certificate expires; negative once it has.
    pub fn days_left(&self, now: f64) -> Option<f64> {
        self.cert_not_after.map(|t| (t - now) / 86_400.0)
    }

    /// One line: `host:port: up|down (reason: detail), certificate valid until DATE`.
    pub fn summary(&self) -> String {
        let mut line = format!("{}: ", self.endpoint);
        match &self.failure {
            None => line.push_str("up"),
            Some(reason) => {
                line.push_str(&format!("down ({reason}"));
                if let Some(detail) = &self.detail {
                    line.push_str(&format!(": {detail}"));
                }
                line.push(')');
            }
        }
        if let Some(t) = self.cert_not_after.filter(|t| *t >= 0.0) {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t);
            line.push_str(&format!(
                ", certificate valid until {}",
                humantime::format_rfc3339_seconds(at)
            ));
        }
        line
    }
}

impl TargetReport {
    /// The report of one target from what is known of it.
    pub fn new(
        key: &TargetKey,
        observed: Option<ObservedView>,
        findings: Vec<Finding>,
        error: Option<&PollError>,
        request_id: Option<String>,
    ) -> Self {
        TargetReport {
            app: key.app.clone(),
            sdkappid: key.sdkappid,
            region: key.region.clone(),
            product: key.product,
            status: Verdict::of(error.is_some(), &findings),
            observed,
            findings,
            error: error.map(ToString::to_string),
            error_class: error.map(|e| e.kind().to_owned()),
            request_id,
            last_poll: None,
            expected: None,
            status_since: None,
            changes: None,
            last_change: None,
            endpoint: None,
            remediation: None,
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

/// `n` with the noun in the right number: "1 target", "2 targets".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Report {
    pub fn new(targets: Vec<TargetReport>) -> Self {
        let count = |status| targets.iter().filter(|t| t.status == status).count();
        let summary = Summary {
            targets: targets.len(),
            clean: count(Verdict::Ok),
            drifted: count(Verdict::Drift),
            errors: count(Verdict::Error),
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
                "{} ({}, {}, {}): {}",
                t.app,
                t.sdkappid,
                t.region,
                t.product,
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
            if let Some(endpoint) = &t.endpoint {
                out.push_str(&format!("    endpoint {}\n", endpoint.summary()));
            }
        }
        let s = &self.summary;
        out.push_str(&format!(
            "{}: {} clean, {} drifted, {}\n",
            count(s.targets, "target", "targets"),
            s.clean,
            s.drifted,
            count(s.errors, "error", "errors")
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_redacts_and_sorts() {
        let o = Observed::Present {
            url: "https://u:pw@h/cb?token=abc".to_owned(),
            commands: vec![
                "Call.CallbackAfterStartCall".to_owned(),
                "Call.CallbackAfterEndCall".to_owned(),
                "Call.CallbackAfterStartCall".to_owned(),
            ],
        };
        assert_eq!(
            summary(&o),
            "https://h/cb?token=REDACTED [Call.CallbackAfterEndCall, Call.CallbackAfterStartCall]"
        );
        assert_eq!(summary(&Observed::Absent), "absent");
    }

    #[test]
    fn endpoint_summaries() {
        let endpoint = Endpoint {
            host: "hooks.example.com".to_owned(),
            port: 443,
        };
        let result = ProbeResult {
            at: 1_700_000_000.0,
            failure: Some(crate::probe::Reason::TlsVerify),
            not_after: Some(1_907_712_000.0),
            detail: Some("certificate expired".to_owned()),
        };
        let report = EndpointReport::new(&endpoint, &result, None);
        assert_eq!(
            report.summary(),
            "hooks.example.com:443: down (tls_verify: certificate expired), certificate valid until 2030-06-15T00:00:00Z"
        );
        assert_eq!(
            report.days_left(1_907_712_000.0 - 86_400.0 * 3.0),
            Some(3.0)
        );
        let ok = ProbeResult {
            failure: None,
            not_after: None,
            detail: None,
            ..result
        };
        assert_eq!(
            EndpointReport::new(&endpoint, &ok, None).summary(),
            "hooks.example.com:443: up"
        );
    }

    #[test]
    fn a_failed_poll_is_the_verdict_whatever_the_findings() {
        let finding = Finding {
            check: crate::drift::Check::ConfigMissing,
            expected: None,
            actual: None,
        };
        assert_eq!(
            Verdict::of(true, std::slice::from_ref(&finding)),
            Verdict::Error
        );
        assert_eq!(Verdict::of(false, &[finding]), Verdict::Drift);
        assert_eq!(Verdict::of(false, &[]), Verdict::Ok);
    }
}
