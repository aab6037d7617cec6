//! The REST gateway client: `get_callback` of the target's product family
//! (`v4/{call,room,live}_config/get_callback`) for one target, with UserSig handling,
//! retries, the rate limiter, a capped body and lenient decoding; and its writes
//! (`write.rs`: set, update, delete, never retried).
//!
//! **Invariant:** every HTTP attempt, retries included, first passes
//! [`RateLimits::acquire`]; a poll reports an authoritative answer only for ErrorCode 0
//! with a `Response`, or ErrorCode 100301.

mod answer;
mod deadlines;
mod target;
pub mod transport;
pub mod usersig;
mod write;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT as USER_AGENT_HEADER};
use rand::Rng;

use crate::clock::{Clock, later};
use crate::config::Config;
use crate::drift::Observed;
use crate::ratelimit::RateLimits;
use answer::USERSIG_EXPIRED;
pub use answer::{
    ApiAnswer, CODE_NO_CONFIG, LastResponse, PollError, PollOutcome, decode_get_callback,
    decode_get_callback_after, decode_write,
};
use deadlines::Deadlines;
pub use target::{BaseUrls, Target, targets};
#[cfg(not(feature = "reqwest-transport"))]
use transport::Http;
pub use write::{CODE_CONFIG_EXISTS, WriteApi, WriteError, WriteOutcome, Written};
// The benchmark's comparison with reqwest (`--features reqwest-transport`).
#[cfg(feature = "reqwest-transport")]
use transport::reqwest_http::Http;

/// Response bodies larger than this are rejected without being read whole.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("calldrift/", env!("CARGO_PKG_VERSION"));

/// Headers of every request besides `Host`.
static REQUEST_HEADERS: [(HeaderName, HeaderValue); 2] = [
    (CONTENT_TYPE, HeaderValue::from_static("application/json")),
    (USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT)),
];

/// How long an app is held back after the gateway says it is over its limit.
const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);
/// After this many transport failures in a row on a primary domain, use the backup.
const FAILOVER_AFTER: u32 = 2;
/// How long the backup domain is used before the primary is tried again.
const FAILOVER_FOR: Duration = Duration::from_secs(300);

/// Receives one call per HTTP request, for metrics. The client knows nothing of Prometheus.
pub trait RequestObserver: Send + Sync {
    /// `failure` is the bounded reason of a failed request, `None` for an answer that decoded.
    fn request_done(&self, region: &str, elapsed: Duration, failure: Option<&'static str>);
    /// Time a poll spent waiting for the rate limiter.
    fn rate_limit_wait(&self, waited: Duration);
}

/// An observer that ignores everything, for `check` and tests.
#[derive(Debug, Default)]
pub struct NoObserver;

impl RequestObserver for NoObserver {
    fn request_done(&self, _: &str, _: Duration, _: Option<&'static str>) {}
    fn rate_limit_wait(&self, _: Duration) {}
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// A DNS resolver to use instead of the system's, for embedding and for tests that must
/// not send DNS queries off the machine.
#[derive(Clone)]
pub struct Resolver(pub Arc<dyn transport::Resolve>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// Settings of the client, taken from the config.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub timeout: Duration,
    pub retries: u32,
    pub ca_file: Option<std::path::PathBuf>,
    /// First retry delay; doubled each retry, with jitter.
    pub backoff: Duration,
    /// `None`: the system resolver.
    pub resolver: Option<Resolver>,
}

impl ClientSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            timeout: config.poll.timeout,
            retries: config.poll.retries,
            ca_file: config.ca_file.clone(),
            backoff: Duration::from_millis(200),
            resolver: None,
        }
    }
}

#[derive(Debug, Default)]
struct Failover {
    consecutive_transport_failures: u32,
    backup_until: Option<Instant>,
}

/// The gateway client: one keep-alive connection pool shared by every target.
pub struct Client {
    http: Http,
    settings: ClientSettings,
    limits: Arc<RateLimits>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn RequestObserver>,
    failover: Mutex<std::collections::HashMap<String, Failover>>,
    deadlines: Deadlines,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Mozilla's roots (bundled, so a minimal container works) plus the PEM certificates of
/// `ca_file`; shared with the callback endpoint probe.
pub fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| ClientError::CaFile {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| ClientError::CaFile {
                path: shown.clone(),
                message: format!("bad PEM: {e}"),
            })?;
            roots.add(cert).map_err(|e| ClientError::CaFile {
                path: shown.clone(),
                message: format!("unusable certificate: {e}"),
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(ClientError::CaFile {
                path: shown,
                message: "no PEM certificates found".to_owned(),
            });
        }
    }
    Ok(roots)
}

/// TLS trusting Mozilla's roots plus `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    let roots = root_store(ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Build(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // No ALPN here: the connector offers http/1.1 itself (and insists on being the one).
    Ok(config)
}

/// Exponential backoff with jitter: `base`·2^`retry` (at most 2^6) scaled by `jitter`, a
/// factor in [0.5, 1]; saturating, since `base` comes from public settings.
fn backoff(base: Duration, retry: u32, jitter: f64) -> Duration {
    let full = base.saturating_mul(1 << retry.min(6));
    Duration::try_from_secs_f64(full.as_secs_f64() * jitter).unwrap_or(full)
}

/// What one HTTP attempt produced: an observation (reads) or `()` (writes).
struct Attempt<T> {
    result: Result<T, PollError>,
    request_id: Option<String>,
}

/// How an API's answer body is decoded.
type Decode<'a, T> = &'a (dyn Fn(&[u8]) -> (Result<T, PollError>, Option<String>) + Sync);

impl Client {
    pub fn new(
        settings: ClientSettings,
        limits: Arc<RateLimits>,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn RequestObserver>,
    ) -> Result<Self, ClientError> {
        let tls = tls_config(settings.ca_file.as_deref())?;
        let resolver = settings.resolver.as_ref().map(|r| r.0.clone());
        // The whole exchange's timeout is `deadlines`, one timer for many requests.
        let http = Http::new(tls, resolver, settings.timeout);
        #[cfg(feature = "reqwest-transport")]
        let http = http.map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self {
            http,
            deadlines: Deadlines::for_timeout(settings.timeout),
            settings,
            limits,
            clock,
            observer,
            failover: Mutex::new(Default::default()),
        })
    }

    /// The rate limiter this client passes every call through.
    pub fn limits(&self) -> &Arc<RateLimits> {
        &self.limits
    }

    /// Polls `get_callback` for one target: rate limited, retried for transient failures,
    /// re-minting the UserSig once if the gateway says it expired.
    pub async fn get_callback(&self, target: &Target) -> PollOutcome {
        let mut attempts = 0;
        let mut retries_left = self.settings.retries;
        let mut resigned = false;
        loop {
            // Keyed by SDKAppID, not by target: every region and product of an app counts
            // against its one per-app limit, as the gateway counts them.
            let passed = self.limits.acquire(target.key.sdkappid).await;
            self.observer.rate_limit_wait(passed.waited);
            attempts += 1;
            let attempt = self.attempt(target, passed.at).await;
            let retry = match &attempt.result {
                Err(PollError::Auth(answer))
                    if USERSIG_EXPIRED.contains(&answer.code) && !resigned =>
                {
                    target.usersig.invalidate();
                    resigned = true;
                    true
                }
                Err(PollError::RateLimited(_)) => {
                    self.limits.slow_down(target.key.sdkappid, RATE_LIMIT_PAUSE);
                    false
                }
                Err(e) if e.is_retryable() && retries_left > 0 => {
                    tokio::time::sleep(self.backoff(self.settings.retries - retries_left)).await;
                    retries_left -= 1;
                    true
                }
                _ => false,
            };
            if !retry {
                return PollOutcome {
                    result: attempt.result,
                    request_id: attempt.request_id,
                    attempts,
                };
            }
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        backoff(
            self.settings.backoff,
            retry,
            rand::rng().random_range(0.5..=1.0),
        )
    }

    fn base_url<'a>(&self, target: &'a Target) -> &'a str {
        let primary = target.bases.primary();
        let Some(backup) = target.bases.backup() else {
            return primary;
        };
        let failover = self.failover.lock().unwrap_or_else(|p| p.into_inner());
        let on_backup = failover
            .get(&target.key.region)
            .and_then(|f| f.backup_until)
            .is_some_and(|until| until > Instant::now());
        if on_backup { backup } else { primary }
    }

    fn note_transport(&self, target: &Target, base: &str, failed: bool) {
        let Some(backup) = target.bases.backup() else {
            return;
        };
        if base != target.bases.primary() {
            return;
        }
        let mut failover = self.failover.lock().unwrap_or_else(|p| p.into_inner());
        let state = failover.entry(target.key.region.clone()).or_default();
        if !failed {
            state.consecutive_transport_failures = 0;
            return;
        }
        state.consecutive_transport_failures += 1;
        if state.consecutive_transport_failures >= FAILOVER_AFTER {
            state.consecutive_transport_failures = 0;
            state.backup_until = Some(later(Instant::now(), FAILOVER_FOR));
            tracing::warn!(region = %target.key.region, backup = %backup, "primary domain failing at the transport level; using the backup domain");
        }
    }

    /// One `get_callback` exchange for a call that passed the limiter at `passed`.
    async fn attempt(&self, target: &Target, passed: Instant) -> Attempt<Arc<Observed>> {
        let decode = |body: &[u8]| decode_get_callback_after(body, &target.last_response);
        let request = Request {
            api: "get_callback",
            body: Bytes::from_static(b"{}"),
            resend: transport::Resend::Unanswered,
            decode: &decode,
        };
        self.exchange(target, passed, request).await
    }

    /// One HTTP exchange of `request` for a call that passed the limiter at `passed`,
    /// counted for metrics and failover.
    async fn exchange<T>(
        &self,
        target: &Target,
        passed: Instant,
        request: Request<'_, T>,
    ) -> Attempt<T> {
        let base = self.base_url(target);
        let path = request_path(target, request.api, self.clock.unix_secs());
        let started = Instant::now();
        // A call that waited for a new connection leaves later than it passed.
        let sent_late = || self.limits.sent_late(target.key.sdkappid, passed);
        // Boxed, so the select below moves a pointer, not the exchange's large state.
        let payload = transport::Payload {
            body: request.body,
            resend: request.resend,
        };
        let read = Box::pin(self.http.post(
            base,
            path,
            &REQUEST_HEADERS,
            payload,
            MAX_BODY_BYTES,
            &sent_late,
        ));
        let deadline = self.deadlines.after(self.settings.timeout);
        let outcome = tokio::select! {
            biased;
            outcome = read => Ok(outcome),
            _ = deadline.cancelled() => Err(()),
        };
        let elapsed = started.elapsed();
        let attempt = classify(outcome, self.settings.timeout, request.decode);
        self.note_transport(
            target,
            base,
            matches!(attempt.result, Err(PollError::Transport(_))),
        );
        let failure = attempt.result.as_ref().err().map(PollError::metric_reason);
        self.observer
            .request_done(&target.key.region, elapsed, failure);
        attempt
    }
}

/// One API call: its name under the product's family, its body, whether a request that
/// met a closing connection may go again, and how its answer decodes.
struct Request<'a, T> {
    api: &'static str,
    body: Bytes,
    resend: transport::Resend,
    decode: Decode<'a, T>,
}

/// The request path of `api` in the target's product family, with its query.
/// Written out rather than with a query
/// serializer, into one allocation: the values are digits, the UserSig alphabet (letters,
/// digits, `*`, `-`, `_`, all safe in a query) and the identifier, which is encoded. URL
/// handling was a fifth of a poll's CPU.
fn request_path(target: &Target, api: &str, now_unix: u64) -> String {
    let usersig = target.usersig.get(now_unix);
    let random: u32 = rand::rng().random();
    let mut path = String::with_capacity(usersig.expose().len() + 160);
    path.push_str("/v4/");
    path.push_str(target.key.product.api_family());
    path.push('/');
    path.push_str(api);
    // Numbers are formatted straight into the path; writing to a String cannot fail.
    let _ = write!(path, "?sdkappid={}&identifier=", target.key.sdkappid);
    path.extend(url::form_urlencoded::byte_serialize(
        target.identifier.as_bytes(),
    ));
    path.push_str("&usersig=");
    path.push_str(usersig.expose());
    let _ = write!(path, "&random={random}&contenttype=json");
    path
}

/// What one exchange (or its deadline) amounts to.
fn classify<T>(
    outcome: Result<Result<transport::Answer, transport::Error>, ()>,
    timeout: Duration,
    decode: Decode<'_, T>,
) -> Attempt<T> {
    match outcome {
        Err(_) => Attempt {
            result: Err(PollError::Timeout(timeout)),
            request_id: None,
        },
        Ok(Err(e)) if e.is_timeout() => Attempt {
            result: Err(PollError::Timeout(timeout)),
            request_id: None,
        },
        Ok(Err(e)) => Attempt {
            result: Err(PollError::Transport(e.describe())),
            request_id: None,
        },
        Ok(Ok(transport::Answer { body: None, .. })) => Attempt {
            result: Err(PollError::Decode(format!(
                "response body larger than {MAX_BODY_BYTES} bytes"
            ))),
            request_id: None,
        },
        Ok(Ok(transport::Answer { status, .. })) if status == StatusCode::TOO_MANY_REQUESTS => {
            Attempt {
                result: Err(PollError::RateLimited(ApiAnswer {
                    code: -1,
                    info: "HTTP 429".to_owned(),
                    request_id: None,
                })),
                request_id: None,
            }
        }
        Ok(Ok(transport::Answer { status, .. })) if status != StatusCode::OK => Attempt {
            result: Err(PollError::HttpStatus {
                status: status.as_u16(),
            }),
            request_id: None,
        },
        Ok(Ok(transport::Answer {
            body: Some(body), ..
        })) => {
            let (result, request_id) = decode(&body);
            Attempt { result, request_id }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetKey;
    use crate::product::Product;
    use crate::secret::SecretKey;

    #[test]
    fn each_product_asks_its_own_api_family() {
        let usersig = Arc::new(usersig::UserSigCache::new(
            SecretKey::new("k"),
            1400000001,
            "admin istrator".to_owned(),
            86_400,
        ));
        for (product, family) in [
            (Product::Call, "/v4/call_config/get_callback?"),
            (Product::Room, "/v4/room_config/get_callback?"),
            (Product::Live, "/v4/live_config/get_callback?"),
        ] {
            let target = Target {
                key: TargetKey::new("a", 1400000001, "china", product),
                identifier: "admin istrator".to_owned(),
                bases: BaseUrls::new("https://console.tim.qq.com".to_owned(), None),
                usersig: usersig.clone(),
                expect: crate::drift::Expected::default_for(product),
                last_response: Arc::default(),
            };
            let path = request_path(&target, "get_callback", 1_700_000_000);
            assert!(path.starts_with(family), "{path}");
            assert!(
                path.contains("?sdkappid=1400000001&identifier=admin+istrator&usersig="),
                "{path}"
            );
            assert!(path.ends_with("&contenttype=json"), "{path}");
        }
    }

    #[test]
    fn backoff_doubles_and_saturates_instead_of_panicking() {
        let base = Duration::from_millis(200);
        assert_eq!(backoff(base, 0, 1.0), base);
        assert_eq!(backoff(base, 2, 0.5), Duration::from_millis(400));
        assert_eq!(backoff(base, 40, 1.0), base * 64);
        assert_eq!(backoff(Duration::MAX, 3, 1.0), Duration::MAX);
        assert!(backoff(Duration::MAX, 3, 0.5) > Duration::from_secs(u64::MAX / 4));
    }
}
