//! Logging set-up: `--log-level` and `--log-format` over the config's, `RUST_LOG` honoured.

use std::io::IsTerminal;
use std::path::Path;

use crate::config::{self, LogFormat};
use crate::shard::{self, Shard};

use super::LogFormatArg;

/// Sets up tracing: `--log-level` wins, then RUST_LOG, then the config's level.
pub fn init_logging(cli_level: Option<&str>, config_level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = cli_level
        .map(EnvFilter::try_new)
        .or_else(|| {
            std::env::var("RUST_LOG")
                .ok()
                .filter(|v| !v.is_empty())
                .map(EnvFilter::try_new)
        })
        .unwrap_or_else(|| EnvFilter::try_new(config_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling the CLI twice) is harmless, so its error is ignored.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Colour codes only for a person at a terminal: not in files, pipes or journald (where
/// they arrive as escape sequences), and never when `NO_COLOR` is set to anything but "".
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

pub(super) fn log_format(cli: Option<LogFormatArg>, config: LogFormat) -> LogFormat {
    match cli {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config,
    }
}

/// Loads the config with the secrets of `shard`'s apps, of only `apps` when some are named
/// (printing every problem on failure), then sets up logging from it and logs its
/// warnings: the start of `run`, `check`, `plan` and `apply`.
pub(super) fn load_and_start_logging(
    path: &Path,
    shard: Option<Shard>,
    apps: &[String],
    cli_level: &Option<String>,
    cli_format: Option<LogFormatArg>,
) -> Option<config::LoadedConfig> {
    let env = |name: &str| std::env::var(name).ok();
    // Only the keys of the apps the command reads: `check --app prod` needs no other key.
    let wanted = |app: &config::App| {
        shard::polls(shard, app) && (apps.is_empty() || apps.contains(&app.name))
    };
    let loaded = match config::load_selected(path, &env, &wanted) {
        Ok(loaded) => loaded,
        Err(e) => {
            for line in e.diagnostics() {
                eprintln!("{line}");
            }
            return None;
        }
    };
    init_logging(
        cli_level.as_deref(),
        &loaded.config.log_level,
        log_format(cli_format, loaded.config.log_format),
    );
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    Some(loaded)
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }
}
