//! `endpoint_probe:`: every key defaulted; the interval and timeout bounded like the poll's.

use std::time::Duration;

use super::durations::{Longest, duration};
use crate::config::raw::RawEndpointProbe;
use crate::config::{Diagnostics, EndpointProbe};

/// `endpoint_probe.interval`: certificates are issued for days; looking less than daily
/// would miss the last day of one.
const PROBE_INTERVAL: Longest = Longest {
    limit: Duration::from_secs(24 * 3600),
    written: "24h",
    why: "a certificate's last day would pass unseen",
};

/// `endpoint_probe.timeout`: a handshake unanswered after a minute will not be answered.
const PROBE_TIMEOUT: Longest = Longest {
    limit: Duration::from_secs(60),
    written: "1m",
    why: "a handshake unanswered after a minute will not be answered",
};

/// `endpoint_probe:`, every key defaulted.
pub(super) fn endpoint_probe(
    raw: RawEndpointProbe,
    diagnostics: &mut Diagnostics,
) -> EndpointProbe {
    let default = EndpointProbe::default();
    EndpointProbe {
        enabled: raw.enabled.unwrap_or(default.enabled),
        interval: duration(
            diagnostics,
            "endpoint_probe.interval",
            raw.interval.as_deref(),
            default.interval,
            &PROBE_INTERVAL,
        ),
        timeout: duration(
            diagnostics,
            "endpoint_probe.timeout",
            raw.timeout.as_deref(),
            default.timeout,
            &PROBE_TIMEOUT,
        ),
        allow_private: raw.allow_private.unwrap_or(default.allow_private),
        ca_file: raw.ca_file,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::{APP, errors, parse_text};

    fn parse(text: &str) -> crate::config::EndpointProbe {
        parse_text(text).expect("valid").0.endpoint_probe
    }

    #[test]
    fn defaults_and_written_values() {
        let apps = APP;
        let d = parse(apps);
        assert!(d.enabled && !d.allow_private && d.ca_file.is_none());
        assert_eq!(
            (d.interval, d.timeout),
            (Duration::from_secs(300), Duration::from_secs(10))
        );
        let w = parse(&format!(
            "endpoint_probe:\n  enabled: false\n  interval: 1m\n  timeout: 2s\n  allow_private: true\n  ca_file: /etc/ca.pem\n{apps}"
        ));
        assert!(!w.enabled && w.allow_private);
        assert_eq!(w.interval, Duration::from_secs(60));
        assert_eq!(w.timeout, Duration::from_secs(2));
        assert_eq!(
            w.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
    }

    #[test]
    fn bad_values_and_unknown_keys_are_errors() {
        let all = errors("endpoint_probe:\n  interval: 0s\n  timeout: 2h\n  port: 1\n");
        for want in [
            "endpoint_probe.interval must be longer than zero",
            "endpoint_probe.timeout must be at most 1m",
            "endpoint_probe.port",
        ] {
            assert!(all.iter().any(|e| e.contains(want)), "{want} in {all:#?}");
        }
    }
}
