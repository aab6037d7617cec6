//! serde's decoding errors retold in the operator's words: what a field should hold (from
//! the file's [`Vocabulary`]) and what was found, never a Rust type name; and the known key
//! an unknown one was probably meant to be.

/// What one kind of file (the config, the web config) calls its fields.
pub(crate) struct Vocabulary {
    /// The file's kind, as in "not a calldrift config".
    pub(crate) kind: &'static str,
    /// Top-level keys to show when the file is not a mapping at all (`listen:, poll:, apps:`).
    pub(crate) example_keys: &'static str,
    /// What the value at a path should be ("a number such as 1400000001"), if it is known.
    pub(crate) describe: fn(&str) -> Option<&'static str>,
    /// The keys the mapping at a path knows, for "did you mean".
    pub(crate) known_keys: fn(&str) -> &'static [&'static str],
}

impl Vocabulary {
    /// The one message for a file whose top is not a mapping of keys.
    pub(crate) fn not_a_mapping(&self) -> String {
        format!(
            "not {}: expected a YAML mapping of keys such as {}",
            self.kind, self.example_keys
        )
    }

    /// `unknown field "x" at path`, with the closest known key when one is near.
    pub(crate) fn unknown_field(&self, path: &str) -> String {
        let (section, field) = split_last(path);
        let mut message = format!("unknown field {field:?} at {path}");
        if let Some(near) = closest(field, (self.known_keys)(section)) {
            message.push_str(&format!("; did you mean {near:?}?"));
        }
        message
    }

    /// Whether `key`, unknown at the top, is near none of the known top keys: a file made
    /// only of such keys is some other text, not a config with typos.
    pub(crate) fn is_foreign_top_key(&self, key: &str) -> bool {
        !key.contains('[') && !key.contains('.') && closest(key, (self.known_keys)("")).is_none()
    }

    /// serde's `message` about the value at `path` (empty at the top), retold.
    pub(crate) fn decoding_error(&self, path: &str, message: &str) -> String {
        let Some((found, expected)) = invalid_type(message) else {
            return with_path(path, &strip_type_names(message));
        };
        if path.is_empty() {
            return self.not_a_mapping();
        }
        let expected = (self.describe)(path).unwrap_or_else(|| generic(expected));
        with_path(
            path,
            &format!("expected {expected}, found {}", found_words(found)),
        )
    }
}

fn with_path(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

/// The mapping holding `path`, and the key itself.
fn split_last(path: &str) -> (&str, &str) {
    path.rsplit_once('.').unwrap_or(("", path))
}

/// `found` and `expected` of serde's "invalid type: {found}, expected {expected}" (and of
/// "invalid value: …").
fn invalid_type(message: &str) -> Option<(&str, &str)> {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))?;
    rest.rsplit_once(", expected ")
}

/// serde's name of what it found, in plain words: `string "x"` is `"x"`.
fn found_words(found: &str) -> String {
    if let Some(text) = found.strip_prefix("string ") {
        return text.to_owned();
    }
    for (prefix, plain) in [
        ("integer ", ""),
        ("floating point ", ""),
        ("boolean ", ""),
        ("character ", ""),
    ] {
        if let Some(value) = found.strip_prefix(prefix) {
            return format!("{plain}{}", value.trim_matches('`'));
        }
    }
    match found {
        "sequence" => "a list".to_owned(),
        "map" => "a mapping".to_owned(),
        "unit value" | "null" => "nothing (null)".to_owned(),
        other => other.to_owned(),
    }
}

/// serde's expectation, when the vocabulary has no word for the field.
fn generic(expected: &str) -> &'static str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" | "an integer" => "a number",
        "a boolean" => "true or false",
        "a string" => "text",
        "a sequence" => "a list such as [a, b]",
        e if e.starts_with("struct ") || e == "a map" => "a mapping of keys (key: value)",
        _ => "another kind of value",
    }
}

/// Other serde messages ("missing field `x`", "data did not match any variant of untagged
/// enum RawRegion") without Rust's names.
fn strip_type_names(message: &str) -> String {
    if message.starts_with("data did not match any variant") {
        return "this value has none of the accepted forms".to_owned();
    }
    message.replace('`', "\"")
}

/// The known key within edit distance 2 of `word`, the nearest first; failing that, the
/// longest long known key `word` starts with (`secret_key_enviroment`: `secret_key_env`).
pub(crate) fn closest(word: &str, known: &[&'static str]) -> Option<&'static str> {
    let near = known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, _)| *d <= 2 && *d > 0)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k);
    near.or_else(|| {
        known
            .iter()
            .filter(|k| k.len() >= 8 && word.len() > k.len() && word.starts_with(*k))
            .max_by_key(|k| k.len())
            .copied()
    })
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("max_concurency", "max_concurrency"), 1);
        assert_eq!(edit_distance("pol", "poll"), 1);
        assert_eq!(edit_distance("intervall", "interval"), 1);
        assert_eq!(edit_distance("abc", "xyz"), 3);
        assert_eq!(closest("regoins", &["regions", "retries"]), Some("regions"));
        assert_eq!(closest("zzz", &["regions"]), None);
        let secret = ["secret_key", "secret_key_env", "secret_key_file"];
        assert_eq!(
            closest("secret_key_enviroment", &secret),
            Some("secret_key_env")
        );
    }

    #[test]
    fn no_rust_type_survives_the_generic_fallback() {
        for expected in [
            "u32",
            "u64",
            "a boolean",
            "a sequence",
            "struct RawPoll",
            "x",
        ] {
            let words = generic(expected);
            assert!(
                !words.contains("u32") && !words.contains("struct"),
                "{words}"
            );
        }
    }
}
