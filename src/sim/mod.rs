//! The simulated Chat REST gateway, used by `calldrift simulate`, `calldrift demo` and the
//! tests: a faithful stand-in for the callback configuration APIs of TUICallKit
//! (`v4/call_config`), TUIRoomKit (`v4/room_config`) and TUILiveKit (`v4/live_config`).
//!
//! # Binding
//!
//! [`Simulator::run`] serves whatever listener it is given. It has no authentication and
//! its `/__sim/*` endpoints change its state, so the CLI must bind a loopback address
//! (`127.0.0.1:…`) unless the user explicitly asks for another one with `--listen`.
//!
//! # API requests
//!
//! `POST /v4/call_config/{get_callback,set_callback,delete_callback}` and
//! `POST /v4/{room_config,live_config}/{get_callback,set_callback,update_callback,delete_callback}`,
//! each with `?sdkappid=&identifier=&usersig=&random=&contenttype=json`; each app has one
//! configuration per product.
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
//!    than `{}`, or a set/update body without a `Url` starting with `http://`/`https://`
//!    or without a `CallbackCommandList` of non-empty strings → 100002. Unknown query
//!    parameters and unknown body fields of set/update are ignored, as gateways do.
//! 2. Unknown `sdkappid` → 70020 (not 60006).
//! 3. UserSig against the app's key at [`Clock::unix_secs`]: 70003 malformed, 70014
//!    sdkappid mismatch, 70013 identifier mismatch, 70001 expired, 70009 wrong key.
//! 4. Identifier listed in `users`, or not in `admins` → 60010.
//! 5. More than [`PER_APP_LIMIT`] requests for the app (all products together) in the
//!    trailing second → 60011 (counted in `rate_limited`).
//! 6. The first matching fault rule, if any (see [`FaultKind`]).
//! 7. The command, on the path's product: get → 0 with `Response: {"Url",
//!    "CallbackCommandList"}`, or 100301 without `Response`; set → 0 (call's creates or
//!    overwrites; room's and live's create only, 100300 when a configuration exists);
//!    update (room, live) → 0, or 100301 when none exists; delete → 0 (also when there
//!    was no configuration).
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
//! `GET /__sim/stats` ([`SimStats`]); `GET|PUT /__sim/apps/{sdkappid}` (TUICallKit's
//! configuration: body a [`CallbackConfig`] in wire form, or `null` to delete; a PUT body
//! `{"call": …, "room": …, "live": …}` sets each product it names and answers all three);
//! `GET|PUT /__sim/apps/{sdkappid}/{product}` (one product's; 404 for unknown apps and
//! products); `GET|PUT /__sim/faults` (a JSON array of [`FaultRule`], applied to every
//! product of the app). Anything else is 404.
//!
//! # Rotation
//!
//! An app with [`Rotate`] shows as its TUICallKit configuration
//! `configs[(elapsed / every) % len]`, where `elapsed` is real (monotonic) time since
//! [`Simulator::new`], not the [`Clock`].
//!
//! # Distance
//!
//! What a gateway far away behind a load balancer does, each off by default: every `/v4/`
//! answer waits a [`Latency`] (its app's own, else the scenario's; on its own timer, so
//! other requests go on); [`TlsSettings`] serve HTTPS only, with a certificate generated
//! at start (its CA written to [`Simulator::ca_file`]) or given; [`Connections`] close a
//! connection after some `/v4/` answers or when idle. `/__sim/*` never waits and never
//! counts towards closing. `/__sim/stats` counts connections accepted and TLS handshakes
//! completed.
//!
//! # Layout
//!
//! - `scenario`: the scenario file: apps, configurations, rotations; parsing, validation.
//! - `latency`: answer latency and its jitter.
//! - `tls`: the generated or given certificate, and the CA file.
//! - `connection`: one connection: closing after answers or when idle, resets.
//! - `flags`: the `simulate` flags that override the scenario's latency, TLS, closing.
//! - `state`: what requests read and change: apps, configurations per product, fault
//!   rules, counters.
//! - `api`: the `/v4/` handlers: parsing, UserSig, ErrorCodes, commands, envelopes.
//! - `faults`: fault rules, which one a request meets, and what each kind does.
//! - `stats`: request counting and the largest 1-second window.
//! - `control`: the `/__sim/*` endpoints.
//! - `server`: the accept loop, connections, routing by path, shutdown.
//! - `http`: the answer body type, bounded body reading, typed answers.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod api;
mod connection;
mod control;
mod faults;
mod flags;
#[cfg(test)]
mod harness;
mod http;
mod latency;
mod scenario;
mod server;
mod state;
mod stats;
mod tls;

use std::fmt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::clock::Clock;
use crate::product::Product;

pub use self::api::PER_APP_LIMIT;
pub use self::connection::Connections;
pub use self::faults::{FaultKind, FaultRule};
pub use self::flags::GatewayFlags;
use self::latency::LatencyPlan;
pub use self::latency::{Distribution, Latency};
pub use self::scenario::{
    CallbackConfig, EXAMPLE_SCENARIO, Rotate, Scenario, ScenarioError, SimApp,
};
use self::state::{ConfigState, State};
pub use self::stats::{AppStats, SimStats};
use self::tls::ServerTls;
pub use self::tls::{TlsError, TlsSettings};

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
    latency: LatencyPlan,
    connections: Connections,
    tls: Option<ServerTls>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let apps: Vec<u64> = self.lock().apps.keys().copied().collect();
        f.debug_struct("Simulator").field("apps", &apps).finish()
    }
}

impl Simulator {
    /// A simulator serving `scenario`; UserSigs are checked at `clock`'s time. With
    /// `tls`, the certificate is generated (and its CA written) or read here.
    pub fn new(scenario: Scenario, clock: Arc<dyn Clock>) -> Result<Simulator, TlsError> {
        let tls = scenario.tls.as_ref().map(ServerTls::prepare).transpose()?;
        let latency = LatencyPlan::new(&scenario);
        let connections = scenario.connections;
        let state = State::new(scenario);
        Ok(Simulator {
            inner: Arc::new(Inner {
                clock,
                started: Instant::now(),
                seq: AtomicU64::new(1),
                state: Mutex::new(state),
                latency,
                connections,
                tls,
            }),
        })
    }

    /// Whether it serves HTTPS (and only HTTPS).
    pub fn is_tls(&self) -> bool {
        self.inner.tls.is_some()
    }

    /// The file holding the generated CA certificate (PEM), for a client's `ca_file`.
    pub fn ca_file(&self) -> Option<&Path> {
        let ca_file = self.inner.tls.as_ref()?.ca_file.as_ref()?;
        Some(&ca_file.path)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces an app's TUICallKit configuration (and any rotation); `None` deletes it.
    /// Unknown apps are ignored (see [`Simulator::has_app`]).
    pub fn set_callback(&self, sdkappid: u64, cfg: Option<CallbackConfig>) {
        self.set_product_callback(sdkappid, Product::Call, cfg);
    }

    /// Replaces an app's configuration of `product` (and any rotation); `None` deletes it.
    /// Unknown apps are ignored.
    pub fn set_product_callback(
        &self,
        sdkappid: u64,
        product: Product,
        cfg: Option<CallbackConfig>,
    ) {
        if let Some(app) = self.lock().apps.get_mut(&sdkappid) {
            *app.configs.get_mut(product) = ConfigState::Fixed(cfg);
        }
    }

    /// The TUICallKit configuration get_callback would answer now: `None` for an unknown
    /// app, `Some(None)` for an app without configuration.
    pub fn callback(&self, sdkappid: u64) -> Option<Option<CallbackConfig>> {
        self.product_callback(sdkappid, Product::Call)
    }

    /// Like [`Simulator::callback`], for `product`.
    pub fn product_callback(
        &self,
        sdkappid: u64,
        product: Product,
    ) -> Option<Option<CallbackConfig>> {
        let st = self.lock();
        st.apps
            .get(&sdkappid)
            .map(|app| app.configs.get(product).effective(self.inner.started))
    }

    /// Whether the scenario has this app.
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
}
