//! A bound on how deeply the collections of a YAML file nest, checked before anything else
//! reads the text. yaml_serde's scanner spends time proportional to the flow depth on every
//! token (100,000 nested `[` took 43 s) and the positions scan keeps a path per node that
//! grows with the depth, so a file nested without bound costs quadratic time or memory.
//! This walk reads events only until the bound is crossed, so refusing costs linear time.

use saphyr_parser::{Event, Parser};

use super::positions::Pos;

/// The deepest nesting of mappings and sequences accepted; generous, since a config needs
/// fewer than 10 levels.
pub const MAX_DEPTH: usize = 64;

/// The nesting a calldrift YAML file really needs, at most; said in the error.
const NEEDED: usize = 10;

/// Refuses `text` when its collections nest deeper than [`MAX_DEPTH`], with the place of the
/// first one too deep and a message naming `what` the file is ("a calldrift config"). Text
/// the event parser rejects before that point passes, for the decoder to report.
pub(crate) fn check_depth(text: &str, what: &str) -> Result<(), (Pos, String)> {
    let crossing = match first_too_deep(text) {
        // The scanner reads a flow collection to its end before the first event (a `[` may
        // start a key) and gives up at 256 levels, losing those events. Cut at the failure,
        // the same text ends the look-ahead there and yields them.
        Err(failed_at) => prefix(text, failed_at).and_then(|p| first_too_deep(p).ok().flatten()),
        Ok(crossing) => crossing,
    };
    match crossing {
        Some(pos) => Err((
            pos,
            format!("nested deeper than {MAX_DEPTH} levels; {what} needs fewer than {NEEDED}"),
        )),
        None => Ok(()),
    }
}

/// Where the first mapping or sequence deeper than [`MAX_DEPTH`] starts, if one does before
/// the end or the first error; the error's character index if one comes first.
fn first_too_deep(text: &str) -> Result<Option<Pos>, usize> {
    let mut depth = 0usize;
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| e.marker().index())?;
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Ok(Some(Pos::of(&span)));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(None)
}

/// The first `chars` characters of `text`, if that is shorter than `text`.
fn prefix(text: &str, chars: usize) -> Option<&str> {
    let (end, _) = text.char_indices().nth(chars)?;
    Some(&text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHAT: &str = "a calldrift config";

    #[test]
    fn flow_nesting_at_the_bound_passes_and_one_over_is_refused_where_it_crosses() {
        // The root mapping is level 1, so 63 `[` reach the bound exactly.
        let at = format!("apps: {}{}\n", "[".repeat(63), "]".repeat(63));
        assert_eq!(check_depth(&at, WHAT), Ok(()));
        let over = format!("apps: {}{}\n", "[".repeat(64), "]".repeat(64));
        assert_eq!(
            check_depth(&over, WHAT),
            Err((
                // `apps: ` is 6 columns; the 64th `[` is the 65th collection.
                Pos {
                    line: 1,
                    column: 70
                },
                "nested deeper than 64 levels; a calldrift config needs fewer than 10".to_owned()
            ))
        );
    }

    #[test]
    fn flow_nesting_past_the_scanners_own_limit_is_refused_where_it_crosses_ours() {
        // The event parser gives up at 256 flow levels before emitting the first of them.
        for text in [
            "[".repeat(300),
            format!("a: {}{}", "{b: ".repeat(300), "}".repeat(300)),
        ] {
            let (pos, _) = check_depth(&text, WHAT).expect_err("too deep");
            let column = if text.starts_with('[') {
                65
            } else {
                4 + 4 * 63
            };
            assert_eq!(pos, Pos { line: 1, column }, "{}", &text[..10]);
        }
    }

    #[test]
    fn block_nesting_counts_too() {
        let nested = |levels: usize| -> String {
            (0..levels)
                .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
                .collect::<String>()
        };
        // `levels` keys nest `levels` mappings; the last key's value is null.
        assert_eq!(check_depth(&nested(MAX_DEPTH), WHAT), Ok(()));
        let (pos, _) = check_depth(&nested(MAX_DEPTH + 1), WHAT).expect_err("too deep");
        assert_eq!(
            pos,
            Pos {
                line: 65,
                column: 129
            }
        );
    }

    #[test]
    fn depth_is_per_branch_not_a_running_total() {
        let wide = format!("a: [{}[2]]\n", "[1], ".repeat(1000));
        assert_eq!(check_depth(&wide, WHAT), Ok(()));
        let documents = format!(
            "{}\n---\n{}\n",
            "[".repeat(40) + &"]".repeat(40),
            "[".repeat(40) + &"]".repeat(40)
        );
        assert_eq!(check_depth(&documents, WHAT), Ok(()));
    }

    #[test]
    fn malformed_text_is_left_to_the_decoder() {
        for junk in ["apps: [", "{{{", "\t\u{0}", ""] {
            assert_eq!(check_depth(junk, WHAT), Ok(()), "{junk:?}");
        }
    }
}
