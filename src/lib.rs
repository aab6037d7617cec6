//! calldrift watches the TUICallKit callback configuration of Tencent Cloud Chat apps.
//!
//! - [`clock`]: wall-clock time behind a trait, so tests control it.
//! - [`tencent`]: the REST gateway client, with [`tencent::usersig`] for credentials.
//! - [`sim`]: the simulated Chat REST gateway behind `calldrift simulate`, `demo` and the tests.
pub mod clock;
pub mod sim;
pub mod tencent;
