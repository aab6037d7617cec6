//! Every metric of SPEC "Metrics", registered in one registry with the process metrics.
//!
//! **Invariant:** labels carry only bounded values: app, SDKAppID, region, check kind,
//! command word (capped per target) and failure reason. Never a URL, key or error text.

use std::collections::BTreeSet;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use crate::config::TargetKey;
use crate::drift::Check;
use crate::tencent::RequestObserver;

/// Observed command words beyond the expected and ignored ones get series up to this many
/// per target, so a misbehaving gateway cannot blow up cardinality.
pub const MAX_OBSERVED_COMMAND_SERIES: usize = 16;

const TARGET_LABELS: [&str; 3] = ["app", "sdkappid", "region"];
const FROM_POLLING: &str = "(from calldrift's own polling schedule, not from the scrape)";

/// The registry and every metric family.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub targets: IntGauge,
    pub up: GaugeVec,
    pub drift: GaugeVec,
    pub config_present: GaugeVec,
    pub url_https: GaugeVec,
    pub command_enabled: GaugeVec,
    pub fingerprint: GaugeVec,
    pub changes: IntCounterVec,
    pub last_change: GaugeVec,
    pub last_poll: GaugeVec,
    pub last_success: GaugeVec,
    pub api_error_code: GaugeVec,
    pub api_requests: IntCounterVec,
    pub api_failures: IntCounterVec,
    pub api_duration: HistogramVec,
    pub rate_limit_wait: prometheus::Counter,
    pub schedule_lag: Gauge,
    pub polls_skipped: IntCounterVec,
    pub reload_successful: IntGauge,
    pub reload_success_time: Gauge,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    // Names are fixed and unique here, so registration cannot collide.
    let _ = registry.register(Box::new(collector.clone()));
    collector
}

fn target_gauge(registry: &Registry, name: &str, help: &str, extra: &[&str]) -> GaugeVec {
    let labels: Vec<&str> = TARGET_LABELS.iter().chain(extra).copied().collect();
    let vec = GaugeVec::new(Opts::new(name, format!("{help} {FROM_POLLING}")), &labels)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    register(registry, vec)
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    register(registry, vec)
}

impl Metrics {
    pub fn new(version: &str, revision: &str) -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));

        let build_info = register(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "calldrift_build_info",
                    "Always 1; labels name the calldrift version and git revision.",
                ),
                &["version", "revision"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
        );
        build_info.with_label_values(&[version, revision]).set(1.0);

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
            targets: int_gauge("calldrift_targets", "Configured (app, region) targets."),
            up: target_gauge(
                &registry,
                "calldrift_up",
                "1 if the last poll of the target got an authoritative answer (ErrorCode 0 or 100301), else 0",
                &[],
            ),
            drift: target_gauge(
                &registry,
                "calldrift_drift",
                "1 while the finding kind named by `check` is present in the last authoritative answer",
                &["check"],
            ),
            config_present: target_gauge(
                &registry,
                "calldrift_callback_config_present",
                "1 if a callback configuration exists, 0 if absent, per the last authoritative answer",
                &[],
            ),
            url_https: target_gauge(
                &registry,
                "calldrift_callback_url_https",
                "1 if the observed callback URL is https",
                &[],
            ),
            command_enabled: target_gauge(
                &registry,
                "calldrift_callback_command_enabled",
                "1 if the command word is enabled in the callback configuration, 0 if not",
                &["command"],
            ),
            fingerprint: target_gauge(
                &registry,
                "calldrift_callback_config_fingerprint",
                "Stable 48-bit hash of (present, url, sorted commands); use changes() on it",
                &[],
            ),
            changes: counter_vec(
                &registry,
                "calldrift_callback_config_changes_total",
                &format!(
                    "Observed changes of the callback configuration, kept across restarts in the state file {FROM_POLLING}."
                ),
                &TARGET_LABELS,
            ),
            last_change: target_gauge(
                &registry,
                "calldrift_callback_config_last_change_timestamp_seconds",
                "Unix time of the last observed change; 0 if none seen",
                &[],
            ),
            last_poll: target_gauge(
                &registry,
                "calldrift_last_poll_timestamp_seconds",
                "Unix time of the last completed poll",
                &[],
            ),
            last_success: target_gauge(
                &registry,
                "calldrift_last_success_timestamp_seconds",
                "Unix time of the last authoritative answer",
                &[],
            ),
            api_error_code: target_gauge(
                &registry,
                "calldrift_api_error_code",
                "ErrorCode of the last answer: 0 ok, 100301 absent, -1 no decodable answer",
                &[],
            ),
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
            api_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "calldrift_api_request_duration_seconds",
                        "Latency of gateway requests.",
                    )
                    .buckets(vec![0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                    &["region"],
                )
                .unwrap_or_else(|e| unreachable!("{e}")),
            ),
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
            polls_skipped: counter_vec(
                &registry,
                "calldrift_polls_skipped_total",
                "Ticks skipped because the previous poll of the target was still running.",
                &TARGET_LABELS,
            ),
            reload_successful: int_gauge(
                "calldrift_config_last_reload_successful",
                "1 if the last config load or reload succeeded, else 0.",
            ),
            reload_success_time: gauge(
                "calldrift_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load or reload.",
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        // Encoding into a Vec fails only on metric families the registry would not hold.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// Creates every series of a newly configured target, at 0.
    pub fn add_target(&self, key: &TargetKey, commands: &BTreeSet<String>) {
        let labels = target_labels(key);
        let l = labels_ref(&labels);
        for vec in self.target_gauges() {
            vec.with_label_values(&l).set(0.0);
        }
        for check in Check::ALL {
            self.drift
                .with_label_values(&with(&l, check.as_str()))
                .set(0.0);
        }
        for command in commands {
            self.command_enabled
                .with_label_values(&with(&l, command))
                .set(0.0);
        }
        self.changes.with_label_values(&l).inc_by(0);
        self.polls_skipped.with_label_values(&l).inc_by(0);
    }

    /// Removes every series of a target that a reload dropped.
    pub fn remove_target(&self, key: &TargetKey, commands: &BTreeSet<String>) {
        let labels = target_labels(key);
        let l = labels_ref(&labels);
        for vec in self.target_gauges() {
            let _ = vec.remove_label_values(&l);
        }
        for check in Check::ALL {
            let _ = self.drift.remove_label_values(&with(&l, check.as_str()));
        }
        for command in commands {
            let _ = self.command_enabled.remove_label_values(&with(&l, command));
        }
        let _ = self.changes.remove_label_values(&l);
        let _ = self.polls_skipped.remove_label_values(&l);
    }

    fn target_gauges(&self) -> [&GaugeVec; 8] {
        [
            &self.up,
            &self.config_present,
            &self.url_https,
            &self.fingerprint,
            &self.last_change,
            &self.last_poll,
            &self.last_success,
            &self.api_error_code,
        ]
    }

    /// The series handles of one target, looked up once so polls need no label hashing.
    pub fn target(&self, key: &TargetKey) -> TargetMetrics {
        let labels = target_labels(key);
        let l = labels_ref(&labels);
        TargetMetrics {
            up: self.up.with_label_values(&l),
            config_present: self.config_present.with_label_values(&l),
            url_https: self.url_https.with_label_values(&l),
            fingerprint: self.fingerprint.with_label_values(&l),
            last_change: self.last_change.with_label_values(&l),
            last_poll: self.last_poll.with_label_values(&l),
            last_success: self.last_success.with_label_values(&l),
            api_error_code: self.api_error_code.with_label_values(&l),
            changes: self.changes.with_label_values(&l),
            polls_skipped: self.polls_skipped.with_label_values(&l),
            drift: Check::ALL.map(|check| self.drift.with_label_values(&with(&l, check.as_str()))),
        }
    }

    /// Sets `command_enabled` for one command word of a target.
    pub fn set_command(&self, key: &TargetKey, command: &str, enabled: bool) {
        let labels = target_labels(key);
        let l = labels_ref(&labels);
        self.command_enabled
            .with_label_values(&with(&l, command))
            .set(if enabled { 1.0 } else { 0.0 });
    }

    /// Drops the `command_enabled` series of a command word no longer observed.
    pub fn remove_command(&self, key: &TargetKey, command: &str) {
        let labels = target_labels(key);
        let l = labels_ref(&labels);
        let _ = self.command_enabled.remove_label_values(&with(&l, command));
    }
}

fn target_labels(key: &TargetKey) -> [String; 3] {
    [
        key.app.clone(),
        key.sdkappid.to_string(),
        key.region.clone(),
    ]
}

fn labels_ref(labels: &[String; 3]) -> [&str; 3] {
    [labels[0].as_str(), labels[1].as_str(), labels[2].as_str()]
}

fn with<'a>(labels: &[&'a str; 3], extra: &'a str) -> [&'a str; 4] {
    [labels[0], labels[1], labels[2], extra]
}

/// One target's series.
#[derive(Debug, Clone)]
pub struct TargetMetrics {
    pub up: Gauge,
    pub config_present: Gauge,
    pub url_https: Gauge,
    pub fingerprint: Gauge,
    pub last_change: Gauge,
    pub last_poll: Gauge,
    pub last_success: Gauge,
    pub api_error_code: Gauge,
    pub changes: IntCounter,
    pub polls_skipped: IntCounter,
    /// In the order of [`Check::ALL`].
    pub drift: [Gauge; 6],
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
        TargetKey {
            app: "a".into(),
            sdkappid: 1400000001,
            region: "china".into(),
        }
    }

    #[test]
    fn target_series_exist_at_zero_and_disappear_on_removal() {
        let m = Metrics::new("0.1.0", "abc");
        let commands: BTreeSet<String> = ["Call.CallbackAfterEndCall".to_owned()].into();
        m.add_target(&key(), &commands);
        let text = String::from_utf8(m.render()).expect("utf8");
        for line in [
            "calldrift_build_info{revision=\"abc\",version=\"0.1.0\"} 1",
            "calldrift_up{app=\"a\",region=\"china\",sdkappid=\"1400000001\"} 0",
            "calldrift_drift{app=\"a\",check=\"config_missing\",region=\"china\",sdkappid=\"1400000001\"} 0",
            "calldrift_drift{app=\"a\",check=\"command_unexpected\",region=\"china\",sdkappid=\"1400000001\"} 0",
            "calldrift_callback_command_enabled{app=\"a\",command=\"Call.CallbackAfterEndCall\",region=\"china\",sdkappid=\"1400000001\"} 0",
            "calldrift_callback_config_changes_total{app=\"a\",region=\"china\",sdkappid=\"1400000001\"} 0",
            "calldrift_polls_skipped_total{app=\"a\",region=\"china\",sdkappid=\"1400000001\"} 0",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        m.remove_target(&key(), &commands);
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(!text.contains("app=\"a\""), "{text}");
    }
}
