//! Request counting: every `/v4/` request, in total and per app, and the largest count of
//! arrivals lying less than one second apart (a sliding window, not aligned seconds);
//! connections accepted and TLS handshakes completed; write requests per app and API.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Simulator;

const WINDOW: Duration = Duration::from_secs(1);

/// What `GET /__sim/stats` reports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SimStats {
    /// Requests under `/v4/`, malformed ones included.
    pub requests_total: u64,
    /// Requests refused as not well formed (60002, 60003, 60009, 60012, 100002).
    pub malformed_requests: u64,
    /// The most `/v4/` requests that arrived less than one second apart.
    pub max_requests_in_any_second: u64,
    /// TCP connections accepted.
    #[serde(default)]
    pub connections_accepted: u64,
    /// TLS handshakes completed (0 without TLS).
    #[serde(default)]
    pub tls_handshakes: u64,
    /// Well-formed write requests (set, update, delete) to a known app, whatever their
    /// answer.
    #[serde(default)]
    pub writes_total: u64,
    /// Per app, keyed by SDKAppID in decimal.
    pub apps: BTreeMap<String, AppStats>,
}

/// One app's share of [`SimStats`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppStats {
    pub requests: u64,
    pub max_requests_in_any_second: u64,
    /// Requests answered 60011.
    pub rate_limited: u64,
    /// Well-formed write requests by API (`room_config/update_callback`), whatever their
    /// answer; empty when nothing was asked to change.
    #[serde(default)]
    pub writes: BTreeMap<String, u64>,
}

/// Arrival times of the trailing second, and the largest count ever seen in it.
#[derive(Debug, Default)]
struct RateWindow {
    arrivals: VecDeque<Instant>,
    max: u64,
}

impl RateWindow {
    /// Records an arrival; returns how many arrivals lie in the second up to `now`, this
    /// one included. `now` must not go backwards.
    fn record(&mut self, now: Instant) -> u64 {
        while let Some(front) = self.arrivals.front() {
            if now.saturating_duration_since(*front) >= WINDOW {
                self.arrivals.pop_front();
            } else {
                break;
            }
        }
        self.arrivals.push_back(now);
        let n = self.arrivals.len() as u64;
        self.max = self.max.max(n);
        n
    }
}

/// The gateway's counters over all apps.
#[derive(Debug, Default)]
pub(super) struct Totals {
    requests: u64,
    malformed: u64,
    window: RateWindow,
    connections: u64,
    tls_handshakes: u64,
    writes: u64,
}

/// One app's counters.
#[derive(Debug, Default)]
pub(super) struct AppCounts {
    requests: u64,
    rate_limited: u64,
    window: RateWindow,
    writes: BTreeMap<String, u64>,
}

impl AppCounts {
    /// Counts a request answered 60011.
    pub(super) fn record_rate_limited(&mut self) {
        self.rate_limited += 1;
    }
}

impl Simulator {
    /// The same data as `GET /__sim/stats`.
    pub fn stats(&self) -> SimStats {
        let st = self.lock();
        SimStats {
            requests_total: st.totals.requests,
            malformed_requests: st.totals.malformed,
            max_requests_in_any_second: st.totals.window.max,
            connections_accepted: st.totals.connections,
            tls_handshakes: st.totals.tls_handshakes,
            writes_total: st.totals.writes,
            apps: st
                .apps
                .iter()
                .map(|(id, app)| {
                    let stats = AppStats {
                        requests: app.counts.requests,
                        max_requests_in_any_second: app.counts.window.max,
                        rate_limited: app.counts.rate_limited,
                        writes: app.counts.writes.clone(),
                    };
                    (id.to_string(), stats)
                })
                .collect(),
        }
    }

    /// Counts an arrival; returns the app's count in the trailing second if the
    /// `sdkappid` parameter names a known app.
    pub(super) fn record_arrival(&self, sdkappid: Option<u64>) -> Option<u64> {
        let mut st = self.lock();
        let now = Instant::now();
        st.totals.requests += 1;
        st.totals.window.record(now);
        let app = st.apps.get_mut(&sdkappid?)?;
        app.counts.requests += 1;
        Some(app.counts.window.record(now))
    }

    /// Counts a well-formed write request (`family/api`, e.g. `call_config/set_callback`)
    /// to a known app.
    pub(super) fn record_write(&self, sdkappid: u64, api: String) {
        let mut st = self.lock();
        let Some(app) = st.apps.get_mut(&sdkappid) else {
            return;
        };
        *app.counts.writes.entry(api).or_default() += 1;
        st.totals.writes += 1;
    }

    /// Counts a request refused as not well formed.
    pub(super) fn record_malformed(&self) {
        self.lock().totals.malformed += 1;
    }

    /// Counts a TCP connection accepted.
    pub(super) fn record_connection(&self) {
        self.lock().totals.connections += 1;
    }

    /// Counts a TLS handshake completed.
    pub(super) fn record_tls_handshake(&self) {
        self.lock().totals.tls_handshakes += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::harness::*;
    use hyper::Method;

    #[tokio::test]
    async fn per_app_limit_answers_60011_and_burst_max_is_exact() {
        let server = Server::start(scenario()).await;
        let uri = good_uri("get_callback", CLEAN);
        let mut conn = Conn::open(server.addr).await;
        let started = Instant::now();
        let mut codes = Vec::new();
        for _ in 0..250 {
            codes.push(conn.send(Method::POST, &uri, "{}").await.unwrap().code());
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(900),
            "burst too slow to be exact: {elapsed:?}"
        );
        assert!(codes[..200].iter().all(|c| *c == 0));
        assert!(codes[200..].iter().all(|c| *c == 60011));
        // The other app has its own budget.
        assert_eq!(get_code(server.addr, BARE).await, 100301);
        let stats = server.sim.stats();
        let clean = &stats.apps[&CLEAN.to_string()];
        assert_eq!(clean.requests, 250);
        assert_eq!(clean.max_requests_in_any_second, 250);
        assert_eq!(clean.rate_limited, 50);
        assert_eq!(stats.apps[&BARE.to_string()].max_requests_in_any_second, 1);
        assert_eq!(stats.max_requests_in_any_second, 251);
        assert_eq!(stats.malformed_requests, 0);
        server.stop().await;
    }

    #[test]
    fn rate_window_slides_instead_of_aligning_to_seconds() {
        let base = Instant::now();
        let mut window = RateWindow::default();
        // 100 requests in [0.6 s, 0.99 s] and 100 in [1.0 s, 1.39 s]: aligned seconds would
        // see 100 each; a sliding window sees 200.
        for i in 0..100u64 {
            window.record(base + Duration::from_millis(600 + i * 4));
        }
        for i in 0..100u64 {
            window.record(base + Duration::from_millis(1000 + i * 4));
        }
        assert_eq!(window.max, 200);
        // Exactly one second apart no longer counts together.
        let mut window = RateWindow::default();
        assert_eq!(window.record(base), 1);
        assert_eq!(window.record(base + Duration::from_millis(999)), 2);
        assert_eq!(window.record(base + Duration::from_millis(1000)), 2);
        assert_eq!(window.record(base + Duration::from_millis(5000)), 1);
        assert_eq!(window.arrivals.len(), 1, "memory stays bounded");
        assert_eq!(window.max, 2);
    }
}
