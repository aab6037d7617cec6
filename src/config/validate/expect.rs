//! `expect:`, global and per app: an app's block overrides the global one field by field,
//! and the merged block is checked where the app's own block (or the global one) sits.

use crate::config::Diagnostics;
use crate::config::raw::{RawExpect, RawPresence};
use crate::drift::{DOCUMENTED_COMMANDS, Expected, ExtraCommands, Presence};

/// The expectations when nothing is written, in the raw form an `expect:` block merges into.
pub(super) fn defaults() -> RawExpect {
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
pub(super) fn merge(base: &RawExpect, over: Option<&RawExpect>) -> RawExpect {
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
pub(super) fn check(raw: &RawExpect, path: &str, diagnostics: &mut Diagnostics) -> Expected {
    let present = presence(raw.present.as_ref(), path, diagnostics);
    let url_scheme = url_scheme(raw.url_scheme.as_deref(), path, diagnostics);
    let url = raw.url.clone().flatten();
    let url_prefix = raw.url_prefix.clone().flatten();
    check_urls(
        url.as_deref(),
        url_prefix.as_deref(),
        &url_scheme,
        path,
        diagnostics,
    );
    let extra_commands = extra_commands(raw.extra_commands.as_deref(), path, diagnostics);
    let commands = raw.commands.clone().unwrap_or_default();
    let ignore_commands = raw.ignore_commands.clone().unwrap_or_default();
    check_command_words(&commands, &ignore_commands, path, diagnostics);
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

fn presence(raw: Option<&RawPresence>, path: &str, diagnostics: &mut Diagnostics) -> Presence {
    match raw {
        Some(RawPresence::Bool(true)) | None => Presence::Required,
        Some(RawPresence::Bool(false)) => Presence::Forbidden,
        Some(RawPresence::Word(w)) if w == "any" => Presence::Any,
        Some(RawPresence::Word(w)) => {
            let field = format!("{path}.present");
            diagnostics.error(&field, format!("{field}: {w:?} is not true, false or any"));
            Presence::Required
        }
    }
}

/// The scheme, lower-cased; https when not written.
fn url_scheme(raw: Option<&str>, path: &str, diagnostics: &mut Diagnostics) -> String {
    let scheme = raw.unwrap_or("https").to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    {
        let field = format!("{path}.url_scheme");
        diagnostics.error(&field, format!("{field}: {scheme:?} is not a URL scheme"));
    }
    scheme
}

/// `url` and `url_prefix` must agree with `url_scheme` and with each other.
fn check_urls(
    url: Option<&str>,
    url_prefix: Option<&str>,
    url_scheme: &str,
    path: &str,
    diagnostics: &mut Diagnostics,
) {
    let url_field = format!("{path}.url");
    if let Some(url) = url {
        match url::Url::parse(url) {
            Ok(parsed) if parsed.scheme() != url_scheme => diagnostics.error(
                &url_field,
                format!(
                    "{url_field}: the URL's scheme {:?} contradicts url_scheme {url_scheme:?}",
                    parsed.scheme()
                ),
            ),
            Ok(_) => {}
            Err(e) => diagnostics.error(&url_field, format!("{url_field}: not a URL ({e})")),
        }
    }
    let Some(prefix) = url_prefix else { return };
    if !prefix
        .to_ascii_lowercase()
        .starts_with(&format!("{url_scheme}://"))
    {
        let field = format!("{path}.url_prefix");
        diagnostics.error(
            &field,
            format!("{field}: must start with {url_scheme}:// (url_scheme)"),
        );
    }
    if let Some(url) = url {
        if !url.starts_with(prefix) {
            diagnostics.error(
                &url_field,
                format!("{url_field}: does not start with url_prefix, so it can never match"),
            );
        }
    }
}

fn extra_commands(raw: Option<&str>, path: &str, diagnostics: &mut Diagnostics) -> ExtraCommands {
    match raw {
        None | Some("drift") => ExtraCommands::Drift,
        Some("allow") => ExtraCommands::Allow,
        Some(other) => {
            let field = format!("{path}.extra_commands");
            diagnostics.error(
                &field,
                format!("{field}: {other:?} is neither drift nor allow"),
            );
            ExtraCommands::Drift
        }
    }
}

/// Every word must be one (an error otherwise) and should be documented (a warning);
/// a word both expected and ignored is worth a warning.
fn check_command_words(
    commands: &[String],
    ignore_commands: &[String],
    path: &str,
    diagnostics: &mut Diagnostics,
) {
    for (list, words) in [("commands", commands), ("ignore_commands", ignore_commands)] {
        for (i, word) in words.iter().enumerate() {
            let at = format!("{path}.{list}.{i}");
            if word.trim().is_empty() || word.trim() != word {
                diagnostics.error(
                    &at,
                    format!("{path}.{list}: {word:?} is not a command word"),
                );
            } else if !DOCUMENTED_COMMANDS.contains(&word.as_str()) {
                diagnostics.warning(
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
        diagnostics.warning(
            &format!("{path}.ignore_commands"),
            format!("{word:?} is both expected and ignored; ignoring wins"),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{APP, parse_text};
    use crate::drift::{ExtraCommands, Presence};

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
}
