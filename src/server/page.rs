//! The status page: plain server-rendered HTML, no JavaScript, answering an operator's
//! first questions: what is wrong, what should it be, what is it, since when.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::AppState;
use crate::drift::Check;
use crate::report::{ExpectedView, TargetReport, Verdict, count};
use crate::status::{Transition, TransitionKind};

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em}\
table{border-collapse:collapse;margin-bottom:1.5em}\
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
.ok{color:#176f2c}.drift{color:#a35200;font-weight:bold}.error{color:#b00020;font-weight:bold}\
.missing{color:#b00020;text-decoration:underline wavy}.unexpected{color:#a35200;font-style:italic}\
code{font-size:90%}small{color:#555}";

/// The whole page for the daemon's state now.
pub(super) fn render(state: &AppState) -> String {
    let report = state.status.report();
    let mut html = String::with_capacity(32 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>calldrift</title>\
         <meta http-equiv=\"refresh\" content=\"30\"><style>{STYLE}</style></head><body>\
         <h1>calldrift</h1>"
    );
    header(&mut html, state, &report.summary);
    let mut targets: Vec<&TargetReport> = report.targets.iter().collect();
    // What needs attention first: failed polls, then drift, then the rest, each in order.
    targets.sort_by_key(|t| match t.status {
        Verdict::Error => 0,
        Verdict::Drift => 1,
        Verdict::Ok => 2,
    });
    html.push_str(
        "<h2>Targets</h2><table id=\"targets\"><tr><th>target</th><th>status</th>\
         <th>expected</th><th>observed</th><th>findings</th><th>endpoint</th>\
         <th>changes</th><th>last poll</th></tr>",
    );
    for t in targets {
        target_row(&mut html, t);
    }
    html.push_str("</table>");
    transitions(&mut html, &state.status.transitions());
    html.push_str("</body></html>\n");
    html
}

fn header(html: &mut String, state: &AppState, s: &crate::report::Summary) {
    let uptime = Duration::from_secs(state.started.elapsed().as_secs());
    let reloaded = state.metrics.reload_success_time.get();
    let reload_ok = state.metrics.reload_successful.get() == 1;
    let _ = write!(
        html,
        "<p id=\"build\">calldrift {} · up {} · config loaded {}{}</p>\
         <p id=\"summary\">{}: {} clean, {} drifted, {}.</p>\
         <p>JSON: <a href=\"/api/v1/targets\">targets</a> · \
         <a href=\"/api/v1/transitions\">transitions</a> · <a href=\"/metrics\">metrics</a> · \
         <a href=\"/-/ready\">readiness</a></p>",
        escape(crate::VERSION),
        humantime::format_duration(uptime),
        timestamp(reloaded),
        if reload_ok {
            ""
        } else {
            " <span class=\"error\">(the last reload failed; this config is the previous one)</span>"
        },
        count(s.targets, "target", "targets"),
        s.clean,
        s.drifted,
        count(s.errors, "error", "errors"),
    );
}

fn target_row(html: &mut String, t: &TargetReport) {
    let class = t.status.as_str();
    let words = |check: Check| -> Vec<&str> {
        t.findings
            .iter()
            .filter(|f| f.check == check)
            .filter_map(|f| match check {
                Check::CommandMissing => f.expected.as_deref(),
                _ => f.actual.as_deref(),
            })
            .collect()
    };
    let (missing, unexpected) = (
        words(Check::CommandMissing),
        words(Check::CommandUnexpected),
    );
    let since = t.status_since.map_or_else(String::new, |at| {
        format!("<br><small>since {}</small>", timestamp(at))
    });
    let error = match (&t.error, &t.request_id) {
        (Some(e), Some(id)) => format!(
            "<br><small>{} <code>{}</code></small>",
            escape(e),
            escape(id)
        ),
        (Some(e), None) => format!("<br><small>{}</small>", escape(e)),
        _ => String::new(),
    };
    let mut findings: Vec<String> = t.findings.iter().map(|f| escape(&f.to_string())).collect();
    findings.extend(t.remediation.as_ref().and_then(remediation_note));
    let changes = match (t.changes, t.last_change) {
        (Some(n), Some(at)) => format!("{n}<br><small>last {}</small>", timestamp(at)),
        (Some(n), None) => n.to_string(),
        _ => String::new(),
    };
    let _ = write!(
        html,
        "<tr data-status=\"{class}\" data-app=\"{}\" data-product=\"{}\" data-region=\"{}\">\
         <td>{}<br><small>{} · {} · {}</small></td><td class=\"{class}\">{class}{since}{error}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{changes}</td><td>{}</td></tr>",
        escape(&t.app),
        t.product.as_str(),
        escape(&t.region),
        escape(&t.app),
        t.sdkappid,
        escape(&t.region),
        t.product.as_str(),
        t.expected
            .as_ref()
            .map_or_else(String::new, |e| expected_cell(e, &missing)),
        observed_cell(t, &unexpected),
        findings.join("<br>"),
        escape(&endpoint_cell(t.endpoint.as_ref())),
        t.last_poll.map_or_else(|| "not yet".to_owned(), timestamp),
    );
}

/// What `remediate:` plans or did, under the findings: the planned write, how close it
/// is, a block or pause, and the last write; nothing when there is none of these.
fn remediation_note(r: &crate::report::RemediationReport) -> Option<String> {
    let mut note = match (r.action.as_str(), r.state.as_str()) {
        ("none", _) => String::new(),
        ("unmanaged", _) => format!(
            "not written: unmanaged ({})",
            r.reason.as_deref().unwrap_or("")
        ),
        (action, "waiting") => format!(
            "planned: {action} (drift seen {} of {} times)",
            r.streak, r.after
        ),
        (action, _) => format!("planned: {action}"),
    };
    if let Some(d) = r.desired.as_ref().filter(|_| r.action != "none") {
        note.push_str(&format!(" → {d}"));
    }
    let held = if r.blocked {
        Some("blocked")
    } else if r.paused {
        Some("paused")
    } else {
        None
    };
    if let Some(held) = held {
        let until = r
            .until
            .map_or_else(String::new, |t| format!(" until {}", timestamp(t)));
        note.push_str(&format!(
            "; {held}{until} ({} writes in the window)",
            r.writes_in_window
        ));
    }
    if let Some(last) = &r.last {
        let id = last
            .request_id
            .as_deref()
            .map_or_else(String::new, |id| format!(" RequestId {id}"));
        note.push_str(&format!(
            "; last: {} {} {}{id}",
            last.action,
            last.result,
            timestamp(last.at)
        ));
    }
    let note = note.trim_start_matches("; ");
    (!note.is_empty()).then(|| {
        format!(
            "<small class=\"remediation\" data-mode=\"{}\">remediation ({}): {}</small>",
            escape(&r.mode),
            escape(&r.mode),
            escape(note)
        )
    })
}

/// The endpoint column: `up` or `down (reason)`, and the certificate's days left.
fn endpoint_cell(endpoint: Option<&crate::report::EndpointReport>) -> String {
    let Some(e) = endpoint else {
        return String::new();
    };
    let mut cell = match &e.failure {
        None => "up".to_owned(),
        Some(reason) => format!("down ({reason})"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if let Some(days) = e.days_left(now) {
        cell.push_str(&format!(", {} days left", days.floor()));
    }
    cell
}

fn expected_cell(e: &ExpectedView, missing: &[&str]) -> String {
    let url = match (&e.url, &e.url_prefix) {
        (Some(url), _) => format!("<code>{}</code>", escape(url)),
        (None, Some(prefix)) => format!("<code>{}</code>…", escape(prefix)),
        (None, None) => format!("any <code>{}://</code> URL", escape(&e.url_scheme)),
    };
    let present = match e.present.as_str() {
        "forbidden" => return "no configuration".to_owned(),
        "any" => "<small>(or none)</small> ",
        _ => "",
    };
    let commands: Vec<String> = e
        .commands
        .iter()
        .map(|c| word(c, missing.contains(&c.as_str()), "missing"))
        .collect();
    let extra = if e.extra_commands == "allow" {
        "<br><small>other words allowed</small>"
    } else {
        ""
    };
    format!("{present}{url}<br>{}{extra}", commands.join(" "))
}

fn observed_cell(t: &TargetReport, unexpected: &[&str]) -> String {
    match &t.observed {
        Some(o) if o.present => {
            let commands: Vec<String> = o
                .commands
                .iter()
                .map(|c| word(c, unexpected.contains(&c.as_str()), "unexpected"))
                .collect();
            format!(
                "<code>{}</code><br>{}",
                escape(o.url.as_deref().unwrap_or_default()),
                commands.join(" ")
            )
        }
        Some(_) => "no configuration".to_owned(),
        None => "<small>not yet observed</small>".to_owned(),
    }
}

/// A command word, marked with `class` (and a title saying so) when `marked`.
fn word(command: &str, marked: bool, class: &str) -> String {
    if marked {
        format!(
            "<code class=\"{class}\" title=\"{class}\">{}</code>",
            escape(command)
        )
    } else {
        format!("<code>{}</code>", escape(command))
    }
}

/// The last transitions, newest first; a run of transitions of one target (a flapping
/// target) is one row with its count and time span.
fn transitions(html: &mut String, all: &[Transition]) {
    html.push_str(
        "<h2>Last transitions</h2><table id=\"transitions\"><tr><th>time</th><th>target</th>\
         <th>transition</th><th>detail</th></tr>",
    );
    if all.is_empty() {
        html.push_str("<tr><td colspan=\"4\">none yet</td></tr>");
    }
    for run in group(all) {
        let (newest, oldest) = (run[0], run[run.len() - 1]);
        let time = if run.len() == 1 {
            timestamp(newest.time)
        } else {
            format!("{} … {}", timestamp(oldest.time), timestamp(newest.time))
        };
        let what = if run.len() == 1 {
            newest.kind.as_str().to_owned()
        } else {
            kinds(&run)
        };
        let detail = if run.len() == 1 {
            escape(&newest.detail)
        } else {
            format!("latest: {}", escape(&newest.detail))
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{} ({}, {}, {})</td><td>{what}</td><td>{detail}</td></tr>",
            escape(&time),
            escape(&newest.app),
            newest.sdkappid,
            escape(&newest.region),
            newest.product.as_str(),
        );
    }
    html.push_str("</table>");
}

/// Consecutive transitions of the same target, newest first.
fn group(all: &[Transition]) -> Vec<Vec<&Transition>> {
    let mut runs: Vec<Vec<&Transition>> = Vec::new();
    for t in all {
        match runs.last_mut() {
            Some(run) if same_target(run[0], t) => run.push(t),
            _ => runs.push(vec![t]),
        }
    }
    runs
}

fn same_target(a: &Transition, b: &Transition) -> bool {
    (a.sdkappid, &a.app, &a.region, a.product) == (b.sdkappid, &b.app, &b.region, b.product)
}

/// `6 transitions: drift appeared ×3, drift cleared ×3`.
fn kinds(run: &[&Transition]) -> String {
    let all = [
        TransitionKind::DriftAppeared,
        TransitionKind::DriftCleared,
        TransitionKind::Changed,
        TransitionKind::Down,
        TransitionKind::Up,
    ];
    let parts: Vec<String> = all
        .iter()
        .filter_map(|kind| {
            let n = run.iter().filter(|t| t.kind == *kind).count();
            (n > 0).then(|| format!("{} ×{n}", kind.as_str()))
        })
        .collect();
    format!("{} transitions: {}", run.len(), parts.join(", "))
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// RFC 3339, from Unix seconds. The clock can be set anywhere, so out-of-range times are
/// clamped, not a panic: before 1970 shows the epoch, past year 9999 (the last humantime
/// formats) its last second.
fn timestamp(unix: f64) -> String {
    const LAST: f64 = 253_402_300_799.0;
    let secs = if unix.is_nan() {
        0.0
    } else {
        unix.clamp(0.0, LAST)
    };
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs_f64(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_out_of_range_are_clamped_not_a_panic() {
        assert_eq!(timestamp(86_400.5), "1970-01-02T00:00:00Z");
        assert_eq!(timestamp(-5.0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(f64::NAN), "1970-01-01T00:00:00Z");
        for huge in [1e12, 1e300, f64::INFINITY] {
            assert_eq!(timestamp(huge), "9999-12-31T23:59:59Z");
        }
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn remediation_notes_say_what_is_planned_held_and_done() {
        use crate::report::{RemediationEvent, RemediationReport};
        let idle = RemediationReport {
            mode: "enforce".to_owned(),
            action: "none".to_owned(),
            reason: None,
            desired: None,
            state: "idle".to_owned(),
            streak: 0,
            after: 2,
            blocked: false,
            paused: false,
            until: None,
            writes_in_window: 0,
            last: None,
        };
        assert_eq!(remediation_note(&idle), None, "nothing to say");
        let waiting = RemediationReport {
            action: "update".to_owned(),
            state: "waiting".to_owned(),
            streak: 1,
            ..idle.clone()
        };
        let note = remediation_note(&waiting).expect("a note");
        assert!(
            note.contains("planned: update (drift seen 1 of 2 times)"),
            "{note}"
        );
        let blocked = RemediationReport {
            action: "set".to_owned(),
            state: "blocked".to_owned(),
            blocked: true,
            until: Some(86_400.0),
            writes_in_window: 3,
            last: Some(RemediationEvent {
                at: 0.0,
                action: "set".to_owned(),
                result: "applied".to_owned(),
                error: None,
                request_id: Some("<id>".to_owned()),
            }),
            ..idle.clone()
        };
        let note = remediation_note(&blocked).expect("a note");
        assert!(
            note.contains("blocked until 1970-01-02T00:00:00Z (3 writes in the window)"),
            "{note}"
        );
        assert!(
            note.contains("last: set applied 1970-01-01T00:00:00Z RequestId &lt;id&gt;"),
            "{note}"
        );
        let unmanaged = RemediationReport {
            action: "unmanaged".to_owned(),
            reason: Some("presence_any".to_owned()),
            state: "unmanaged".to_owned(),
            ..idle
        };
        let note = remediation_note(&unmanaged).expect("a note");
        assert!(
            note.contains("not written: unmanaged (presence_any)"),
            "{note}"
        );
    }

    fn transition(app: &str, kind: TransitionKind, time: f64) -> Transition {
        Transition {
            time,
            app: app.to_owned(),
            sdkappid: 1,
            region: "sim".to_owned(),
            product: crate::product::Product::Call,
            kind,
            detail: format!("{app} at {time}"),
        }
    }

    #[test]
    fn a_flapping_target_is_one_row() {
        use TransitionKind::{DriftAppeared, DriftCleared, Up};
        let all = [
            transition("a", DriftCleared, 6.0),
            transition("a", DriftAppeared, 5.0),
            transition("a", DriftCleared, 4.0),
            transition("a", DriftAppeared, 3.0),
            transition("b", Up, 2.0),
            transition("a", DriftAppeared, 1.0),
        ];
        let runs = group(&all);
        assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), [4, 1, 1]);
        assert_eq!(
            kinds(&runs[0]),
            "4 transitions: drift appeared ×2, drift cleared ×2"
        );
    }
}
