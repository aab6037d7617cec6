//! Problems found in a YAML file, each with its `file:line:column`, and the decoding step
//! that finds unknown keys; shared by the config and `web_config_file`.

use std::collections::HashSet;
use std::fmt;

use super::positions::{Pos, Positions, join, join_index};
use super::wording::Vocabulary;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Collects the diagnostics of one file, with positions looked up by dotted path.
pub(crate) struct Diagnostics<'a> {
    file: &'a str,
    positions: &'a Positions,
    list: Vec<Diagnostic>,
    /// What `list` holds, so a problem that several checks reach (a value that every
    /// product of an app inherits) is reported once.
    seen: HashSet<(Severity, Pos, String)>,
}

impl<'a> Diagnostics<'a> {
    /// None yet, for `file` (as named in messages) whose places are in `positions`.
    pub(crate) fn new(file: &'a str, positions: &'a Positions) -> Self {
        Self {
            file,
            positions,
            list: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// The file, as named in messages.
    pub(crate) fn file(&self) -> &'a str {
        self.file
    }

    /// Where each key and value of the file sits.
    pub(crate) fn positions(&self) -> &'a Positions {
        self.positions
    }

    /// Adds a problem, unless the very same one is already there.
    pub(crate) fn push(&mut self, severity: Severity, pos: Pos, message: String) {
        if !self.seen.insert((severity, pos, message.clone())) {
            return;
        }
        self.list.push(Diagnostic {
            severity,
            file: self.file.to_owned(),
            pos,
            message,
        });
    }

    /// An error at the value of `path`.
    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.positions.value(path);
        self.push(Severity::Error, pos, message.into());
    }

    /// An error at the key of `path`.
    pub(crate) fn error_at_key(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.positions.key(path);
        self.push(Severity::Error, pos, message.into());
    }

    /// A warning at the value of `path`.
    pub(crate) fn warning(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.positions.value(path);
        self.push(Severity::Warning, pos, message.into());
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.error_count() > 0
    }

    /// How many errors so far, to tell whether a step added one.
    pub(crate) fn error_count(&self) -> usize {
        self.list
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Every diagnostic, in the order found.
    pub(crate) fn into_vec(self) -> Vec<Diagnostic> {
        self.list
    }
}

/// Decodes YAML `text` (empty text is `T::default()`), collecting the path of every key
/// `T` does not know instead of stopping at the first; a type or syntax error comes back
/// with its position, in the words of `vocabulary`.
pub(crate) fn decode_yaml<T: serde::de::DeserializeOwned + Default>(
    text: &str,
    vocabulary: &Vocabulary,
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
        (pos, decoding_message(&e.to_string(), vocabulary))
    });
    (decoded, unknown)
}

/// What serde says, before yaml_serde adds its path.
const SERDE_MESSAGES: [&str; 8] = [
    "invalid type: ",
    "invalid value: ",
    "invalid length ",
    "missing field ",
    "unknown field ",
    "unknown variant ",
    "duplicate field ",
    "data did not match any variant",
];

/// yaml_serde's `path: message at line L column C`, retold; anything that is not serde's
/// is the YAML parser's, so the text is not YAML.
fn decoding_message(display: &str, vocabulary: &Vocabulary) -> String {
    let message = display.split(" at line ").next().unwrap_or(display);
    let is_serde = |m: &str| SERDE_MESSAGES.iter().any(|p| m.starts_with(p));
    if is_serde(message) {
        return vocabulary.decoding_error("", message);
    }
    match message.split_once(": ") {
        Some((path, rest)) if is_serde(rest) && !path.contains(' ') => {
            vocabulary.decoding_error(path, rest)
        }
        _ => format!("not valid YAML: {message}"),
    }
}

/// Reports the keys `decode_yaml` found unknown; a file whose every top key is unknown and
/// near no known one is some other text, reported once as such (and then true).
pub(crate) fn report_unknown(
    unknown: &[String],
    vocabulary: &Vocabulary,
    diagnostics: &mut Diagnostics,
) -> bool {
    let top_keys = diagnostics.positions().top_keys();
    let foreign = !top_keys.is_empty()
        && top_keys
            .iter()
            .all(|k| unknown.contains(k) && vocabulary.is_foreign_top_key(k));
    if foreign {
        diagnostics.push(Severity::Error, Pos::START, vocabulary.not_a_mapping());
        return true;
    }
    for path in unknown {
        diagnostics.error_at_key(path, vocabulary.unknown_field(path));
    }
    false
}

/// The path (`apps[0].expect.url`) of a key serde_ignored reports.
pub(crate) fn path_string(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => join_index(&path_string(parent), *index),
        P::Map { parent, key } => join(&path_string(parent), key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            path_string(parent)
        }
    }
}
