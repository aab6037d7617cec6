//! Where each key and value of a YAML document sits, so every validation message can
//! name `file:line:column`. yaml_serde decodes the data; this walks the same text with an
//! event parser that reports spans.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    /// Where `span` starts.
    pub(super) fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// Positions of keys and values by path, spelled as messages show it (`apps[0].expect.url`).
#[derive(Debug, Default)]
pub struct Positions {
    keys: HashMap<String, Pos>,
    values: HashMap<String, Pos>,
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
    },
    Seq {
        path: String,
        index: usize,
    },
    /// A mapping or sequence used as a mapping key; its contents have no path.
    ComplexKey,
}

/// `parent.segment`, or `segment` at the root.
pub(super) fn join(parent: &str, segment: &str) -> String {
    if parent.is_empty() {
        segment.to_owned()
    } else {
        format!("{parent}.{segment}")
    }
}

/// `parent[index]`: the one spelling of a list item's path, in messages and lookups alike.
pub(super) fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// The path one level up (`apps[0]` of `apps[0].name`, `apps` of `apps[0]`), if any.
fn parent(path: &str) -> Option<&str> {
    let cut = if path.ends_with(']') {
        path.rfind('[')
    } else {
        path.rfind('.')
    }?;
    Some(&path[..cut])
}

impl Positions {
    /// Positions in `text`; a document the scanner rejects yields what was read before.
    pub fn scan(text: &str) -> Positions {
        let mut positions = Positions::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Some(Ok((event, span))) = parser.next_event() {
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map {
                        path,
                        key: key @ None,
                    }) = stack.last_mut()
                    {
                        positions.keys.insert(join(path, &value), Pos::of(&span));
                        *key = Some(value.into_owned());
                    } else if let Some(path) = positions.value_path(&mut stack) {
                        positions.values.insert(path, Pos::of(&span));
                    }
                }
                Event::Alias(_) => {
                    if let Some(path) = positions.value_path(&mut stack) {
                        positions.values.insert(path, Pos::of(&span));
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let is_map = matches!(event, Event::MappingStart(..));
                    let frame = if matches!(
                        stack.last(),
                        Some(Frame::Map { key: None, .. }) | Some(Frame::ComplexKey)
                    ) {
                        Frame::ComplexKey
                    } else {
                        let path = positions.value_path(&mut stack).unwrap_or_default();
                        positions.values.insert(path.clone(), Pos::of(&span));
                        if is_map {
                            Frame::Map { path, key: None }
                        } else {
                            Frame::Seq { path, index: 0 }
                        }
                    };
                    stack.push(frame);
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(Frame::ComplexKey) = stack.pop() {
                        if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                            *key = Some("?".to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        positions
    }

    /// The path of the value that starts now, advancing the enclosing container.
    fn value_path(&self, stack: &mut [Frame]) -> Option<String> {
        match stack.last_mut()? {
            Frame::Map { path, key } => key.take().map(|k| join(path, &k)),
            Frame::Seq { path, index } => {
                *index += 1;
                Some(join_index(path, *index - 1))
            }
            Frame::ComplexKey => None,
        }
    }

    /// Where the value at `path` starts, or the nearest enclosing node that exists.
    pub fn value(&self, path: &str) -> Pos {
        self.nearest(path, &self.values)
    }

    /// Where the key of `path` is written, falling back like [`Positions::value`].
    pub fn key(&self, path: &str) -> Pos {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.value(path))
    }

    /// The keys of the top mapping.
    pub fn top_keys(&self) -> Vec<String> {
        self.keys
            .keys()
            .filter(|k| !k.contains('.') && !k.contains('['))
            .cloned()
            .collect()
    }

    /// Where the key of `path` is written, if it is.
    pub fn key_if_written(&self, path: &str) -> Option<Pos> {
        self.keys.get(path).copied()
    }

    fn nearest(&self, path: &str, table: &HashMap<String, Pos>) -> Pos {
        let mut current = path;
        loop {
            if let Some(pos) = table.get(current).or_else(|| self.keys.get(current)) {
                return *pos;
            }
            match parent(current) {
                Some(up) => current = up,
                None => return table.get("").copied().unwrap_or(Pos::START),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_values_in_block_and_flow_style() {
        let text = "listen: \"x\"\npoll:\n  interval: 30s\napps:\n  - name: a\n    regions: [china, tokyo]\n  - {name: b}\n";
        let p = Positions::scan(text);
        assert_eq!(p.key("listen"), Pos { line: 1, column: 1 });
        assert_eq!(p.value("listen"), Pos { line: 1, column: 9 });
        assert_eq!(p.key("poll.interval"), Pos { line: 3, column: 3 });
        assert_eq!(
            p.value("poll.interval"),
            Pos {
                line: 3,
                column: 13
            }
        );
        assert_eq!(p.key("apps[0].name"), Pos { line: 5, column: 5 });
        assert_eq!(
            p.value("apps[0].regions[1]"),
            Pos {
                line: 6,
                column: 22
            }
        );
        assert_eq!(p.key("apps[1].name"), Pos { line: 7, column: 6 });
        // Missing paths fall back to the nearest existing parent.
        assert_eq!(p.value("apps[1].sdkappid"), Pos { line: 7, column: 5 });
        assert_eq!(p.value("nothing.here"), Pos::START);
    }
}
