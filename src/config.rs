//! The configuration file: parsing, validation and, as a separate visible step, secret
//! resolution.
//!
//! Parsing and validation are pure functions of the text: they return a [`Config`] of
//! plain data or every problem found, each naming `file:line:column`. Unknown keys are
//! errors, so a typo never silently disables a check. [`resolve_secrets`] then reads key
//! files and environment variables.

pub(crate) mod positions;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use self::positions::Pos;
use self::positions::Positions;
use crate::drift::{DOCUMENTED_COMMANDS, Expected, ExtraCommands, Presence};
use crate::tencent::usersig::{SecretKey, UserSigCache};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a config file, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(
            f,
            "{}:{}:{}: {level}{}",
            self.file, self.pos.line, self.pos.column, self.message
        )
    }
}

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
    pub expect: Expected,
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
    pub regions: BTreeMap<String, Region>,
    pub apps: Vec<App>,
}

/// Identifies a target in labels, logs and state: app name, SDKAppID and region.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TargetKey {
    pub app: String,
    pub sdkappid: u64,
    pub region: String,
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "app {} ({}, {})", self.app, self.sdkappid, self.region)
    }
}

/// One (app, region) pair, ready to poll.
#[derive(Debug, Clone)]
pub struct Target {
    pub key: TargetKey,
    pub identifier: String,
    /// Primary base URL first, then the backup domain if the region has one.
    pub bases: Vec<String>,
    /// Shared by all regions of one app.
    pub usersig: Arc<UserSigCache>,
    pub expect: Expected,
}

/// The secret key of every app, by app name.
#[derive(Debug, Default, Clone)]
pub struct Secrets(BTreeMap<String, SecretKey>);

impl Secrets {
    pub fn get(&self, app: &str) -> Option<&SecretKey> {
        self.0.get(app)
    }

    /// Every key, for tests that search output for leaks.
    pub fn keys(&self) -> impl Iterator<Item = &SecretKey> {
        self.0.values()
    }
}

impl Config {
    /// Every (app, region) pair, in config order. Apps without a resolved secret are left out.
    pub fn targets(&self, secrets: &Secrets) -> Vec<Target> {
        let mut targets = Vec::new();
        for app in &self.apps {
            let Some(key) = secrets.get(&app.name) else {
                continue;
            };
            let usersig = Arc::new(UserSigCache::new(
                key.clone(),
                app.sdkappid,
                app.identifier.clone(),
                app.usersig_ttl.as_secs(),
            ));
            for region_name in &app.regions {
                let Some(region) = self.regions.get(region_name) else {
                    continue;
                };
                targets.push(Target {
                    key: TargetKey {
                        app: app.name.clone(),
                        sdkappid: app.sdkappid,
                        region: region_name.clone(),
                    },
                    identifier: app.identifier.clone(),
                    bases: std::iter::once(region.base.clone())
                        .chain(region.backup.clone())
                        .collect(),
                    usersig: usersig.clone(),
                    expect: app.expect.clone(),
                });
            }
        }
        targets
    }

    /// The number of (app, region) pairs.
    pub fn target_count(&self) -> usize {
        self.apps.iter().map(|a| a.regions.len()).sum()
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

// ---- raw, as written -------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawConfig {
    listen: Option<String>,
    web_config_file: Option<PathBuf>,
    state_file: Option<PathBuf>,
    log_format: Option<String>,
    log_level: Option<String>,
    ca_file: Option<PathBuf>,
    poll: Option<RawPoll>,
    rate_limit: Option<RawRateLimit>,
    regions: Option<BTreeMap<String, RawRegion>>,
    expect: Option<RawExpect>,
    apps: Option<Vec<RawApp>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPoll {
    interval: Option<String>,
    timeout: Option<String>,
    retries: Option<u32>,
    max_concurrency: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRateLimit {
    per_second: Option<u32>,
    per_app_per_second: Option<u32>,
}

/// A user region: a base URL, or `{url, backup}` with a backup domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawRegion {
    Url(String),
    WithBackup { url: String, backup: Option<String> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawPresence {
    Bool(bool),
    Word(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct RawExpect {
    present: Option<RawPresence>,
    url_scheme: Option<String>,
    /// Outer `None`: not written, inherit. `Some(None)`: written as `null`, which clears an
    /// inherited value, so an app can drop a global `url_prefix` (and `snapshot` relies on it).
    #[serde(deserialize_with = "written")]
    url: Option<Option<String>>,
    #[serde(deserialize_with = "written")]
    url_prefix: Option<Option<String>>,
    commands: Option<Vec<String>>,
    extra_commands: Option<String>,
    ignore_commands: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawApp {
    name: Option<String>,
    sdkappid: Option<u64>,
    regions: Option<Vec<String>>,
    identifier: Option<String>,
    secret_key_file: Option<PathBuf>,
    secret_key_env: Option<String>,
    secret_key: Option<String>,
    usersig_ttl: Option<String>,
    expect: Option<RawExpect>,
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

// ---- parsing and validation ------------------------------------------------------------

/// Collects diagnostics with positions looked up by path (also used by `web`).
pub(crate) struct Report<'a> {
    pub(crate) file: &'a str,
    pub(crate) positions: &'a Positions,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl Report<'_> {
    pub(crate) fn push(&mut self, severity: Severity, pos: Pos, message: String) {
        self.diagnostics.push(Diagnostic {
            severity,
            file: self.file.to_owned(),
            pos,
            message,
        });
    }

    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.positions.value(path);
        self.push(Severity::Error, pos, message.into());
    }

    pub(crate) fn error_at_key(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.positions.key(path);
        self.push(Severity::Error, pos, message.into());
    }

    pub(crate) fn warning(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.positions.value(path);
        self.push(Severity::Warning, pos, message.into());
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    fn duration(&mut self, path: &str, raw: Option<&str>, default: Duration) -> Duration {
        let Some(text) = raw else { return default };
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.error(path, format!("{path} must be longer than zero"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.error(
                    path,
                    format!("{path}: invalid duration {text:?} ({e}); use e.g. 30s, 5m, 1h30m"),
                );
                default
            }
        }
    }
}

/// The result of reading a config: the config and any warnings.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub secrets: Secrets,
    pub warnings: Vec<Diagnostic>,
}

/// Reads, parses, validates and resolves secrets: what `run`, `check` and `validate` do.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// [`load`] with the environment given as a lookup function.
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: origin.clone(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let (config, mut warnings) = parse(&text, &origin, base_dir)?;
    let (secrets, secret_warnings) = resolve_secrets(&config, env)?;
    warnings.extend(secret_warnings);
    Ok(Loaded {
        config,
        secrets,
        warnings,
    })
}

/// Parses and validates config text. Relative file paths are taken from `base_dir`.
/// Returns the config and its warnings, or every error (with the warnings) found.
pub fn parse(
    text: &str,
    origin: &str,
    base_dir: &Path,
) -> Result<(Config, Vec<Diagnostic>), ConfigError> {
    let positions = Positions::scan(text);
    let mut report = Report {
        file: origin,
        positions: &positions,
        diagnostics: Vec::new(),
    };

    let (raw, unknown) = decode_yaml::<RawConfig>(text);
    for path in &unknown {
        let field = path.rsplit('.').next().unwrap_or(path);
        report.error_at_key(path, format!("unknown field {field:?} at {path}"));
    }
    let raw = match raw {
        Ok(raw) => raw,
        Err((pos, message)) => {
            report.push(Severity::Error, pos, message);
            return Err(ConfigError::Invalid(report.diagnostics));
        }
    };

    let config = validate(raw, &mut report, base_dir);
    if report.has_errors() {
        return Err(ConfigError::Invalid(report.diagnostics));
    }
    Ok((config, report.diagnostics))
}

/// Decodes YAML `text` (empty text is `T::default()`), collecting the dotted path of every
/// key `T` does not know instead of stopping at the first; a type or syntax error comes
/// back with its position and without yaml_serde's own "at line … column …" suffix.
pub(crate) fn decode_yaml<T: serde::de::DeserializeOwned + Default>(
    text: &str,
) -> (Result<T, (Pos, String)>, Vec<String>) {
    if text.trim().is_empty() {
        return (Ok(T::default()), Vec::new());
    }
    let mut unknown = Vec::new();
    let decoded = serde_ignored::deserialize(yaml_serde::Deserializer::from_str(text), |path| {
        unknown.push(path_string(&path))
    });
    let decoded = decoded.map_err(|e| {
        let pos = e.location().map_or(Pos::START, |l| Pos {
            line: l.line(),
            column: l.column(),
        });
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        (pos, message)
    });
    (decoded, unknown)
}

pub(crate) fn path_string(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => join(&path_string(parent), &index.to_string()),
        P::Map { parent, key } => join(&path_string(parent), key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            path_string(parent)
        }
    }
}

fn join(parent: &str, segment: &str) -> String {
    if parent.is_empty() {
        segment.to_owned()
    } else {
        format!("{parent}.{segment}")
    }
}

fn resolve_path(base_dir: &Path, path: Option<PathBuf>) -> Option<PathBuf> {
    path.map(|p| if p.is_relative() { base_dir.join(p) } else { p })
}

fn validate(raw: RawConfig, report: &mut Report, base_dir: &Path) -> Config {
    let listen_text = raw.listen.unwrap_or_else(|| "0.0.0.0:9797".to_owned());
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        report.error(
            "listen",
            format!("listen: {listen_text:?} is not an address:port such as 0.0.0.0:9797"),
        );
        SocketAddr::from(([0, 0, 0, 0], 9797))
    });
    let log_format = match raw.log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            report.error(
                "log_format",
                format!("log_format: {other:?} is neither text nor json"),
            );
            LogFormat::Text
        }
    };
    let log_level = raw.log_level.unwrap_or_else(|| "info".to_owned());
    if tracing_subscriber::EnvFilter::builder()
        .parse(&log_level)
        .is_err()
    {
        report.error("log_level", format!("log_level: {log_level:?} is not a level (error, warn, info, debug, trace) or RUST_LOG filter"));
    }

    let raw_poll = raw.poll.unwrap_or_default();
    let poll = Poll {
        interval: report.duration(
            "poll.interval",
            raw_poll.interval.as_deref(),
            Duration::from_secs(60),
        ),
        timeout: report.duration(
            "poll.timeout",
            raw_poll.timeout.as_deref(),
            Duration::from_secs(5),
        ),
        retries: raw_poll.retries.unwrap_or(2),
        max_concurrency: raw_poll.max_concurrency.unwrap_or(16) as usize,
    };
    if poll.retries > 10 {
        report.error(
            "poll.retries",
            "poll.retries: at most 10 (each retry is another call against the rate limit)",
        );
    }
    if poll.max_concurrency == 0 {
        report.error(
            "poll.max_concurrency",
            "poll.max_concurrency must be at least 1",
        );
    }
    let raw_rate = raw.rate_limit.unwrap_or_default();
    let rate_limit = RateLimit {
        per_second: raw_rate.per_second.unwrap_or(200),
        per_app_per_second: raw_rate.per_app_per_second.unwrap_or(200),
    };
    if rate_limit.per_second == 0 {
        report.error(
            "rate_limit.per_second",
            "rate_limit.per_second must be at least 1",
        );
    }
    if rate_limit.per_app_per_second == 0 {
        report.error(
            "rate_limit.per_app_per_second",
            "rate_limit.per_app_per_second must be at least 1",
        );
    }
    if rate_limit.per_app_per_second > 200 {
        report.warning("rate_limit.per_app_per_second", "rate_limit.per_app_per_second above 200: the gateway answers 60011 past 200 calls per second per app");
    }

    let mut regions: BTreeMap<String, Region> = BUILTIN_REGIONS
        .iter()
        .map(|(name, base, backup)| {
            (
                (*name).to_owned(),
                Region {
                    name: (*name).to_owned(),
                    base: (*base).to_owned(),
                    backup: Some((*backup).to_owned()),
                },
            )
        })
        .collect();
    for (name, raw_region) in raw.regions.unwrap_or_default() {
        let path = format!("regions.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            report.error_at_key(
                &path,
                format!("region name {name:?}: use letters, digits, '-' and '_'"),
            );
        }
        let (base, backup, base_path) = match raw_region {
            RawRegion::Url(url) => (url, None, path.clone()),
            RawRegion::WithBackup { url, backup } => (url, backup, format!("{path}.url")),
        };
        let base = check_region_url(&base)
            .map_err(|message| report.error(&base_path, format!("region {name}: {message}")));
        let backup = match backup {
            Some(b) => check_region_url(&b).map(Some).map_err(|message| {
                report.error(
                    &format!("{path}.backup"),
                    format!("region {name} backup: {message}"),
                )
            }),
            None => Ok(None),
        };
        if let (Ok(base), Ok(backup)) = (base, backup) {
            regions.insert(name.clone(), Region { name, base, backup });
        }
    }

    let global = merge_expect(&default_raw_expect(), raw.expect.as_ref());
    let global_expect = check_expect(&global, "expect", report);

    let mut apps = Vec::new();
    let mut names = HashMap::new();
    let mut targets = HashMap::new();
    for (index, raw_app) in raw.apps.unwrap_or_default().into_iter().enumerate() {
        let path = format!("apps.{index}");
        if let Some(name) = &raw_app.name {
            if let Some(first) = names.insert(name.clone(), index) {
                report.error(
                    &format!("{path}.name"),
                    format!("duplicate app name {name:?} (first at apps[{first}])"),
                );
            }
        }
        if let Some(app) = check_app(
            raw_app,
            &path,
            &global,
            &global_expect,
            &regions,
            report,
            base_dir,
        ) {
            for (region_index, region) in app.regions.iter().enumerate() {
                if let Some(other) =
                    targets.insert((app.sdkappid, region.clone()), app.name.clone())
                {
                    report.error(
                        &format!("{path}.regions.{region_index}"),
                        format!(
                            "target ({}, {region}) is configured twice (also in app {other:?})",
                            app.sdkappid
                        ),
                    );
                }
            }
            apps.push(app);
        }
    }
    if apps.is_empty() && !report.has_errors() {
        report.warning("apps", "no apps configured: there is nothing to watch");
    }

    let config = Config {
        origin: report.file.to_owned(),
        listen,
        web_config_file: resolve_path(base_dir, raw.web_config_file),
        state_file: resolve_path(base_dir, raw.state_file),
        log_format,
        log_level,
        ca_file: resolve_path(base_dir, raw.ca_file),
        poll,
        rate_limit,
        regions,
        apps,
    };
    let effective = config.effective_interval();
    if effective > config.poll.interval {
        report.warning(
            "poll.interval",
            format!(
                "poll.interval {} cannot be met: {} targets at {} calls/s need {}; each target will be polled every {}",
                humantime::format_duration(config.poll.interval),
                config.target_count(),
                config.rate_limit.per_second,
                humantime::format_duration(round_secs(effective)),
                humantime::format_duration(round_secs(effective)),
            ),
        );
    }
    config
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().ceil() as u64)
}

fn check_region_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    let host = url.host_str().unwrap_or_default();
    // RFC 6761: localhost and every name under it are loopback.
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "{raw:?}: http:// is only allowed for loopback addresses; use https://"
            ));
        }
        other => return Err(format!("{raw:?}: scheme {other:?} is not https")),
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{raw:?}: a base URL has no query, fragment or userinfo"
        ));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

fn default_raw_expect() -> RawExpect {
    let d = Expected::default();
    RawExpect {
        present: Some(RawPresence::Bool(true)),
        url_scheme: Some(d.url_scheme),
        url: None,
        url_prefix: None,
        commands: Some(d.commands),
        extra_commands: Some("drift".to_owned()),
        ignore_commands: Some(Vec::new()),
    }
}

/// `over`'s fields replace `base`'s field by field.
fn merge_expect(base: &RawExpect, over: Option<&RawExpect>) -> RawExpect {
    let Some(over) = over else {
        return base.clone();
    };
    RawExpect {
        present: over.present.clone().or_else(|| base.present.clone()),
        url_scheme: over.url_scheme.clone().or_else(|| base.url_scheme.clone()),
        url: over.url.clone().or_else(|| base.url.clone()),
        url_prefix: over.url_prefix.clone().or_else(|| base.url_prefix.clone()),
        commands: over.commands.clone().or_else(|| base.commands.clone()),
        extra_commands: over
            .extra_commands
            .clone()
            .or_else(|| base.extra_commands.clone()),
        ignore_commands: over
            .ignore_commands
            .clone()
            .or_else(|| base.ignore_commands.clone()),
    }
}

/// Validates a merged `expect:`; `path` is where the app's own block (or the global one) sits.
fn check_expect(raw: &RawExpect, path: &str, report: &mut Report) -> Expected {
    let field = |name: &str| format!("{path}.{name}");
    let present = match &raw.present {
        Some(RawPresence::Bool(true)) | None => Presence::Required,
        Some(RawPresence::Bool(false)) => Presence::Forbidden,
        Some(RawPresence::Word(w)) if w == "any" => Presence::Any,
        Some(RawPresence::Word(w)) => {
            report.error(
                &field("present"),
                format!("{}: {w:?} is not true, false or any", field("present")),
            );
            Presence::Required
        }
    };
    let url_scheme = raw
        .url_scheme
        .clone()
        .unwrap_or_else(|| "https".to_owned())
        .to_ascii_lowercase();
    if url_scheme.is_empty()
        || !url_scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    {
        report.error(
            &field("url_scheme"),
            format!(
                "{}: {url_scheme:?} is not a URL scheme",
                field("url_scheme")
            ),
        );
    }
    let url = raw.url.clone().flatten();
    let url_prefix = raw.url_prefix.clone().flatten();
    if let Some(url) = &url {
        match url::Url::parse(url) {
            Ok(parsed) if parsed.scheme() != url_scheme => report.error(
                &field("url"),
                format!(
                    "{}: the URL's scheme {:?} contradicts url_scheme {url_scheme:?}",
                    field("url"),
                    parsed.scheme()
                ),
            ),
            Ok(_) => {}
            Err(e) => report.error(&field("url"), format!("{}: not a URL ({e})", field("url"))),
        }
    }
    if let Some(prefix) = &url_prefix {
        if !prefix
            .to_ascii_lowercase()
            .starts_with(&format!("{url_scheme}://"))
        {
            report.error(
                &field("url_prefix"),
                format!(
                    "{}: must start with {url_scheme}:// (url_scheme)",
                    field("url_prefix")
                ),
            );
        }
        if let Some(url) = &url {
            if !url.starts_with(prefix.as_str()) {
                report.error(
                    &field("url"),
                    format!(
                        "{}: does not start with url_prefix, so it can never match",
                        field("url")
                    ),
                );
            }
        }
    }
    let extra_commands = match raw.extra_commands.as_deref() {
        None | Some("drift") => ExtraCommands::Drift,
        Some("allow") => ExtraCommands::Allow,
        Some(other) => {
            report.error(
                &field("extra_commands"),
                format!(
                    "{}: {other:?} is neither drift nor allow",
                    field("extra_commands")
                ),
            );
            ExtraCommands::Drift
        }
    };
    let commands = raw.commands.clone().unwrap_or_default();
    let ignore_commands = raw.ignore_commands.clone().unwrap_or_default();
    for (list, words) in [
        ("commands", &commands),
        ("ignore_commands", &ignore_commands),
    ] {
        for (i, word) in words.iter().enumerate() {
            let at = format!("{path}.{list}.{i}");
            if word.trim().is_empty() || word.trim() != word {
                report.error(
                    &at,
                    format!("{path}.{list}: {word:?} is not a command word"),
                );
            } else if !DOCUMENTED_COMMANDS.contains(&word.as_str()) {
                report.warning(
                    &at,
                    format!(
                        "{word:?} is not one of the documented command words ({})",
                        DOCUMENTED_COMMANDS.join(", ")
                    ),
                );
            }
        }
    }
    for word in commands.iter().filter(|w| ignore_commands.contains(w)) {
        report.warning(
            &field("ignore_commands"),
            format!("{word:?} is both expected and ignored; ignoring wins"),
        );
    }
    Expected {
        present,
        url_scheme,
        url,
        url_prefix,
        commands,
        extra_commands,
        ignore_commands,
    }
}

fn check_app(
    raw: RawApp,
    path: &str,
    global: &RawExpect,
    global_expect: &Expected,
    regions: &BTreeMap<String, Region>,
    report: &mut Report,
    base_dir: &Path,
) -> Option<App> {
    let field = |name: &str| format!("{path}.{name}");
    let name = match raw.name {
        Some(name)
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) =>
        {
            name
        }
        Some(name) => {
            report.error(
                &field("name"),
                format!("{}: {name:?} must match [a-zA-Z0-9_.-]+", field("name")),
            );
            name
        }
        None => {
            report.error(path, format!("{path}: missing field \"name\""));
            format!("apps[{}]", path.rsplit('.').next().unwrap_or_default())
        }
    };
    let sdkappid = match raw.sdkappid {
        Some(0) => {
            report.error(
                &field("sdkappid"),
                format!("app {name}: sdkappid must be a positive number"),
            );
            0
        }
        Some(id) => id,
        None => {
            report.error(path, format!("app {name}: missing field \"sdkappid\""));
            0
        }
    };
    let app_regions = raw.regions.unwrap_or_default();
    if app_regions.is_empty() {
        report.error(
            path,
            format!("app {name}: needs at least one region in \"regions\""),
        );
    }
    for (i, region) in app_regions.iter().enumerate() {
        if !regions.contains_key(region) {
            let known: Vec<&str> = regions.keys().map(String::as_str).collect();
            report.error(
                &format!("{path}.regions.{i}"),
                format!(
                    "app {name}: unknown region {region:?} (known: {})",
                    known.join(", ")
                ),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, region) in app_regions.iter().enumerate() {
        if !seen.insert(region) {
            report.error(
                &format!("{path}.regions.{i}"),
                format!("app {name}: region {region:?} is listed twice"),
            );
        }
    }
    let identifier = raw.identifier.unwrap_or_else(|| "administrator".to_owned());
    if identifier.is_empty() {
        report.error(
            &field("identifier"),
            format!("app {name}: identifier must not be empty"),
        );
    }
    let sources = [
        raw.secret_key_file.map(|p| {
            (
                SecretSource::File(resolve_path(base_dir, Some(p)).unwrap_or_default()),
                "secret_key_file",
            )
        }),
        raw.secret_key_env
            .map(|v| (SecretSource::Env(v), "secret_key_env")),
        raw.secret_key
            .map(|k| (SecretSource::Inline(SecretKey::new(k)), "secret_key")),
    ];
    let mut given: Vec<(SecretSource, &str)> = sources.into_iter().flatten().collect();
    let secret = match given.len() {
        0 => {
            report.error(
                path,
                format!("app {name}: missing secret: set secret_key_file or secret_key_env"),
            );
            None
        }
        1 => given.pop(),
        _ => {
            let keys: Vec<&str> = given.iter().map(|(_, k)| *k).collect();
            report.error(
                &field(keys[1]),
                format!("app {name}: give exactly one of {}", keys.join(", ")),
            );
            None
        }
    };
    let secret_pos = secret
        .as_ref()
        .map_or(Pos::START, |(_, key)| report.positions.value(&field(key)));
    if let Some((SecretSource::Inline(_), _)) = &secret {
        report.warning(&field("secret_key"), format!("app {name}: inline secret_key; prefer secret_key_file or secret_key_env so the key stays out of the config"));
    }
    let usersig_ttl = report.duration(
        &field("usersig_ttl"),
        raw.usersig_ttl.as_deref(),
        Duration::from_secs(86_400),
    );
    if usersig_ttl < Duration::from_secs(300) {
        report.error(
            &field("usersig_ttl"),
            format!("app {name}: usersig_ttl must be at least 5m (Tencent advises 24h)"),
        );
    }
    let expect = match &raw.expect {
        Some(own) => check_expect(&merge_expect(global, Some(own)), &field("expect"), report),
        None => global_expect.clone(),
    };
    let (secret, _) = secret?;
    Some(App {
        name,
        sdkappid,
        regions: app_regions,
        identifier,
        secret,
        usersig_ttl,
        expect,
        secret_pos,
    })
}

/// Reads every app's secret key. Errors name the place in the config where the source is set.
pub fn resolve_secrets(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Secrets, Vec<Diagnostic>), ConfigError> {
    let mut secrets = BTreeMap::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let diagnostic = |severity, app: &App, message: String| Diagnostic {
        severity,
        file: config.origin.clone(),
        pos: app.secret_pos,
        message,
    };
    for app in &config.apps {
        let key = match &app.secret {
            SecretSource::Inline(key) => Ok(key.expose().to_owned()),
            SecretSource::Env(name) => env(name)
                .ok_or_else(|| format!("app {}: environment variable {name} is not set", app.name)),
            SecretSource::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    if let Some(mode) = loose_permissions(path) {
                        warnings.push(diagnostic(
                            Severity::Warning,
                            app,
                            format!("app {}: secret file {} is readable by group or others (mode {mode:o}); chmod 600 it", app.name, path.display()),
                        ));
                    }
                    Ok(text)
                }
                Err(e) => Err(format!(
                    "app {}: cannot read secret file {}: {e}",
                    app.name,
                    path.display()
                )),
            },
        };
        match key.map(|k| k.trim().to_owned()) {
            Ok(k) if k.is_empty() => errors.push(diagnostic(
                Severity::Error,
                app,
                format!("app {}: the secret key is empty", app.name),
            )),
            Ok(k) => {
                secrets.insert(app.name.clone(), SecretKey::new(k));
            }
            Err(message) => errors.push(diagnostic(Severity::Error, app, message)),
        }
    }
    if errors.is_empty() {
        Ok((Secrets(secrets), warnings))
    } else {
        Err(ConfigError::Invalid(errors))
    }
}

#[cfg(unix)]
fn loose_permissions(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_permissions(_: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<(Config, Vec<Diagnostic>), Vec<String>> {
        parse(text, "c.yaml", Path::new("/etc/calldrift")).map_err(|e| e.diagnostics())
    }

    fn errors(text: &str) -> Vec<String> {
        match parse_text(text) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(all) => all,
        }
    }

    const APP: &str = "apps:\n  - name: a\n    sdkappid: 1400000001\n    regions: [singapore]\n    secret_key_env: K\n";

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
                max_concurrency: 16
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
        assert_eq!(app.expect, Expected::default());
        assert_eq!(
            config.regions["singapore"].backup.as_deref(),
            Some("https://adminapisgp.my-imcloud.com")
        );
    }

    #[test]
    fn app_expect_overrides_global_field_by_field() {
        let text = format!(
            "expect:\n  url_prefix: https://hooks.example.com/\n  extra_commands: allow\n{APP}    expect:\n      commands: [Call.CallbackAfterEndCall]\n"
        );
        let (config, _) = parse_text(&text).expect("valid");
        let e = &config.apps[0].expect;
        assert_eq!(e.url_prefix.as_deref(), Some("https://hooks.example.com/"));
        assert_eq!(e.extra_commands, ExtraCommands::Allow);
        assert_eq!(e.commands, vec!["Call.CallbackAfterEndCall".to_owned()]);
        assert_eq!(e.present, Presence::Required);
    }

    #[test]
    fn an_app_clears_an_inherited_url_or_prefix_with_null() {
        let text = format!(
            "expect:\n  url_prefix: https://hooks.example.com/\n  url: https://hooks.example.com/cb\n{APP}    expect:\n      url_scheme: http\n      url: null\n      url_prefix: null\n  - name: b\n    sdkappid: 2\n    regions: [china]\n    secret_key_env: K\n    expect:\n      commands: []\n"
        );
        let (config, _) = parse_text(&text).expect("valid");
        let (a, b) = (&config.apps[0].expect, &config.apps[1].expect);
        assert_eq!((a.url.as_deref(), a.url_prefix.as_deref()), (None, None));
        // Not written at all: inherited.
        assert_eq!(b.url.as_deref(), Some("https://hooks.example.com/cb"));
        assert_eq!(b.url_prefix.as_deref(), Some("https://hooks.example.com/"));
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_place() {
        let text = format!("pol:\n  interval: 30s\n{APP}    expect:\n      urll: x\n");
        assert_eq!(
            errors(&text),
            vec![
                "c.yaml:1:1: unknown field \"pol\" at pol",
                "c.yaml:9:7: unknown field \"urll\" at apps.0.expect.urll"
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
    fn semantic_errors_are_all_reported() {
        let text = "poll:\n  interval: soon\nregions:\n  corp: \"http://10.0.0.1:80\"\napps:\n  - name: a\n    sdkappid: 1\n    regions: [mars]\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: K\n    expect:\n      url_scheme: https\n      url: http://x/cb\n";
        let all = errors(text);
        let want = [
            "c.yaml:2:13: poll.interval: invalid duration",
            "c.yaml:4:9: region corp: \"http://10.0.0.1:80\": http:// is only allowed for loopback",
            "c.yaml:8:15: app a: unknown region \"mars\"",
            "c.yaml:6:5: app a: missing secret",
            "c.yaml:15:12: apps.1.expect.url: the URL's scheme \"http\" contradicts url_scheme \"https\"",
            "c.yaml:9:11: duplicate app name \"a\"",
        ];
        for w in want {
            assert!(
                all.iter().any(|e| e.starts_with(w)),
                "missing {w:?} in {all:#?}"
            );
        }
    }

    #[test]
    fn duplicate_targets_are_rejected() {
        let text = format!(
            "{APP}  - name: b\n    sdkappid: 1400000001\n    regions: [singapore]\n    secret_key_env: K\n"
        );
        let all = errors(&text);
        assert!(
            all[0].contains("target (1400000001, singapore) is configured twice"),
            "{all:?}"
        );
    }

    #[test]
    fn warnings_for_unmeetable_interval_inline_secret_and_unknown_command() {
        let text = "poll:\n  interval: 1s\nrate_limit:\n  per_second: 1\napps:\n  - name: a\n    sdkappid: 1\n    regions: [china, tokyo]\n    secret_key: abc\n    expect:\n      commands: [Call.Future]\n";
        let (_, warnings) = parse_text(text).expect("warnings only");
        let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|w| w
                    .contains("poll.interval 1s cannot be met: 2 targets at 1 calls/s need 2s")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|w| w.contains("inline secret_key")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|w| w.contains("\"Call.Future\" is not one of the documented")),
            "{text:?}"
        );
    }

    #[test]
    fn loopback_http_region_is_allowed() {
        let text = "regions:\n  local: \"http://127.0.0.1:18080/\"\n  v6: \"http://[::1]:1\"\napps:\n  - name: a\n    sdkappid: 1\n    regions: [local, v6]\n    secret_key_env: K\n";
        let (config, _) = parse_text(text).expect("valid");
        assert_eq!(config.regions["local"].base, "http://127.0.0.1:18080");
        assert_eq!(config.regions["local"].backup, None);
    }

    #[test]
    fn malformed_yaml_is_an_error_not_a_panic() {
        for junk in ["apps: [", "{{{", "- just\n- a list\n", "apps: 3", "\t\u{0}"] {
            assert!(parse_text(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn secrets_resolve_from_file_and_env_with_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_path = dir.path().join("key");
        std::fs::write(&key_path, "filekey\n").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        let text = "apps:\n  - name: f\n    sdkappid: 1\n    regions: [china]\n    secret_key_file: key\n  - name: e\n    sdkappid: 2\n    regions: [china]\n    secret_key_env: KEY_E\n";
        let (config, _) = parse(text, "c.yaml", dir.path()).expect("valid");
        let env = |name: &str| (name == "KEY_E").then(|| "envkey".to_owned());
        let (secrets, warnings) = resolve_secrets(&config, &env).expect("resolves");
        assert_eq!(secrets.get("f").map(SecretKey::expose), Some("filekey"));
        assert_eq!(secrets.get("e").map(SecretKey::expose), Some("envkey"));
        assert!(
            warnings[0]
                .to_string()
                .contains("readable by group or others"),
            "{warnings:?}"
        );

        std::fs::remove_file(&key_path).expect("rm");
        let err = resolve_secrets(&config, &|_| None)
            .expect_err("both missing")
            .diagnostics();
        assert!(
            err[0].starts_with("c.yaml:5:22: app f: cannot read secret file"),
            "{err:?}"
        );
        assert_eq!(
            err[1],
            "c.yaml:9:21: app e: environment variable KEY_E is not set"
        );
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../config/calldrift.example.yaml");
        let (config, warnings) = parse_text(text).expect("example config is valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.apps.len(), 2);
        assert_eq!(config.target_count(), 2);
    }
}
