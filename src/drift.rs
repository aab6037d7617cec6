//! The pure core: what the observed callback configuration of a target should look like,
//! what it does look like, and the findings that tell them apart.
//!
//! Nothing here does IO, reads a clock or fails; the shell around it decides when an
//! observation is authoritative.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::product::Product;
use crate::redact;

/// Whether a callback configuration should exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Required,
    Forbidden,
    Any,
}

/// Whether enabled commands beyond the expected ones are drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtraCommands {
    Drift,
    Allow,
}

/// What a target's callback configuration should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub present: Presence,
    /// Lower-case scheme, e.g. `https`.
    pub url_scheme: String,
    pub url: Option<String>,
    pub url_prefix: Option<String>,
    pub commands: Vec<String>,
    pub extra_commands: ExtraCommands,
    pub ignore_commands: Vec<String>,
}

/// TUICallKit's expectation when nothing is written: see [`Expected::default_for`].
impl Default for Expected {
    fn default() -> Self {
        Expected::default_for(Product::Call)
    }
}

impl Expected {
    /// A product's expectation when nothing is written: a configuration exists with an
    /// https URL; TUICallKit's must enable the start and end of calls and nothing else,
    /// while TUIRoomKit's and TUILiveKit's commands are the app's choice.
    pub fn default_for(product: Product) -> Self {
        let (commands, extra_commands) = match product {
            Product::Call => (
                product.documented_commands()[..2]
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
                ExtraCommands::Drift,
            ),
            Product::Room | Product::Live => (Vec::new(), ExtraCommands::Allow),
        };
        Self {
            present: Presence::Required,
            url_scheme: "https".to_owned(),
            url: None,
            url_prefix: None,
            commands,
            extra_commands,
            ignore_commands: Vec::new(),
        }
    }
}

/// What `get_callback` answered authoritatively for a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "present")]
pub enum Observed {
    /// ErrorCode 0 with a configuration.
    #[serde(rename = "true")]
    Present { url: String, commands: Vec<String> },
    /// ErrorCode 100301: no configuration exists.
    #[serde(rename = "false")]
    Absent,
}

impl Observed {
    pub fn is_present(&self) -> bool {
        matches!(self, Observed::Present { .. })
    }

    pub fn url(&self) -> Option<&str> {
        match self {
            Observed::Present { url, .. } => Some(url),
            Observed::Absent => None,
        }
    }

    /// Enabled command words, sorted and without duplicates.
    pub fn command_set(&self) -> BTreeSet<&str> {
        match self {
            Observed::Present { commands, .. } => commands.iter().map(String::as_str).collect(),
            Observed::Absent => BTreeSet::new(),
        }
    }

    /// Whether the URL parses and its scheme is `https`.
    pub fn url_is_https(&self) -> bool {
        self.url()
            .and_then(|u| url::Url::parse(u).ok())
            .is_some_and(|u| u.scheme() == "https")
    }

    /// A stable 48-bit hash of (present, url, sorted distinct commands): equal for
    /// configurations that behave the same, whatever the order of commands.
    pub fn fingerprint(&self) -> u64 {
        let mut hasher = Sha256::new();
        // Every field is length-prefixed, so no URL or command word (NUL included) can
        // make two different configurations hash alike.
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        match self {
            Observed::Absent => field(b"absent"),
            Observed::Present { url, .. } => {
                field(b"present");
                field(url.as_bytes());
                for command in self.command_set() {
                    field(command.as_bytes());
                }
            }
        }
        let digest = hasher.finalize();
        // 48 bits stay exact in a float64 sample value.
        digest[..6]
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
    }
}

/// The closed set of finding kinds; the `check` label in metrics and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    ConfigMissing,
    ConfigUnexpected,
    UrlScheme,
    UrlMismatch,
    CommandMissing,
    CommandUnexpected,
}

impl Check {
    pub const ALL: [Check; 6] = [
        Check::ConfigMissing,
        Check::ConfigUnexpected,
        Check::UrlScheme,
        Check::UrlMismatch,
        Check::CommandMissing,
        Check::CommandUnexpected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::ConfigMissing => "config_missing",
            Check::ConfigUnexpected => "config_unexpected",
            Check::UrlScheme => "url_scheme",
            Check::UrlMismatch => "url_mismatch",
            Check::CommandMissing => "command_missing",
            Check::CommandUnexpected => "command_unexpected",
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One way the observed configuration differs from the expected one. URLs in
/// `expected` and `actual` are already redacted, so a finding is safe to show anywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Finding {
    pub check: Check,
    pub expected: Option<String>,
    pub actual: Option<String>,
}

impl Finding {
    fn new(check: Check, expected: Option<String>, actual: Option<String>) -> Self {
        Self {
            check,
            expected,
            actual,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_owned());
        write!(
            f,
            "{}: expected {}, actual {}",
            self.check,
            show(&self.expected),
            show(&self.actual)
        )
    }
}

/// Compares a target's expected and observed configuration. Total and deterministic:
/// findings come in a fixed order (by check, then by command word).
pub fn check(expected: &Expected, observed: &Observed) -> Vec<Finding> {
    let (url, observed_commands) = match (observed, expected.present) {
        (Observed::Absent, Presence::Required) => {
            return vec![Finding::new(
                Check::ConfigMissing,
                Some("present".into()),
                Some("absent".into()),
            )];
        }
        (Observed::Absent, _) => return Vec::new(),
        (Observed::Present { url, .. }, Presence::Forbidden) => {
            return vec![Finding::new(
                Check::ConfigUnexpected,
                Some("absent".into()),
                Some(redact::url(url)),
            )];
        }
        (Observed::Present { url, .. }, _) => (url, observed.command_set()),
    };

    let mut findings = url_findings(expected, url);
    findings.extend(command_findings(expected, &observed_commands));
    findings
}

/// `url_scheme` and `url_mismatch`.
fn url_findings(expected: &Expected, url: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let scheme = url::Url::parse(url).ok().map(|u| u.scheme().to_owned());
    if scheme.as_deref() != Some(expected.url_scheme.as_str()) {
        let actual = scheme.unwrap_or_else(|| "unparsable".to_owned());
        findings.push(Finding::new(
            Check::UrlScheme,
            Some(expected.url_scheme.clone()),
            Some(actual),
        ));
    }
    if let Some(want) = expected.url.as_ref().filter(|want| url != want.as_str()) {
        findings.push(Finding::new(
            Check::UrlMismatch,
            Some(redact::url(want)),
            Some(redact::url(url)),
        ));
    }
    if let Some(prefix) = expected
        .url_prefix
        .as_ref()
        .filter(|prefix| !url.starts_with(prefix.as_str()))
    {
        findings.push(Finding::new(
            Check::UrlMismatch,
            Some(format!("prefix {}", redact::url(prefix))),
            Some(redact::url(url)),
        ));
    }
    findings
}

/// `command_missing` and `command_unexpected`, each in word order.
fn command_findings(expected: &Expected, observed: &BTreeSet<&str>) -> Vec<Finding> {
    let ignored: BTreeSet<&str> = expected
        .ignore_commands
        .iter()
        .map(String::as_str)
        .collect();
    let wanted: BTreeSet<&str> = expected
        .commands
        .iter()
        .map(String::as_str)
        .filter(|c| !ignored.contains(c))
        .collect();
    let missing = wanted
        .difference(observed)
        .map(|c| Finding::new(Check::CommandMissing, Some((*c).to_owned()), None));
    let mut findings: Vec<Finding> = missing.collect();
    if expected.extra_commands == ExtraCommands::Drift {
        let extra = observed
            .iter()
            .filter(|c| !wanted.contains(*c) && !ignored.contains(*c))
            .map(|c| Finding::new(Check::CommandUnexpected, None, Some((*c).to_owned())));
        findings.extend(extra);
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "Call.CallbackAfterStartCall";
    const END: &str = "Call.CallbackAfterEndCall";
    const MEMBER: &str = "Call.CallbackAfterMemberChanged";
    const GOOD: &str = "https://hooks.example.com/tencent/call";

    fn present(url: &str, commands: &[&str]) -> Observed {
        Observed::Present {
            url: url.to_owned(),
            commands: commands.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    /// Findings as `check:expected:actual` strings, so each case is one line.
    fn run(expected: &Expected, observed: &Observed) -> Vec<String> {
        check(expected, observed)
            .iter()
            .map(|f| {
                format!(
                    "{}:{}:{}",
                    f.check,
                    f.expected.as_deref().unwrap_or("-"),
                    f.actual.as_deref().unwrap_or("-")
                )
            })
            .collect()
    }

    #[test]
    fn findings_table() {
        let base = Expected::default();
        let with = |f: &dyn Fn(&mut Expected)| {
            let mut e = base.clone();
            f(&mut e);
            e
        };
        let cases: Vec<(&str, Expected, Observed, Vec<&str>)> = vec![
            ("clean", base.clone(), present(GOOD, &[START, END]), vec![]),
            (
                "clean in any order with duplicates",
                base.clone(),
                present(GOOD, &[END, START, END]),
                vec![],
            ),
            (
                "absent but required",
                base.clone(),
                Observed::Absent,
                vec!["config_missing:present:absent"],
            ),
            (
                "absent and forbidden",
                with(&|e| e.present = Presence::Forbidden),
                Observed::Absent,
                vec![],
            ),
            (
                "absent and any",
                with(&|e| e.present = Presence::Any),
                Observed::Absent,
                vec![],
            ),
            (
                "present but forbidden",
                with(&|e| e.present = Presence::Forbidden),
                present("http://x/?t=1", &[START]),
                vec!["config_unexpected:absent:http://x/?t=REDACTED"],
            ),
            (
                "present and any is checked",
                with(&|e| e.present = Presence::Any),
                present(GOOD, &[START]),
                vec!["command_missing:Call.CallbackAfterEndCall:-"],
            ),
            (
                "http scheme",
                base.clone(),
                present("http://hooks.example.com/cb", &[START, END]),
                vec!["url_scheme:https:http"],
            ),
            (
                "upper-case scheme is normalised",
                base.clone(),
                present("HTTPS://hooks.example.com/cb", &[START, END]),
                vec![],
            ),
            (
                "unparsable url",
                base.clone(),
                present("hooks.example.com/cb", &[START, END]),
                vec!["url_scheme:https:unparsable"],
            ),
            (
                "empty url",
                base.clone(),
                present("", &[START, END]),
                vec!["url_scheme:https:unparsable"],
            ),
            (
                "exact url matches",
                with(&|e| e.url = Some(GOOD.into())),
                present(GOOD, &[START, END]),
                vec![],
            ),
            (
                "exact url differs, query redacted",
                with(&|e| e.url = Some(GOOD.into())),
                present("https://evil.example.com/cb?token=s3cr3t", &[START, END]),
                vec![
                    "url_mismatch:https://hooks.example.com/tencent/call:https://evil.example.com/cb?token=REDACTED",
                ],
            ),
            (
                "prefix matches",
                with(&|e| e.url_prefix = Some("https://hooks.example.com/".into())),
                present(GOOD, &[START, END]),
                vec![],
            ),
            (
                "prefix differs",
                with(&|e| e.url_prefix = Some("https://hooks.example.com/".into())),
                present("https://hooks.example.org/cb", &[START, END]),
                vec!["url_mismatch:prefix https://hooks.example.com/:https://hooks.example.org/cb"],
            ),
            (
                "http and wrong prefix are two findings",
                with(&|e| e.url_prefix = Some("https://hooks.example.com/".into())),
                present("http://hooks.example.com/cb", &[START, END]),
                vec![
                    "url_scheme:https:http",
                    "url_mismatch:prefix https://hooks.example.com/:http://hooks.example.com/cb",
                ],
            ),
            (
                "each missing command is a finding",
                base.clone(),
                present(GOOD, &[]),
                vec![
                    "command_missing:Call.CallbackAfterEndCall:-",
                    "command_missing:Call.CallbackAfterStartCall:-",
                ],
            ),
            (
                "extra command is drift",
                base.clone(),
                present(GOOD, &[START, END, MEMBER]),
                vec!["command_unexpected:-:Call.CallbackAfterMemberChanged"],
            ),
            (
                "extra command allowed",
                with(&|e| e.extra_commands = ExtraCommands::Allow),
                present(GOOD, &[START, END, MEMBER]),
                vec![],
            ),
            (
                "unknown command word is unexpected",
                base.clone(),
                present(GOOD, &[START, END, "Call.Future"]),
                vec!["command_unexpected:-:Call.Future"],
            ),
            (
                "ignored extra is fine",
                with(&|e| e.ignore_commands = vec![MEMBER.into()]),
                present(GOOD, &[START, END, MEMBER]),
                vec![],
            ),
            (
                "ignored expected may be missing",
                with(&|e| e.ignore_commands = vec![END.into()]),
                present(GOOD, &[START]),
                vec![],
            ),
            (
                "duplicate expected words count once",
                with(&|e| e.commands = vec![START.into(), START.into()]),
                present(GOOD, &[]),
                vec!["command_missing:Call.CallbackAfterStartCall:-"],
            ),
            (
                "custom scheme",
                with(&|e| e.url_scheme = "http".into()),
                present("http://127.0.0.1/cb", &[START, END]),
                vec![],
            ),
        ];
        for (name, expected, observed, want) in cases {
            assert_eq!(run(&expected, &observed), want, "case: {name}");
        }
    }

    #[test]
    fn fingerprint_ignores_order_and_duplicates_but_not_content() {
        let a = present(GOOD, &[START, END]);
        assert_eq!(
            a.fingerprint(),
            present(GOOD, &[END, START, START]).fingerprint()
        );
        assert_ne!(a.fingerprint(), present(GOOD, &[START]).fingerprint());
        assert_ne!(
            a.fingerprint(),
            present("https://other/", &[START, END]).fingerprint()
        );
        assert_ne!(a.fingerprint(), Observed::Absent.fingerprint());
        assert_ne!(
            present(GOOD, &[]).fingerprint(),
            Observed::Absent.fingerprint()
        );
        assert!(a.fingerprint() < 1 << 48);
        // A NUL inside a word cannot make it collide with two words.
        let joined = present(
            GOOD,
            &["Call.CallbackAfterEndCall\0Call.CallbackAfterStartCall"],
        );
        assert_ne!(joined.fingerprint(), a.fingerprint());
        // Pinned, so a change of the hash (which would fire every change alert) is noticed.
        assert_eq!(Observed::Absent.fingerprint(), 140696990486889);
    }
}
