//! `poll:` and `rate_limit:`, whether a poll ends before the next is due, and whether the
//! interval can be met at that rate.

use std::time::Duration;

use super::durations::{POLL_INTERVAL, POLL_TIMEOUT, duration};
use crate::config::raw::{RawPoll, RawRateLimit};
use crate::config::{Config, Diagnostics, Poll, RateLimit};

/// The most requests the default in-flight bound allows: with a hung gateway, each holds a
/// connection and a few tens of KiB until `poll.timeout`, so the bound is also the most
/// memory a slow gateway can make calldrift hold for its polls.
pub const MAX_DEFAULT_IN_FLIGHT: usize = 1024;

/// The default in-flight bound: enough requests in flight to keep `per_second` calls a
/// second going while each takes up to `timeout` (throughput is in-flight / round trip),
/// 16 at least and [`MAX_DEFAULT_IN_FLIGHT`] at most. 1,000 with the defaults, so the full
/// 200 calls/s hold at any round trip up to 5 s.
pub fn default_in_flight(per_second: u32, timeout: Duration) -> usize {
    let needed = (f64::from(per_second) * timeout.as_secs_f64()).ceil();
    (needed as usize).clamp(16, MAX_DEFAULT_IN_FLIGHT)
}

/// `poll:`, every key defaulted; `max_concurrency` from the rate and the timeout unless set.
pub(super) fn poll(raw: RawPoll, rate: &RateLimit, diagnostics: &mut Diagnostics) -> Poll {
    let errors_before = diagnostics.error_count();
    let timeout_written = raw.timeout.is_some();
    let poll = Poll {
        interval: duration(
            diagnostics,
            "poll.interval",
            raw.interval.as_deref(),
            Duration::from_secs(60),
            &POLL_INTERVAL,
        ),
        timeout: duration(
            diagnostics,
            "poll.timeout",
            raw.timeout.as_deref(),
            Duration::from_secs(5),
            &POLL_TIMEOUT,
        ),
        retries: raw.retries.unwrap_or(2),
        max_concurrency: 0,
    };
    let poll = Poll {
        max_concurrency: match raw.max_concurrency {
            Some(n) => {
                warn_if_in_flight_too_low(n as usize, &poll, rate, diagnostics);
                n as usize
            }
            None => default_in_flight(rate.per_second, poll.timeout),
        },
        ..poll
    };
    // A duration in error stands in as its default; comparing that would mislead.
    if diagnostics.error_count() == errors_before {
        warn_if_timeout_not_shorter(&poll, timeout_written, diagnostics);
    }
    if poll.retries > 10 {
        diagnostics.error(
            "poll.retries",
            "poll.retries: at most 10 (each retry is another call against the rate limit)",
        );
    }
    if poll.max_concurrency == 0 {
        diagnostics.error(
            "poll.max_concurrency",
            "poll.max_concurrency must be at least 1",
        );
    }
    poll
}

/// Warns when an explicit `max_concurrency` cannot keep the rate up while requests take as
/// long as `poll.timeout` allows.
fn warn_if_in_flight_too_low(
    in_flight: usize,
    poll: &Poll,
    rate: &RateLimit,
    diagnostics: &mut Diagnostics,
) {
    let needed = default_in_flight(rate.per_second, poll.timeout);
    let reached = in_flight as f64 / poll.timeout.as_secs_f64();
    if in_flight == 0 || reached >= f64::from(rate.per_second) {
        return;
    }
    let round_trip = Duration::from_millis(
        (in_flight as f64 * 1000.0 / f64::from(rate.per_second.max(1))) as u64,
    );
    diagnostics.warning(
        "poll.max_concurrency",
        format!(
            "poll.max_concurrency {in_flight} keeps {} calls/s only while answers take under {}, and poll.timeout allows {}: throughput is requests in flight / round trip; leave max_concurrency out to size it from the rate and the timeout ({needed} here)",
            rate.per_second,
            humantime::format_duration(round_trip),
            humantime::format_duration(poll.timeout),
        ),
    );
}

/// Warns when `poll.timeout` is not shorter than `poll.interval`: a poll can still be
/// running when the target's next one is due, and that tick is skipped.
fn warn_if_timeout_not_shorter(poll: &Poll, timeout_written: bool, diagnostics: &mut Diagnostics) {
    if poll.timeout < poll.interval {
        return;
    }
    let default = if timeout_written {
        ""
    } else {
        " (the default)"
    };
    diagnostics.warning(
        "poll.timeout",
        format!(
            "poll.timeout {}{default} is not shorter than poll.interval {}: a poll may still be running when the next one is due, and that tick is skipped",
            humantime::format_duration(poll.timeout),
            humantime::format_duration(poll.interval),
        ),
    );
}

/// `rate_limit:`, both limits 200 calls per second by default.
pub(super) fn rate_limit(raw: RawRateLimit, diagnostics: &mut Diagnostics) -> RateLimit {
    let rate_limit = RateLimit {
        per_second: raw.per_second.unwrap_or(200),
        per_app_per_second: raw.per_app_per_second.unwrap_or(200),
    };
    if rate_limit.per_second == 0 {
        diagnostics.error(
            "rate_limit.per_second",
            "rate_limit.per_second must be at least 1",
        );
    }
    if rate_limit.per_app_per_second == 0 {
        diagnostics.error(
            "rate_limit.per_app_per_second",
            "rate_limit.per_app_per_second must be at least 1",
        );
    }
    if rate_limit.per_app_per_second > 200 {
        diagnostics.warning("rate_limit.per_app_per_second", "rate_limit.per_app_per_second above 200: the gateway answers 60011 past 200 calls per second per app");
    }
    rate_limit
}

/// Warns when one round over every target at the global rate takes longer than
/// `poll.interval`, saying what interval will really be achieved.
pub(super) fn warn_if_interval_unmet(config: &Config, diagnostics: &mut Diagnostics) {
    let effective = config.effective_interval();
    if effective > config.poll.interval {
        diagnostics.warning(
            "poll.interval",
            format!(
                "poll.interval {} cannot be met: {} targets at {} calls/s need {}; each target will be polled every {}",
                humantime::format_duration(config.poll.interval),
                config.target_count(),
                config.rate_limit.per_second,
                humantime::format_duration(round_secs(effective)),
                humantime::format_duration(round_secs(effective)),
            ),
        );
    }
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().ceil() as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::default_in_flight;
    use crate::config::tests::{APP, errors, parse_text};

    /// The warnings of `poll` (the lines under `poll:`) with one valid app, as printed.
    fn poll_warnings(poll: &str) -> Vec<String> {
        let text = format!("poll:\n{poll}{APP}");
        let (_, warnings) = parse_text(&text).expect("warnings only");
        warnings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_timeout_not_shorter_than_the_interval_is_a_warning_at_the_timeout() {
        let skipped =
            "a poll may still be running when the next one is due, and that tick is skipped";
        assert_eq!(
            poll_warnings("  interval: 10s\n  timeout: 10s\n"),
            vec![format!(
                "c.yaml:3:12: warning: poll.timeout 10s is not shorter than poll.interval 10s: {skipped}"
            )]
        );
        assert_eq!(
            poll_warnings("  timeout: 2m\n  interval: 1m\n"),
            vec![format!(
                "c.yaml:2:12: warning: poll.timeout 2m is not shorter than poll.interval 1m: {skipped}"
            )]
        );
        // Not written, the default 5s is compared, and the warning sits where `poll:` starts.
        assert_eq!(
            poll_warnings("  interval: 5s\n"),
            vec![format!(
                "c.yaml:2:3: warning: poll.timeout 5s (the default) is not shorter than poll.interval 5s: {skipped}"
            )]
        );
        assert!(poll_warnings("  interval: 10s\n  timeout: 9s\n").is_empty());
        assert!(poll_warnings("  interval: 5s\n  timeout: 4999ms\n").is_empty());
    }

    #[test]
    fn no_timeout_warning_beside_an_invalid_duration() {
        // The invalid interval stands in as 60s; comparing 90s with it would mislead.
        let all = errors("poll:\n  interval: soon\n  timeout: 90s\n");
        assert!(all.iter().all(|e| !e.contains("not shorter")), "{all:?}");
    }

    #[test]
    fn the_default_in_flight_bound_follows_rate_and_timeout() {
        let s = Duration::from_secs;
        for (per_second, timeout, bound) in [
            (200, s(5), 1000),
            (200, s(1), 200),
            (200, Duration::from_millis(250), 50),
            (10, s(1), 16),
            (200, s(300), 1024),
            (u32::MAX, s(300), 1024),
        ] {
            assert_eq!(
                default_in_flight(per_second, timeout),
                bound,
                "{per_second}/s, {timeout:?}"
            );
        }
    }

    #[test]
    fn an_explicit_in_flight_bound_too_low_for_the_rate_warns_at_its_line() {
        let app =
            "apps:\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: K\n";
        let warned = |text: &str| {
            let (_, warnings) = parse_text(text).expect("warnings only");
            warnings
                .iter()
                .map(ToString::to_string)
                .find(|w| w.contains("poll.max_concurrency"))
        };
        let low = warned(&format!("poll:\n  max_concurrency: 16\n{app}")).expect("a warning");
        assert!(
            low.starts_with("c.yaml:2:20: ")
                && low.contains("keeps 200 calls/s only while answers take under 80ms")
                && low.contains("(1000 here)"),
            "{low}"
        );
        assert_eq!(
            warned(&format!("poll:\n  max_concurrency: 1000\n{app}")),
            None
        );
        assert_eq!(warned(app), None);
        let (config, _) = parse_text(app).expect("valid");
        assert_eq!(config.poll.max_concurrency, 1000);
    }

    #[test]
    fn warnings_for_unmeetable_interval_inline_secret_and_unknown_command() {
        let text = "poll:\n  interval: 1s\nrate_limit:\n  per_second: 1\napps:\n  - name: a\n    sdkappid: 1\n    regions: [china, tokyo]\n    secret_key: abc\n    expect:\n      commands: [Call.Future]\n";
        let (_, warnings) = parse_text(text).expect("warnings only");
        let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|w| w
                    .contains("poll.interval 1s cannot be met: 2 targets at 1 calls/s need 2s")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|w| w.contains("inline secret_key")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|w| w.contains("\"Call.Future\" is not one of the documented")),
            "{text:?}"
        );
    }
}
