//! Durations as written: humantime strings (`30s`, `5m`, `1h30m`), each longer than zero
//! and no longer than its key's bound. A value humantime cannot represent is an invalid
//! duration like any other.

use std::time::Duration;

use crate::config::Diagnostics;

/// The longest value a duration key accepts, as written in its error, and why.
pub(super) struct Longest {
    pub(super) limit: Duration,
    pub(super) written: &'static str,
    pub(super) why: &'static str,
}

/// `poll.interval`: calldrift exists to notice drift; a monitor that looks less often than
/// daily is not monitoring, and a longer value is a typo (`1000000000h`).
pub(super) const POLL_INTERVAL: Longest = Longest {
    limit: Duration::from_secs(24 * 3600),
    written: "24h",
    why: "a drift monitor that looks less than daily is not monitoring",
};

/// `poll.timeout`: a gateway call unanswered after five minutes will not be answered, and
/// shutdown waits up to this long for polls in flight.
pub(super) const POLL_TIMEOUT: Longest = Longest {
    limit: Duration::from_secs(5 * 60),
    written: "5m",
    why: "a call unanswered after 5 minutes will not be answered, and shutdown waits this long for polls in flight",
};

/// `usersig_ttl`: Tencent's own UserSig tools mint them for 180 days at most.
pub(super) const USERSIG_TTL: Longest = Longest {
    limit: Duration::from_secs(180 * 86_400),
    written: "180d",
    why: "Tencent's own tools mint UserSigs for 180 days at most",
};

/// The duration at `path`, `raw` as written; `default` when not written or in error.
pub(super) fn duration(
    diagnostics: &mut Diagnostics,
    path: &str,
    raw: Option<&str>,
    default: Duration,
    longest: &Longest,
) -> Duration {
    let Some(text) = raw else { return default };
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            diagnostics.error(path, format!("{path} must be longer than zero"));
            default
        }
        Ok(d) if d > longest.limit => {
            diagnostics.error(
                path,
                format!(
                    "{path} must be at most {} ({}), not {text}",
                    longest.written, longest.why
                ),
            );
            default
        }
        Ok(d) => d,
        Err(e) => {
            diagnostics.error(
                path,
                format!("{path}: invalid duration {text:?} ({e}); use e.g. 30s, 5m, 1h30m"),
            );
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{APP, errors, parse_text};

    #[test]
    fn each_duration_is_bounded_at_its_place_naming_key_and_bound() {
        let cases = [
            (
                "poll:\n  interval: 1000000000h\n",
                "c.yaml:2:13: poll.interval must be at most 24h (a drift monitor that looks less than daily is not monitoring), not 1000000000h",
            ),
            (
                "poll:\n  timeout: 1000000000h\n",
                "c.yaml:2:12: poll.timeout must be at most 5m (a call unanswered after 5 minutes will not be answered, and shutdown waits this long for polls in flight), not 1000000000h",
            ),
            (
                "poll:\n  interval: 24h 1s\n",
                "c.yaml:2:13: poll.interval must be at most 24h",
            ),
            (
                "poll:\n  timeout: 301s\n",
                "c.yaml:2:12: poll.timeout must be at most 5m",
            ),
        ];
        for (settings, want) in cases {
            let all = errors(&format!("{settings}{APP}"));
            assert_eq!(all.len(), 1, "{all:?}");
            assert!(all[0].starts_with(want), "{all:?}");
        }
        let all = errors(&format!("{APP}    usersig_ttl: 100000000000d\n"));
        assert_eq!(
            all,
            [
                "c.yaml:6:18: apps[0].usersig_ttl must be at most 180d (Tencent's own tools mint UserSigs for 180 days at most), not 100000000000d"
            ]
        );
        let all = errors(&format!("{APP}    usersig_ttl: 181d\n"));
        assert!(
            all[0].starts_with("c.yaml:6:18: apps[0].usersig_ttl must be at most 180d"),
            "{all:?}"
        );
    }

    #[test]
    fn the_bounds_themselves_are_valid() {
        let text = format!("poll:\n  interval: 24h\n  timeout: 5m\n{APP}    usersig_ttl: 180d\n");
        let (config, _) = parse_text(&text).expect("valid");
        assert_eq!(config.poll.interval.as_secs(), 86_400);
        assert_eq!(config.poll.timeout.as_secs(), 300);
        assert_eq!(config.apps[0].usersig_ttl.as_secs(), 180 * 86_400);
    }

    #[test]
    fn the_minimums_stay() {
        let all = errors(&format!(
            "poll:\n  interval: 0s\n  timeout: 0ms\n{APP}    usersig_ttl: 4m\n"
        ));
        assert_eq!(
            all,
            [
                "c.yaml:2:13: poll.interval must be longer than zero",
                "c.yaml:3:12: poll.timeout must be longer than zero",
                "c.yaml:9:18: app a: usersig_ttl must be at least 5m (Tencent advises 24h)",
            ]
        );
    }

    #[test]
    fn a_duration_humantime_cannot_represent_is_an_error_not_a_panic() {
        for text in [
            "99999999999999999999y",
            "18446744073709551616s",
            "600000000000y",
        ] {
            for key in ["poll:\n  interval", "poll:\n  timeout"] {
                let all = errors(&format!("{key}: {text}\n{APP}"));
                assert_eq!(all.len(), 1, "{all:?}");
                assert!(all[0].contains("invalid duration"), "{all:?}");
            }
            let all = errors(&format!("{APP}    usersig_ttl: {text}\n"));
            assert!(
                all[0].starts_with("c.yaml:6:18: apps[0].usersig_ttl: invalid duration"),
                "{all:?}"
            );
        }
    }
}
