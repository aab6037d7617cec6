//! The configuration file: parsing, validation and, as a separate visible step, secret
//! resolution.
//!
//! Parsing and validation are pure functions of the text: they return a [`Config`] of
//! plain data or every problem found, each naming `file:line:column`. Unknown keys are
//! errors, so a typo never silently disables a check. [`resolve_secrets`] then reads key
//! files and environment variables.
//!
//! - `raw`: the YAML as written; `validate`: from that to [`Config`], section by section;
//! - `nesting`: the bound on nesting depth, checked before anything else reads the text;
//! - `diagnostics`: problems with their places; `positions`: where each key sits;
//! - `secrets`: reading the keys the config refers to.

mod diagnostics;
mod nesting;
pub(crate) mod positions;
mod raw;
mod secrets;
mod validate;
mod vocabulary;
pub(crate) mod wording;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use self::diagnostics::{Diagnostic, Severity};
pub(crate) use self::diagnostics::{Diagnostics, decode_yaml, report_unknown};
pub use self::nesting::MAX_DEPTH;
pub(crate) use self::nesting::check_depth;
pub use self::positions::Pos;
use self::positions::Positions;
use self::raw::RawConfig;
pub use self::secrets::{Secrets, resolve_secrets, resolve_selected_secrets};
use crate::drift::Expected;
use crate::product::{Product, ProductMap};
use crate::secret::SecretKey;

/// Where calldrift looks for its config when neither `--config` nor `$CALLDRIFT_CONFIG` is set.
pub const DEFAULT_PATH: &str = "/etc/calldrift/calldrift.yaml";

/// The built-in regions: name, primary base URL, backup base URL.
pub const BUILTIN_REGIONS: [(&str, &str, &str); 8] = [
    (
        "china",
        "https://console.tim.qq.com",
        "https://adminapi.my-imcloud.com",
    ),
    (
        "singapore",
        "https://adminapisgp.im.qcloud.com",
        "https://adminapisgp.my-imcloud.com",
    ),
    (
        "seoul",
        "https://adminapikr.im.qcloud.com",
        "https://adminapikr.my-imcloud.com",
    ),
    (
        "frankfurt",
        "https://adminapiger.im.qcloud.com",
        "https://adminapiger.my-imcloud.com",
    ),
    (
        "silicon-valley",
        "https://adminapiusa.im.qcloud.com",
        "https://adminapiusa.my-imcloud.com",
    ),
    (
        "jakarta",
        "https://adminapiidn.im.qcloud.com",
        "https://adminapiidn.my-imcloud.com",
    ),
    (
        "mumbai",
        "https://adminapiind.im.qcloud.com",
        "https://adminapiind.my-imcloud.com",
    ),
    (
        "tokyo",
        "https://adminapijpn.im.qcloud.com",
        "https://adminapijpn.my-imcloud.com",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// Every diagnostic, for printing one per line.
    pub fn diagnostics(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(all) => all.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub max_concurrency: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub per_app_per_second: u32,
}

/// `endpoint_probe:`: how the callback endpoints' DNS, TLS and certificates are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointProbe {
    pub enabled: bool,
    /// Each distinct `host:port` is probed at most this often.
    pub interval: Duration,
    /// For the whole probe: resolution, connection and handshake.
    pub timeout: Duration,
    /// Probe hosts that resolve to loopback, private, link-local or similar addresses.
    pub allow_private: bool,
    /// Roots trusted besides the bundled ones, for callback endpoints only.
    pub ca_file: Option<PathBuf>,
}

impl Default for EndpointProbe {
    fn default() -> Self {
        EndpointProbe {
            enabled: true,
            interval: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            allow_private: false,
            ca_file: None,
        }
    }
}

/// `remediate:`'s `mode`: whether the daemon writes a managed target back to its
/// expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemediateMode {
    /// Reports only (the default): nothing is ever written.
    #[default]
    Off,
    /// Decides as `enforce` would, logs and shows the decision, writes nothing.
    DryRun,
    /// Writes.
    Enforce,
}

impl RemediateMode {
    /// The word in the config: `off`, `dry-run`, `enforce`.
    pub fn as_str(self) -> &'static str {
        match self {
            RemediateMode::Off => "off",
            RemediateMode::DryRun => "dry-run",
            RemediateMode::Enforce => "enforce",
        }
    }
}

/// `remediate:`: when the daemon restores a drifted managed target, and how often at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remediate {
    pub mode: RemediateMode,
    /// Consecutive authoritative polls showing the same drift before acting.
    pub after: u32,
    /// Writes to one target within `window`; then it is blocked until the window passes.
    pub max_per_target: u32,
    /// Writes to all targets within `window`; then remediation pauses everywhere.
    pub max_total: u32,
    pub window: Duration,
}

impl Default for Remediate {
    fn default() -> Self {
        Remediate {
            mode: RemediateMode::Off,
            after: 2,
            max_per_target: 3,
            max_total: 20,
            window: Duration::from_secs(3600),
        }
    }
}

/// A REST gateway: the primary base URL and, for built-in regions, the backup domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub base: String,
    pub backup: Option<String>,
}

/// Where an app's secret key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
    Inline(SecretKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub name: String,
    pub sdkappid: u64,
    pub regions: Vec<String>,
    pub identifier: String,
    pub secret: SecretSource,
    pub usersig_ttl: Duration,
    /// The global `remediate:` with the app's own block layered over it.
    pub remediate: Remediate,
    /// The products watched (at least one; `call` when the config names none), each with
    /// what its callback configuration should look like.
    pub products: ProductMap<Expected>,
    /// Where the secret source is written, for resolution errors.
    pub secret_pos: Pos,
}

/// A validated configuration: plain data, no secrets read yet (inline ones aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it came from, as given; used in messages.
    pub origin: String,
    pub listen: SocketAddr,
    pub web_config_file: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub ca_file: Option<PathBuf>,
    pub poll: Poll,
    pub rate_limit: RateLimit,
    pub endpoint_probe: EndpointProbe,
    /// The global `remediate:` (each app has its own, layered, in [`App::remediate`]).
    pub remediate: Remediate,
    pub regions: BTreeMap<String, Region>,
    pub apps: Vec<App>,
}

/// Identifies a target in labels, logs and state: app name, SDKAppID, region and product.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TargetKey {
    pub app: String,
    pub sdkappid: u64,
    pub region: String,
    /// `call` when absent, as in what was written before products existed.
    #[serde(default)]
    pub product: Product,
}

impl TargetKey {
    /// The key of one (app, region, product) target.
    pub fn new(app: &str, sdkappid: u64, region: &str, product: Product) -> Self {
        Self {
            app: app.to_owned(),
            sdkappid,
            region: region.to_owned(),
            product,
        }
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "app {} ({}, {}, {})",
            self.app, self.sdkappid, self.region, self.product
        )
    }
}

impl App {
    /// What `product`'s configuration should look like, if the app watches it.
    pub fn expect(&self, product: Product) -> Option<&Expected> {
        self.products.get(&product)
    }
}

impl Config {
    /// The number of (app, region, product) targets.
    pub fn target_count(&self) -> usize {
        self.apps
            .iter()
            .map(|a| a.regions.len() * a.products.len())
            .sum()
    }

    /// How long one round over every target takes at the global rate limit; the interval
    /// really achieved is the larger of this and `poll.interval`.
    pub fn effective_interval(&self) -> Duration {
        let round = Duration::from_secs_f64(
            self.target_count() as f64 / f64::from(self.rate_limit.per_second.max(1)),
        );
        round.max(self.poll.interval)
    }
}

/// A config read and validated, with the secrets of the apps it was loaded for resolved,
/// and its warnings: what `run`, `check` and `validate` start from.
#[derive(Debug)]
pub struct LoadedConfig {
    /// Every app of the file, whichever were selected for their secrets.
    pub config: Config,
    pub secrets: Secrets,
    pub warnings: Vec<Diagnostic>,
}

/// Reads, parses, validates and resolves every app's secret: what `validate` does.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// [`load`] with the environment given as a lookup function.
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigError> {
    load_selected(path, env, &|_| true)
}

/// [`load_with_env`] reading only the secrets of the apps `wanted` selects (a replica's
/// shard), so a replica needs no other app's key. Every app is still validated, its secret
/// source (a file or variable named) included.
pub fn load_selected(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    wanted: &dyn Fn(&App) -> bool,
) -> Result<LoadedConfig, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: origin.clone(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let (config, mut warnings) = parse(&text, &origin, base_dir)?;
    let (secrets, secret_warnings) = resolve_selected_secrets(&config, env, wanted)?;
    warnings.extend(secret_warnings);
    Ok(LoadedConfig {
        config,
        secrets,
        warnings,
    })
}

/// Parses and validates config text. Relative file paths are taken from `base_dir`.
/// Returns the config and its warnings, or every error (with the warnings) found; text
/// nested deeper than [`MAX_DEPTH`] is refused with that one error before anything else.
pub fn parse(
    text: &str,
    origin: &str,
    base_dir: &Path,
) -> Result<(Config, Vec<Diagnostic>), ConfigError> {
    if let Err((pos, message)) = check_depth(text, "a calldrift config") {
        return Err(ConfigError::Invalid(vec![Diagnostic {
            severity: Severity::Error,
            file: origin.to_owned(),
            pos,
            message,
        }]));
    }
    let positions = Positions::scan(text);
    let mut diagnostics = Diagnostics::new(origin, &positions);

    let (raw, unknown) = decode_yaml::<RawConfig>(text, &vocabulary::CONFIG);
    let raw = match raw {
        Ok(raw) => raw,
        Err((pos, message)) => {
            if !report_unknown(&unknown, &vocabulary::CONFIG, &mut diagnostics) {
                diagnostics.push(Severity::Error, pos, message);
            }
            return Err(ConfigError::Invalid(diagnostics.into_vec()));
        }
    };
    if report_unknown(&unknown, &vocabulary::CONFIG, &mut diagnostics) {
        // Some other text: one error says so, and what it lacks is not worth listing.
        return Err(ConfigError::Invalid(diagnostics.into_vec()));
    }

    let config = validate::validate(raw, &mut diagnostics, base_dir);
    if diagnostics.has_errors() {
        return Err(ConfigError::Invalid(diagnostics.into_vec()));
    }
    Ok((config, diagnostics.into_vec()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Parses `text` as `c.yaml` in `/etc/calldrift`; errors as printed.
    pub(crate) fn parse_text(text: &str) -> Result<(Config, Vec<Diagnostic>), Vec<String>> {
        parse(text, "c.yaml", Path::new("/etc/calldrift")).map_err(|e| e.diagnostics())
    }

    /// The errors of `text`, which must be invalid.
    pub(crate) fn errors(text: &str) -> Vec<String> {
        match parse_text(text) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(all) => all,
        }
    }

    /// One valid app, for tests to add to.
    pub(crate) const APP: &str = "apps:\n  - name: a\n    sdkappid: 1400000001\n    regions: [singapore]\n    secret_key_env: K\n";

    #[test]
    fn defaults_fill_an_almost_empty_config() {
        let (config, warnings) = parse_text(APP).expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.listen.to_string(), "0.0.0.0:9797");
        assert_eq!(
            config.poll,
            Poll {
                interval: Duration::from_secs(60),
                timeout: Duration::from_secs(5),
                retries: 2,
                max_concurrency: 1000
            }
        );
        assert_eq!(
            config.rate_limit,
            RateLimit {
                per_second: 200,
                per_app_per_second: 200
            }
        );
        let app = &config.apps[0];
        assert_eq!(app.identifier, "administrator");
        assert_eq!(app.usersig_ttl, Duration::from_secs(86_400));
        assert_eq!(
            app.products,
            ProductMap::from_iter([(Product::Call, Expected::default())])
        );
        assert_eq!(
            config.regions["singapore"].backup.as_deref(),
            Some("https://adminapisgp.my-imcloud.com")
        );
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_place() {
        let text = format!("pol:\n  interval: 30s\n{APP}    expect:\n      urll: x\n");
        assert_eq!(
            errors(&text),
            vec![
                "c.yaml:1:1: unknown field \"pol\" at pol; did you mean \"poll\"?",
                "c.yaml:9:7: unknown field \"urll\" at apps[0].expect.urll; did you mean \"url\"?"
            ]
        );
    }

    #[test]
    fn type_errors_name_line_and_column() {
        let all = errors("poll:\n  retries: two\n");
        assert_eq!(all.len(), 1);
        assert!(all[0].starts_with("c.yaml:2:12: "), "{all:?}");
    }

    #[test]
    fn type_errors_say_what_the_field_holds_in_the_operators_words() {
        let app = |line: &str| {
            format!("apps:\n  - name: a\n{line}\n    regions: [singapore]\n    secret_key_env: K\n")
        };
        let table = [
            (
                app("    sdkappid: abc"),
                "c.yaml:3:15: apps[0].sdkappid: expected an SDKAppID, a number such as 1400000001, found \"abc\"",
            ),
            (
                app("    sdkappid: -5"),
                "c.yaml:3:15: apps[0].sdkappid: expected an SDKAppID, a number such as 1400000001, found -5",
            ),
            (
                "poll:\n  retries: two\n".to_owned(),
                "c.yaml:2:12: poll.retries: expected a number, found \"two\"",
            ),
            (
                "poll:\n  interval: [30s]\n".to_owned(),
                "c.yaml:2:13: poll.interval: expected a duration such as 30s or 5m, found a list",
            ),
            (
                app("    sdkappid: 1\n    products: call"),
                "c.yaml:4:15: apps[0].products: expected a list such as [call, room], found \"call\"",
            ),
            (
                "poll: 5\n".to_owned(),
                "c.yaml:1:7: poll: expected a mapping of keys (key: value), found 5",
            ),
            (
                "log_format: [text]\n".to_owned(),
                "c.yaml:1:13: log_format: expected text, found a list",
            ),
        ];
        for (text, want) in table {
            let all = errors(&text);
            assert!(all.iter().any(|e| e.starts_with(want)), "{want}: {all:#?}");
            assert!(
                all.iter()
                    .all(|e| !["u64", "u32", "struct", "sequence", "`"]
                        .iter()
                        .any(|rust| e.contains(rust))),
                "{all:#?}"
            );
        }
    }

    #[test]
    fn a_quoted_sdkappid_is_a_number() {
        let text = APP.replace("1400000001", "\"1400000001\"");
        let (config, _) = parse_text(&text).expect("valid");
        assert_eq!(config.apps[0].sdkappid, 1_400_000_001);
    }

    #[test]
    fn text_that_is_not_a_config_says_so_once() {
        let want = "c.yaml:1:1: not a calldrift config: expected a YAML mapping of keys such as listen:, poll:, apps:";
        for text in [
            "this is a sentence\n",
            "this is: a sentence\n",
            "- a\n- b\n",
            "42\n",
        ] {
            assert_eq!(errors(text), vec![want], "{text:?}");
        }
        assert_eq!(
            errors("apps: [\n"),
            vec!["c.yaml:2:1: not valid YAML: did not find expected node content"]
        );
    }

    #[test]
    fn unknown_keys_near_known_ones_get_a_suggestion() {
        let text = format!(
            "poll:\n  max_concurency: 5\n{APP}    secret_key_enviroment: K\n    expect:\n      call:\n        comands: []\n"
        );
        assert_eq!(
            errors(&text),
            vec![
                "c.yaml:2:3: unknown field \"max_concurency\" at poll.max_concurency; did you mean \"max_concurrency\"?",
                "c.yaml:8:5: unknown field \"secret_key_enviroment\" at apps[0].secret_key_enviroment; did you mean \"secret_key_env\"?",
                "c.yaml:11:9: unknown field \"comands\" at apps[0].expect.call.comands; did you mean \"commands\"?",
            ]
        );
    }

    #[test]
    fn malformed_yaml_is_an_error_not_a_panic() {
        for junk in ["apps: [", "{{{", "- just\n- a list\n", "apps: 3", "\t\u{0}"] {
            assert!(parse_text(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn a_hundred_thousand_nested_brackets_are_one_error_where_the_bound_is_crossed() {
        // Decoding this took 43 s (quadratic in the depth); the bound stops at level 65.
        let deep = format!("apps: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            errors(&deep),
            vec![
                "c.yaml:1:70: nested deeper than 64 levels; a calldrift config needs fewer than 10"
            ]
        );
        let unclosed = "[".repeat(100_000);
        assert_eq!(
            errors(&unclosed),
            vec![
                "c.yaml:1:65: nested deeper than 64 levels; a calldrift config needs fewer than 10"
            ]
        );
    }

    #[test]
    fn nesting_at_the_bound_is_decoded_and_one_over_is_refused() {
        // Root mapping, `apps`, then 62 more: 64 levels, decoded (and wrong for other reasons).
        let at = format!("apps: [{}{}]\n", "[".repeat(62), "]".repeat(62));
        let all = errors(&at);
        assert!(
            all.iter().all(|e| !e.contains("nested deeper")) && all[0].starts_with("c.yaml:1:8: "),
            "{all:?}"
        );
        let over = format!("apps: [{}{}]\n", "[".repeat(63), "]".repeat(63));
        assert_eq!(
            errors(&over),
            vec![
                "c.yaml:1:70: nested deeper than 64 levels; a calldrift config needs fewer than 10"
            ]
        );
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../../config/calldrift.example.yaml");
        let (config, warnings) = parse_text(text).expect("example config is valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.apps.len(), 3);
        assert_eq!(config.target_count(), 4);
    }
}
