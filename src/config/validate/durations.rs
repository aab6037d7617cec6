//! Durations as written: humantime strings (`30s`, `5m`, `1h30m`).

use std::time::Duration;

use crate::config::Diagnostics;

/// The duration at `path`, `raw` as written; `default` when not written or in error.
pub(super) fn duration(
    diagnostics: &mut Diagnostics,
    path: &str,
    raw: Option<&str>,
    default: Duration,
) -> Duration {
    let Some(text) = raw else { return default };
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            diagnostics.error(path, format!("{path} must be longer than zero"));
            default
        }
        Ok(d) => d,
        Err(e) => {
            diagnostics.error(
                path,
                format!("{path}: invalid duration {text:?} ({e}); use e.g. 30s, 5m, 1h30m"),
            );
            default
        }
    }
}
