//! Every metric calldrift exports (docs/metrics.md lists them for users).
//!
//! Process-wide metrics (API requests, latency, rate-limit waits, lag, reloads, refused
//! HTTP credentials, build info, process metrics) live in a `prometheus` registry.
//! Per-target series are not kept as `prometheus` series: with 10,000 targets that would
//! be some 300,000 label sets in memory. Each target instead holds one [`TargetSample`] of plain numbers, and
//! [`write_target_families`] renders the text exposition from those at scrape time.
//!
//! **Invariant:** labels carry only bounded values: app, SDKAppID, region, product, check
//! kind, command word (escaped, capped per target) and failure reason. Never a URL, key, user
//! name or error text.

mod remediation;

use std::io::Write as _;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use crate::config::TargetKey;
use crate::drift::Check;
use crate::probe::{ProbeResult, Reason};
use crate::tencent::RequestObserver;
use crate::web::AuthFailure;

pub use self::remediation::{RemediationResult, RemediationSample};

/// Observed command words beyond the expected and ignored ones get series up to this many
/// per target, so a misbehaving gateway cannot blow up cardinality.
pub const MAX_OBSERVED_COMMAND_SERIES: usize = 16;

const FROM_POLLING: &str = "(from calldrift's own polling schedule, not from the scrape)";

/// The process-wide metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub targets: IntGauge,
    pub api_requests: IntCounterVec,
    pub api_failures: IntCounterVec,
    pub api_duration: HistogramVec,
    pub rate_limit_wait: prometheus::Counter,
    pub schedule_lag: Gauge,
    pub reload_successful: IntGauge,
    pub reload_success_time: Gauge,
    pub state_write_failures: IntCounter,
    pub state_write_success_time: Gauge,
    /// Requests to the HTTP server refused for their credentials, by [`AuthFailure`].
    pub http_auth_failures: IntCounterVec,
    /// 1 while `remediate:`'s `max_total` holds every write back.
    pub remediation_paused: IntGauge,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    // Names are fixed and unique here, so registration cannot collide.
    let _ = registry.register(Box::new(collector.clone()));
    collector
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    register(registry, vec)
}

/// `calldrift_http_auth_failures_total`, with every reason at 0 from the start so
/// `increase()` sees the first failure.
fn http_auth_failures(registry: &Registry) -> IntCounterVec {
    let failures = counter_vec(
        registry,
        "calldrift_http_auth_failures_total",
        "HTTP requests refused for their basic-auth credentials, by reason: missing, malformed, unknown_user, wrong_password.",
        &["reason"],
    );
    for reason in AuthFailure::ALL {
        failures.with_label_values(&[reason.as_str()]);
    }
    failures
}

/// `calldrift_build_info`, set to 1 with the version and revision.
fn build_info(registry: &Registry, version: &str, revision: &str) {
    let info = register(
        registry,
        GaugeVec::new(
            Opts::new(
                "calldrift_build_info",
                "Always 1; labels name the calldrift version and git revision.",
            ),
            &["version", "revision"],
        )
        .unwrap_or_else(|e| unreachable!("{e}")),
    );
    info.with_label_values(&[version, revision]).set(1.0);
}

/// `calldrift_api_request_duration_seconds`, with buckets for gateways near and far.
fn api_duration(registry: &Registry) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(
                "calldrift_api_request_duration_seconds",
                "Latency of gateway requests.",
            )
            .buckets(vec![0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["region"],
        )
        .unwrap_or_else(|e| unreachable!("{e}")),
    )
}

impl Metrics {
    pub fn new(version: &str, revision: &str) -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));

        build_info(&registry, version, revision);

        let gauge = |name: &str, help: &str| {
            register(
                &registry,
                Gauge::new(name, help).unwrap_or_else(|e| unreachable!("{e}")),
            )
        };
        let int_gauge = |name: &str, help: &str| {
            register(
                &registry,
                IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("{e}")),
            )
        };

        Metrics {
            http_auth_failures: http_auth_failures(&registry),
            targets: int_gauge("calldrift_targets", "Configured (app, region) targets."),
            api_requests: counter_vec(
                &registry,
                "calldrift_api_requests_total",
                "HTTP requests sent to the gateway, retries included.",
                &["region"],
            ),
            api_failures: counter_vec(
                &registry,
                "calldrift_api_request_failures_total",
                "Failed gateway requests by reason: transport, timeout, http_status, decode, api_error, rate_limited, auth.",
                &["region", "reason"],
            ),
            api_duration: api_duration(&registry),
            rate_limit_wait: register(
                &registry,
                prometheus::Counter::new(
                    "calldrift_rate_limit_wait_seconds_total",
                    "Time polls spent waiting for the rate limiter.",
                )
                .unwrap_or_else(|e| unreachable!("{e}")),
            ),
            schedule_lag: gauge(
                "calldrift_schedule_lag_seconds",
                "How far the poll loop runs behind its schedule; 0 when on time.",
            ),
            reload_successful: int_gauge(
                "calldrift_config_last_reload_successful",
                "1 if the last config load or reload succeeded, else 0.",
            ),
            reload_success_time: gauge(
                "calldrift_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load or reload.",
            ),
            state_write_failures: register(
                &registry,
                IntCounter::new(
                    "calldrift_state_write_failures_total",
                    "Failed writes of the state file; retried until one succeeds.",
                )
                .unwrap_or_else(|e| unreachable!("{e}")),
            ),
            state_write_success_time: gauge(
                "calldrift_state_last_write_success_timestamp_seconds",
                "Unix time of the last successful write of the state file; 0 if none yet.",
            ),
            remediation_paused: int_gauge(
                "calldrift_remediation_paused",
                "1 while remediation is paused everywhere: max_total writes within the window.",
            ),
            registry,
        }
    }

    /// The Prometheus text exposition: the registry's metrics, then whatever
    /// `write_targets` appends (the per-target families).
    pub fn render(&self, write_targets: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        // Encoding into a Vec fails only on metric families the registry would not hold.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        write_targets(&mut out);
        out
    }
}

/// Everything one target exports, as plain numbers; labels are rendered once.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSample {
    /// `app="…",product="…",region="…",sdkappid="…"`, escaped, in Prometheus' order.
    labels: String,
    pub up: bool,
    pub present: bool,
    pub url_https: bool,
    pub fingerprint: u64,
    pub changes: u64,
    pub last_change: f64,
    pub last_poll: f64,
    pub last_success: f64,
    pub error_code: i64,
    pub polls_skipped: u64,
    /// In the order of [`Check::ALL`].
    pub drift: [bool; 6],
    /// Escaped command label values and whether each is enabled, sorted.
    commands: Vec<(String, bool)>,
    /// The callback endpoint's probes; `None` (no series) until one is recorded for the
    /// target's current `https` endpoint.
    pub endpoint: Option<EndpointSample>,
    /// Remediation's results; `None` (no series) while the target's app has it off.
    pub remediation: Option<RemediationSample>,
}

/// What a target's callback endpoint exports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointSample {
    pub up: bool,
    /// The earliest notAfter presented at the last probe that got certificates.
    pub cert_expiry: Option<f64>,
    pub last_probe: f64,
    /// In the order of [`Reason::ALL`].
    pub failures: [u64; 6],
}

impl EndpointSample {
    /// Takes in one probe; a probe that saw no certificate keeps the last known expiry.
    pub fn record(&mut self, result: &ProbeResult) {
        self.up = result.up();
        self.last_probe = result.at;
        if let Some(not_after) = result.not_after {
            self.cert_expiry = Some(not_after);
        }
        if let Some(reason) = result.failure {
            self.failures[reason.index()] += 1;
        }
    }
}

impl TargetSample {
    /// A target's series, all at 0, for the given command words.
    pub fn new<'a>(key: &TargetKey, commands: impl IntoIterator<Item = &'a str>) -> Self {
        let labels = format!(
            "app=\"{}\",product=\"{}\",region=\"{}\",sdkappid=\"{}\"",
            escape_label(&key.app),
            key.product,
            escape_label(&key.region),
            key.sdkappid
        );
        let mut sample = TargetSample {
            labels,
            up: false,
            present: false,
            url_https: false,
            fingerprint: 0,
            changes: 0,
            last_change: 0.0,
            last_poll: 0.0,
            last_success: 0.0,
            error_code: 0,
            polls_skipped: 0,
            drift: [false; 6],
            commands: Vec::new(),
            endpoint: None,
            remediation: None,
        };
        sample.set_commands(commands.into_iter().map(|c| (c, false)));
        sample
    }

    /// Replaces the `command_enabled` series; at most [`MAX_OBSERVED_COMMAND_SERIES`] beyond
    /// the words the caller lists first is the caller's business (see `status`).
    pub fn set_commands<'a>(&mut self, commands: impl IntoIterator<Item = (&'a str, bool)>) {
        let mut rendered: Vec<(String, bool)> = commands
            .into_iter()
            .map(|(c, on)| (escape_label(c), on))
            .collect();
        rendered.sort();
        rendered.dedup_by(|a, b| a.0 == b.0);
        self.commands = rendered;
    }
}

/// Escapes a label value for the text exposition format.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn flag(on: bool) -> u8 {
    u8::from(on)
}

/// One family: HELP, TYPE and a line per target from `line`.
fn family<'a, I>(
    out: &mut Vec<u8>,
    name: &str,
    kind: &str,
    help: &str,
    samples: I,
    mut line: impl FnMut(&mut Vec<u8>, &'a TargetSample),
) where
    I: Iterator<Item = &'a TargetSample>,
{
    let _ = writeln!(out, "# HELP {name} {help} {FROM_POLLING}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for sample in samples {
        line(out, sample);
    }
}

/// How a plain per-target family reads its value from a sample.
type Field = fn(&TargetSample) -> f64;

/// The per-target families with one plain value each: name, type, help, value.
const PLAIN_FAMILIES: [(&str, &str, &str, Field); 10] = [
    (
        "calldrift_up",
        "gauge",
        "1 if the last poll of the target got an authoritative answer (ErrorCode 0 or 100301), else 0.",
        |s| f64::from(flag(s.up)),
    ),
    (
        "calldrift_callback_config_present",
        "gauge",
        "1 if a callback configuration exists, 0 if absent, per the last authoritative answer.",
        |s| f64::from(flag(s.present)),
    ),
    (
        "calldrift_callback_url_https",
        "gauge",
        "1 if the observed callback URL is https.",
        |s| f64::from(flag(s.url_https)),
    ),
    (
        "calldrift_callback_config_fingerprint",
        "gauge",
        "Stable 48-bit hash of (present, url, sorted commands); use changes() on it.",
        |s| s.fingerprint as f64,
    ),
    (
        "calldrift_callback_config_changes_total",
        "counter",
        "Observed changes of the callback configuration, kept across restarts in the state file.",
        |s| s.changes as f64,
    ),
    (
        "calldrift_callback_config_last_change_timestamp_seconds",
        "gauge",
        "Unix time of the last observed change; 0 if none seen.",
        |s| s.last_change,
    ),
    (
        "calldrift_last_poll_timestamp_seconds",
        "gauge",
        "Unix time of the last completed poll.",
        |s| s.last_poll,
    ),
    (
        "calldrift_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last authoritative answer.",
        |s| s.last_success,
    ),
    (
        "calldrift_api_error_code",
        "gauge",
        "ErrorCode of the last answer: 0 ok, 100301 absent, -1 no decodable answer.",
        |s| s.error_code as f64,
    ),
    (
        "calldrift_polls_skipped_total",
        "counter",
        "Ticks skipped because the previous poll of the target was still running.",
        |s| s.polls_skipped as f64,
    ),
];

/// Appends every per-target family for `samples` in the text exposition format.
pub fn write_target_families<'a, I>(out: &mut Vec<u8>, samples: I)
where
    I: Iterator<Item = &'a TargetSample> + Clone,
{
    for (name, kind, help, value) in PLAIN_FAMILIES {
        family(out, name, kind, help, samples.clone(), |out, s| {
            let _ = writeln!(out, "{name}{{{}}} {}", s.labels, value(s));
        });
    }
    family(
        out,
        "calldrift_drift",
        "gauge",
        "1 while the finding kind named by `check` is present in the last authoritative answer.",
        samples.clone(),
        |out, s| {
            for (check, on) in Check::ALL.iter().zip(s.drift) {
                let _ = writeln!(
                    out,
                    "calldrift_drift{{{},check=\"{}\"}} {}",
                    s.labels,
                    check.as_str(),
                    flag(on)
                );
            }
        },
    );
    write_endpoint_families(out, samples.clone());
    remediation::write_remediation_families(out, samples.clone());
    family(
        out,
        "calldrift_callback_command_enabled",
        "gauge",
        "1 if the command word is enabled in the callback configuration, 0 if not.",
        samples,
        |out, s| {
            for (command, on) in &s.commands {
                let _ = writeln!(
                    out,
                    "calldrift_callback_command_enabled{{{},command=\"{command}\"}} {}",
                    s.labels,
                    flag(*on)
                );
            }
        },
    );
}

/// How an endpoint family reads its value; `None`: no series for this target.
type EndpointField = fn(&EndpointSample) -> Option<f64>;

/// The per-target endpoint families with one value each: name, type, help, value.
const ENDPOINT_FAMILIES: [(&str, &str, &str, EndpointField); 3] = [
    (
        "calldrift_callback_endpoint_up",
        "gauge",
        "1 if the last probe of the callback endpoint completed a verified TLS handshake, else 0.",
        |e| Some(f64::from(flag(e.up))),
    ),
    (
        "calldrift_callback_endpoint_cert_expiry_timestamp_seconds",
        "gauge",
        "Unix time of the earliest notAfter among the certificates the callback endpoint presented.",
        |e| e.cert_expiry,
    ),
    (
        "calldrift_callback_endpoint_last_probe_timestamp_seconds",
        "gauge",
        "Unix time of the last probe of the callback endpoint.",
        |e| Some(e.last_probe),
    ),
];

/// The callback endpoint families, for the targets with a probed `https` endpoint only.
fn write_endpoint_families<'a, I>(out: &mut Vec<u8>, samples: I)
where
    I: Iterator<Item = &'a TargetSample> + Clone,
{
    let probed = samples.filter(|s| s.endpoint.is_some());
    for (name, kind, help, value) in ENDPOINT_FAMILIES {
        family(out, name, kind, help, probed.clone(), |out, s| {
            if let Some(v) = s.endpoint.as_ref().and_then(value) {
                let _ = writeln!(out, "{name}{{{}}} {v}", s.labels);
            }
        });
    }
    family(
        out,
        "calldrift_callback_endpoint_probe_failures_total",
        "counter",
        "Failed probes of the callback endpoint by reason: dns, connect, timeout, tls_handshake, tls_verify, blocked_address.",
        probed,
        |out, s| {
            let Some(endpoint) = &s.endpoint else { return };
            for (reason, n) in Reason::ALL.iter().zip(endpoint.failures) {
                let _ = writeln!(
                    out,
                    "calldrift_callback_endpoint_probe_failures_total{{{},reason=\"{reason}\"}} {n}",
                    s.labels
                );
            }
        },
    );
}

impl RequestObserver for Metrics {
    fn request_done(&self, region: &str, elapsed: Duration, failure: Option<&'static str>) {
        self.api_requests.with_label_values(&[region]).inc();
        self.api_duration
            .with_label_values(&[region])
            .observe(elapsed.as_secs_f64());
        if let Some(reason) = failure {
            self.api_failures.with_label_values(&[region, reason]).inc();
        }
    }

    fn rate_limit_wait(&self, waited: Duration) {
        self.rate_limit_wait.inc_by(waited.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TargetKey {
        TargetKey::new("a", 1400000001, "china", crate::product::Product::Call)
    }

    #[test]
    fn target_families_render_every_series_with_help_and_type() {
        let m = Metrics::new("0.1.0", "abc");
        let mut sample = TargetSample::new(&key(), ["Call.CallbackAfterEndCall"]);
        sample.up = true;
        sample.fingerprint = (1 << 48) - 1;
        sample.last_poll = 1_700_000_000.25;
        sample.drift[Check::ALL
            .iter()
            .position(|c| *c == Check::UrlScheme)
            .unwrap_or(0)] = true;
        sample.set_commands([("Call.CallbackAfterEndCall", true), ("odd\"word\\", false)]);
        let text =
            String::from_utf8(m.render(|out| write_target_families(out, [&sample].into_iter())))
                .expect("utf8");
        let labels = "app=\"a\",product=\"call\",region=\"china\",sdkappid=\"1400000001\"";
        for line in [
            "calldrift_build_info{revision=\"abc\",version=\"0.1.0\"} 1".to_owned(),
            "# TYPE calldrift_up gauge".to_owned(),
            format!("calldrift_up{{{labels}}} 1"),
            format!("calldrift_callback_config_fingerprint{{{labels}}} 281474976710655"),
            format!("calldrift_last_poll_timestamp_seconds{{{labels}}} 1700000000.25"),
            format!("calldrift_drift{{{labels},check=\"url_scheme\"}} 1"),
            format!("calldrift_drift{{{labels},check=\"config_missing\"}} 0"),
            format!(
                "calldrift_callback_command_enabled{{{labels},command=\"Call.CallbackAfterEndCall\"}} 1"
            ),
            format!("calldrift_callback_command_enabled{{{labels},command=\"odd\\\"word\\\\\"}} 0"),
            "# TYPE calldrift_callback_config_changes_total counter".to_owned(),
            format!("calldrift_callback_config_changes_total{{{labels}}} 0"),
            format!("calldrift_polls_skipped_total{{{labels}}} 0"),
        ] {
            assert!(text.contains(&line), "missing {line}\n{text}");
        }
        assert!(
            text.contains("not from the scrape"),
            "HELP says where values come from"
        );
    }

    #[test]
    fn endpoint_families_only_for_probed_targets() {
        let m = Metrics::new("0.1.0", "abc");
        let plain = TargetSample::new(&key(), []);
        let mut probed = TargetSample::new(
            &TargetKey::new("b", 1400000002, "china", crate::product::Product::Room),
            [],
        );
        let mut endpoint = EndpointSample::default();
        endpoint.record(&ProbeResult {
            at: 1_700_000_000.0,
            failure: None,
            not_after: Some(1_800_000_000.0),
            detail: None,
        });
        endpoint.record(&ProbeResult {
            at: 1_700_000_300.0,
            failure: Some(Reason::Dns),
            not_after: None,
            detail: Some("nxdomain".to_owned()),
        });
        probed.endpoint = Some(endpoint);
        let text = String::from_utf8(
            m.render(|out| write_target_families(out, [&plain, &probed].into_iter())),
        )
        .expect("utf8");
        let labels = "app=\"b\",product=\"room\",region=\"china\",sdkappid=\"1400000002\"";
        for line in [
            format!("calldrift_callback_endpoint_up{{{labels}}} 0"),
            format!(
                "calldrift_callback_endpoint_cert_expiry_timestamp_seconds{{{labels}}} 1800000000"
            ),
            format!(
                "calldrift_callback_endpoint_last_probe_timestamp_seconds{{{labels}}} 1700000300"
            ),
            format!(
                "calldrift_callback_endpoint_probe_failures_total{{{labels},reason=\"dns\"}} 1"
            ),
            format!(
                "calldrift_callback_endpoint_probe_failures_total{{{labels},reason=\"blocked_address\"}} 0"
            ),
            "# TYPE calldrift_callback_endpoint_probe_failures_total counter".to_owned(),
        ] {
            assert!(text.contains(&line), "missing {line}\n{text}");
        }
        assert!(
            !text.contains("calldrift_callback_endpoint_up{app=\"a\""),
            "a target without a probed endpoint has no endpoint series"
        );
    }

    #[test]
    fn no_targets_still_renders_valid_families() {
        let m = Metrics::new("0.1.0", "abc");
        let text =
            String::from_utf8(m.render(|out| write_target_families(out, std::iter::empty())))
                .expect("utf8");
        assert!(text.contains("# TYPE calldrift_up gauge"));
        assert!(!text.contains("calldrift_up{"));
    }
}
