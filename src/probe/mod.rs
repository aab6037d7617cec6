//! Callback endpoint health: DNS, the TLS handshake and the certificates' expiry of every
//! distinct `host:port` among the observed `https` callback URLs. No HTTP request is sent.
//!
//! - `schedule`: which endpoints are due, deduplicated, without IO or a clock (table-tested);
//! - `address`: which addresses are refused unless `allow_private` is set;
//! - `cert`: the earliest notAfter of the presented chain, recorded even when
//!   verification fails;
//! - `handshake`: one probe (resolve, connect, handshake, close) within a timeout;
//! - `task`: the daemon's loop over the schedule, with its own bound on concurrency.
//!
//! **Invariant:** probes never pass the gateway's rate limiter and never delay polls; a
//! probe connects to no address in a refused range unless `allow_private` is set.

mod address;
mod cert;
mod handshake;
mod schedule;
mod task;

use std::fmt;

pub use self::address::is_refused;
pub use self::cert::not_after;
pub use self::handshake::{ProbeError, Prober};
pub use self::schedule::Schedule;
pub use self::task::{MAX_IN_FLIGHT, ProbeTargets, run};

/// Why a probe failed: the `reason` label of `calldrift_callback_endpoint_probe_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Dns,
    Connect,
    Timeout,
    TlsHandshake,
    TlsVerify,
    BlockedAddress,
}

impl Reason {
    /// Every reason, in the order metrics render them.
    pub const ALL: [Reason; 6] = [
        Reason::Dns,
        Reason::Connect,
        Reason::Timeout,
        Reason::TlsHandshake,
        Reason::TlsVerify,
        Reason::BlockedAddress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Dns => "dns",
            Reason::Connect => "connect",
            Reason::Timeout => "timeout",
            Reason::TlsHandshake => "tls_handshake",
            Reason::TlsVerify => "tls_verify",
            Reason::BlockedAddress => "blocked_address",
        }
    }

    /// The position of this reason in [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `host:port` a callback URL points at; the host lower-case, IPv6 in brackets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// The endpoint of an `https` URL; `None` for any other scheme or an unparsable URL.
    pub fn of_url(url: &str) -> Option<Endpoint> {
        let parsed = url::Url::parse(url).ok()?;
        if parsed.scheme() != "https" {
            return None;
        }
        let host = match parsed.host()? {
            url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => format!("[{ip}]"),
        };
        if host.is_empty() {
            return None;
        }
        Some(Endpoint {
            host,
            port: parsed.port_or_known_default()?,
        })
    }

    /// The host as an IP address, when it is written as one.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// Unix time the probe finished.
    pub at: f64,
    /// `None` when the handshake verified.
    pub failure: Option<Reason>,
    /// Unix time of the earliest notAfter among the certificates presented, if any were.
    pub not_after: Option<f64>,
    /// What went wrong, for logs and reports (never a label).
    pub detail: Option<String>,
}

impl ProbeResult {
    /// True when the handshake verified.
    pub fn up(&self) -> bool {
        self.failure.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_of_urls() {
        let cases = [
            (
                "https://Hooks.Example.com/cb?sig=1",
                Some(("hooks.example.com", 443)),
            ),
            (
                "https://user:pw@hooks.example.com:8443/cb",
                Some(("hooks.example.com", 8443)),
            ),
            ("https://10.0.0.1/cb", Some(("10.0.0.1", 443))),
            ("https://[::1]:9000/cb", Some(("[::1]", 9000))),
            ("https://example.com./cb", Some(("example.com", 443))),
            ("http://hooks.example.com/cb", None),
            ("not a url", None),
        ];
        for (url, want) in cases {
            let got = Endpoint::of_url(url);
            let want = want.map(|(h, p)| Endpoint {
                host: h.to_owned(),
                port: p,
            });
            assert_eq!(got, want, "{url}");
        }
        let v6 = Endpoint::of_url("https://[::1]:9000/").unwrap();
        assert_eq!(v6.ip(), Some("::1".parse().unwrap()));
        assert_eq!(v6.to_string(), "[::1]:9000");
        assert_eq!(Endpoint::of_url("https://a.example/").unwrap().ip(), None);
    }

    #[test]
    fn reasons_index_their_place_in_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
