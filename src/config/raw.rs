//! The config as written: serde's view of the YAML, every key optional, before any check.
//! Validation (see [`super::validate`]) turns it into the plain data of [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::product::Product;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawConfig {
    pub(super) listen: Option<String>,
    pub(super) web_config_file: Option<PathBuf>,
    pub(super) state_file: Option<PathBuf>,
    pub(super) log_format: Option<String>,
    pub(super) log_level: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) poll: Option<RawPoll>,
    pub(super) rate_limit: Option<RawRateLimit>,
    pub(super) endpoint_probe: Option<RawEndpointProbe>,
    pub(super) remediate: Option<RawRemediate>,
    pub(super) regions: Option<BTreeMap<String, RawRegion>>,
    pub(super) expect: Option<RawExpect>,
    pub(super) apps: Option<Vec<RawApp>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawPoll {
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) retries: Option<u32>,
    pub(super) max_concurrency: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRateLimit {
    pub(super) per_second: Option<u32>,
    pub(super) per_app_per_second: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawEndpointProbe {
    pub(super) enabled: Option<bool>,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) allow_private: Option<bool>,
    pub(super) ca_file: Option<PathBuf>,
}

/// `remediate:`, global or an app's; every key optional, an app's layered over the global.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRemediate {
    /// A word; `false` (YAML 1.1's reading of `off`) is taken as `off` too.
    pub(super) mode: Option<RawMode>,
    pub(super) after: Option<u32>,
    pub(super) max_per_target: Option<u32>,
    pub(super) max_total: Option<u32>,
    pub(super) window: Option<String>,
}

/// `remediate.mode` as written: a word, or a boolean.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawMode {
    Bool(bool),
    Word(String),
}

/// A user region: a base URL, or `{url, backup}` with a backup domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawRegion {
    Url(String),
    WithBackup { url: String, backup: Option<String> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawPresence {
    Bool(bool),
    Word(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawExpect {
    pub(super) present: Option<RawPresence>,
    pub(super) url_scheme: Option<String>,
    /// Outer `None`: not written, inherit. `Some(None)`: written as `null`, which clears an
    /// inherited value, so an app can drop a global `url_prefix` (and `snapshot` relies on it).
    #[serde(deserialize_with = "written")]
    pub(super) url: Option<Option<String>>,
    #[serde(deserialize_with = "written")]
    pub(super) url_prefix: Option<Option<String>>,
    pub(super) commands: Option<Vec<String>>,
    pub(super) extra_commands: Option<String>,
    pub(super) ignore_commands: Option<Vec<String>>,
    /// Per-product sub-blocks, written inside a top-level block only (validation refuses
    /// one inside another).
    pub(super) call: Option<Box<RawExpect>>,
    pub(super) room: Option<Box<RawExpect>>,
    pub(super) live: Option<Box<RawExpect>>,
}

impl RawExpect {
    /// The sub-block of `product`, if written.
    pub(super) fn sub_block(&self, product: Product) -> Option<&RawExpect> {
        match product {
            Product::Call => self.call.as_deref(),
            Product::Room => self.room.as_deref(),
            Product::Live => self.live.as_deref(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawApp {
    pub(super) name: Option<String>,
    /// A number; quoted (`"1400000001"`) is accepted too, as consoles show it as text.
    #[serde(deserialize_with = "number_or_quoted")]
    pub(super) sdkappid: Option<u64>,
    pub(super) regions: Option<Vec<String>>,
    pub(super) identifier: Option<String>,
    pub(super) secret_key_file: Option<PathBuf>,
    pub(super) secret_key_env: Option<String>,
    pub(super) secret_key: Option<String>,
    pub(super) usersig_ttl: Option<String>,
    /// `call`, `room`, `live`; `[call]` when not written.
    pub(super) products: Option<Vec<String>>,
    pub(super) expect: Option<RawExpect>,
    pub(super) remediate: Option<RawRemediate>,
}

/// Tells a key written as `null` (`Some(None)`) from a key not written at all (`None`, by
/// `#[serde(default)]`).
fn written<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A non-negative number, written bare or quoted.
fn number_or_quoted<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Number;
    impl serde::de::Visitor<'_> for Number {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.trim()
                .parse()
                .map(Some)
                .map_err(|_| E::invalid_type(serde::de::Unexpected::Str(v), &self))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    deserializer.deserialize_any(Number)
}
