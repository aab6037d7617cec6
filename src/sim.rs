//! The simulated Chat REST gateway, used by `calldrift simulate`, `calldrift demo` and the
//! tests: a faithful stand-in for `v4/call_config/{get,set,delete}_callback`.
//!
//! # Binding
//!
//! [`Simulator::run`] serves whatever listener it is given. It has no authentication and
//! its `/__sim/*` endpoints change its state, so the CLI must bind a loopback address
//! (`127.0.0.1:…`) unless the user explicitly asks for another one with `--listen`.
//!
//! # API requests
//!
//! `POST /v4/call_config/{get_callback,set_callback,delete_callback}?sdkappid=&identifier=&usersig=&random=&contenttype=json`.
//! Every API answer is HTTP 200 with `Content-Type: application/json` and the envelope
//! `ActionStatus` (`OK`/`FAIL`), `ErrorCode`, `ErrorInfo`, `RequestId`
//! (`Id-<32 hex>-O-Seq-<n>`, unique), plus `Response` for a successful get. Checks, in
//! this order (the first failure answers):
//!
//! 1. **Well-formedness** (a failure counts in `malformed_requests`, exactly once):
//!    unknown command under `/v4/` → 60009; method not POST → 60002; `sdkappid` missing →
//!    60012; `sdkappid` not a number, `identifier` or `usersig` missing or empty, `random`
//!    not a decimal u32, `contenttype` not `json`, a repeated query parameter → 60002; body
//!    empty, over 64 KiB, not JSON or not a JSON object → 60003; a get/delete body other
//!    than `{}`, or a set body without a `Url` starting with `http://`/`https://` or
//!    without a `CallbackCommandList` of non-empty strings → 100002. Unknown query
//!    parameters and unknown body fields of set are ignored, as gateways do.
//! 2. Unknown `sdkappid` → 70020 (not 60006).
//! 3. UserSig against the app's key at [`Clock::unix_secs`]: 70003 malformed, 70014
//!    sdkappid mismatch, 70013 identifier mismatch, 70001 expired, 70009 wrong key.
//! 4. Identifier listed in `users`, or not in `admins` → 60010.
//! 5. More than [`PER_APP_LIMIT`] requests for the app in the trailing second → 60011
//!    (counted in `rate_limited`).
//! 6. The first matching fault rule, if any (see [`FaultKind`]).
//! 7. The command: get → 0 with `Response: {"Url", "CallbackCommandList"}`, or 100301
//!    without `Response`; set → 0 (creates or overwrites); delete → 0 (also when there was
//!    no configuration).
//!
//! # Statistics
//!
//! `requests_total` and the total rate count every request under `/v4/`, malformed ones
//! included; an app's `requests` and rate count every such request whose `sdkappid`
//! parameter names that app (malformed, refused and rate-limited ones included: the
//! gateway counts them too). "Largest count in any 1-second window" is a sliding window
//! over arrival times (monotonic clock): the most requests whose arrivals lie less than
//! one second apart.
//!
//! # Control endpoints
//!
//! `GET /__sim/stats` ([`SimStats`]), `GET|PUT /__sim/apps/{sdkappid}` (body a
//! [`CallbackConfig`] in wire form, or `null` to delete; 404 for unknown apps),
//! `GET|PUT /__sim/faults` (a JSON array of [`FaultRule`]). Anything else is 404.
//!
//! # Rotation
//!
//! An app with [`Rotate`] shows `configs[(elapsed / every) % len]`, where `elapsed` is
//! real (monotonic) time since [`Simulator::new`], not the [`Clock`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::secret::SecretKey;
use crate::tencent::usersig;

/// Requests per app in any 1-second window above which the gateway answers 60011.
pub const PER_APP_LIMIT: u64 = 200;
/// The scenario `calldrift demo` plays, also `config/sim-scenario.example.yaml`.
pub const EXAMPLE_SCENARIO: &str = include_str!("../config/sim-scenario.example.yaml");

const WINDOW: Duration = Duration::from_secs(1);
const MAX_API_BODY: usize = 64 * 1024;
const MAX_CONTROL_BODY: usize = 1024 * 1024;
const OVERSIZED_PADDING: usize = 2 * 1024 * 1024;
const PAD_CHUNK: usize = 64 * 1024;
static PAD: [u8; PAD_CHUNK] = [b'x'; PAD_CHUNK];
/// How long in-flight requests may take to finish once shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------
// Scenario
// ---------------------------------------------------------------------------------------

/// What the simulator serves: apps and fault rules. See `config/sim-scenario.example.yaml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub apps: Vec<SimApp>,
    #[serde(default)]
    pub faults: Vec<FaultRule>,
}

/// One simulated app.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimApp {
    pub sdkappid: u64,
    /// The secret key UserSigs must be signed with.
    pub key: String,
    /// Identifiers that are App admins; default `[administrator]`.
    #[serde(default = "default_admins")]
    pub admins: Vec<String>,
    /// Known accounts that are not admins (answered 60010).
    #[serde(default)]
    pub users: Vec<String>,
    /// The initial configuration; none means get answers 100301.
    #[serde(default)]
    pub callback: Option<CallbackConfig>,
    /// A scripted story instead of `callback`.
    #[serde(default)]
    pub rotate: Option<Rotate>,
}

fn default_admins() -> Vec<String> {
    vec!["administrator".to_owned()]
}

impl fmt::Debug for SimApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimApp")
            .field("sdkappid", &self.sdkappid)
            .field("key", &"<redacted>")
            .field("admins", &self.admins)
            .field("users", &self.users)
            .field("callback", &self.callback)
            .field("rotate", &self.rotate)
            .finish()
    }
}

/// A callback configuration. The wire (and `/__sim/apps`) uses `Url` and
/// `CallbackCommandList`; scenario files may write `url` and `commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    #[serde(rename = "Url", alias = "url")]
    pub url: String,
    #[serde(rename = "CallbackCommandList", alias = "commands")]
    pub commands: Vec<String>,
}

impl CallbackConfig {
    pub fn new(url: impl Into<String>, commands: &[&str]) -> Self {
        Self {
            url: url.into(),
            commands: commands.iter().map(|c| (*c).to_owned()).collect(),
        }
    }
}

/// A scripted story: the app's configuration is `configs[(elapsed / every) % len]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    #[serde(with = "humantime_duration")]
    pub every: Duration,
    pub configs: Vec<Option<CallbackConfig>>,
}

mod humantime_duration {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| D::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

/// What a fault rule does to a request instead of (or before) the normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// This HTTP status with an nginx-like HTML body (`kind: http_status`, `status: 502`).
    HttpStatus { status: u16 },
    /// Wait, then answer normally (`kind: delay`, `delay: 4s`).
    Delay { delay: Duration },
    /// Read the request and never answer, until the simulator shuts down (`kind: hang`).
    Hang,
    /// Close the TCP connection without answering, with an RST (`kind: reset`).
    Reset,
    /// HTTP 200, `application/json`, truncated JSON (`kind: malformed_json`).
    MalformedJson,
    /// Valid JSON with the wrong types: `ErrorCode` a string, `CallbackCommandList` a
    /// number (`kind: wrong_types`).
    WrongTypes,
    /// A valid JSON body of over 2 MiB, chunked without `Content-Length` (`kind: oversized`).
    Oversized,
    /// HTTP 200 with a `text/html` error page (`kind: html_page`).
    HtmlPage,
    /// The envelope with this ErrorCode (`kind: error_code`, `code: 100001`).
    ErrorCode { code: i64 },
}

/// A fault for one app. Flat syntax, in YAML and JSON alike:
/// `{sdkappid: 1400000002, kind: error_code, code: 100001, count: 2}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFaultRule", into = "RawFaultRule")]
pub struct FaultRule {
    pub sdkappid: u64,
    pub kind: FaultKind,
    /// Apply to the next N requests, then drop the rule; `None` = forever.
    pub count: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultTag {
    HttpStatus,
    Delay,
    Hang,
    Reset,
    MalformedJson,
    WrongTypes,
    Oversized,
    HtmlPage,
    ErrorCode,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaultRule {
    sdkappid: u64,
    kind: FaultTag,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
}

impl TryFrom<RawFaultRule> for FaultRule {
    type Error = String;

    fn try_from(raw: RawFaultRule) -> Result<Self, String> {
        let tag = raw.kind;
        let name = match serde_json::to_value(tag) {
            Ok(serde_json::Value::String(s)) => s,
            _ => format!("{tag:?}"),
        };
        let unexpected = |field: &str| format!("`{field}` does not apply to kind {name}");
        if raw.status.is_some() && tag != FaultTag::HttpStatus {
            return Err(unexpected("status"));
        }
        if raw.delay.is_some() && tag != FaultTag::Delay {
            return Err(unexpected("delay"));
        }
        if raw.code.is_some() && tag != FaultTag::ErrorCode {
            return Err(unexpected("code"));
        }
        if raw.count == Some(0) {
            return Err("`count` must be at least 1 (leave it out for \"forever\")".to_owned());
        }
        let kind = match tag {
            FaultTag::HttpStatus => {
                let status = raw
                    .status
                    .ok_or_else(|| "kind http_status needs `status`".to_owned())?;
                if !(100..=599).contains(&status) || StatusCode::from_u16(status).is_err() {
                    return Err(format!("`status` {status} is not an HTTP status (100-599)"));
                }
                FaultKind::HttpStatus { status }
            }
            FaultTag::Delay => {
                let text = raw
                    .delay
                    .ok_or_else(|| "kind delay needs `delay` (e.g. 4s)".to_owned())?;
                let delay = humantime::parse_duration(&text)
                    .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
                FaultKind::Delay { delay }
            }
            FaultTag::Hang => FaultKind::Hang,
            FaultTag::Reset => FaultKind::Reset,
            FaultTag::MalformedJson => FaultKind::MalformedJson,
            FaultTag::WrongTypes => FaultKind::WrongTypes,
            FaultTag::Oversized => FaultKind::Oversized,
            FaultTag::HtmlPage => FaultKind::HtmlPage,
            FaultTag::ErrorCode => {
                let code = raw
                    .code
                    .ok_or_else(|| "kind error_code needs `code`".to_owned())?;
                if code == 0 {
                    return Err("`code` must not be 0 (that is success)".to_owned());
                }
                FaultKind::ErrorCode { code }
            }
        };
        Ok(FaultRule {
            sdkappid: raw.sdkappid,
            kind,
            count: raw.count,
        })
    }
}

impl From<FaultRule> for RawFaultRule {
    fn from(rule: FaultRule) -> Self {
        let mut raw = RawFaultRule {
            sdkappid: rule.sdkappid,
            kind: FaultTag::Hang,
            status: None,
            delay: None,
            code: None,
            count: rule.count,
        };
        raw.kind = match rule.kind {
            FaultKind::HttpStatus { status } => {
                raw.status = Some(status);
                FaultTag::HttpStatus
            }
            FaultKind::Delay { delay } => {
                raw.delay = Some(humantime::format_duration(delay).to_string());
                FaultTag::Delay
            }
            FaultKind::Hang => FaultTag::Hang,
            FaultKind::Reset => FaultTag::Reset,
            FaultKind::MalformedJson => FaultTag::MalformedJson,
            FaultKind::WrongTypes => FaultTag::WrongTypes,
            FaultKind::Oversized => FaultTag::Oversized,
            FaultKind::HtmlPage => FaultTag::HtmlPage,
            FaultKind::ErrorCode { code } => {
                raw.code = Some(code);
                FaultTag::ErrorCode
            }
        };
        raw
    }
}

/// A scenario that cannot be used. `Display` starts with `file:line:column:` when the
/// position is known, else with `file:` and the path of the offending item.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{origin}: cannot read: {source}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
    #[error("{}", at(origin, *line, *column, message))]
    Parse {
        origin: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

fn at(origin: &str, line: Option<usize>, column: Option<usize>, message: &str) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{origin}:{l}:{c}: {message}"),
        _ => format!("{origin}: {message}"),
    }
}

impl Scenario {
    /// Parses and validates a scenario; `origin` (usually the file name) prefixes errors.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = yaml_serde::from_str(text).map_err(|e| {
            let location = e.location();
            let mut message = e.to_string();
            // The position goes in front, file:line:column style; drop it from the text.
            if let Some(l) = &location {
                let mark = format!(" at line {} column {}", l.line(), l.column());
                message = message.replacen(&mark, "", 1);
            }
            ScenarioError::Parse {
                origin: origin.to_owned(),
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                message,
            }
        })?;
        scenario
            .validate()
            .map_err(|message| ScenarioError::Invalid {
                origin: origin.to_owned(),
                message,
            })?;
        Ok(scenario)
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            origin: origin.clone(),
            source,
        })?;
        Self::from_yaml_str(&text, &origin)
    }

    /// The scenario of `calldrift demo` ([`EXAMPLE_SCENARIO`]).
    pub fn example() -> Result<Scenario, ScenarioError> {
        Self::from_yaml_str(EXAMPLE_SCENARIO, "config/sim-scenario.example.yaml")
    }

    /// Checks what the types cannot: unique apps, a key, rotations that can rotate, fault
    /// rules for known apps.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let here = format!("apps[{i}] (sdkappid {})", app.sdkappid);
            if !seen.insert(app.sdkappid) {
                return Err(format!("{here}: duplicate sdkappid"));
            }
            if app.key.trim().is_empty() {
                return Err(format!("{here}: `key` is empty"));
            }
            if app.callback.is_some() && app.rotate.is_some() {
                return Err(format!(
                    "{here}: `callback` and `rotate` exclude each other"
                ));
            }
            if let Some(rotate) = &app.rotate {
                if rotate.every.is_zero() {
                    return Err(format!("{here}: `rotate.every` must be positive"));
                }
                if rotate.configs.is_empty() {
                    return Err(format!("{here}: `rotate.configs` is empty"));
                }
            }
        }
        for (i, rule) in self.faults.iter().enumerate() {
            if !seen.contains(&rule.sdkappid) {
                return Err(format!(
                    "faults[{i}]: sdkappid {} is not one of the apps",
                    rule.sdkappid
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

/// What `GET /__sim/stats` reports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SimStats {
    /// Requests under `/v4/`, malformed ones included.
    pub requests_total: u64,
    /// Requests refused as not well formed (60002, 60003, 60009, 60012, 100002).
    pub malformed_requests: u64,
    /// The most `/v4/` requests that arrived less than one second apart.
    pub max_requests_in_any_second: u64,
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

// ---------------------------------------------------------------------------------------
// Simulator state
// ---------------------------------------------------------------------------------------

/// The simulated gateway. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    started: Instant,
    seq: AtomicU64,
    state: Mutex<State>,
}

struct State {
    apps: BTreeMap<u64, AppState>,
    faults: Vec<FaultRule>,
    total: RateWindow,
    requests_total: u64,
    malformed: u64,
}

struct AppState {
    key: SecretKey,
    admins: HashSet<String>,
    users: HashSet<String>,
    config: ConfigState,
    window: RateWindow,
    requests: u64,
    rate_limited: u64,
}

enum ConfigState {
    Fixed(Option<CallbackConfig>),
    Rotating(Rotate),
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let apps: Vec<u64> = self.lock().apps.keys().copied().collect();
        f.debug_struct("Simulator").field("apps", &apps).finish()
    }
}

impl Simulator {
    pub fn new(scenario: Scenario, clock: Arc<dyn Clock>) -> Simulator {
        let apps = scenario
            .apps
            .into_iter()
            .map(|app| {
                let config = match app.rotate {
                    Some(rotate) if !rotate.configs.is_empty() => ConfigState::Rotating(rotate),
                    _ => ConfigState::Fixed(app.callback),
                };
                let state = AppState {
                    key: SecretKey::new(app.key),
                    admins: app.admins.into_iter().collect(),
                    users: app.users.into_iter().collect(),
                    config,
                    window: RateWindow::default(),
                    requests: 0,
                    rate_limited: 0,
                };
                (app.sdkappid, state)
            })
            .collect();
        Simulator {
            inner: Arc::new(Inner {
                clock,
                started: Instant::now(),
                seq: AtomicU64::new(1),
                state: Mutex::new(State {
                    apps,
                    faults: scenario.faults,
                    total: RateWindow::default(),
                    requests_total: 0,
                    malformed: 0,
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The same data as `GET /__sim/stats`.
    pub fn stats(&self) -> SimStats {
        let st = self.lock();
        SimStats {
            requests_total: st.requests_total,
            malformed_requests: st.malformed,
            max_requests_in_any_second: st.total.max,
            apps: st
                .apps
                .iter()
                .map(|(id, app)| {
                    let stats = AppStats {
                        requests: app.requests,
                        max_requests_in_any_second: app.window.max,
                        rate_limited: app.rate_limited,
                    };
                    (id.to_string(), stats)
                })
                .collect(),
        }
    }

    /// Replaces an app's configuration (and any rotation); `None` deletes it. Unknown
    /// apps are ignored (see [`Simulator::has_app`]).
    pub fn set_callback(&self, sdkappid: u64, cfg: Option<CallbackConfig>) {
        if let Some(app) = self.lock().apps.get_mut(&sdkappid) {
            app.config = ConfigState::Fixed(cfg);
        }
    }

    /// The configuration get_callback would answer now: `None` for an unknown app,
    /// `Some(None)` for an app without configuration.
    pub fn callback(&self, sdkappid: u64) -> Option<Option<CallbackConfig>> {
        let st = self.lock();
        st.apps
            .get(&sdkappid)
            .map(|app| effective(&app.config, self.inner.started))
    }

    pub fn has_app(&self, sdkappid: u64) -> bool {
        self.lock().apps.contains_key(&sdkappid)
    }

    /// Replaces all fault rules. Rules for unknown apps never match.
    pub fn set_faults(&self, faults: Vec<FaultRule>) {
        self.lock().faults = faults;
    }

    /// The fault rules still in force (counts decremented as they were applied).
    pub fn faults(&self) -> Vec<FaultRule> {
        self.lock().faults.clone()
    }

    fn request_id(&self) -> String {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        format!("Id-{:032x}-O-Seq-{seq}", rand::random::<u128>())
    }

    /// Serves until `shutdown` is cancelled, then ends every connection (in-flight hangs
    /// and delays included) within a short grace period.
    pub async fn run(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let local = listener.local_addr()?;
        tracing::info!(listen = %local, "simulated Chat API listening");
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    tracing::trace!(%peer, "simulator connection");
                    let _ = stream.set_nodelay(true);
                    let sim = self.clone();
                    let token = shutdown.clone();
                    connections.spawn(async move { sim.serve_connection(stream, token).await });
                }
                Err(e) => {
                    // Per-connection failures and descriptor exhaustion pass; keep serving.
                    tracing::warn!(error = %e, "simulator accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
            while connections.try_join_next().is_some() {}
        }
        drop(listener);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::debug!("simulator aborting connections after the grace period");
        }
        connections.shutdown().await;
        tracing::info!(listen = %local, "simulated Chat API stopped");
        Ok(())
    }

    async fn serve_connection(self, stream: TcpStream, shutdown: CancellationToken) {
        let reset = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(SimIo {
            stream,
            reset: reset.clone(),
        });
        let sim = self.clone();
        let token = shutdown.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let sim = sim.clone();
            let token = token.clone();
            let reset = reset.clone();
            async move { sim.handle(req, token, reset).await }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new());
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                    Ok(result) => result,
                    Err(_) => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "simulator connection ended");
        }
    }

    async fn handle(
        self,
        req: Request<Incoming>,
        shutdown: CancellationToken,
        reset: Arc<AtomicBool>,
    ) -> Result<Response<Body>, ConnAbort> {
        let path = req.uri().path();
        if path.starts_with("/v4/") {
            self.handle_api(req, &shutdown, &reset).await
        } else if let Some(rest) = path.strip_prefix("/__sim/") {
            let rest = rest.to_owned();
            self.handle_control(req, &rest).await
        } else {
            Ok(text(StatusCode::NOT_FOUND, "not found\n"))
        }
    }

    // -- the API --------------------------------------------------------------------------

    /// Counts an arrival; returns the app's count in the trailing second if the
    /// `sdkappid` parameter names a known app.
    fn record_arrival(&self, sdkappid: Option<u64>) -> Option<u64> {
        let mut st = self.lock();
        let now = Instant::now();
        st.requests_total += 1;
        st.total.record(now);
        let app = st.apps.get_mut(&sdkappid?)?;
        app.requests += 1;
        Some(app.window.record(now))
    }

    async fn handle_api(
        &self,
        req: Request<Incoming>,
        shutdown: &CancellationToken,
        reset: &AtomicBool,
    ) -> Result<Response<Body>, ConnAbort> {
        let (parts, body) = req.into_parts();
        let query = parts.uri.query().unwrap_or("");
        let app_count = self.record_arrival(lenient_sdkappid(query));
        let body = match read_body(body, MAX_API_BODY).await? {
            Some(body) => body,
            None => {
                let reject = Reject::new(60003, "request body larger than 64 KiB");
                return Ok(self.malformed(reject));
            }
        };
        let api = match parse_api(&parts.method, parts.uri.path(), query, &body) {
            Ok(api) => api,
            Err(reject) => return Ok(self.malformed(reject)),
        };
        let fault = match self.admit(&api, app_count) {
            Ok(fault) => fault,
            Err(code) => return Ok(self.answer(&api, code, None)),
        };
        match fault {
            None => {}
            Some(FaultKind::Delay { delay }) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Err(ConnAbort::Shutdown),
                }
            }
            Some(FaultKind::Hang) => {
                tracing::debug!(sdkappid = api.sdkappid, "simulated fault: hang");
                shutdown.cancelled().await;
                return Err(ConnAbort::Shutdown);
            }
            Some(FaultKind::Reset) => {
                tracing::debug!(sdkappid = api.sdkappid, "simulated fault: reset");
                reset.store(true, Ordering::SeqCst);
                return Err(ConnAbort::Reset);
            }
            Some(kind) => return Ok(self.fault_response(&api, kind)),
        }
        let (code, response) = self.execute(&api);
        Ok(self.answer(&api, code, response.as_ref()))
    }

    fn malformed(&self, reject: Reject) -> Response<Body> {
        self.lock().malformed += 1;
        let request_id = self.request_id();
        tracing::debug!(
            error_code = reject.code,
            error_info = %reject.info,
            request_id,
            "simulator refused a malformed request"
        );
        json_response(
            StatusCode::OK,
            envelope(reject.code, &reject.info, &request_id, None),
        )
    }

    fn answer(
        &self,
        api: &ApiRequest,
        code: i64,
        response: Option<&CallbackConfig>,
    ) -> Response<Body> {
        let request_id = self.request_id();
        tracing::debug!(
            sdkappid = api.sdkappid,
            command = api.command.name(),
            error_code = code,
            request_id,
            "simulated answer"
        );
        json_response(
            StatusCode::OK,
            envelope(code, error_info(code), &request_id, response),
        )
    }

    /// App lookup, UserSig, admin and rate checks; then takes the first matching fault.
    fn admit(&self, api: &ApiRequest, app_count: Option<u64>) -> Result<Option<FaultKind>, i64> {
        let now = self.inner.clock.unix_secs();
        let mut st = self.lock();
        let app = st.apps.get_mut(&api.sdkappid).ok_or(70020_i64)?;
        usersig::verify(&app.key, &api.usersig, api.sdkappid, &api.identifier, now)
            .map_err(|e| e.error_code())?;
        if app.users.contains(&api.identifier) || !app.admins.contains(&api.identifier) {
            return Err(60010);
        }
        if app_count.unwrap_or(0) > PER_APP_LIMIT {
            app.rate_limited += 1;
            return Err(60011);
        }
        let Some(index) = st
            .faults
            .iter()
            .position(|r| r.sdkappid == api.sdkappid && r.count != Some(0))
        else {
            return Ok(None);
        };
        let rule = &mut st.faults[index];
        let kind = rule.kind.clone();
        if let Some(n) = rule.count.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.faults.remove(index);
            }
        }
        Ok(Some(kind))
    }

    fn execute(&self, api: &ApiRequest) -> (i64, Option<CallbackConfig>) {
        let started = self.inner.started;
        let mut st = self.lock();
        let Some(app) = st.apps.get_mut(&api.sdkappid) else {
            return (70020, None);
        };
        match &api.command {
            Command::Get => match effective(&app.config, started) {
                Some(cfg) => (0, Some(cfg)),
                None => (100301, None),
            },
            Command::Set(cfg) => {
                app.config = ConfigState::Fixed(Some(cfg.clone()));
                (0, None)
            }
            Command::Delete => {
                app.config = ConfigState::Fixed(None);
                (0, None)
            }
        }
    }

    fn fault_response(&self, api: &ApiRequest, kind: FaultKind) -> Response<Body> {
        let request_id = self.request_id();
        tracing::debug!(sdkappid = api.sdkappid, fault = ?kind, request_id, "simulated fault");
        match kind {
            FaultKind::HttpStatus { status } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                let reason = status.canonical_reason().unwrap_or("Error");
                let page = format!(
                    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
                    code = status.as_u16()
                );
                html(status, page)
            }
            FaultKind::HtmlPage => html(
                StatusCode::OK,
                "<!DOCTYPE html>\n<html><head><title>Service temporarily unavailable</title></head>\n<body><h1>Service temporarily unavailable</h1><p>Please try again later.</p></body></html>\n".to_owned(),
            ),
            FaultKind::MalformedJson => {
                let body = format!(
                    "{{\"ActionStatus\":\"OK\",\"ErrorCode\":0,\"ErrorInfo\":\"\",\"RequestId\":\"{request_id}\",\"Response\":{{\"Url\":\"https://"
                );
                json_response(StatusCode::OK, body.into_bytes())
            }
            FaultKind::WrongTypes => {
                let body = serde_json::json!({
                    "ActionStatus": "OK",
                    "ErrorCode": "0",
                    "ErrorInfo": "",
                    "RequestId": request_id,
                    "Response": {"Url": "https://hooks.example.com/tencent/call", "CallbackCommandList": 7},
                });
                json_response(StatusCode::OK, body.to_string().into_bytes())
            }
            FaultKind::Oversized => {
                let (code, cfg) = match api.command {
                    Command::Get => self.execute(api),
                    _ => (0, None),
                };
                let head = format!(
                    "{{\"ActionStatus\":\"{}\",\"ErrorCode\":{code},\"ErrorInfo\":\"{}\",\"RequestId\":\"{request_id}\",\"Padding\":\"",
                    if code == 0 { "OK" } else { "FAIL" },
                    error_info(code),
                );
                let tail = match cfg {
                    Some(cfg) => format!(
                        "\",\"Response\":{}}}",
                        serde_json::to_string(&cfg).unwrap_or_else(|_| "null".to_owned())
                    ),
                    None => "\"}".to_owned(),
                };
                let body = Oversized {
                    head: Some(Bytes::from(head)),
                    padding: OVERSIZED_PADDING,
                    tail: Some(Bytes::from(tail)),
                };
                let mut resp = Response::new(BodyExt::boxed(body));
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                resp
            }
            FaultKind::ErrorCode { code } => json_response(
                StatusCode::OK,
                envelope(code, error_info(code), &request_id, None),
            ),
            // Handled by the caller; answer like the gateway's 100001 if it ever gets here.
            FaultKind::Delay { .. } | FaultKind::Hang | FaultKind::Reset => json_response(
                StatusCode::OK,
                envelope(100001, error_info(100001), &request_id, None),
            ),
        }
    }

    // -- control endpoints ----------------------------------------------------------------

    async fn handle_control(
        &self,
        req: Request<Incoming>,
        rest: &str,
    ) -> Result<Response<Body>, ConnAbort> {
        let (parts, body) = req.into_parts();
        let method = parts.method;
        match rest {
            "stats" => match method {
                Method::GET => Ok(json_value(StatusCode::OK, &self.stats())),
                _ => Ok(not_allowed("GET")),
            },
            "faults" => match method {
                Method::GET => Ok(json_value(StatusCode::OK, &self.faults())),
                Method::PUT => {
                    let Some(body) = read_body(body, MAX_CONTROL_BODY).await? else {
                        return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"));
                    };
                    let faults: Vec<FaultRule> = match serde_json::from_slice(&body) {
                        Ok(f) => f,
                        Err(e) => {
                            return Ok(text(StatusCode::BAD_REQUEST, &format!("{e}\n")));
                        }
                    };
                    if let Some(rule) = faults.iter().find(|r| !self.has_app(r.sdkappid)) {
                        let msg = format!("sdkappid {} is not one of the apps\n", rule.sdkappid);
                        return Ok(text(StatusCode::BAD_REQUEST, &msg));
                    }
                    self.set_faults(faults);
                    Ok(json_value(StatusCode::OK, &self.faults()))
                }
                _ => Ok(not_allowed("GET, PUT")),
            },
            _ => {
                let Some(id) = rest.strip_prefix("apps/") else {
                    return Ok(text(StatusCode::NOT_FOUND, "not found\n"));
                };
                let Some(sdkappid) = parse_digits::<u64>(id).filter(|id| self.has_app(*id)) else {
                    return Ok(text(StatusCode::NOT_FOUND, "no such app\n"));
                };
                match method {
                    Method::GET => Ok(json_value(StatusCode::OK, &self.callback(sdkappid))),
                    Method::PUT => {
                        let Some(body) = read_body(body, MAX_CONTROL_BODY).await? else {
                            return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"));
                        };
                        let cfg: Option<CallbackConfig> = match serde_json::from_slice(&body) {
                            Ok(c) => c,
                            Err(e) => {
                                return Ok(text(StatusCode::BAD_REQUEST, &format!("{e}\n")));
                            }
                        };
                        self.set_callback(sdkappid, cfg);
                        Ok(json_value(StatusCode::OK, &self.callback(sdkappid)))
                    }
                    _ => Ok(not_allowed("GET, PUT")),
                }
            }
        }
    }
}

fn effective(config: &ConfigState, started: Instant) -> Option<CallbackConfig> {
    match config {
        ConfigState::Fixed(cfg) => cfg.clone(),
        ConfigState::Rotating(rotate) => {
            let len = rotate.configs.len() as u128;
            if len == 0 {
                return None;
            }
            let every = rotate.every.as_nanos().max(1);
            let index = (started.elapsed().as_nanos() / every) % len;
            usize::try_from(index)
                .ok()
                .and_then(|i| rotate.configs.get(i))
                .cloned()
                .flatten()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Request parsing
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
enum Command {
    Get,
    Set(CallbackConfig),
    Delete,
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Get => "get_callback",
            Command::Set(_) => "set_callback",
            Command::Delete => "delete_callback",
        }
    }
}

#[derive(Debug)]
struct ApiRequest {
    command: Command,
    sdkappid: u64,
    identifier: String,
    usersig: String,
}

#[derive(Debug)]
struct Reject {
    code: i64,
    info: String,
}

impl Reject {
    fn new(code: i64, info: impl Into<String>) -> Self {
        Self {
            code,
            info: info.into(),
        }
    }
}

/// Digits only (no sign, no spaces), within the type's range.
fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The first `sdkappid` parameter as a number, for statistics before the strict checks.
fn lenient_sdkappid(query: &str) -> Option<u64> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "sdkappid")
        .and_then(|(_, v)| parse_digits(&v))
}

fn parse_api(method: &Method, path: &str, query: &str, body: &[u8]) -> Result<ApiRequest, Reject> {
    #[derive(PartialEq)]
    enum Kind {
        Get,
        Set,
        Delete,
    }
    let kind = match path.strip_prefix("/v4/call_config/") {
        Some("get_callback") => Kind::Get,
        Some("set_callback") => Kind::Set,
        Some("delete_callback") => Kind::Delete,
        _ => {
            return Err(Reject::new(
                60009,
                "request resource error: unknown service or command",
            ));
        }
    };
    if method != Method::POST {
        return Err(Reject::new(
            60002,
            "HTTP parse error: the method must be POST",
        ));
    }
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(Reject::new(
                60002,
                format!("HTTP parse error: query parameter {k} repeated"),
            ));
        }
    }
    let sdkappid = match params.get("sdkappid") {
        None => {
            return Err(Reject::new(
                60012,
                "the REST API request requires an SDKAppID",
            ));
        }
        Some(v) => parse_digits::<u64>(v)
            .ok_or_else(|| Reject::new(60002, "HTTP parse error: sdkappid is not a number"))?,
    };
    let mut required = |name: &str| -> Result<String, Reject> {
        match params.remove(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(Reject::new(
                60002,
                format!("HTTP parse error: query parameter {name} missing or empty"),
            )),
        }
    };
    let identifier = required("identifier")?;
    let usersig = required("usersig")?;
    let random = required("random")?;
    let contenttype = required("contenttype")?;
    if parse_digits::<u32>(&random).is_none() {
        return Err(Reject::new(
            60002,
            "HTTP parse error: random must be an unsigned 32-bit integer",
        ));
    }
    if contenttype != "json" {
        return Err(Reject::new(
            60002,
            "HTTP parse error: contenttype must be json",
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Reject::new(
            60003,
            "request body is empty; send {} at least",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| Reject::new(60003, "HTTP request JSON parse error"))?;
    let serde_json::Value::Object(object) = value else {
        return Err(Reject::new(60003, "request body is not a JSON object"));
    };
    let command = match kind {
        Kind::Get | Kind::Delete => {
            if !object.is_empty() {
                return Err(Reject::new(
                    100002,
                    "invalid parameter: the body must be {}",
                ));
            }
            if kind == Kind::Get {
                Command::Get
            } else {
                Command::Delete
            }
        }
        Kind::Set => {
            let url = match object.get("Url") {
                Some(serde_json::Value::String(u))
                    if u.starts_with("http://") || u.starts_with("https://") =>
                {
                    u.clone()
                }
                _ => {
                    return Err(Reject::new(
                        100002,
                        "invalid parameter: Url must be a string starting with http:// or https://",
                    ));
                }
            };
            let commands = match object.get("CallbackCommandList") {
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .map(|item| match item {
                        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
                        _ => None,
                    })
                    .collect::<Option<Vec<String>>>(),
                _ => None,
            };
            let commands = commands.ok_or_else(|| {
                Reject::new(
                    100002,
                    "invalid parameter: CallbackCommandList must be an array of strings",
                )
            })?;
            Command::Set(CallbackConfig { url, commands })
        }
    };
    Ok(ApiRequest {
        command,
        sdkappid,
        identifier,
        usersig,
    })
}

// ---------------------------------------------------------------------------------------
// HTTP plumbing
// ---------------------------------------------------------------------------------------

type Body = BoxBody<Bytes, Infallible>;

/// Why a connection is dropped without an answer.
#[derive(Debug, thiserror::Error)]
enum ConnAbort {
    #[error("connection reset by fault injection")]
    Reset,
    #[error("simulator shutting down")]
    Shutdown,
    #[error("reading the request body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

/// The whole body, `None` if it is larger than `limit`.
async fn read_body(body: Incoming, limit: usize) -> Result<Option<Bytes>, ConnAbort> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Some(collected.to_bytes())),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Ok(None),
        Err(e) => Err(ConnAbort::Body(e)),
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "ActionStatus")]
    action_status: &'static str,
    #[serde(rename = "ErrorCode")]
    error_code: i64,
    #[serde(rename = "ErrorInfo")]
    error_info: &'a str,
    #[serde(rename = "RequestId")]
    request_id: &'a str,
    #[serde(rename = "Response", skip_serializing_if = "Option::is_none")]
    response: Option<&'a CallbackConfig>,
}

fn envelope(code: i64, info: &str, request_id: &str, response: Option<&CallbackConfig>) -> Vec<u8> {
    let envelope = Envelope {
        action_status: if code == 0 { "OK" } else { "FAIL" },
        error_code: code,
        error_info: info,
        request_id,
        response,
    };
    // A struct of strings and integers always serialises.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

fn error_info(code: i64) -> &'static str {
    match code {
        0 => "",
        60002 => "HTTP parse error, check the URL format",
        60003 => "HTTP request JSON parse error, check the JSON format",
        60006 => "SDKAppID is invalid",
        60009 => "request resource error, check the request URL",
        60010 => "the request requires App admin permissions",
        60011 => "SDKAppID request rate exceeds the limit, reduce the request rate",
        60012 => "the REST API request requires an SDKAppID",
        70001 => "UserSig has expired, generate a new one",
        70003 => "UserSig is invalid",
        70009 => "UserSig verification failed, check that it was generated with the right key",
        70013 => "the identifier in the request does not match the UserSig",
        70014 => "the SDKAppID in the request does not match the UserSig",
        70020 => "SDKAppID not found",
        100001 => "internal server error, please retry",
        100002 => "invalid parameter",
        100301 => "callback configuration does not exist",
        _ => "error injected by the simulator",
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    BodyExt::boxed(Full::new(bytes.into()))
}

fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    with_type(status, "application/json", full(body))
}

fn json_value<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(status, body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn html(status: StatusCode, page: String) -> Response<Body> {
    with_type(status, "text/html; charset=utf-8", full(page))
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    with_type(
        status,
        "text/plain; charset=utf-8",
        full(message.to_owned()),
    )
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

/// A large body produced chunk by chunk: `head`, `padding` bytes of `x`, `tail`.
struct Oversized {
    head: Option<Bytes>,
    padding: usize,
    tail: Option<Bytes>,
}

impl hyper::body::Body for Oversized {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if this.padding > 0 {
            let n = this.padding.min(PAD_CHUNK);
            this.padding -= n;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PAD[..n])))));
        }
        Poll::Ready(this.tail.take().map(|tail| Ok(Frame::data(tail))))
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.padding == 0 && self.tail.is_none()
    }
}

/// The connection's socket; sends an RST instead of a FIN on close after a reset fault.
struct SimIo {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for SimIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            // SO_LINGER 0: close() discards unsent data and answers with RST.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for SimIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::JoinHandle;

    const NOW: u64 = 1_700_000_000;
    const CLEAN: u64 = 1_400_000_001;
    const BARE: u64 = 1_400_000_003;
    const KEY1: &str = "a7adbb3a2f5e5584f62cc3cdbd7ba96304a1504b6fd493aac2349f0ec2e4e886";
    const KEY3: &str = "3c150ec55627bcf7045f39158afa37ddf7e26f896f079087fd340d1a19cfb22b";
    const START: &str = "Call.CallbackAfterStartCall";
    const END: &str = "Call.CallbackAfterEndCall";

    fn clean_config() -> CallbackConfig {
        CallbackConfig::new("https://hooks.example.com/cb", &[START, END])
    }

    fn app(sdkappid: u64, key: &str, callback: Option<CallbackConfig>) -> SimApp {
        SimApp {
            sdkappid,
            key: key.to_owned(),
            admins: vec!["administrator".to_owned(), "ops".to_owned()],
            users: vec!["alice".to_owned()],
            callback,
            rotate: None,
        }
    }

    fn scenario() -> Scenario {
        Scenario {
            apps: vec![
                app(CLEAN, KEY1, Some(clean_config())),
                app(BARE, KEY3, None),
            ],
            faults: vec![],
        }
    }

    struct Server {
        sim: Simulator,
        addr: SocketAddr,
        token: CancellationToken,
        task: JoinHandle<std::io::Result<()>>,
    }

    impl Server {
        async fn start(scenario: Scenario) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let sim = Simulator::new(scenario, Arc::new(ManualClock::at_unix(NOW)));
            let token = CancellationToken::new();
            let task = tokio::spawn({
                let sim = sim.clone();
                let token = token.clone();
                async move { sim.run(listener, token).await }
            });
            Server {
                sim,
                addr,
                token,
                task,
            }
        }

        async fn stop(self) {
            self.token.cancel();
            tokio::time::timeout(Duration::from_secs(1), self.task)
                .await
                .expect("run() must return promptly after cancel")
                .unwrap()
                .unwrap();
        }
    }

    struct Resp {
        status: StatusCode,
        content_type: String,
        content_length: Option<String>,
        body: Bytes,
    }

    impl Resp {
        fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap()
        }
        fn code(&self) -> i64 {
            assert_eq!(self.status, StatusCode::OK);
            assert_eq!(self.content_type, "application/json");
            self.json()["ErrorCode"].as_i64().unwrap()
        }
    }

    struct Conn(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

    impl Conn {
        async fn open(addr: SocketAddr) -> Conn {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            Conn(sender)
        }

        async fn send(&mut self, method: Method, uri: &str, body: &str) -> hyper::Result<Resp> {
            let mut req = Request::new(Full::new(Bytes::from(body.to_owned())));
            *req.method_mut() = method;
            *req.uri_mut() = uri.parse().unwrap();
            req.headers_mut()
                .insert(hyper::header::HOST, HeaderValue::from_static("127.0.0.1"));
            let resp = self.0.send_request(req).await?;
            let status = resp.status();
            let header = |name| {
                resp.headers()
                    .get(name)
                    .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
            };
            let content_type = header(CONTENT_TYPE).unwrap_or_default();
            let content_length = header(hyper::header::CONTENT_LENGTH);
            let body = resp.into_body().collect().await?.to_bytes();
            Ok(Resp {
                status,
                content_type,
                content_length,
                body,
            })
        }
    }

    async fn call(addr: SocketAddr, method: Method, uri: &str, body: &str) -> Resp {
        Conn::open(addr)
            .await
            .send(method, uri, body)
            .await
            .unwrap()
    }

    fn sig(key: &str, sdkappid: u64, identifier: &str, time: u64, expire: u64) -> String {
        usersig::mint(&SecretKey::new(key), sdkappid, identifier, time, expire)
            .expose()
            .to_owned()
    }

    fn uri(command: &str, sdkappid: u64, identifier: &str, usersig: &str) -> String {
        format!(
            "/v4/call_config/{command}?sdkappid={sdkappid}&identifier={identifier}&usersig={usersig}&random=4294967295&contenttype=json"
        )
    }

    fn good_uri(command: &str, sdkappid: u64) -> String {
        let key = if sdkappid == BARE { KEY3 } else { KEY1 };
        uri(
            command,
            sdkappid,
            "administrator",
            &sig(key, sdkappid, "administrator", NOW - 60, 86_400),
        )
    }

    async fn get(addr: SocketAddr, sdkappid: u64) -> Resp {
        call(
            addr,
            Method::POST,
            &good_uri("get_callback", sdkappid),
            "{}",
        )
        .await
    }

    #[tokio::test]
    async fn good_get_returns_the_config_in_the_envelope() {
        let server = Server::start(scenario()).await;
        let resp = get(server.addr, CLEAN).await;
        assert_eq!(resp.code(), 0);
        let json = resp.json();
        assert_eq!(json["ActionStatus"], "OK");
        assert_eq!(json["ErrorInfo"], "");
        assert_eq!(json["Response"]["Url"], "https://hooks.example.com/cb");
        assert_eq!(
            json["Response"]["CallbackCommandList"],
            serde_json::json!([START, END])
        );
        let id = json["RequestId"].as_str().unwrap().to_owned();
        assert!(id.starts_with("Id-") && id.contains("-O-Seq-"), "{id}");
        let again = get(server.addr, CLEAN).await.json();
        assert_ne!(again["RequestId"].as_str().unwrap(), id);

        let missing = get(server.addr, BARE).await;
        assert_eq!(missing.code(), 100301);
        let json = missing.json();
        assert_eq!(json["ActionStatus"], "FAIL");
        assert!(json.get("Response").is_none());

        let stats = server.sim.stats();
        assert_eq!(stats.requests_total, 3);
        assert_eq!(stats.malformed_requests, 0);
        assert_eq!(stats.apps[&CLEAN.to_string()].requests, 2);
        assert_eq!(stats.apps[&BARE.to_string()].requests, 1);
        server.stop().await;
    }

    #[tokio::test]
    async fn each_auth_failure_has_its_code() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        let cases = [
            (
                uri(
                    "get_callback",
                    999,
                    "administrator",
                    &sig(KEY1, 999, "administrator", NOW, 3600),
                ),
                70020,
            ),
            (
                uri("get_callback", CLEAN, "administrator", "garbage"),
                70003,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "administrator",
                    &sig(KEY3, CLEAN, "administrator", NOW, 3600),
                ),
                70009,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "administrator",
                    &sig(KEY1, CLEAN, "ops", NOW, 3600),
                ),
                70013,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "administrator",
                    &sig(KEY1, BARE, "administrator", NOW, 3600),
                ),
                70014,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "administrator",
                    &sig(KEY1, CLEAN, "administrator", NOW - 7200, 3600),
                ),
                70001,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "alice",
                    &sig(KEY1, CLEAN, "alice", NOW, 3600),
                ),
                60010,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "bob",
                    &sig(KEY1, CLEAN, "bob", NOW, 3600),
                ),
                60010,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "ops",
                    &sig(KEY1, CLEAN, "ops", NOW, 3600),
                ),
                0,
            ),
        ];
        for (uri, expected) in cases {
            let resp = call(addr, Method::POST, &uri, "{}").await;
            assert_eq!(resp.code(), expected, "{uri}");
            let json = resp.json();
            assert_eq!(
                json["ActionStatus"],
                if expected == 0 { "OK" } else { "FAIL" }
            );
            assert!(!json["ErrorInfo"].as_str().unwrap().is_empty() || expected == 0);
        }
        assert_eq!(server.sim.stats().malformed_requests, 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn malformed_requests_are_counted_exactly() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        let s = sig(KEY1, CLEAN, "administrator", NOW, 3600);
        let base = format!("sdkappid={CLEAN}&identifier=administrator&usersig={s}");
        let get = "/v4/call_config/get_callback";
        let set = "/v4/call_config/set_callback";
        let cases: Vec<(Method, String, &str, i64)> = vec![
            (
                Method::POST,
                format!("{get}?{base}&contenttype=json"),
                "{}",
                60002,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=abc&contenttype=json"),
                "{}",
                60002,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=4294967296&contenttype=json"),
                "{}",
                60002,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=%2B1&contenttype=json"),
                "{}",
                60002,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=1&contenttype=xml"),
                "{}",
                60002,
            ),
            (Method::POST, format!("{get}?{base}&random=1"), "{}", 60002),
            (
                Method::POST,
                format!("{get}?{base}&random=1&random=2&contenttype=json"),
                "{}",
                60002,
            ),
            (
                Method::GET,
                format!("{get}?{base}&random=1&contenttype=json"),
                "",
                60002,
            ),
            (
                Method::POST,
                format!("{get}?identifier=administrator&usersig={s}&random=1&contenttype=json"),
                "{}",
                60012,
            ),
            (
                Method::POST,
                format!("/v4/call_config/nope?{base}&random=1&contenttype=json"),
                "{}",
                60009,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=1&contenttype=json"),
                "not json",
                60003,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=1&contenttype=json"),
                "",
                60003,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=1&contenttype=json"),
                "[]",
                60003,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=1&contenttype=json"),
                r#"{"x":1}"#,
                100002,
            ),
            (
                Method::POST,
                format!("{set}?{base}&random=1&contenttype=json"),
                r#"{"Url":"ftp://x","CallbackCommandList":[]}"#,
                100002,
            ),
            (
                Method::POST,
                format!("{set}?{base}&random=1&contenttype=json"),
                r#"{"Url":"https://x","CallbackCommandList":5}"#,
                100002,
            ),
            (
                Method::POST,
                format!("{set}?{base}&random=1&contenttype=json"),
                r#"{"CallbackCommandList":["a"]}"#,
                100002,
            ),
        ];
        let n = cases.len() as u64;
        for (method, uri, body, expected) in cases {
            let resp = call(addr, method, &uri, body).await;
            assert_eq!(resp.code(), expected, "{uri} {body}");
            assert_eq!(resp.json()["ActionStatus"], "FAIL");
        }
        // Well-formed requests do not count, whatever their answer.
        assert_eq!(get_code(addr, CLEAN).await, 0);
        let bad_sig = uri("get_callback", CLEAN, "administrator", "garbage");
        assert_eq!(call(addr, Method::POST, &bad_sig, "{}").await.code(), 70003);
        let stats = server.sim.stats();
        assert_eq!(stats.malformed_requests, n);
        assert_eq!(stats.requests_total, n + 2);
        // The request without sdkappid does not count for the app.
        assert_eq!(stats.apps[&CLEAN.to_string()].requests, n + 1);
        server.stop().await;
    }

    async fn get_code(addr: SocketAddr, sdkappid: u64) -> i64 {
        get(addr, sdkappid).await.code()
    }

    #[tokio::test]
    async fn set_then_get_round_trips_and_delete_removes() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        let body = r#"{"Url":"http://new.example.com/x","CallbackCommandList":["Call.CallbackAfterMemberChanged"]}"#;
        let resp = call(addr, Method::POST, &good_uri("set_callback", BARE), body).await;
        assert_eq!(resp.code(), 0);
        assert!(resp.json().get("Response").is_none());
        let json = get(addr, BARE).await.json();
        assert_eq!(json["Response"]["Url"], "http://new.example.com/x");
        assert_eq!(
            json["Response"]["CallbackCommandList"],
            serde_json::json!(["Call.CallbackAfterMemberChanged"])
        );
        let resp = call(addr, Method::POST, &good_uri("delete_callback", BARE), "{}").await;
        assert_eq!(resp.code(), 0);
        assert_eq!(get_code(addr, BARE).await, 100301);
        // Deleting nothing is not an error.
        let resp = call(addr, Method::POST, &good_uri("delete_callback", BARE), "{}").await;
        assert_eq!(resp.code(), 0);
        assert_eq!(server.sim.stats().malformed_requests, 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn control_endpoints() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        let path = format!("/__sim/apps/{CLEAN}");
        let resp = call(
            addr,
            Method::PUT,
            &path,
            r#"{"Url":"http://x.example.com/","CallbackCommandList":["a","b"]}"#,
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK);
        let json = get(addr, CLEAN).await.json();
        assert_eq!(json["Response"]["Url"], "http://x.example.com/");
        assert_eq!(
            json["Response"]["CallbackCommandList"],
            serde_json::json!(["a", "b"])
        );
        let resp = call(addr, Method::GET, &path, "").await;
        assert_eq!(resp.json()["Url"], "http://x.example.com/");

        assert_eq!(
            call(addr, Method::PUT, &path, "null").await.status,
            StatusCode::OK
        );
        assert_eq!(get_code(addr, CLEAN).await, 100301);
        assert_eq!(server.sim.callback(CLEAN), Some(None));

        let unknown = call(addr, Method::PUT, "/__sim/apps/999", "null").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        let bad = call(addr, Method::PUT, &path, r#"{"Url":"x","Commands":[]}"#).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);

        let faults =
            format!(r#"[{{"sdkappid":{CLEAN},"kind":"http_status","status":503,"count":1}}]"#);
        assert_eq!(
            call(addr, Method::PUT, "/__sim/faults", &faults)
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            get(addr, CLEAN).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(server.sim.faults().is_empty());
        let unknown_app = r#"[{"sdkappid":5,"kind":"hang"}]"#;
        assert_eq!(
            call(addr, Method::PUT, "/__sim/faults", unknown_app)
                .await
                .status,
            StatusCode::BAD_REQUEST
        );
        let bad_kind = format!(r#"[{{"sdkappid":{CLEAN},"kind":"hang","status":502}}]"#);
        assert_eq!(
            call(addr, Method::PUT, "/__sim/faults", &bad_kind)
                .await
                .status,
            StatusCode::BAD_REQUEST
        );

        let resp = call(addr, Method::GET, "/__sim/stats", "").await;
        assert_eq!(resp.status, StatusCode::OK);
        let stats: SimStats = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(stats, server.sim.stats());
        assert_eq!(stats.requests_total, 3);
        assert_eq!(
            call(addr, Method::GET, "/nope", "").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(addr, Method::GET, "/__sim/nope", "").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(addr, Method::POST, "/__sim/stats", "").await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        // Control requests are not API requests.
        assert_eq!(server.sim.stats().requests_total, 3);
        server.stop().await;
    }

    fn fault(kind: FaultKind, count: Option<u32>) -> FaultRule {
        FaultRule {
            sdkappid: CLEAN,
            kind,
            count,
        }
    }

    #[tokio::test]
    async fn status_and_error_code_faults_apply_count_times_then_stop() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        server.sim.set_faults(vec![
            fault(FaultKind::HttpStatus { status: 502 }, Some(1)),
            fault(FaultKind::ErrorCode { code: 100001 }, Some(2)),
        ]);
        let resp = get(addr, CLEAN).await;
        assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
        assert!(resp.content_type.starts_with("text/html"));
        assert_eq!(get_code(addr, CLEAN).await, 100001);
        // Faults are per app: the other app is unaffected.
        assert_eq!(get_code(addr, BARE).await, 100301);
        assert_eq!(get_code(addr, CLEAN).await, 100001);
        assert_eq!(get_code(addr, CLEAN).await, 0);
        assert!(server.sim.faults().is_empty());
        // Auth is checked before faults.
        server
            .sim
            .set_faults(vec![fault(FaultKind::ErrorCode { code: 100001 }, None)]);
        let bad_sig = uri("get_callback", CLEAN, "administrator", "garbage");
        assert_eq!(call(addr, Method::POST, &bad_sig, "{}").await.code(), 70003);
        assert_eq!(get_code(addr, CLEAN).await, 100001);
        assert_eq!(get_code(addr, CLEAN).await, 100001);
        server.stop().await;
    }

    #[tokio::test]
    async fn body_faults_misbehave_as_described() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        server.sim.set_faults(vec![
            fault(FaultKind::MalformedJson, Some(1)),
            fault(FaultKind::WrongTypes, Some(1)),
            fault(FaultKind::Oversized, Some(1)),
            fault(FaultKind::HtmlPage, Some(1)),
        ]);
        let malformed = get(addr, CLEAN).await;
        assert_eq!(malformed.status, StatusCode::OK);
        assert_eq!(malformed.content_type, "application/json");
        assert!(serde_json::from_slice::<serde_json::Value>(&malformed.body).is_err());

        let wrong = get(addr, CLEAN).await;
        let json = wrong.json();
        assert!(json["ErrorCode"].is_string());
        assert!(json["Response"]["CallbackCommandList"].is_number());

        let big = get(addr, CLEAN).await;
        assert_eq!(big.status, StatusCode::OK);
        assert!(big.body.len() > 2 * 1024 * 1024, "{}", big.body.len());
        assert_eq!(big.content_length, None, "must be streamed");
        assert_eq!(
            big.json()["Response"]["Url"],
            "https://hooks.example.com/cb"
        );

        let html = get(addr, CLEAN).await;
        assert_eq!(html.status, StatusCode::OK);
        assert!(html.content_type.starts_with("text/html"));
        assert!(html.body.starts_with(b"<!DOCTYPE html>"));

        assert_eq!(get_code(addr, CLEAN).await, 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn delay_fault_delays_then_answers() {
        let server = Server::start(scenario()).await;
        server.sim.set_faults(vec![fault(
            FaultKind::Delay {
                delay: Duration::from_millis(200),
            },
            Some(1),
        )]);
        let started = Instant::now();
        assert_eq!(get_code(server.addr, CLEAN).await, 0);
        assert!(started.elapsed() >= Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(get_code(server.addr, CLEAN).await, 0);
        assert!(started.elapsed() < Duration::from_millis(200));
        server.stop().await;
    }

    #[tokio::test]
    async fn hang_never_answers_and_does_not_block_shutdown() {
        let server = Server::start(scenario()).await;
        server.sim.set_faults(vec![fault(FaultKind::Hang, None)]);
        let addr = server.addr;
        let hung = tokio::spawn(async move {
            Conn::open(addr)
                .await
                .send(Method::POST, &good_uri("get_callback", CLEAN), "{}")
                .await
                .map(|r| r.status)
        });
        // An idle keep-alive connection must not hold shutdown up either.
        let mut idle = Conn::open(addr).await;
        assert_eq!(
            idle.send(Method::GET, "/__sim/stats", "")
                .await
                .unwrap()
                .status,
            StatusCode::OK
        );
        let waited = tokio::time::timeout(Duration::from_millis(300), async {
            while server.sim.stats().requests_total == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "the hung request never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!hung.is_finished());
        let started = Instant::now();
        server.stop().await;
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(
            hung.await.unwrap().is_err(),
            "a hung request gets no answer"
        );
    }

    #[tokio::test]
    async fn reset_fault_closes_the_connection_with_rst() {
        let server = Server::start(scenario()).await;
        server
            .sim
            .set_faults(vec![fault(FaultKind::Reset, Some(1))]);
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
            good_uri("get_callback", CLEAN)
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut buf))
            .await
            .unwrap();
        match read {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
            Ok(n) => panic!(
                "expected a reset, read {n} bytes: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
        // Only that request was hit.
        assert_eq!(get_code(server.addr, CLEAN).await, 0);
        server.stop().await;
    }

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

    #[tokio::test]
    async fn rotation_cycles_until_a_set_replaces_it() {
        let a = CallbackConfig::new("https://a.example.com/", &[START]);
        let b = CallbackConfig::new("https://b.example.com/", &[START, END]);
        let mut scenario = scenario();
        scenario.apps[1].rotate = Some(Rotate {
            every: Duration::from_millis(100),
            configs: vec![Some(a.clone()), None, Some(b.clone())],
        });
        let server = Server::start(scenario).await;
        let index = |resp: &Resp| -> usize {
            let json = resp.json();
            match json["Response"]["Url"].as_str() {
                Some("https://a.example.com/") => 0,
                None => 1,
                Some("https://b.example.com/") => 2,
                Some(other) => panic!("unexpected {other}"),
            }
        };
        let mut seen = vec![];
        let started = Instant::now();
        let mut conn = Conn::open(server.addr).await;
        let uri = good_uri("get_callback", BARE);
        while started.elapsed() < Duration::from_millis(450) {
            let i = index(&conn.send(Method::POST, &uri, "{}").await.unwrap());
            if seen.last() != Some(&i) {
                seen.push(i);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen.len() >= 4, "{seen:?}");
        for pair in seen.windows(2) {
            assert_eq!(pair[1], (pair[0] + 1) % 3, "{seen:?}");
        }
        server.sim.set_callback(BARE, Some(a.clone()));
        for _ in 0..3 {
            assert_eq!(
                index(&conn.send(Method::POST, &uri, "{}").await.unwrap()),
                0
            );
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        server.stop().await;
    }

    #[test]
    fn scenario_typos_name_line_and_column() {
        let text = "apps:\n  - sdkappid: 1400000001\n    key: abc\n    admin: [administrator]\n";
        let err = Scenario::from_yaml_str(text, "s.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.yaml:4:5: "), "{err}");
        assert!(err.contains("unknown field `admin`"), "{err}");
        assert!(!err.contains(" at line "), "{err}");

        let text = "apps: []\nfaults:\n  - sdkappid: 1\n    kind: delay\n    status: 502\n";
        let err = Scenario::from_yaml_str(text, "s.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.yaml:3:"), "{err}");
        assert!(
            err.contains("`status` does not apply to kind delay"),
            "{err}"
        );

        let text = "apps: []\nfaults:\n  - sdkappid: 1\n    kind: hang\n";
        let err = Scenario::from_yaml_str(text, "s.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("faults[0]: sdkappid 1 is not one of the apps"),
            "{err}"
        );

        let text = "apps:\n  - {sdkappid: 1, key: k}\n  - {sdkappid: 1, key: k}\n";
        let err = Scenario::from_yaml_str(text, "s.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("apps[1] (sdkappid 1): duplicate sdkappid"),
            "{err}"
        );

        let text =
            "apps:\n  - sdkappid: 1\n    key: k\n    rotate: {every: soon, configs: [null]}\n";
        let err = Scenario::from_yaml_str(text, "s.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.yaml:4:"), "{err}");
    }

    #[test]
    fn scenario_files_load_with_every_fault_kind() {
        let text = r#"
apps:
  - sdkappid: 7
    key: k
    callback: {url: "https://x/", commands: [a]}
faults:
  - {sdkappid: 7, kind: http_status, status: 502, count: 3}
  - {sdkappid: 7, kind: delay, delay: 1s 500ms}
  - {sdkappid: 7, kind: hang}
  - {sdkappid: 7, kind: reset}
  - {sdkappid: 7, kind: malformed_json}
  - {sdkappid: 7, kind: wrong_types}
  - {sdkappid: 7, kind: oversized}
  - {sdkappid: 7, kind: html_page}
  - {sdkappid: 7, kind: error_code, code: 100001, count: 2}
"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scenario.yaml");
        std::fs::write(&path, text).unwrap();
        let scenario = Scenario::load(&path).unwrap();
        assert_eq!(scenario.apps[0].admins, vec!["administrator"]);
        assert_eq!(
            scenario.apps[0].callback,
            Some(CallbackConfig::new("https://x/", &["a"]))
        );
        let kinds: Vec<FaultKind> = scenario.faults.iter().map(|f| f.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                FaultKind::HttpStatus { status: 502 },
                FaultKind::Delay {
                    delay: Duration::from_millis(1500)
                },
                FaultKind::Hang,
                FaultKind::Reset,
                FaultKind::MalformedJson,
                FaultKind::WrongTypes,
                FaultKind::Oversized,
                FaultKind::HtmlPage,
                FaultKind::ErrorCode { code: 100001 },
            ]
        );
        assert_eq!(scenario.faults[0].count, Some(3));
        assert_eq!(scenario.faults[1].count, None);
        // The JSON form of /__sim/faults round-trips.
        let json = serde_json::to_string(&scenario.faults).unwrap();
        let back: Vec<FaultRule> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, scenario.faults);
        assert!(!format!("{scenario:?}").contains("key: \"k\""));

        let missing = Scenario::load(&dir.path().join("nope.yaml")).unwrap_err();
        assert!(matches!(missing, ScenarioError::Read { .. }));
    }

    #[test]
    fn the_example_scenario_tells_the_demo_story() {
        let scenario = Scenario::example().unwrap();
        assert_eq!(scenario.apps.len(), 4);
        assert!(scenario.faults.is_empty());
        let clean = scenario.apps[0].callback.as_ref().unwrap();
        assert!(clean.url.starts_with("https://"));
        assert_eq!(clean.commands, vec![START, END]);
        assert!(
            scenario.apps[1]
                .callback
                .as_ref()
                .unwrap()
                .url
                .starts_with("http://")
        );
        assert!(scenario.apps[2].callback.is_none() && scenario.apps[2].rotate.is_none());
        let rotate = scenario.apps[3].rotate.as_ref().unwrap();
        assert_eq!(rotate.every, Duration::from_secs(30));
        for app in &scenario.apps {
            assert_eq!(app.key.len(), 64);
            assert!(app.key.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(app.admins, vec!["administrator"]);
        }
        // Every commented-out fault example parses too.
        let (head, tail) = EXAMPLE_SCENARIO.split_once("faults: []").unwrap();
        let uncommented: String = tail
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let uncommented = format!("{head}{uncommented}");
        let with_faults = Scenario::from_yaml_str(&uncommented, "example").unwrap();
        assert_eq!(with_faults.faults.len(), 9);
    }
}
