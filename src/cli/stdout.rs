//! Output on stdout that a reader going away cannot turn into a panic: `calldrift plan
//! --format json | head` stops reading early, and `print!` panics on the broken pipe.

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout. A reader that went away (a broken pipe) is not an error: the
/// command's work is done and its exit status still says how it went.
pub(super) fn emit(text: impl std::fmt::Display) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match write!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
