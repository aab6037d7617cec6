//! One connection as a load balancer in front of a gateway treats it: closed after a
//! number of answers (announced with `Connection: close`, or silently) or after being idle
//! too long; and what a request's handler may do to its connection (reset it, end with
//! shutdown).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Response;
use hyper::header::{CONNECTION, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::http::Body;
use super::scenario::humantime_optional;

/// `connections: {close_after: 100, announce: true, idle_timeout: 5s}`: when the
/// simulator closes a keep-alive connection. Only `/v4/` answers count; the `/__sim/`
/// endpoints are the simulator's own and never closed after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connections {
    /// Close a connection after this many `/v4/` answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_after: Option<u64>,
    /// Send `Connection: close` with the last answer; without it, the connection stays
    /// open and the next `/v4/` request on it is read and answered by closing the
    /// connection (no answer, a FIN): what a client meets when a balancer's close and its
    /// next request cross, far away, played every time.
    #[serde(default = "announce_by_default")]
    pub announce: bool,
    /// Close a connection without a request in progress for this long (a FIN, silently).
    #[serde(
        default,
        with = "humantime_optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Duration>,
}

fn announce_by_default() -> bool {
    true
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            close_after: None,
            announce: announce_by_default(),
            idle_timeout: None,
        }
    }
}

impl Connections {
    /// What the types cannot say: counts and timeouts are positive.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.close_after == Some(0) {
            return Err("connections.close_after must be at least 1".to_owned());
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err("connections.idle_timeout must be positive".to_owned());
        }
        Ok(())
    }
}

/// The connection a request arrived on, as its handler may affect it.
#[derive(Clone)]
pub(super) struct Connection {
    /// Cancelled when the simulator shuts down; hangs and delays end with it.
    pub(super) shutdown: CancellationToken,
    /// Set to close the socket with an RST instead of a FIN.
    pub(super) reset: Arc<AtomicBool>,
    policy: Connections,
    /// `/v4/` answers sent on this connection.
    answered: Arc<AtomicU64>,
    activity: Arc<Mutex<Activity>>,
}

/// Requests in progress, and since when there has been none.
struct Activity {
    busy: usize,
    idle_since: Instant,
}

/// Marks a request in progress until dropped.
pub(super) struct Busy(Arc<Mutex<Activity>>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut activity = self.0.lock().unwrap_or_else(|p| p.into_inner());
        activity.busy = activity.busy.saturating_sub(1);
        activity.idle_since = Instant::now();
    }
}

impl Connection {
    pub(super) fn new(
        shutdown: CancellationToken,
        reset: Arc<AtomicBool>,
        policy: Connections,
    ) -> Connection {
        Connection {
            shutdown,
            reset,
            policy,
            answered: Arc::new(AtomicU64::new(0)),
            activity: Arc::new(Mutex::new(Activity {
                busy: 0,
                idle_since: Instant::now(),
            })),
        }
    }

    /// Marks a request in progress (so the idle timeout waits for it) until dropped.
    pub(super) fn busy(&self) -> Busy {
        self.activity.lock().unwrap_or_else(|p| p.into_inner()).busy += 1;
        Busy(self.activity.clone())
    }

    /// Whether the connection has given its last answer without saying so: the next
    /// `/v4/` request on it is to be met with a close.
    pub(super) fn silently_spent(&self) -> bool {
        !self.policy.announce
            && self
                .policy
                .close_after
                .is_some_and(|k| self.answered.load(Ordering::SeqCst) >= k)
    }

    /// Counts a `/v4/` answer; the last one, when announced, says `Connection: close`
    /// (and hyper closes the connection once it is sent).
    pub(super) fn count_answer(&self, answer: &mut Response<Body>) {
        let n = self.answered.fetch_add(1, Ordering::SeqCst) + 1;
        if self.policy.announce && self.policy.close_after.is_some_and(|k| n >= k) {
            answer
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
    }

    /// Completes once the connection has been idle (no request in progress) for the
    /// policy's `idle_timeout`; never without one.
    pub(super) async fn idle_expired(&self) {
        let Some(timeout) = self.policy.idle_timeout else {
            return std::future::pending().await;
        };
        loop {
            let (busy, idle_since) = {
                let activity = self.activity.lock().unwrap_or_else(|p| p.into_inner());
                (activity.busy, activity.idle_since)
            };
            let deadline = idle_since + timeout;
            if busy == 0 && Instant::now() >= deadline {
                return;
            }
            // Busy: look again a timeout later (it ends, then idles at least that long).
            let wake = if busy == 0 {
                deadline
            } else {
                Instant::now() + timeout
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::harness::*;
    use hyper::Method;

    fn closing(close_after: Option<u64>, announce: bool, idle: Option<Duration>) -> Connections {
        Connections {
            close_after,
            announce,
            idle_timeout: idle,
        }
    }

    async fn server(connections: Connections) -> Server {
        let mut scenario = scenario();
        scenario.connections = connections;
        Server::start(scenario).await
    }

    #[tokio::test]
    async fn an_announced_close_comes_with_the_last_answer() {
        let server = server(closing(Some(3), true, None)).await;
        let uri = good_uri("get_callback", CLEAN);
        let mut conn = Conn::open(server.addr).await;
        // Control requests are the simulator's own: they do not count.
        let stats = conn.send(Method::GET, "/__sim/stats", "").await.unwrap();
        assert_eq!(stats.connection, None);
        for n in 1..=3 {
            let resp = conn.send(Method::POST, &uri, "{}").await.unwrap();
            assert_eq!(resp.code(), 0);
            let expected = (n == 3).then(|| "close".to_owned());
            assert_eq!(resp.connection, expected, "answer {n}");
        }
        assert!(conn.send(Method::POST, &uri, "{}").await.is_err());
        let fresh = get(server.addr, CLEAN).await;
        assert_eq!(fresh.code(), 0);
        let stats = server.sim.stats();
        assert_eq!(stats.requests_total, 4);
        assert_eq!(stats.connections_accepted, 2);
        assert_eq!(stats.tls_handshakes, 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn a_silent_close_meets_the_next_request_with_eof() {
        let server = server(closing(Some(3), false, None)).await;
        let uri = good_uri("get_callback", CLEAN);
        let mut conn = Conn::open(server.addr).await;
        for _ in 0..3 {
            let resp = conn.send(Method::POST, &uri, "{}").await.unwrap();
            assert_eq!((resp.code(), resp.connection), (0, None));
        }
        // The connection still looks open; the request sent on it gets no answer.
        assert!(!conn.0.is_closed());
        let err = conn.send(Method::POST, &uri, "{}").await.err().unwrap();
        assert!(err.is_incomplete_message(), "{err:?}");
        assert_eq!(
            server.sim.stats().requests_total,
            3,
            "a request met with a close was never handled"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
        let server = server(closing(None, true, Some(Duration::from_millis(150)))).await;
        let delay = crate::sim::FaultKind::Delay {
            delay: Duration::from_millis(400),
        };
        server.sim.set_faults(vec![fault(delay, Some(1))]);
        let uri = good_uri("get_callback", CLEAN);
        let mut conn = Conn::open(server.addr).await;
        // A request longer than the idle timeout is answered: it is not idleness.
        assert_eq!(conn.send(Method::POST, &uri, "{}").await.unwrap().code(), 0);
        let closed = async {
            while !conn.0.is_closed() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("the idle connection is closed");
        server.stop().await;
    }
}
