//! The one-shot commands: `check`, `validate`, `snapshot` and `usersig`.

use super::stdout::emit;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::clock::{Clock, SystemClock};
use crate::config::{self};
use crate::secret::SecretKey;
use crate::tencent::usersig;
use crate::web;

use crate::report::count;

use super::logging::{init_logging, load_and_start_logging, log_format};
use super::progress::ProgressLine;
use super::{CheckScope, ConfigArg, LogFormatArg, ReportFormat, runtime};

/// `calldrift check`: one pass, the report, and 0/2/1 for clean/drift/error.
pub(super) fn check(
    config: ConfigArg,
    format: ReportFormat,
    scope: CheckScope,
    quiet: bool,
    cli_level: &Option<String>,
    cli_format: Option<LogFormatArg>,
) -> anyhow::Result<ExitCode> {
    let CheckScope {
        apps,
        shard,
        endpoint,
    } = scope;
    let Some(loaded) =
        load_and_start_logging(&config.config, shard.shard, &apps, cli_level, cli_format)
    else {
        return Ok(ExitCode::from(1));
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let selection = crate::check::Selection {
        apps,
        shard: shard.shard,
    };
    let mut line = ProgressLine::on_terminal("checking", quiet);
    let runtime = runtime()?;
    let mut report = runtime.block_on(crate::check::run_with_progress(
        &loaded.config,
        &loaded.secrets,
        &selection,
        clock.clone(),
        &mut |done, total| {
            if let Some(line) = &mut line {
                line.update(done, total);
            }
        },
    ))?;
    if endpoint {
        runtime.block_on(crate::check::probe_endpoints(
            &loaded.config,
            &mut report,
            None,
            clock,
        ))?;
    }
    match format {
        ReportFormat::Json => emit(format!("{}\n", serde_json::to_string_pretty(&report)?))?,
        ReportFormat::Text => emit(report.to_text())?,
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// `calldrift usersig`: a UserSig for manual requests; the key never comes from an argument.
pub(super) fn usersig(
    sdkappid: u64,
    identifier: &str,
    expire: Duration,
    key_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let key = read_key(key_file)?;
    let sig = usersig::mint(
        &key,
        sdkappid,
        identifier,
        SystemClock.unix_secs(),
        expire.as_secs(),
    );
    emit(format!("{}\n", sig.expose()))?;
    Ok(ExitCode::SUCCESS)
}

/// `calldrift snapshot`: reads the config text once, so the file rewritten is the one the
/// targets were read from.
pub(super) fn snapshot(
    path: &Path,
    output: Option<&Path>,
    quiet: bool,
    log_level: Option<&str>,
    format: Option<LogFormatArg>,
) -> anyhow::Result<ExitCode> {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{origin}: cannot read config: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    // As config::load does it, so the same relative paths result.
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let parsed = config::parse(&text, &origin, base_dir).and_then(|(config, mut warnings)| {
        let (secrets, more) = config::resolve_secrets(&config, &|name| std::env::var(name).ok())?;
        warnings.extend(more);
        Ok((config, secrets, warnings))
    });
    let (config, secrets, warnings) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            for line in e.diagnostics() {
                eprintln!("{line}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    init_logging(
        log_level,
        &config.log_level,
        log_format(format, config.log_format),
    );
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let out_dir = output_dir(output, base_dir)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut line = ProgressLine::on_terminal("reading", quiet);
    let snapshot = runtime()?.block_on(crate::snapshot::take_with_progress(
        &text,
        &config,
        &secrets,
        &out_dir,
        clock,
        &mut |done, total| {
            if let Some(line) = &mut line {
                line.update(done, total);
            }
        },
    ))?;
    for warning in crate::snapshot::questionable(&config, &snapshot.apps) {
        eprintln!("warning: snapshot: {warning}");
    }
    match output {
        Some(out) => {
            crate::snapshot::write(out, &snapshot)?;
            let kept = if snapshot.comments_kept {
                "comments kept"
            } else {
                "rewritten from its data: comments are gone"
            };
            eprintln!(
                "{}: snapshot of {} ({}) written from {origin}; {kept}",
                out.display(),
                count(snapshot.apps.len(), "app", "apps"),
                count(config.target_count(), "target", "targets")
            );
        }
        None => emit(&snapshot.text)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Where relative paths in the snapshot resolve from: the directory it is written to
/// (the config's own when that is the same directory, or when it goes to stdout).
fn output_dir(output: Option<&Path>, base_dir: &Path) -> anyhow::Result<PathBuf> {
    let Some(out) = output else {
        return Ok(base_dir.to_owned());
    };
    let dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let same = |a: &Path, b: &Path| {
        let here = Path::new(".");
        let a = if a.as_os_str().is_empty() { here } else { a };
        let b = if b.as_os_str().is_empty() { here } else { b };
        matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    };
    if same(dir, base_dir) {
        return Ok(base_dir.to_owned());
    }
    dir.canonicalize()
        .with_context(|| format!("snapshot: cannot write {}: its directory", out.display()))
}

pub(super) fn validate(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
            match web::load_optional(loaded.config.web_config_file.as_deref()) {
                Ok((_, warnings)) => {
                    for warning in &warnings {
                        eprintln!("{warning}");
                    }
                }
                Err(e) => {
                    for line in e.diagnostics() {
                        eprintln!("{line}");
                    }
                    return ExitCode::from(1);
                }
            }
            // `run` refuses to start without a writable state file; say so now.
            if let Some(state_file) = &loaded.config.state_file {
                if let Err(e) = crate::state::check_writable(state_file) {
                    eprintln!("{}: state_file: {e}", path.display());
                    return ExitCode::from(1);
                }
            }
            let _ = emit(format!(
                "{}: valid ({}, {})\n",
                path.display(),
                count(loaded.config.apps.len(), "app", "apps"),
                count(loaded.config.target_count(), "target", "targets")
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.diagnostics() {
                eprintln!("{line}");
            }
            ExitCode::from(1)
        }
    }
}

fn read_key(key_file: Option<&Path>) -> anyhow::Result<SecretKey> {
    let key = match key_file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read key file {}", path.display()))?,
        None => std::env::var("CALLDRIFT_SECRET_KEY")
            .context("no key: set $CALLDRIFT_SECRET_KEY or pass --key-file (never the key itself as an argument)")?,
    };
    let key = key.trim();
    anyhow::ensure!(!key.is_empty(), "the secret key is empty");
    Ok(SecretKey::new(key))
}
