//! The scenario file: apps with their keys, accounts and configurations (fixed or
//! rotating), and the initial fault rules; parsing with positions, and validation.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::faults::FaultRule;

/// The scenario `calldrift demo` plays, also `config/sim-scenario.example.yaml`.
pub const EXAMPLE_SCENARIO: &str = include_str!("../../config/sim-scenario.example.yaml");

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
    /// The initial TUICallKit configuration (`v4/call_config`); none means get answers
    /// 100301.
    #[serde(default)]
    pub callback: Option<CallbackConfig>,
    /// A scripted story instead of `callback`.
    #[serde(default)]
    pub rotate: Option<Rotate>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::faults::FaultKind;
    use crate::sim::harness::{END, START};

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
