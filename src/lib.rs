//! calldrift watches the TUICallKit, TUIRoomKit and TUILiveKit callback configurations of
//! Tencent Cloud Chat apps.
//!
//! - [`atomic_file`]: replacing a file atomically, never through a symlink.
//! - [`check`]: one pass over every target, as `calldrift check` does it.
//! - [`cli`]: the command line and its exit codes.
//! - [`clock`]: wall-clock time behind a trait, so tests control it.
//! - [`config`]: the config file: parsing, validation with positions, secret resolution.
//! - [`daemon`]: `calldrift run`: scheduler, server, state file and reloads wired together.
//! - [`drift`]: the pure core: expected vs observed configuration, findings, fingerprint.
//! - [`metrics`]: every Prometheus metric, registered once.
//! - [`plan`]: `calldrift plan` and `apply`: the writes that restore the expectations.
//! - [`probe`]: callback endpoint health: DNS, TLS handshake and certificate expiry.
//! - [`product`]: TUICallKit, TUIRoomKit and TUILiveKit: API families and command words.
//! - [`ratelimit`]: the global and per-app limits every gateway call passes.
//! - [`redact`]: how callback URLs are shown anywhere.
//! - [`remedy`]: the pure decision of remediation: which write makes a target match.
//! - [`report`]: the per-target report of `check` and `/api/v1/targets`.
//! - [`scheduler`]: the poll loop: spread, skips, lag.
//! - [`secret`]: the secret key type, which never prints itself.
//! - [`server`]: the HTTP endpoints and the landing page.
//! - [`snapshot`]: `calldrift snapshot`: a config whose expectations are what was observed.
//! - [`shard`]: `--shard INDEX/COUNT`: which apps one replica polls.
//! - [`sim`]: the simulated Chat REST gateway behind `calldrift simulate`, `demo` and the tests.
//! - [`state`]: the state file, written atomically.
//! - [`status`]: what is known about each target; transitions, logs and metric updates.
//! - [`tencent`]: the REST gateway client, with [`tencent::usersig`] for credentials.
//! - [`web`]: `web_config_file` (exporter-toolkit format): TLS and basic auth for the server.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Version and git revision, as `--version` prints them and snapshots record them.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("CALLDRIFT_REVISION"),
    ")"
);

pub mod atomic_file;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod drift;
pub mod enforce;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod product;
pub mod ratelimit;
pub mod redact;
pub mod remedy;
pub mod report;
pub mod scheduler;
pub mod secret;
pub mod server;
pub mod shard;
pub mod sim;
pub mod snapshot;
pub mod state;
pub mod status;
pub mod tencent;
pub mod web;
