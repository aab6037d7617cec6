//! `calldrift plan` and `calldrift apply`: one pass with a progress line, the plan as
//! text or JSON, and for `apply` the confirmation, the writes and their verification.

use super::stdout::emit;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use crate::check::Selection;
use crate::clock::{Clock, SystemClock};
use crate::plan::{self, Pass};
use crate::report::count;

use super::logging::load_and_start_logging;
use super::progress::ProgressLine;
use super::{ConfigArg, LogFormatArg, ReportFormat, runtime};

/// The pass and its plan, with a progress line on a terminal; `None` when the config
/// does not load (its problems already printed).
fn read(
    config: &ConfigArg,
    apps: Vec<String>,
    quiet: bool,
    cli_level: &Option<String>,
    cli_format: Option<LogFormatArg>,
) -> anyhow::Result<Option<(tokio::runtime::Runtime, Pass)>> {
    let Some(loaded) = load_and_start_logging(&config.config, None, &apps, cli_level, cli_format)
    else {
        return Ok(None);
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let selection = Selection { apps, shard: None };
    let mut line = ProgressLine::on_terminal("reading", quiet);
    let runtime = runtime()?;
    let pass = runtime.block_on(plan::read(
        &loaded.config,
        &loaded.secrets,
        &selection,
        clock,
        &mut |done, total| {
            if let Some(line) = &mut line {
                line.update(done, total);
            }
        },
    ))?;
    Ok(Some((runtime, pass)))
}

/// `calldrift plan`: the writes that would restore every managed target; 0/2/1.
pub(super) fn plan(
    config: &ConfigArg,
    format: ReportFormat,
    apps: Vec<String>,
    quiet: bool,
    cli_level: &Option<String>,
    cli_format: Option<LogFormatArg>,
) -> anyhow::Result<ExitCode> {
    let Some((_, pass)) = read(config, apps, quiet, cli_level, cli_format)? else {
        return Ok(ExitCode::from(1));
    };
    match format {
        ReportFormat::Json => emit(format!("{}\n", serde_json::to_string_pretty(&pass.plan)?))?,
        ReportFormat::Text => emit(pass.plan.to_text())?,
    }
    Ok(ExitCode::from(pass.plan.exit_code()))
}

/// `calldrift apply`: the plan, shown; confirmation; the writes, each read back. 0 only
/// when every target was read and every write applied and verified clean.
pub(super) fn apply(
    config: &ConfigArg,
    apps: Vec<String>,
    yes: bool,
    quiet: bool,
    cli_level: &Option<String>,
    cli_format: Option<LogFormatArg>,
) -> anyhow::Result<ExitCode> {
    let Some((runtime, pass)) = read(config, apps, quiet, cli_level, cli_format)? else {
        return Ok(ExitCode::from(1));
    };
    emit(pass.plan.to_text())?;
    let unread = pass.plan.summary.errors > 0;
    let changes = pass.plan.summary.changes;
    if changes == 0 {
        emit("nothing to apply\n")?;
        return Ok(ExitCode::from(if unread { 1 } else { 0 }));
    }
    if !yes && !confirmed(changes)? {
        return Ok(ExitCode::from(1));
    }
    let report = runtime.block_on(plan::apply(&pass));
    emit(report.to_text())?;
    let ok = report.all_verified() && !unread;
    Ok(ExitCode::from(if ok { 0 } else { 1 }))
}

/// Asks on the terminal; without one (stdin or stderr not a terminal) refuses, since
/// nobody can answer. Only `yes` confirms.
fn confirmed(changes: usize) -> anyhow::Result<bool> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        eprintln!(
            "apply: not a terminal, so nothing can be confirmed: refusing to write without --yes"
        );
        return Ok(false);
    }
    let mut stderr = std::io::stderr().lock();
    write!(
        stderr,
        "Apply {}? Only 'yes' is accepted: ",
        count(changes, "change", "changes")
    )?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() == "yes" {
        return Ok(true);
    }
    writeln!(stderr, "apply: not confirmed; nothing written")?;
    Ok(false)
}
