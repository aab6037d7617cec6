//! `poll:` and `rate_limit:`, whether a poll ends before the next is due, and whether the
//! interval can be met at that rate.

use std::time::Duration;

use super::durations::{POLL_INTERVAL, POLL_TIMEOUT, duration};
use crate::config::raw::{RawPoll, RawRateLimit};
use crate::config::{Config, Diagnostics, Poll, RateLimit};

/// `poll:`, every key defaulted.
pub(super) fn poll(raw: RawPoll, diagnostics: &mut Diagnostics) -> Poll {
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
        max_concurrency: raw.max_concurrency.unwrap_or(16) as usize,
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
