//! calldrift watches the TUICallKit callback configuration of Tencent Cloud Chat apps.
//!
//! - [`check`]: one pass over every target, as `calldrift check` does it.
//! - [`cli`]: the command line and its exit codes.
//! - [`clock`]: wall-clock time behind a trait, so tests control it.
//! - [`config`]: the config file: parsing, validation with positions, secret resolution.
//! - [`drift`]: the pure core: expected vs observed configuration, findings, fingerprint.
//! - [`metrics`]: every Prometheus metric, registered once.
//! - [`ratelimit`]: the global and per-app limits every gateway call passes.
//! - [`redact`]: how callback URLs are shown anywhere.
//! - [`report`]: the per-target report of `check` and `/api/v1/targets`.
//! - [`state`]: the state file, written atomically.
//! - [`tencent`]: the REST gateway client, with [`tencent::usersig`] for credentials.
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod drift;
pub mod metrics;
pub mod ratelimit;
pub mod redact;
pub mod report;
pub mod state;
pub mod tencent;
