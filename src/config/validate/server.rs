//! The daemon's own settings: where it listens and how it logs. (`web_config_file`,
//! `state_file` and `ca_file` are paths, checked when they are read.)

use std::net::SocketAddr;

use crate::config::{Diagnostics, LogFormat};

/// `listen`, `0.0.0.0:9797` when not written.
pub(super) fn listen(raw: Option<String>, diagnostics: &mut Diagnostics) -> SocketAddr {
    let text = raw.unwrap_or_else(|| "0.0.0.0:9797".to_owned());
    text.parse::<SocketAddr>().unwrap_or_else(|_| {
        diagnostics.error(
            "listen",
            format!("listen: {text:?} is not an address:port such as 0.0.0.0:9797"),
        );
        SocketAddr::from(([0, 0, 0, 0], 9797))
    })
}

/// `log_format`, text when not written.
pub(super) fn log_format(raw: Option<&str>, diagnostics: &mut Diagnostics) -> LogFormat {
    match raw {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            diagnostics.error(
                "log_format",
                format!("log_format: {other:?} is neither text nor json"),
            );
            LogFormat::Text
        }
    }
}

/// `log_level`, info when not written: a level or a `RUST_LOG` filter.
pub(super) fn log_level(raw: Option<String>, diagnostics: &mut Diagnostics) -> String {
    let level = raw.unwrap_or_else(|| "info".to_owned());
    if tracing_subscriber::EnvFilter::builder()
        .parse(&level)
        .is_err()
    {
        diagnostics.error("log_level", format!("log_level: {level:?} is not a level (error, warn, info, debug, trace) or RUST_LOG filter"));
    }
    level
}
