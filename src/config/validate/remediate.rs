//! `remediate:`, global and per app: the daemon's opt-in restoring of managed targets. An
//! app's block overrides any field of the global one; every key has a default, and `off`
//! (the default) writes nothing.

use std::time::Duration;

use super::durations::{Longest, duration};
use crate::config::raw::{RawMode, RawRemediate};
use crate::config::{Diagnostics, Remediate, RemediateMode};

/// `remediate.window`: the state file keeps each write's time this long, and a target
/// blocked for longer than a week is better fixed by hand.
const WINDOW: Longest = Longest {
    limit: Duration::from_secs(7 * 86_400),
    written: "7d",
    why: "a target blocked for longer is better fixed by hand",
};

/// The block at `path` (`remediate` or `apps[N].remediate`) over `base`: each field
/// written replaces `base`'s.
pub(super) fn remediate(
    raw: Option<&RawRemediate>,
    base: Remediate,
    path: &str,
    diagnostics: &mut Diagnostics,
) -> Remediate {
    let Some(raw) = raw else { return base };
    let field = |key: &str| format!("{path}.{key}");
    Remediate {
        mode: mode(raw.mode.as_ref(), base.mode, &field("mode"), diagnostics),
        after: at_least_one(raw.after, base.after, &field("after"), "", diagnostics),
        max_per_target: at_least_one(
            raw.max_per_target,
            base.max_per_target,
            &field("max_per_target"),
            "; mode: dry-run writes nothing",
            diagnostics,
        ),
        max_total: at_least_one(
            raw.max_total,
            base.max_total,
            &field("max_total"),
            "; mode: dry-run writes nothing",
            diagnostics,
        ),
        window: duration(
            diagnostics,
            &field("window"),
            raw.window.as_deref(),
            base.window,
            &WINDOW,
        ),
    }
}

fn mode(
    raw: Option<&RawMode>,
    base: RemediateMode,
    path: &str,
    diagnostics: &mut Diagnostics,
) -> RemediateMode {
    match raw {
        None => base,
        Some(RawMode::Bool(false)) => RemediateMode::Off,
        Some(RawMode::Word(w)) if w == "off" => RemediateMode::Off,
        Some(RawMode::Word(w)) if w == "dry-run" => RemediateMode::DryRun,
        Some(RawMode::Word(w)) if w == "enforce" => RemediateMode::Enforce,
        Some(other) => {
            let written = match other {
                RawMode::Bool(b) => b.to_string(),
                RawMode::Word(w) => format!("{w:?}"),
            };
            let hint = match other {
                RawMode::Word(w) if w.eq_ignore_ascii_case("dryrun") || w == "dry_run" => {
                    "; did you mean \"dry-run\"?"
                }
                _ => "",
            };
            diagnostics.error(
                path,
                format!("{path}: {written} is not off, dry-run or enforce{hint}"),
            );
            base
        }
    }
}

fn at_least_one(
    raw: Option<u32>,
    base: u32,
    path: &str,
    hint: &str,
    diagnostics: &mut Diagnostics,
) -> u32 {
    match raw {
        None => base,
        Some(0) => {
            diagnostics.error(path, format!("{path} must be at least 1{hint}"));
            base
        }
        Some(n) => n,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::{APP, errors, parse_text};
    use crate::config::{Remediate, RemediateMode};

    fn parse(text: &str) -> (Remediate, Remediate) {
        let (config, warnings) = parse_text(text).expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        (config.remediate, config.apps[0].remediate)
    }

    #[test]
    fn off_by_default_with_the_documented_limits() {
        let (global, app) = parse(APP);
        let want = Remediate {
            mode: RemediateMode::Off,
            after: 2,
            max_per_target: 3,
            max_total: 20,
            window: Duration::from_secs(3600),
        };
        assert_eq!((global, app), (want, want));
    }

    #[test]
    fn an_app_overrides_each_field_it_writes() {
        let text = format!(
            "remediate:\n  mode: dry-run\n  after: 3\n  window: 2h\n{APP}    remediate:\n      mode: enforce\n      max_per_target: 1\n"
        );
        let (global, app) = parse(&text);
        assert_eq!(global.mode, RemediateMode::DryRun);
        assert_eq!((global.after, global.max_per_target), (3, 3));
        assert_eq!(app.mode, RemediateMode::Enforce);
        assert_eq!((app.after, app.max_per_target, app.max_total), (3, 1, 20));
        assert_eq!(app.window, Duration::from_secs(7200));
        let (_, off) = parse(&format!(
            "remediate:\n  mode: enforce\n{APP}    remediate: {{mode: off}}\n"
        ));
        assert_eq!(off.mode, RemediateMode::Off);
        let (_, off) = parse(&format!("{APP}    remediate: {{mode: false}}\n"));
        assert_eq!(off.mode, RemediateMode::Off);
    }

    #[test]
    fn bad_values_are_errors_at_their_place() {
        let text = format!(
            "remediate:\n  mode: enforced\n  after: 0\n  window: 30d\n  max_total: 0\n{APP}    remediate:\n      mode: dry_run\n      max_per_target: 0\n"
        );
        assert_eq!(
            errors(&text),
            [
                "c.yaml:2:9: remediate.mode: \"enforced\" is not off, dry-run or enforce",
                "c.yaml:3:10: remediate.after must be at least 1",
                "c.yaml:5:14: remediate.max_total must be at least 1; mode: dry-run writes nothing",
                "c.yaml:4:11: remediate.window must be at most 7d (a target blocked for longer is better fixed by hand), not 30d",
                "c.yaml:12:13: apps[0].remediate.mode: \"dry_run\" is not off, dry-run or enforce; did you mean \"dry-run\"?",
                "c.yaml:13:23: apps[0].remediate.max_per_target must be at least 1; mode: dry-run writes nothing",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_the_nearest_known_one() {
        let all = errors(&format!(
            "remediate:\n  mode: enforce\n  max_per_targt: 2\n{APP}    remediate:\n      afterr: 1\n"
        ));
        assert_eq!(
            all,
            [
                "c.yaml:3:3: unknown field \"max_per_targt\" at remediate.max_per_targt; did you mean \"max_per_target\"?",
                "c.yaml:10:7: unknown field \"afterr\" at apps[0].remediate.afterr; did you mean \"after\"?",
            ]
        );
    }
}
