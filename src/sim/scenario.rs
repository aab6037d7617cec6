//! The scenario file: apps with their keys, accounts and configurations (fixed or
//! rotating), the initial fault rules, and how far away the gateway seems (latency, TLS,
//! connection closing); parsing with positions, and validation.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::connection::Connections;
use super::faults::FaultRule;
use super::latency::Latency;
use super::tls::TlsSettings;

/// The scenario `calldrift demo` plays, also `config/sim-scenario.example.yaml`.
pub const EXAMPLE_SCENARIO: &str = include_str!("../../config/sim-scenario.example.yaml");

/// What the simulator serves: apps and fault rules, and how it is reached. See
/// `config/sim-scenario.example.yaml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub apps: Vec<SimApp>,
    #[serde(default)]
    pub faults: Vec<FaultRule>,
    /// How long every `/v4/` answer waits, unless its app has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// HTTPS instead of plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    /// When keep-alive connections are closed; by default they stay open.
    #[serde(default)]
    pub connections: Connections,
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
    /// The initial TUICallKit configuration (`v4/call_config`); none means get answers
    /// 100301.
    #[serde(default)]
    pub callback: Option<CallbackConfig>,
    /// A scripted story instead of `callback`.
    #[serde(default)]
    pub rotate: Option<Rotate>,
    /// This app's answer latency, instead of the scenario's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// The initial TUIRoomKit configuration (`v4/room_config`).
    #[serde(default)]
    pub room_callback: Option<CallbackConfig>,
    /// The initial TUILiveKit configuration (`v4/live_config`).
    #[serde(default)]
    pub live_callback: Option<CallbackConfig>,
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
            .field("latency", &self.latency)
            .field("room_callback", &self.room_callback)
            .field("live_callback", &self.live_callback)
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

/// A duration as humantime text (`250ms`, `1s 500ms`).
pub(super) mod humantime_duration {
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

/// Like [`humantime_duration`], for a key that may be left out.
pub(super) mod humantime_optional {
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::humantime_duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::humantime_duration::deserialize(d).map(Some)
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
        // Before decoding, whose time grows with the square of the nesting depth.
        crate::config::check_depth(text, "a scenario").map_err(|(pos, message)| {
            ScenarioError::Parse {
                origin: origin.to_owned(),
                line: Some(pos.line),
                column: Some(pos.column),
                message,
            }
        })?;
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

    /// Reads and parses a scenario file; relative paths in it are taken from its
    /// directory.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            origin: origin.clone(),
            source,
        })?;
        let mut scenario = Self::from_yaml_str(&text, &origin)?;
        if let (Some(tls), Some(dir)) = (scenario.tls.as_mut(), path.parent()) {
            tls.resolve_paths(dir);
        }
        Ok(scenario)
    }

    /// The scenario of `calldrift demo` ([`EXAMPLE_SCENARIO`]).
    pub fn example() -> Result<Scenario, ScenarioError> {
        Self::from_yaml_str(EXAMPLE_SCENARIO, "config/sim-scenario.example.yaml")
    }

    /// Checks what the types cannot: unique apps, a key, rotations that can rotate, fault
    /// rules for known apps, TLS either generated or given, positive connection limits.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        self.connections.validate()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::faults::FaultKind;
    use crate::sim::harness::{END, START};
    use crate::sim::latency::Distribution;

    #[test]
    fn deep_nesting_is_refused_before_decoding() {
        let deep = format!("apps:\n{}\n", "- ".repeat(100_000));
        let err = Scenario::from_yaml_str(&deep, "s.yaml")
            .expect_err("too deep")
            .to_string();
        assert_eq!(
            err,
            "s.yaml:2:127: nested deeper than 64 levels; a scenario needs fewer than 10"
        );
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
    room_callback: {url: "https://r/", commands: [b]}
    live_callback: {Url: "https://l/", CallbackCommandList: []}
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
        assert_eq!(
            scenario.apps[0].room_callback,
            Some(CallbackConfig::new("https://r/", &["b"]))
        );
        assert_eq!(
            scenario.apps[0].live_callback,
            Some(CallbackConfig::new("https://l/", &[]))
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
    fn gateway_keys_parse_with_their_defaults() {
        let text = r#"
apps:
  - sdkappid: 7
    key: k
    latency: {fixed: 50ms, jitter: 20ms}
latency: {fixed: 250ms, jitter: 50ms, distribution: normal}
tls: {generate: true, names: ["*.localhost"], ca_file: ca.pem}
connections: {close_after: 3, announce: false, idle_timeout: 5s}
"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scenario.yaml");
        std::fs::write(&path, text).unwrap();
        let scenario = Scenario::load(&path).unwrap();
        let ms = Duration::from_millis;
        assert_eq!(
            scenario.latency,
            Some(Latency {
                fixed: ms(250),
                jitter: ms(50),
                distribution: Distribution::Normal
            })
        );
        assert_eq!(
            scenario.apps[0].latency,
            Some(Latency {
                fixed: ms(50),
                jitter: ms(20),
                distribution: Distribution::Uniform
            })
        );
        let tls = scenario.tls.as_ref().unwrap();
        assert!(tls.generate);
        assert_eq!(tls.names, ["*.localhost"]);
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(dir.path().join("ca.pem").as_path())
        );
        assert_eq!(
            scenario.connections,
            Connections {
                close_after: Some(3),
                announce: false,
                idle_timeout: Some(Duration::from_secs(5))
            }
        );

        let plain = Scenario::from_yaml_str(
            "apps: []
",
            "s.yaml",
        )
        .unwrap();
        assert_eq!(plain.latency, None);
        assert_eq!(plain.tls, None);
        assert_eq!(plain.connections, Connections::default());
        assert!(
            plain.connections.announce,
            "closing is announced unless asked not to"
        );
        let fixed_only = Scenario::from_yaml_str(
            "apps: []
latency: {fixed: 1s}
",
            "s.yaml",
        )
        .unwrap();
        let latency = fixed_only.latency.unwrap();
        assert_eq!(
            (latency.jitter, latency.distribution),
            (Duration::ZERO, Distribution::Uniform)
        );
    }

    #[test]
    fn gateway_key_mistakes_are_errors() {
        let refused = |text: &str| {
            Scenario::from_yaml_str(text, "s.yaml")
                .unwrap_err()
                .to_string()
        };
        let cases = [
            (
                "apps: []
latency: {fixed: 1s, spread: 2ms}
",
                "unknown field `spread`",
            ),
            (
                "apps: []
latency: {jitter: 2ms}
",
                "missing field `fixed`",
            ),
            (
                "apps: []
latency: {fixed: soon}
",
                "invalid duration \"soon\"",
            ),
            (
                "apps: []
latency: {fixed: 1s, distribution: poisson}
",
                "unknown variant `poisson`",
            ),
            (
                "apps: []
tls: {generate: true, cert: x}
",
                "unknown field `cert`",
            ),
            (
                "apps: []
tls: {cert_file: x}
",
                "both `cert_file` and `key_file`",
            ),
            (
                "apps: []
connections: {close_after: 0}
",
                "close_after must be at least 1",
            ),
            (
                "apps: []
connections: {idle_timeout: 0s}
",
                "idle_timeout must be positive",
            ),
            (
                "apps: []
connections: {max_requests: 3}
",
                "unknown field `max_requests`",
            ),
            (
                "apps: []
latancy: {fixed: 1s}
",
                "unknown field `latancy`",
            ),
        ];
        for (text, expected) in cases {
            let err = refused(text);
            assert!(err.starts_with("s.yaml:"), "{err}");
            assert!(err.contains(expected), "{text}: {err}");
        }
        let err = refused(
            "apps: []
latency: {fixed: 1s, spread: 2ms}
",
        );
        assert!(err.starts_with("s.yaml:2:"), "{err}");
    }

    #[test]
    fn the_example_scenario_tells_the_demo_story() {
        let scenario = Scenario::example().unwrap();
        assert_eq!(scenario.apps.len(), 4);
        assert!(scenario.faults.is_empty());
        let clean = scenario.apps[0].callback.as_ref().unwrap();
        assert!(clean.url.starts_with("https://"));
        assert_eq!(clean.commands, vec![START, END]);
        let room = scenario.apps[0].room_callback.as_ref().unwrap();
        assert!(room.url.starts_with("https://"));
        assert!(scenario.apps.iter().all(|a| a.live_callback.is_none()));
        assert!(scenario.apps[1..].iter().all(|a| a.room_callback.is_none()));
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
        // Every commented-out gateway key parses too, and none is in force.
        assert_eq!(scenario.latency, None);
        assert_eq!(scenario.tls, None);
        assert_eq!(scenario.connections, Connections::default());
        let keys: String = EXAMPLE_SCENARIO
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                ["latency:", "tls:", "connections:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let far = Scenario::from_yaml_str(&format!("apps: []\n{keys}"), "example").unwrap();
        assert!(far.latency.is_some() && far.tls.is_some());
        assert_eq!(far.connections.close_after, Some(100));
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
