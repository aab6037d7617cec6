//! `calldrift snapshot`: reads every target once and writes the input config back with each
//! app's `expect:` set to exactly what was observed, a baseline on which `check` reports no
//! drift until the live configuration changes.
//!
//! # What one app's baseline says
//!
//! - Observed present: `present: true`, `url:` the exact URL (query tokens included: it must
//!   match byte for byte), `url_scheme:` its lower-case scheme (so a deliberate `http://`
//!   app does not drift), `url_prefix: null` (clears a global prefix), `commands:` the
//!   sorted distinct command words, `extra_commands: drift`, `ignore_commands: []`. Every
//!   field is written, so nothing is inherited from the global `expect:`.
//! - Observed absent (100301): `present: false` alone; the inherited fields cannot matter.
//! - An unparsable URL fails the snapshot: `url_scheme` would drift whatever it says, and a
//!   baseline that does not check clean is worse than none.
//! - An app whose regions disagree fails the snapshot, naming both regions: one `expect:`
//!   cannot describe two configurations.
//! - Any target that cannot be read fails the snapshot, listing every failure (app, region,
//!   class, RequestId), and nothing is written: a partial baseline would silently bless
//!   whatever the missing targets hold.
//!
//! # How the file is preserved
//!
//! First choice, a **text splice**: an event parser locates each app's `expect:` value (or
//! where the app mapping ends) and only those ranges are replaced, so every other byte of
//! the file stays: comments, key order, quoting, anchors elsewhere. Comments *inside* a
//! replaced `expect:` block go with it. Block-style apps get a block mapping, flow-style
//! apps (`- {name: a, ...}`) an inline one. Fallback, when the splice cannot be made (for
//! example an `expect:` shared through an anchor): the YAML is parsed into a
//! `yaml_serde::Value`, whose mappings keep key order, each app's `expect` is replaced, and
//! the document is serialized again; then **all comments, anchors and original quoting are
//! lost**, which the header of the written file says.
//!
//! Either result is only accepted after it is parsed again as a config and found equal to
//! the input in everything but the `expect:` of apps, with every app's expectation exactly
//! the baseline and no finding for any observation. Secrets therefore stay as written: a
//! `secret_key_file`/`secret_key_env` reference stays a reference, an inline `secret_key`
//! stays inline, and no file or environment secret is ever copied into the output.
//!
//! Relative paths in a config are taken from its directory, so the check uses the
//! directory the snapshot is written to; writing elsewhere with relative paths fails with a
//! message saying so rather than producing a config that points at other files.
//!
//! A header of comments says when (RFC 3339, UTC), from which file and by which calldrift
//! the snapshot was taken, and that callback URLs are written verbatim. The header of an
//! earlier snapshot at the top of the input is replaced, not stacked.
//!
//! [`write`] replaces the output atomically (temporary file in the same directory, fsync,
//! rename), with mode 0600 when the config holds an inline `secret_key`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use saphyr_parser::{Event, Parser};

use crate::check;
use crate::clock::Clock;
use crate::config::{self, Config, Pos, SecretSource, Secrets, TargetKey};
use crate::drift::{self, Expected, ExtraCommands, Observed, Presence};
use crate::tencent::{self, ClientError, PollOutcome};

/// The first words of the header, also how an earlier snapshot's header is recognised.
const HEADER_MARK: &str = "# calldrift snapshot";

/// Deeper YAML than this is not something a config needs; the walk gives up (and the
/// fallback takes over) instead of recursing without bound.
const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot: {0}")]
    Client(#[from] ClientError),
    #[error(
        "snapshot of {origin}: {} of {total} targets could not be read, so nothing was written:\n{}",
        .failures.len(),
        .failures.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n")
    )]
    Unreadable {
        origin: String,
        total: usize,
        failures: Vec<Failure>,
    },
    #[error(transparent)]
    RegionsDisagree(Box<Disagreement>),
    #[error(
        "snapshot of {origin}: app {app} ({sdkappid}, {region}): the callback URL {url} is not a parsable URL, so url_scheme would drift whatever the baseline says; fix the callback URL and snapshot again"
    )]
    UnparsableUrl {
        origin: String,
        app: String,
        sdkappid: u64,
        region: String,
        /// Redacted.
        url: String,
    },
    #[error("snapshot of {origin}: cannot write a baseline that checks clean: {message}")]
    Rewrite { origin: String, message: String },
    #[error("snapshot: cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// An app whose regions answered differently.
#[derive(Debug, thiserror::Error)]
#[error(
    "snapshot of {origin}: app {app} ({sdkappid}) differs between regions: {first_region} has {first}, {second_region} has {second}{hidden}; one expect: cannot describe both, so align the regions or split the app"
)]
pub struct Disagreement {
    pub origin: String,
    pub app: String,
    pub sdkappid: u64,
    pub first_region: String,
    /// Redacted, as [`Observed::describe`] shows it.
    pub first: String,
    pub second_region: String,
    pub second: String,
    /// Set when the two differ only in parts of the URL that redaction hides.
    pub hidden: &'static str,
}

/// One target that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub key: TargetKey,
    /// The failure class, as `check` names it (`auth`, `transport`, …).
    pub class: String,
    pub error: String,
    pub request_id: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: [{}] {}", self.key, self.class, self.error)?;
        match &self.request_id {
            // API errors already name it in their text.
            Some(id) if !self.error.contains(id.as_str()) => write!(f, " (RequestId {id})"),
            _ => Ok(()),
        }
    }
}

/// What one app's `expect:` becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Baseline {
    Absent,
    Present {
        url: String,
        url_scheme: String,
        /// Sorted, distinct.
        commands: Vec<String>,
    },
}

/// An app's baseline with one of the observations it came from, for the final check.
#[derive(Debug, Clone)]
pub struct AppBaseline {
    pub baseline: Baseline,
    pub observed: Observed,
}

/// A rendered snapshot, ready to print or [`write`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub text: String,
    /// False when the fallback re-serialized the file and its comments are gone.
    pub comments_kept: bool,
    /// The config has an inline `secret_key` (so the file gets mode 0600).
    pub inline_secret: bool,
    /// By app name.
    pub apps: BTreeMap<String, AppBaseline>,
}

/// Polls every target of `config` once and renders the snapshot of `text` (the config's
/// own text). `base_dir` is the directory the snapshot will live in: relative paths in it
/// are resolved from there.
pub async fn take(
    text: &str,
    config: &Config,
    secrets: &Secrets,
    base_dir: &Path,
    clock: Arc<dyn Clock>,
) -> Result<Snapshot, SnapshotError> {
    let taken_at = clock.now();
    let apps = observe(config, secrets, clock).await?;
    let header = header_text(
        &humantime::format_rfc3339_seconds(taken_at).to_string(),
        &config.origin,
        crate::VERSION,
    );
    render(text, config, &apps, base_dir, &header)
}

/// Reads every target once, under the config's rate limits and concurrency, and turns what
/// each app showed into its baseline.
pub async fn observe(
    config: &Config,
    secrets: &Secrets,
    clock: Arc<dyn Clock>,
) -> Result<BTreeMap<String, AppBaseline>, SnapshotError> {
    let client = check::client(config, clock)?;
    let targets = tencent::targets(config, secrets);
    let mut outcomes: BTreeMap<TargetKey, PollOutcome> =
        check::poll_outcomes(&client, targets, config.poll.max_concurrency)
            .await
            .into_iter()
            .map(|(target, outcome)| (target.key, outcome))
            .collect();
    baselines(config, &mut outcomes)
}

/// The pure part of [`observe`]: every target must have an authoritative answer, and the
/// regions of an app must agree.
pub fn baselines(
    config: &Config,
    outcomes: &mut BTreeMap<TargetKey, PollOutcome>,
) -> Result<BTreeMap<String, AppBaseline>, SnapshotError> {
    let origin = config.origin.clone();
    let mut failures = Vec::new();
    let mut observed: Vec<(TargetKey, Observed)> = Vec::new();
    for app in &config.apps {
        for region in &app.regions {
            let key = TargetKey {
                app: app.name.clone(),
                sdkappid: app.sdkappid,
                region: region.clone(),
            };
            match outcomes.remove(&key) {
                Some(PollOutcome {
                    result: Ok(seen), ..
                }) => observed.push((key, seen)),
                Some(PollOutcome {
                    result: Err(e),
                    request_id,
                    ..
                }) => failures.push(Failure {
                    key,
                    class: e.class().to_owned(),
                    error: e.to_string(),
                    request_id,
                }),
                None => failures.push(Failure {
                    key,
                    class: "internal".to_owned(),
                    error: "no poll result (no secret resolved, or the poll task failed)"
                        .to_owned(),
                    request_id: None,
                }),
            }
        }
    }
    if !failures.is_empty() {
        return Err(SnapshotError::Unreadable {
            origin,
            total: config.target_count(),
            failures,
        });
    }

    let mut apps: BTreeMap<String, (String, AppBaseline)> = BTreeMap::new();
    for (key, seen) in observed {
        let baseline = baseline_of(&origin, &key, &seen)?;
        match apps.get(&key.app) {
            None => {
                apps.insert(
                    key.app.clone(),
                    (
                        key.region.clone(),
                        AppBaseline {
                            baseline,
                            observed: seen,
                        },
                    ),
                );
            }
            Some((_, first)) if first.baseline == baseline => {}
            Some((first_region, first)) => {
                let (a, b) = (first.observed.describe(), seen.describe());
                return Err(SnapshotError::RegionsDisagree(Box::new(Disagreement {
                    origin,
                    app: key.app.clone(),
                    sdkappid: key.sdkappid,
                    first_region: first_region.clone(),
                    hidden: if a == b {
                        " (they differ in the URL's query or userinfo, which is shown redacted)"
                    } else {
                        ""
                    },
                    first: a,
                    second_region: key.region.clone(),
                    second: b,
                })));
            }
        }
    }
    Ok(apps
        .into_iter()
        .map(|(name, (_, app))| (name, app))
        .collect())
}

fn baseline_of(origin: &str, key: &TargetKey, seen: &Observed) -> Result<Baseline, SnapshotError> {
    match seen {
        Observed::Absent => Ok(Baseline::Absent),
        Observed::Present { url, .. } => match url::Url::parse(url) {
            Ok(parsed) => Ok(Baseline::Present {
                url: url.clone(),
                url_scheme: parsed.scheme().to_ascii_lowercase(),
                commands: seen.command_set().into_iter().map(str::to_owned).collect(),
            }),
            Err(_) => Err(SnapshotError::UnparsableUrl {
                origin: origin.to_owned(),
                app: key.app.clone(),
                sdkappid: key.sdkappid,
                region: key.region.clone(),
                url: crate::redact::url(url),
            }),
        },
    }
}

impl Baseline {
    /// Whether the expectation `config` parsed for the app is this baseline.
    fn is(&self, expect: &Expected) -> bool {
        match self {
            // `present: false` is all that is written; the rest is inherited and irrelevant.
            Baseline::Absent => expect.present == Presence::Forbidden,
            Baseline::Present {
                url,
                url_scheme,
                commands,
            } => {
                *expect
                    == Expected {
                        present: Presence::Required,
                        url_scheme: url_scheme.clone(),
                        url: Some(url.clone()),
                        url_prefix: None,
                        commands: commands.clone(),
                        extra_commands: ExtraCommands::Drift,
                        ignore_commands: Vec::new(),
                    }
            }
        }
    }

    /// `(key, value)` pairs, values already YAML; `commands` as a list of scalars.
    fn fields(&self) -> Vec<(&'static str, Field)> {
        match self {
            Baseline::Absent => vec![("present", Field::Raw("false".to_owned()))],
            Baseline::Present {
                url,
                url_scheme,
                commands,
            } => vec![
                ("present", Field::Raw("true".to_owned())),
                ("url", Field::Raw(quoted(url))),
                ("url_scheme", Field::Raw(scalar(url_scheme))),
                ("url_prefix", Field::Raw("null".to_owned())),
                (
                    "commands",
                    Field::List(commands.iter().map(|c| scalar(c)).collect()),
                ),
                ("extra_commands", Field::Raw("drift".to_owned())),
                ("ignore_commands", Field::List(Vec::new())),
            ],
        }
    }

    /// A block mapping, one line per entry, without indentation.
    fn block_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (key, field) in self.fields() {
            match field {
                Field::Raw(value) => lines.push(format!("{key}: {value}")),
                Field::List(items) if items.is_empty() => lines.push(format!("{key}: []")),
                Field::List(items) => {
                    lines.push(format!("{key}:"));
                    lines.extend(items.iter().map(|item| format!("  - {item}")));
                }
            }
        }
        lines
    }

    /// A flow mapping on one line, for flow-style apps.
    fn flow(&self) -> String {
        let entries: Vec<String> = self
            .fields()
            .into_iter()
            .map(|(key, field)| match field {
                Field::Raw(value) => format!("{key}: {value}"),
                Field::List(items) => format!("{key}: [{}]", items.join(", ")),
            })
            .collect();
        format!("{{{}}}", entries.join(", "))
    }

    fn value(&self) -> yaml_serde::Value {
        use yaml_serde::Value;
        let mut map = yaml_serde::Mapping::new();
        let key = |k: &str| Value::String(k.to_owned());
        match self {
            Baseline::Absent => {
                map.insert(key("present"), Value::Bool(false));
            }
            Baseline::Present {
                url,
                url_scheme,
                commands,
            } => {
                map.insert(key("present"), Value::Bool(true));
                map.insert(key("url"), Value::String(url.clone()));
                map.insert(key("url_scheme"), Value::String(url_scheme.clone()));
                map.insert(key("url_prefix"), Value::Null);
                map.insert(
                    key("commands"),
                    Value::Sequence(commands.iter().cloned().map(Value::String).collect()),
                );
                map.insert(key("extra_commands"), Value::String("drift".to_owned()));
                map.insert(key("ignore_commands"), Value::Sequence(Vec::new()));
            }
        }
        Value::Mapping(map)
    }
}

enum Field {
    Raw(String),
    List(Vec<String>),
}

/// A double-quoted YAML scalar: `\` and `"` escaped, anything unprintable as `\uXXXX`.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Plain when that cannot be misread (no YAML indicators, not a YAML 1.1 boolean or null),
/// quoted otherwise.
fn scalar(text: &str) -> String {
    let plain = text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-+".contains(c))
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null"
        );
    if plain { text.to_owned() } else { quoted(text) }
}

/// The comment block at the top of a snapshot.
pub fn header_text(taken_at: &str, from: &str, version: &str) -> String {
    format!(
        "{HEADER_MARK}: every app's expect: below is what calldrift observed, so\n\
         # `calldrift check` on this file reports no drift until the live configuration changes.\n\
         # Taken: {taken_at}\n\
         # From:  {from}\n\
         # By:    calldrift {version}\n\
         # Callback URLs are written verbatim, query tokens included: review before committing.\n"
    )
}

const SPLICED_NOTE: &str = "# Only the apps' expect: blocks were replaced (comments inside them are gone); the rest is as written.\n";
const REWRITTEN_NOTE: &str = "# The file could not be edited in place, so it was written anew from its data: the\n# original's comments, anchors and quoting are gone. Compare before replacing it.\n";

/// Renders the snapshot of `text` with the apps' baselines; see the module doc.
pub fn render(
    text: &str,
    config: &Config,
    apps: &BTreeMap<String, AppBaseline>,
    base_dir: &Path,
    header: &str,
) -> Result<Snapshot, SnapshotError> {
    let body = strip_old_header(text);
    let verified = |candidate: Result<String, String>| {
        candidate.and_then(|body| {
            verify(&body, config, apps, base_dir)?;
            Ok(body)
        })
    };
    let (body, comments_kept) = match verified(splice(body, apps)) {
        Ok(spliced) => (spliced, true),
        Err(splice_problem) => match verified(rewrite(body, apps)) {
            Ok(rewritten) => (rewritten, false),
            Err(problem) => {
                return Err(SnapshotError::Rewrite {
                    origin: config.origin.clone(),
                    message: if problem == splice_problem {
                        problem
                    } else {
                        format!("{problem} (editing in place: {splice_problem})")
                    },
                });
            }
        },
    };
    let note = if comments_kept {
        SPLICED_NOTE
    } else {
        REWRITTEN_NOTE
    };
    Ok(Snapshot {
        text: format!("{header}{note}\n{body}"),
        comments_kept,
        inline_secret: config
            .apps
            .iter()
            .any(|a| matches!(a.secret, SecretSource::Inline(_))),
        apps: apps.clone(),
    })
}

/// Drops the header of an earlier snapshot (up to its first blank line), so headers do not
/// pile up when a snapshot is taken from a snapshot.
fn strip_old_header(text: &str) -> &str {
    if !text.starts_with(HEADER_MARK) {
        return text;
    }
    let mut rest = text;
    while rest.starts_with('#') {
        rest = rest.split_once('\n').map_or("", |(_, after)| after);
    }
    rest.strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))
        .unwrap_or(rest)
}

/// Parses `candidate` as a config and compares it with `original`: equal but for the
/// apps' expectations, each of which must be its baseline and find nothing in what was seen.
fn verify(
    candidate: &str,
    original: &Config,
    apps: &BTreeMap<String, AppBaseline>,
    base_dir: &Path,
) -> Result<(), String> {
    let (got, _) = config::parse(candidate, &original.origin, base_dir)
        .map_err(|e| format!("the result does not parse as a config: {e}"))?;
    for app in &got.apps {
        let Some(want) = apps.get(&app.name) else {
            return Err(format!("app {}: not observed", app.name));
        };
        if !want.baseline.is(&app.expect) {
            return Err(format!(
                "app {}: the written expect: does not read back as the observation",
                app.name
            ));
        }
        let findings = drift::check(&app.expect, &want.observed);
        if !findings.is_empty() {
            let all: Vec<String> = findings.iter().map(ToString::to_string).collect();
            return Err(format!(
                "app {}: it would still drift: {}",
                app.name,
                all.join("; ")
            ));
        }
    }
    let (want, got) = (outside_expect(original), outside_expect(&got));
    if want == got {
        return Ok(());
    }
    Err(difference(&want, &got))
}

/// `config` with what a snapshot may change (expectations, positions) set aside.
fn outside_expect(config: &Config) -> Config {
    let mut config = config.clone();
    for app in &mut config.apps {
        app.expect = Expected::default();
        app.secret_pos = Pos::START;
    }
    config
}

/// Says where two configs differ; relative paths are the likely cause.
fn difference(want: &Config, got: &Config) -> String {
    let mut paths: Vec<String> = Vec::new();
    let mut path = |what: String, a: Option<&PathBuf>, b: Option<&PathBuf>| {
        if a != b {
            paths.push(format!(
                "{what} would be {} instead of {}",
                b.map_or("none".into(), |p| p.display().to_string()),
                a.map_or("none".into(), |p| p.display().to_string()),
            ));
        }
    };
    path(
        "state_file".into(),
        want.state_file.as_ref(),
        got.state_file.as_ref(),
    );
    path(
        "web_config_file".into(),
        want.web_config_file.as_ref(),
        got.web_config_file.as_ref(),
    );
    path(
        "ca_file".into(),
        want.ca_file.as_ref(),
        got.ca_file.as_ref(),
    );
    for (a, b) in want.apps.iter().zip(&got.apps) {
        if let (SecretSource::File(pa), SecretSource::File(pb)) = (&a.secret, &b.secret) {
            path(
                format!("app {}: secret_key_file", a.name),
                Some(pa),
                Some(pb),
            );
        }
    }
    if paths.is_empty() {
        "the result differs from the input outside the apps' expect: blocks".to_owned()
    } else {
        format!(
            "relative paths are taken from the config's directory, and the snapshot goes to another one: {}; write the snapshot beside the config or make those paths absolute",
            paths.join(", ")
        )
    }
}

// ---- editing in place --------------------------------------------------------------------

/// An event with its span as character indices.
struct Ev {
    kind: Kind,
    start: usize,
    end: usize,
    col: usize,
}

enum Kind {
    Scalar { value: String },
    Alias,
    MapStart { flow: bool },
    SeqStart { flow: bool },
    End,
    Other,
}

/// Where one app sits in the text.
struct AppSpot {
    name: Option<String>,
    flow: bool,
    /// Column of the app's keys (block style).
    key_col: usize,
    /// End of the app's last content (character index).
    content_end: usize,
    /// Start of the closing `}` (flow style).
    close: usize,
    expect: Option<ExpectSpot>,
}

struct ExpectSpot {
    key_end: usize,
    key_col: usize,
    value_end: Option<usize>,
}

/// Replaces or inserts each app's `expect:` in the text itself; see the module doc.
fn splice(text: &str, apps: &BTreeMap<String, AppBaseline>) -> Result<String, String> {
    let chars: Vec<char> = text.chars().collect();
    let events = events(text, &chars)?;
    let spots = app_spots(&events)?;
    // Byte offset of every character index, and of the end.
    let offsets: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()))
        .collect();
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut done = 0;
    for spot in &spots {
        let name = spot.name.as_deref().ok_or("an app without a plain name")?;
        let baseline = &apps
            .get(name)
            .ok_or_else(|| format!("app {name} was not observed"))?
            .baseline;
        done += 1;
        edits.push(match (&spot.expect, spot.flow) {
            (Some(expect), flow) => {
                // After the `:` that follows the key; only blanks may sit between.
                let mut colon = expect.key_end;
                while chars.get(colon).is_some_and(|c| *c == ' ' || *c == '\t') {
                    colon += 1;
                }
                if chars.get(colon) != Some(&':') {
                    return Err(format!("app {name}: expect is not a simple key"));
                }
                let from = colon + 1;
                let mut to = expect.value_end.unwrap_or(from).max(from);
                if !flow {
                    // A comment after the old value's last line spoke of the old value.
                    to = end_of_trailing_comment(&chars, to);
                }
                let new = if flow {
                    format!(" {}", baseline.flow())
                } else {
                    indented(baseline, expect.key_col + 2)
                };
                (from, to, new)
            }
            (None, true) => {
                // Right after the last entry (or its comma), before any blanks and the `}`.
                let mut at = spot.close;
                while at > 0 && chars[at - 1].is_whitespace() {
                    at -= 1;
                }
                let lead = match at.checked_sub(1).map(|i| chars[i]) {
                    Some('{') => "",
                    Some(',') => " ",
                    _ => ", ",
                };
                (at, at, format!("{lead}expect: {}", baseline.flow()))
            }
            (None, false) => {
                let at = line_after(&chars, spot.content_end);
                let mut new = String::new();
                if at == chars.len() && chars.last().is_some_and(|c| *c != '\n') {
                    new.push('\n');
                }
                new.push_str(&" ".repeat(spot.key_col));
                new.push_str("expect:");
                new.push_str(&indented(baseline, spot.key_col + 2));
                new.push('\n');
                (at, at, new)
            }
        });
    }
    if done != apps.len() {
        return Err(format!(
            "found {done} apps in the text, observed {}",
            apps.len()
        ));
    }
    edits.sort_by_key(|edit| std::cmp::Reverse(edit.0));
    let mut out = text.to_owned();
    let mut limit = usize::MAX;
    for (from, to, new) in edits {
        if to > limit {
            return Err("overlapping edits".to_owned());
        }
        limit = from;
        let (Some(&a), Some(&b)) = (offsets.get(from), offsets.get(to)) else {
            return Err("an edit outside the text".to_owned());
        };
        out.replace_range(a..b, &new);
    }
    Ok(out)
}

/// The baseline as block lines at `indent`, each starting on a new line.
fn indented(baseline: &Baseline, indent: usize) -> String {
    let pad = " ".repeat(indent);
    baseline
        .block_lines()
        .into_iter()
        .map(|line| format!("\n{pad}{line}"))
        .collect()
}

/// After blanks and a `#` comment that follow `at` on its line, if there is one; else `at`.
fn end_of_trailing_comment(chars: &[char], at: usize) -> usize {
    let mut i = at;
    while chars.get(i).is_some_and(|c| *c == ' ' || *c == '\t') {
        i += 1;
    }
    if chars.get(i) != Some(&'#') {
        return at;
    }
    while chars.get(i).is_some_and(|c| *c != '\n' && *c != '\r') {
        i += 1;
    }
    i
}

/// The start of the line after the one `at` is on (or `at` itself at a line start).
fn line_after(chars: &[char], at: usize) -> usize {
    if at == 0 || chars.get(at - 1) == Some(&'\n') {
        return at.min(chars.len());
    }
    let mut i = at;
    while i < chars.len() {
        if chars[i] == '\n' {
            return i + 1;
        }
        i += 1;
    }
    chars.len()
}

/// The events of `text`, with ends that stop at the content: the parser lets some spans
/// run on to the next token (a block scalar's over the blank lines and indentation after it,
/// a closing bracket's over the blanks after it).
fn events(text: &str, chars: &[char]) -> Result<Vec<Ev>, String> {
    let mut out = Vec::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| format!("YAML: {e}"))?;
        let (start, mut end) = (span.start.index(), span.end.index());
        // A flow collection opens with a one-character token; a block one takes no room.
        let kind = match event {
            Event::Scalar(value, ..) => {
                while end > start && chars.get(end - 1).is_some_and(|c| c.is_whitespace()) {
                    end -= 1;
                }
                Kind::Scalar {
                    value: value.into_owned(),
                }
            }
            Event::Alias(_) => Kind::Alias,
            Event::MappingStart(..) => Kind::MapStart { flow: end > start },
            Event::SequenceStart(..) => Kind::SeqStart { flow: end > start },
            Event::MappingEnd | Event::SequenceEnd => {
                if end > start {
                    end = start + 1;
                }
                Kind::End
            }
            Event::StreamEnd => break,
            _ => Kind::Other,
        };
        out.push(Ev {
            kind,
            start,
            end,
            col: span.start.col(),
        });
    }
    Ok(out)
}

/// Skips the node at `i`: returns the index after it and where its content ends.
fn skip(events: &[Ev], i: usize, depth: usize) -> Result<(usize, Option<usize>), String> {
    if depth > MAX_DEPTH {
        return Err("nested too deeply".to_owned());
    }
    let ev = events.get(i).ok_or("unexpected end of document")?;
    match ev.kind {
        // An empty scalar (`key:` with no value) takes no room.
        Kind::Scalar { ref value } => Ok((
            i + 1,
            (ev.end > ev.start || !value.is_empty()).then_some(ev.end),
        )),
        Kind::Alias => Ok((i + 1, Some(ev.end))),
        Kind::MapStart { flow } | Kind::SeqStart { flow } => {
            let mut j = i + 1;
            let mut end = None;
            loop {
                let child = events.get(j).ok_or("unclosed collection")?;
                if matches!(child.kind, Kind::End) {
                    if flow {
                        end = Some(child.end);
                    }
                    return Ok((j + 1, end));
                }
                let (next, child_end) = skip(events, j, depth + 1)?;
                end = end.max(child_end);
                j = next;
            }
        }
        Kind::End | Kind::Other => Err("unexpected YAML event".to_owned()),
    }
}

/// Finds every entry of the top-level `apps:` sequence.
fn app_spots(events: &[Ev]) -> Result<Vec<AppSpot>, String> {
    let Some(root) = events
        .iter()
        .position(|e| matches!(e.kind, Kind::MapStart { .. }))
    else {
        return Ok(Vec::new());
    };
    let mut spots = Vec::new();
    let mut i = root + 1;
    while !matches!(events.get(i).map(|e| &e.kind), Some(Kind::End) | None) {
        let is_apps = matches!(&events[i].kind, Kind::Scalar { value } if value == "apps");
        let (value, _) = skip(events, i, 0)?;
        let (after, _) = skip(events, value, 0)?;
        if is_apps {
            match events[value].kind {
                Kind::SeqStart { .. } => {
                    let mut j = value + 1;
                    while !matches!(events.get(j).map(|e| &e.kind), Some(Kind::End) | None) {
                        let (next, _) = skip(events, j, 0)?;
                        spots.push(app_spot(events, j)?);
                        j = next;
                    }
                }
                Kind::Scalar { .. } => {}
                _ => return Err("apps: is not a plain sequence".to_owned()),
            }
        }
        i = after;
    }
    Ok(spots)
}

fn app_spot(events: &[Ev], at: usize) -> Result<AppSpot, String> {
    let start = &events[at];
    let Kind::MapStart { flow } = start.kind else {
        return Err("an app is not a mapping (an alias?)".to_owned());
    };
    let mut spot = AppSpot {
        name: None,
        flow,
        key_col: start.col,
        content_end: start.end,
        close: start.end,
        expect: None,
    };
    let mut i = at + 1;
    loop {
        let ev = events.get(i).ok_or("unclosed app mapping")?;
        if matches!(ev.kind, Kind::End) {
            spot.close = ev.start;
            return Ok(spot);
        }
        let key = match &ev.kind {
            Kind::Scalar { value } => Some((value.as_str(), ev.end, ev.col)),
            _ => None,
        };
        let (value, key_content_end) = skip(events, i, 0)?;
        let (next, value_end) = skip(events, value, 0)?;
        spot.content_end = spot
            .content_end
            .max(key_content_end.unwrap_or(0))
            .max(value_end.unwrap_or(0));
        match key {
            Some(("name", ..)) => {
                if let Kind::Scalar { value: name } = &events[value].kind {
                    spot.name = Some(name.clone());
                }
            }
            Some(("expect", key_end, key_col)) => {
                if !matches!(
                    events[value].kind,
                    Kind::MapStart { .. } | Kind::Scalar { .. }
                ) {
                    return Err("an expect: that is not a mapping (an alias?)".to_owned());
                }
                spot.expect = Some(ExpectSpot {
                    key_end,
                    key_col,
                    value_end,
                });
            }
            _ => {}
        }
        i = next;
    }
}

// ---- re-serializing ----------------------------------------------------------------------

/// The fallback: parse into a `yaml_serde::Value`, replace each app's `expect`, serialize.
fn rewrite(text: &str, apps: &BTreeMap<String, AppBaseline>) -> Result<String, String> {
    use yaml_serde::Value;
    let mut doc: Value = yaml_serde::from_str(text).map_err(|e| format!("YAML: {e}"))?;
    if let Some(list) = doc.get_mut("apps").and_then(Value::as_sequence_mut) {
        for app in list {
            let map = app.as_mapping_mut().ok_or("an app is not a mapping")?;
            let name = map
                .get("name")
                .and_then(Value::as_str)
                .ok_or("an app without a name")?
                .to_owned();
            let baseline = &apps
                .get(&name)
                .ok_or_else(|| format!("app {name} was not observed"))?
                .baseline;
            // Insert keeps the position of an existing key, so `expect` stays where it was.
            map.insert(Value::String("expect".to_owned()), baseline.value());
        }
    }
    yaml_serde::to_string(&doc).map_err(|e| format!("YAML: {e}"))
}

// ---- writing -----------------------------------------------------------------------------

/// Replaces `path` with the snapshot atomically: a temporary file beside it, fsynced, renamed
/// over it, and the directory fsynced. Mode 0600 when the config holds an inline secret.
pub fn write(path: &Path, snapshot: &Snapshot) -> Result<(), SnapshotError> {
    let failed = |source| SnapshotError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| failed(std::io::Error::other("not a file name")))?
        .to_string_lossy()
        .into_owned();
    let nonce = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.tmp-{}-{nonce}", std::process::id()));
    let attempt = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        // create_new: never write through a file or link someone put at the temporary name.
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if snapshot.inline_secret { 0o600 } else { 0o644 });
        }
        let mut file = options.open(&tmp)?;
        file.write_all(snapshot.text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(&dir)?.sync_all()
    };
    attempt().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        failed(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "Call.CallbackAfterStartCall";
    const END: &str = "Call.CallbackAfterEndCall";

    fn present(url: &str, commands: &[&str]) -> Observed {
        Observed::Present {
            url: url.to_owned(),
            commands: commands.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn parse(text: &str) -> Config {
        config::parse(text, "c.yaml", Path::new("/etc/calldrift"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .0
    }

    /// Baselines from `seen` per app name, in the order of the config's apps.
    fn baselines_for(config: &Config, seen: &[Observed]) -> BTreeMap<String, AppBaseline> {
        config
            .apps
            .iter()
            .zip(seen)
            .map(|(app, seen)| {
                let key = TargetKey {
                    app: app.name.clone(),
                    sdkappid: app.sdkappid,
                    region: app.regions[0].clone(),
                };
                let baseline = baseline_of("c.yaml", &key, seen).expect("baseline");
                (
                    app.name.clone(),
                    AppBaseline {
                        baseline,
                        observed: seen.clone(),
                    },
                )
            })
            .collect()
    }

    fn snap(text: &str, seen: &[Observed]) -> Snapshot {
        let config = parse(text);
        let apps = baselines_for(&config, seen);
        render(
            text,
            &config,
            &apps,
            Path::new("/etc/calldrift"),
            "# calldrift snapshot: test\n",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    const BLOCK: &str = "# my config\nexpect:\n  url_prefix: https://hooks.example.com/  # everyone\napps:\n  # first\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: KEY_A  # from vault\n    expect:\n      url: https://hooks.example.com/old   # old one\n      commands: [Call.CallbackAfterStartCall]  # was short\n\n  # second, absent\n  - name: b\n    sdkappid: 2\n    regions: [china]\n    secret_key_file: /run/b\n  - {name: c, sdkappid: 3, regions: [china], secret_key: abc}\n  - {name: d, sdkappid: 4, regions: [china], secret_key_env: D, expect: {present: any}}\n# tail\n";

    #[test]
    fn splicing_keeps_everything_but_the_expect_blocks() {
        let seen = [
            present(
                "http://plain.example.com/cb?token=s3cret",
                &[END, START, END],
            ),
            Observed::Absent,
            present("https://hooks.example.com/c", &[START]),
            present("HTTPS://hooks.example.com/d", &[]),
        ];
        let out = snap(BLOCK, &seen);
        assert!(out.comments_kept);
        assert!(out.inline_secret);
        for kept in [
            "# my config\n",
            "  url_prefix: https://hooks.example.com/  # everyone\n",
            "  # first\n",
            "    secret_key_env: KEY_A  # from vault\n",
            "\n  # second, absent\n",
            "    secret_key_file: /run/b\n",
            "secret_key: abc",
            "# tail\n",
        ] {
            assert!(out.text.contains(kept), "lost {kept:?}:\n{}", out.text);
        }
        assert!(!out.text.contains("# old one"), "{}", out.text);
        assert!(!out.text.contains("# was short"), "{}", out.text);
        assert!(
            out.text.contains(
                "    expect:\n      present: true\n      url: \"http://plain.example.com/cb?token=s3cret\"\n      url_scheme: http\n      url_prefix: null\n      commands:\n        - Call.CallbackAfterEndCall\n        - Call.CallbackAfterStartCall\n      extra_commands: drift\n      ignore_commands: []\n\n  # second"
            ),
            "{}",
            out.text
        );
        assert!(
            out.text.contains(
                "    secret_key_file: /run/b\n    expect:\n      present: false\n  - {name: c"
            ),
            "{}",
            out.text
        );
        assert!(
            out.text.contains("secret_key: abc, expect: {present: true, url: \"https://hooks.example.com/c\", url_scheme: https, url_prefix: null, commands: [Call.CallbackAfterStartCall], extra_commands: drift, ignore_commands: []}}"),
            "{}",
            out.text
        );
        assert!(
            out.text.contains("expect: {present: true, url: \"HTTPS://hooks.example.com/d\", url_scheme: https, url_prefix: null, commands: [], extra_commands: drift, ignore_commands: []}}"),
            "{}",
            out.text
        );
        assert!(
            out.text
                .starts_with("# calldrift snapshot: test\n# Only the apps' expect: blocks")
        );
    }

    #[test]
    fn a_snapshot_of_a_snapshot_does_not_stack_headers_and_changes_nothing_else() {
        let seen = [
            present("https://hooks.example.com/a", &[START, END]),
            Observed::Absent,
            Observed::Absent,
            Observed::Absent,
        ];
        let first = snap(BLOCK, &seen);
        let second = snap(&first.text, &seen);
        assert_eq!(first.text, second.text);
        assert_eq!(second.text.matches(HEADER_MARK).count(), 1);
    }

    #[test]
    fn odd_layouts_are_spliced_and_verified() {
        let cases = [
            // An empty expect:, a last app without a trailing newline.
            "apps:\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: K\n    expect:\n  - name: b\n    sdkappid: 2\n    regions: [china]\n    secret_key_env: K",
            // A block scalar as the app's last value, CRLF line ends, a sequence at the
            // key's own indentation.
            "apps:\r\n  - name: a\r\n    sdkappid: 1\r\n    regions: [china]\r\n    secret_key_env: K\r\n    identifier: |\r\n      admin\r\n\r\n  - name: b\r\n    sdkappid: 2\r\n    regions:\r\n    - china\r\n    secret_key_env: K\r\n",
            // Deeper indentation, quoted keys, a comment after the expect key.
            "apps:\n    -   \"name\": a\n        sdkappid: 1\n        regions: [china]\n        secret_key_env: K\n        'expect':   # mine\n            present: any\n    -   name: b\n        sdkappid: 2\n        regions: [china]\n        secret_key_env: K\n",
            // A flow sequence of apps, one with a trailing comma.
            "apps: [{name: a, sdkappid: 1, regions: [china], secret_key_env: K}, {name: b, sdkappid: 2, regions: [china], secret_key_env: K, }]\n",
        ];
        let seen = [
            present("https://x.example.com/\u{e9}?q=1", &[START]),
            Observed::Absent,
        ];
        for text in cases {
            let config = parse(text);
            let apps = baselines_for(&config, &seen);
            let out = render(text, &config, &apps, Path::new("/etc/calldrift"), "# h\n")
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert!(out.comments_kept, "{text:?}:\n{}", out.text);
            let again = parse(&out.text);
            assert!(apps["a"].baseline.is(&again.apps[0].expect), "{}", out.text);
            assert!(apps["b"].baseline.is(&again.apps[1].expect), "{}", out.text);
        }
    }

    #[test]
    fn the_fallback_rewrites_and_says_comments_are_gone() {
        // An alias as an app's expect: cannot be spliced without breaking other users of it.
        let text = "expect: &shared\n  present: true\napps:\n  - name: a  # note\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: K\n    expect: *shared\n";
        let config = parse(text);
        let apps = baselines_for(&config, &[present("https://h.example.com/", &[START])]);
        let out =
            render(text, &config, &apps, Path::new("/etc/calldrift"), "# h\n").expect("rewritten");
        assert!(!out.comments_kept);
        assert!(
            out.text.contains("could not be edited in place"),
            "{}",
            out.text
        );
        assert!(!out.text.contains("# note"));
        assert!(apps["a"].baseline.is(&parse(&out.text).apps[0].expect));
    }

    #[test]
    fn relative_paths_resolve_from_the_output_directory() {
        let text = "state_file: state.json\napps:\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_file: keys/a\n";
        let config = parse(text);
        let apps = baselines_for(&config, &[Observed::Absent]);
        let err = render(text, &config, &apps, Path::new("/elsewhere"), "# h\n")
            .expect_err("paths would move")
            .to_string();
        assert!(err.starts_with("snapshot of c.yaml: "), "{err}");
        assert!(
            err.contains(
                "state_file would be /elsewhere/state.json instead of /etc/calldrift/state.json"
            ),
            "{err}"
        );
        assert!(err.contains("app a: secret_key_file"), "{err}");
        assert!(render(text, &config, &apps, Path::new("/etc/calldrift"), "# h\n").is_ok());
    }

    #[test]
    fn failures_disagreements_and_bad_urls_are_errors_naming_the_place() {
        let text = "regions:\n  r1: \"http://127.0.0.1:1\"\n  r2: \"http://127.0.0.1:2\"\napps:\n  - name: a\n    sdkappid: 1\n    regions: [r1, r2]\n    secret_key_env: K\n";
        let config = parse(text);
        let key = |region: &str| TargetKey {
            app: "a".into(),
            sdkappid: 1,
            region: region.into(),
        };
        let ok = |seen: Observed| PollOutcome {
            result: Ok(seen),
            request_id: Some("req-1".into()),
            attempts: 1,
        };
        let mut outcomes = BTreeMap::from([
            (
                key("r1"),
                ok(present("https://h.example.com/?t=1", &[START])),
            ),
            (
                key("r2"),
                ok(present("https://h.example.com/?t=2", &[START])),
            ),
        ]);
        let err = baselines(&config, &mut outcomes)
            .expect_err("disagree")
            .to_string();
        assert!(
            err.contains("app a (1) differs between regions: r1 has https://h.example.com/?t=REDACTED [Call.CallbackAfterStartCall], r2 has")
                && err.contains("shown redacted"),
            "{err}"
        );

        let mut outcomes = BTreeMap::from([
            (key("r1"), ok(Observed::Absent)),
            (
                key("r2"),
                PollOutcome {
                    result: Err(crate::tencent::PollError::Transport("refused".into())),
                    request_id: Some("req-9".into()),
                    attempts: 3,
                },
            ),
        ]);
        let err = baselines(&config, &mut outcomes)
            .expect_err("unreadable")
            .to_string();
        assert!(err.contains("1 of 2 targets could not be read"), "{err}");
        assert!(
            err.contains("  app a (1, r2): [transport] transport error: refused (RequestId req-9)"),
            "{err}"
        );

        let mut outcomes = BTreeMap::from([
            (key("r1"), ok(present("hooks.example.com/cb?t=1", &[START]))),
            (key("r2"), ok(present("hooks.example.com/cb?t=1", &[START]))),
        ]);
        let err = baselines(&config, &mut outcomes)
            .expect_err("unparsable")
            .to_string();
        assert!(err.contains("app a (1, r1): the callback URL"), "{err}");
        assert!(!err.contains("t=1"), "redacted: {err}");

        let mut outcomes = BTreeMap::from([(key("r1"), ok(Observed::Absent))]);
        let err = baselines(&config, &mut outcomes)
            .expect_err("missing")
            .to_string();
        assert!(err.contains("app a (1, r2): [internal]"), "{err}");
    }

    #[test]
    fn scalars_are_quoted_when_they_could_be_misread() {
        assert_eq!(
            scalar("Call.CallbackAfterEndCall"),
            "Call.CallbackAfterEndCall"
        );
        assert_eq!(scalar("https"), "https");
        for odd in ["yes", "Null", "1abc", "a b", "a:b", "x#y", "", "[x]"] {
            assert!(scalar(odd).starts_with('"'), "{odd}");
        }
        assert_eq!(quoted("a\"b\\c\nd"), "\"a\\\"b\\\\c\\u000ad\"");
    }

    #[cfg(unix)]
    #[test]
    fn write_replaces_atomically_with_mode_0600_for_inline_secrets() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.yaml");
        std::fs::write(&path, "old").expect("write");
        let mut snapshot = Snapshot {
            text: "new\n".into(),
            comments_kept: true,
            inline_secret: true,
            apps: BTreeMap::new(),
        };
        write(&path, &snapshot).expect("written");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new\n");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        snapshot.inline_secret = false;
        let other = dir.path().join("other.yaml");
        write(&other, &snapshot).expect("written");
        let mode = std::fs::metadata(&other)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert!(
            mode & !0o644 == 0 && mode & 0o600 == 0o600,
            "0644 minus umask: {mode:o}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
        let err = write(&dir.path().join("no/such/dir/x.yaml"), &snapshot)
            .expect_err("no directory")
            .to_string();
        assert!(err.contains("no/such/dir/x.yaml"), "{err}");
    }
}
