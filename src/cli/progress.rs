//! A progress line on stderr for passes over many targets (`check`, `snapshot`): at 200 calls/s a
//! pass over thousands takes minutes. Only for a person at a terminal: nothing when stderr
//! is a pipe or a file, nothing with `--quiet`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(250);

/// Draws `label done/total, rate, time left` over itself, and clears it when done.
pub(super) struct ProgressLine {
    label: &'static str,
    started: Instant,
    drawn: Option<Instant>,
}

impl ProgressLine {
    /// A line when stderr is a terminal and `quiet` is not set; `None` otherwise.
    pub(super) fn on_terminal(label: &'static str, quiet: bool) -> Option<Self> {
        (!quiet && std::io::stderr().is_terminal()).then(|| ProgressLine {
            label,
            started: Instant::now(),
            drawn: None,
        })
    }

    pub(super) fn update(&mut self, done: usize, total: usize) {
        let now = Instant::now();
        let finished = done >= total;
        if !finished && self.drawn.is_some_and(|at| now - at < REDRAW) {
            return;
        }
        self.drawn = Some(now);
        let mut stderr = std::io::stderr().lock();
        let _ = if finished {
            // Leave the terminal as it was: the report follows on stdout.
            write!(stderr, "\r\x1b[2K")
        } else {
            let line = render(self.label, done, total, now - self.started);
            write!(stderr, "\r\x1b[2K{line}")
        };
        let _ = stderr.flush();
    }
}

/// `checking 120/1000 targets, 200/s, about 5s left`.
fn render(label: &str, done: usize, total: usize, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let mut line = format!("{label} {done}/{total} targets");
    if done > 0 && secs >= 0.5 {
        let rate = done as f64 / secs;
        let left = Duration::from_secs(((total - done.min(total)) as f64 / rate).ceil() as u64);
        line.push_str(&format!(
            ", {rate:.0}/s, about {} left",
            humantime::format_duration(left)
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_how_far_how_fast_and_how_long() {
        let s = Duration::from_secs;
        assert_eq!(render("checking", 0, 1000, s(0)), "checking 0/1000 targets");
        assert_eq!(
            render("checking", 400, 1000, s(2)),
            "checking 400/1000 targets, 200/s, about 3s left"
        );
        assert_eq!(
            render("checking", 1000, 1000, s(5)),
            "checking 1000/1000 targets, 200/s, about 0s left"
        );
        // Too early for a rate.
        assert_eq!(
            render("checking", 10, 1000, Duration::from_millis(100)),
            "checking 10/1000 targets"
        );
    }
}
