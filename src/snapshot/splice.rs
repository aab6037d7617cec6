//! Editing the `expect:` blocks of the YAML text in place: an event parser locates each
//! app's `expect:` value (or where the app mapping ends) and only those ranges are replaced,
//! so comments, key order and quoting elsewhere stay as written.

use std::collections::BTreeMap;

use saphyr_parser::{Event, Parser};

use super::{AppBaseline, Baseline};
use crate::product::Product;

/// Deeper YAML than this is not something a config needs; the walk gives up (and the
/// fallback takes over) instead of recursing without bound.
const MAX_DEPTH: usize = 64;

/// An event with its span as character indices.
struct Ev {
    kind: Kind,
    start: usize,
    end: usize,
    col: usize,
}

enum Kind {
    Scalar { value: String },
    Alias,
    MapStart { flow: bool },
    SeqStart { flow: bool },
    End,
    Other,
}

/// Where one app sits in the text.
struct AppSpot {
    name: Option<String>,
    flow: bool,
    /// Column of the app's keys (block style).
    key_col: usize,
    /// End of the app's last content (character index).
    content_end: usize,
    /// Start of the closing `}` (flow style).
    close: usize,
    expect: Option<ExpectSpot>,
}

struct ExpectSpot {
    key_end: usize,
    key_col: usize,
    value_end: Option<usize>,
}

/// Characters `from..to` of the text become `new`.
struct Edit {
    from: usize,
    to: usize,
    new: String,
}

/// Replaces or inserts each app's `expect:` in the text itself; see the module doc.
pub(super) fn splice(text: &str, apps: &BTreeMap<String, AppBaseline>) -> Result<String, String> {
    let chars: Vec<char> = text.chars().collect();
    let events = events(text, &chars)?;
    let spots = app_spots(&events)?;
    let mut edits = Vec::new();
    for spot in &spots {
        let name = spot.name.as_deref().ok_or("an app without a plain name")?;
        let baseline = apps
            .get(name)
            .ok_or_else(|| format!("app {name} was not observed"))?;
        edits.push(edit(&chars, spot, name, baseline)?);
    }
    if edits.len() != apps.len() {
        return Err(format!(
            "found {} apps in the text, observed {}",
            edits.len(),
            apps.len()
        ));
    }
    apply(text, edits)
}

/// The edit that gives the app at `spot` its baseline: its `expect:` value replaced, or an
/// `expect:` added after its last entry.
fn edit(
    chars: &[char],
    spot: &AppSpot,
    name: &str,
    baseline: &AppBaseline,
) -> Result<Edit, String> {
    let (from, to, new) = match (&spot.expect, spot.flow) {
        (Some(expect), flow) => {
            // After the `:` that follows the key; only blanks may sit between.
            let mut colon = expect.key_end;
            while chars.get(colon).is_some_and(|c| *c == ' ' || *c == '\t') {
                colon += 1;
            }
            if chars.get(colon) != Some(&':') {
                return Err(format!("app {name}: expect is not a simple key"));
            }
            let from = colon + 1;
            let mut to = expect.value_end.unwrap_or(from).max(from);
            if !flow {
                // A comment after the old value's last line spoke of the old value.
                to = end_of_trailing_comment(chars, to);
            }
            let new = if flow {
                format!(" {}", baseline.flow())
            } else {
                indented(baseline, expect.key_col + 2)
            };
            (from, to, new)
        }
        (None, true) => {
            // Right after the last entry (or its comma), before any blanks and the `}`.
            let mut at = spot.close;
            while at > 0 && chars[at - 1].is_whitespace() {
                at -= 1;
            }
            let lead = match at.checked_sub(1).map(|i| chars[i]) {
                Some('{') => "",
                Some(',') => " ",
                _ => ", ",
            };
            (at, at, format!("{lead}expect: {}", baseline.flow()))
        }
        (None, false) => {
            let at = line_after(chars, spot.content_end);
            let mut new = String::new();
            if at == chars.len() && chars.last().is_some_and(|c| *c != '\n') {
                new.push('\n');
            }
            new.push_str(&" ".repeat(spot.key_col));
            new.push_str("expect:");
            new.push_str(&indented(baseline, spot.key_col + 2));
            new.push('\n');
            (at, at, new)
        }
    };
    Ok(Edit { from, to, new })
}

/// Applies `edits` (character ranges that must not overlap) to `text`.
fn apply(text: &str, mut edits: Vec<Edit>) -> Result<String, String> {
    // Byte offset of every character index, and of the end.
    let offsets: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()))
        .collect();
    edits.sort_by_key(|edit| std::cmp::Reverse(edit.from));
    let mut out = text.to_owned();
    let mut limit = usize::MAX;
    for Edit { from, to, new } in edits {
        if to > limit {
            return Err("overlapping edits".to_owned());
        }
        limit = from;
        let (Some(&a), Some(&b)) = (offsets.get(from), offsets.get(to)) else {
            return Err("an edit outside the text".to_owned());
        };
        out.replace_range(a..b, &new);
    }
    Ok(out)
}

/// The baseline as block lines at `indent`, each starting on a new line.
fn indented(baseline: &AppBaseline, indent: usize) -> String {
    let pad = " ".repeat(indent);
    baseline
        .block_lines()
        .into_iter()
        .map(|line| format!("\n{pad}{line}"))
        .collect()
}

/// After blanks and a `#` comment that follow `at` on its line, if there is one; else `at`.
fn end_of_trailing_comment(chars: &[char], at: usize) -> usize {
    let mut i = at;
    while chars.get(i).is_some_and(|c| *c == ' ' || *c == '\t') {
        i += 1;
    }
    if chars.get(i) != Some(&'#') {
        return at;
    }
    while chars.get(i).is_some_and(|c| *c != '\n' && *c != '\r') {
        i += 1;
    }
    i
}

/// The start of the line after the one `at` is on (or `at` itself at a line start).
fn line_after(chars: &[char], at: usize) -> usize {
    if at == 0 || chars.get(at - 1) == Some(&'\n') {
        return at.min(chars.len());
    }
    let mut i = at;
    while i < chars.len() {
        if chars[i] == '\n' {
            return i + 1;
        }
        i += 1;
    }
    chars.len()
}

/// The events of `text`, with ends that stop at the content: the parser lets some spans
/// run on to the next token (a block scalar's over the blank lines and indentation after it,
/// a closing bracket's over the blanks after it).
fn events(text: &str, chars: &[char]) -> Result<Vec<Ev>, String> {
    let mut out = Vec::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| format!("YAML: {e}"))?;
        let (start, mut end) = (span.start.index(), span.end.index());
        // A flow collection opens with a one-character token; a block one takes no room.
        let kind = match event {
            Event::Scalar(value, ..) => {
                while end > start && chars.get(end - 1).is_some_and(|c| c.is_whitespace()) {
                    end -= 1;
                }
                Kind::Scalar {
                    value: value.into_owned(),
                }
            }
            Event::Alias(_) => Kind::Alias,
            Event::MappingStart(..) => Kind::MapStart { flow: end > start },
            Event::SequenceStart(..) => Kind::SeqStart { flow: end > start },
            Event::MappingEnd | Event::SequenceEnd => {
                if end > start {
                    end = start + 1;
                }
                Kind::End
            }
            Event::StreamEnd => break,
            _ => Kind::Other,
        };
        out.push(Ev {
            kind,
            start,
            end,
            col: span.start.col(),
        });
    }
    Ok(out)
}

/// Skips the node at `i`: returns the index after it and where its content ends.
fn skip(events: &[Ev], i: usize, depth: usize) -> Result<(usize, Option<usize>), String> {
    if depth > MAX_DEPTH {
        return Err("nested too deeply".to_owned());
    }
    let ev = events.get(i).ok_or("unexpected end of document")?;
    match ev.kind {
        // An empty scalar (`key:` with no value) takes no room.
        Kind::Scalar { ref value } => Ok((
            i + 1,
            (ev.end > ev.start || !value.is_empty()).then_some(ev.end),
        )),
        Kind::Alias => Ok((i + 1, Some(ev.end))),
        Kind::MapStart { flow } | Kind::SeqStart { flow } => {
            let mut j = i + 1;
            let mut end = None;
            loop {
                let child = events.get(j).ok_or("unclosed collection")?;
                if matches!(child.kind, Kind::End) {
                    if flow {
                        end = Some(child.end);
                    }
                    return Ok((j + 1, end));
                }
                let (next, child_end) = skip(events, j, depth + 1)?;
                end = end.max(child_end);
                j = next;
            }
        }
        Kind::End | Kind::Other => Err("unexpected YAML event".to_owned()),
    }
}

/// Finds every entry of the top-level `apps:` sequence.
fn app_spots(events: &[Ev]) -> Result<Vec<AppSpot>, String> {
    let Some(root) = events
        .iter()
        .position(|e| matches!(e.kind, Kind::MapStart { .. }))
    else {
        return Ok(Vec::new());
    };
    let mut spots = Vec::new();
    let mut i = root + 1;
    while !matches!(events.get(i).map(|e| &e.kind), Some(Kind::End) | None) {
        let is_apps = matches!(&events[i].kind, Kind::Scalar { value } if value == "apps");
        let (value, _) = skip(events, i, 0)?;
        let (after, _) = skip(events, value, 0)?;
        if is_apps {
            match events[value].kind {
                Kind::SeqStart { .. } => {
                    let mut j = value + 1;
                    while !matches!(events.get(j).map(|e| &e.kind), Some(Kind::End) | None) {
                        let (next, _) = skip(events, j, 0)?;
                        spots.push(app_spot(events, j)?);
                        j = next;
                    }
                }
                Kind::Scalar { .. } => {}
                _ => return Err("apps: is not a plain sequence".to_owned()),
            }
        }
        i = after;
    }
    Ok(spots)
}

fn app_spot(events: &[Ev], at: usize) -> Result<AppSpot, String> {
    let start = &events[at];
    let Kind::MapStart { flow } = start.kind else {
        return Err("an app is not a mapping (an alias?)".to_owned());
    };
    let mut spot = AppSpot {
        name: None,
        flow,
        key_col: start.col,
        content_end: start.end,
        close: start.end,
        expect: None,
    };
    let mut i = at + 1;
    loop {
        let ev = events.get(i).ok_or("unclosed app mapping")?;
        if matches!(ev.kind, Kind::End) {
            spot.close = ev.start;
            return Ok(spot);
        }
        let key = match &ev.kind {
            Kind::Scalar { value } => Some((value.as_str(), ev.end, ev.col)),
            _ => None,
        };
        let (value, key_content_end) = skip(events, i, 0)?;
        let (next, value_end) = skip(events, value, 0)?;
        spot.content_end = spot
            .content_end
            .max(key_content_end.unwrap_or(0))
            .max(value_end.unwrap_or(0));
        match key {
            Some(("name", ..)) => {
                if let Kind::Scalar { value: name } = &events[value].kind {
                    spot.name = Some(name.clone());
                }
            }
            Some(("expect", key_end, key_col)) => {
                if !matches!(
                    events[value].kind,
                    Kind::MapStart { .. } | Kind::Scalar { .. }
                ) {
                    return Err("an expect: that is not a mapping (an alias?)".to_owned());
                }
                spot.expect = Some(ExpectSpot {
                    key_end,
                    key_col,
                    value_end,
                });
            }
            _ => {}
        }
        i = next;
    }
}

// ---- the baseline as YAML text -----------------------------------------------------------

impl Baseline {
    /// `(key, value)` pairs, values already YAML; `commands` as a list of scalars.
    fn fields(&self) -> Vec<(&'static str, Field)> {
        match self {
            Baseline::Absent => vec![("present", Field::Raw("false".to_owned()))],
            Baseline::Present {
                url,
                url_scheme,
                commands,
            } => vec![
                ("present", Field::Raw("true".to_owned())),
                ("url", Field::Raw(quoted(url))),
                ("url_scheme", Field::Raw(scalar(url_scheme))),
                ("url_prefix", Field::Raw("null".to_owned())),
                (
                    "commands",
                    Field::List(commands.iter().map(|c| scalar(c)).collect()),
                ),
                ("extra_commands", Field::Raw("drift".to_owned())),
                ("ignore_commands", Field::List(Vec::new())),
            ],
        }
    }
}

impl AppBaseline {
    /// TUICallKit's fields at the top, then a sub-block per other product.
    fn fields(&self) -> Vec<(&'static str, Field)> {
        let mut fields = Vec::new();
        for (product, watched) in &self.products {
            match product {
                Product::Call => fields.extend(watched.baseline.fields()),
                other => fields.push((other.as_str(), Field::Map(watched.baseline.fields()))),
            }
        }
        fields
    }

    /// A block mapping, one line per entry, without indentation.
    fn block_lines(&self) -> Vec<String> {
        block_lines(self.fields())
    }

    /// A flow mapping on one line, for flow-style apps.
    fn flow(&self) -> String {
        flow(self.fields())
    }
}

/// `fields` as block lines, a nested mapping two spaces in.
fn block_lines(fields: Vec<(&'static str, Field)>) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, field) in fields {
        match field {
            Field::Raw(value) => lines.push(format!("{key}: {value}")),
            Field::List(items) if items.is_empty() => lines.push(format!("{key}: []")),
            Field::List(items) => {
                lines.push(format!("{key}:"));
                lines.extend(items.iter().map(|item| format!("  - {item}")));
            }
            Field::Map(entries) => {
                lines.push(format!("{key}:"));
                lines.extend(block_lines(entries).iter().map(|line| format!("  {line}")));
            }
        }
    }
    lines
}

/// `fields` as one flow mapping.
fn flow(fields: Vec<(&'static str, Field)>) -> String {
    let entries: Vec<String> = fields
        .into_iter()
        .map(|(key, field)| match field {
            Field::Raw(value) => format!("{key}: {value}"),
            Field::List(items) => format!("{key}: [{}]", items.join(", ")),
            Field::Map(entries) => format!("{key}: {}", flow(entries)),
        })
        .collect();
    format!("{{{}}}", entries.join(", "))
}

/// One value of the baseline as YAML text.
enum Field {
    Raw(String),
    List(Vec<String>),
    /// A nested mapping: a product's sub-block.
    Map(Vec<(&'static str, Field)>),
}

/// A double-quoted YAML scalar: `\` and `"` escaped, anything unprintable as `\uXXXX`.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Plain when that cannot be misread (no YAML indicators, not a YAML 1.1 boolean or null),
/// quoted otherwise.
fn scalar(text: &str) -> String {
    let plain = text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-+".contains(c))
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null"
        );
    if plain { text.to_owned() } else { quoted(text) }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::drift::Observed;
    use crate::snapshot::fixtures::{
        BLOCK, END, START, baselines_by_product, baselines_for, is_call_baseline, parse, present,
        snap,
    };
    use crate::snapshot::render;

    #[test]
    fn splicing_keeps_everything_but_the_expect_blocks() {
        let seen = [
            present(
                "http://plain.example.com/cb?token=s3cret",
                &[END, START, END],
            ),
            Observed::Absent,
            present("https://hooks.example.com/c", &[START]),
            present("HTTPS://hooks.example.com/d", &[]),
        ];
        let out = snap(BLOCK, &seen);
        assert!(out.comments_kept);
        assert!(out.inline_secret);
        for kept in [
            "# my config\n",
            "  url_prefix: https://hooks.example.com/  # everyone\n",
            "  # first\n",
            "    secret_key_env: KEY_A  # from vault\n",
            "\n  # second, absent\n",
            "    secret_key_file: /run/b\n",
            "secret_key: abc",
            "# tail\n",
        ] {
            assert!(out.text.contains(kept), "lost {kept:?}:\n{}", out.text);
        }
        assert!(!out.text.contains("# old one"), "{}", out.text);
        assert!(!out.text.contains("# was short"), "{}", out.text);
        assert!(
            out.text.contains(
                "    expect:\n      present: true\n      url: \"http://plain.example.com/cb?token=s3cret\"\n      url_scheme: http\n      url_prefix: null\n      commands:\n        - Call.CallbackAfterEndCall\n        - Call.CallbackAfterStartCall\n      extra_commands: drift\n      ignore_commands: []\n\n  # second"
            ),
            "{}",
            out.text
        );
        assert!(
            out.text.contains(
                "    secret_key_file: /run/b\n    expect:\n      present: false\n  - {name: c"
            ),
            "{}",
            out.text
        );
        assert!(
            out.text.contains("secret_key: abc, expect: {present: true, url: \"https://hooks.example.com/c\", url_scheme: https, url_prefix: null, commands: [Call.CallbackAfterStartCall], extra_commands: drift, ignore_commands: []}}"),
            "{}",
            out.text
        );
        assert!(
            out.text.contains("expect: {present: true, url: \"HTTPS://hooks.example.com/d\", url_scheme: https, url_prefix: null, commands: [], extra_commands: drift, ignore_commands: []}}"),
            "{}",
            out.text
        );
        assert!(
            out.text
                .starts_with("# calldrift snapshot: test\n# Only the apps' expect: blocks")
        );
    }

    #[test]
    fn odd_layouts_are_spliced_and_verified() {
        let cases = [
            // An empty expect:, a last app without a trailing newline.
            "apps:\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: K\n    expect:\n  - name: b\n    sdkappid: 2\n    regions: [china]\n    secret_key_env: K",
            // A block scalar as the app's last value, CRLF line ends, a sequence at the
            // key's own indentation.
            "apps:\r\n  - name: a\r\n    sdkappid: 1\r\n    regions: [china]\r\n    secret_key_env: K\r\n    identifier: |\r\n      admin\r\n\r\n  - name: b\r\n    sdkappid: 2\r\n    regions:\r\n    - china\r\n    secret_key_env: K\r\n",
            // Deeper indentation, quoted keys, a comment after the expect key.
            "apps:\n    -   \"name\": a\n        sdkappid: 1\n        regions: [china]\n        secret_key_env: K\n        'expect':   # mine\n            present: any\n    -   name: b\n        sdkappid: 2\n        regions: [china]\n        secret_key_env: K\n",
            // A flow sequence of apps, one with a trailing comma.
            "apps: [{name: a, sdkappid: 1, regions: [china], secret_key_env: K}, {name: b, sdkappid: 2, regions: [china], secret_key_env: K, }]\n",
        ];
        let seen = [
            present("https://x.example.com/\u{e9}?q=1", &[START]),
            Observed::Absent,
        ];
        for text in cases {
            let config = parse(text);
            let apps = baselines_for(&config, &seen);
            let out = render(text, &config, &apps, Path::new("/etc/calldrift"), "# h\n")
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert!(out.comments_kept, "{text:?}:\n{}", out.text);
            let again = parse(&out.text);
            assert!(is_call_baseline(&apps["a"], &again.apps[0]), "{}", out.text);
            assert!(is_call_baseline(&apps["b"], &again.apps[1]), "{}", out.text);
        }
    }

    #[test]
    fn each_product_goes_to_its_own_block() {
        let text = "expect:\n  room:\n    commands: [Room.CallbackAfterCreateRoom]\napps:\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: K\n    products: [call, room, live]\n    expect:\n      url: https://old.example.com/\n  - {name: b, sdkappid: 2, regions: [china], secret_key_env: K, products: [room]}\n";
        let config = parse(text);
        let room = present(
            "https://hooks.example.com/room",
            &[
                "Room.CallbackAfterMemberEnter",
                "Room.CallbackAfterCreateRoom",
            ],
        );
        let seen = [
            vec![
                present("https://hooks.example.com/call", &[START]),
                room.clone(),
                Observed::Absent,
            ],
            vec![room],
        ];
        let apps = baselines_by_product(&config, &seen);
        let out = render(text, &config, &apps, Path::new("/etc/calldrift"), "# h\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.comments_kept);
        assert!(
            out.text.contains(
                "    expect:\n      present: true\n      url: \"https://hooks.example.com/call\"\n      url_scheme: https\n      url_prefix: null\n      commands:\n        - Call.CallbackAfterStartCall\n      extra_commands: drift\n      ignore_commands: []\n      room:\n        present: true\n        url: \"https://hooks.example.com/room\"\n        url_scheme: https\n        url_prefix: null\n        commands:\n          - Room.CallbackAfterCreateRoom\n          - Room.CallbackAfterMemberEnter\n        extra_commands: drift\n        ignore_commands: []\n      live:\n        present: false\n  - {name: b"
            ),
            "{}",
            out.text
        );
        assert!(
            out.text.contains("products: [room], expect: {room: {present: true, url: \"https://hooks.example.com/room\", url_scheme: https, url_prefix: null, commands: [Room.CallbackAfterCreateRoom, Room.CallbackAfterMemberEnter], extra_commands: drift, ignore_commands: []}}}"),
            "{}",
            out.text
        );
        let again = parse(&out.text);
        for (app, want) in again.apps.iter().zip(["a", "b"]) {
            for (product, baseline) in &apps[want].products {
                let got = app.expect(*product).expect("watched");
                assert!(baseline.baseline.is(got), "{want} {product}: {got:?}");
            }
        }
    }

    #[test]
    fn scalars_are_quoted_when_they_could_be_misread() {
        assert_eq!(
            scalar("Call.CallbackAfterEndCall"),
            "Call.CallbackAfterEndCall"
        );
        assert_eq!(scalar("https"), "https");
        for odd in ["yes", "Null", "1abc", "a b", "a:b", "x#y", "", "[x]"] {
            assert!(scalar(odd).starts_with('"'), "{odd}");
        }
        assert_eq!(quoted("a\"b\\c\nd"), "\"a\\\"b\\\\c\\u000ad\"");
    }
}
