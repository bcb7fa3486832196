//! Maps a field path such as `services.web.ports.http` to its line and column in the
//! YAML text, and finds duplicate keys (which serde would silently collapse).

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

/// Where each field path sits in the source.
#[derive(Debug, Default)]
pub struct Index {
    /// Path → position of its key (for map entries) or its value (for list items).
    keys: HashMap<String, Pos>,
    /// Path → position of its value.
    values: HashMap<String, Pos>,
    /// Duplicate keys found: (path, position of the repeat, position of the first).
    pub duplicates: Vec<(String, Pos, Pos)>,
}

impl Index {
    /// Builds the index; a YAML syntax error yields what was indexed before it (serde
    /// reports the error). The first document's events are read one by one, not through
    /// the parser's `load`, which recurses once per nesting level: a profile of a few
    /// thousand `[` overflowed a 2 MiB thread stack (found by the `profile` fuzz target).
    pub fn build(text: &str) -> Index {
        let mut b = Builder {
            index: Index::default(),
            stack: Vec::new(),
        };
        let mut parser = Parser::new_from_str(text);
        while let Ok((ev, mark)) = parser.next_token() {
            let last = matches!(ev, Event::DocumentEnd | Event::StreamEnd);
            b.on_event(ev, mark);
            if last {
                break;
            }
        }
        b.index
    }

    /// Position of a field's value, falling back to its key, then to its closest parent.
    pub fn value(&self, path: &str) -> Option<Pos> {
        self.values
            .get(path)
            .or_else(|| self.keys.get(path))
            .copied()
            .or_else(|| self.parent(path))
    }

    /// Position of a field's key, falling back to its value, then to its closest parent.
    pub fn key(&self, path: &str) -> Option<Pos> {
        self.keys
            .get(path)
            .or_else(|| self.values.get(path))
            .copied()
            .or_else(|| self.parent(path))
    }

    fn parent(&self, path: &str) -> Option<Pos> {
        let cut = path.rfind(['.', '['])?;
        self.key(&path[..cut])
    }
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<(String, Pos)>,
        seen: HashMap<String, Pos>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

struct Builder {
    index: Index,
    stack: Vec<Frame>,
}

fn pos(m: &Marker) -> Pos {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// Called for every node in value position; returns the node's path, if any.
    fn enter_value(&mut self, at: Pos, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                self.index.values.insert(p.clone(), at);
                self.index.keys.entry(p.clone()).or_insert(at);
                Some(p)
            }
            Some(Frame::Map {
                path,
                pending_key,
                seen,
            }) => match pending_key.take() {
                Some((key, _kpos)) => {
                    let p = join(path, &key);
                    self.index.values.insert(p.clone(), at);
                    Some(p)
                }
                None => {
                    // This node is a key.
                    let key = scalar.unwrap_or("<complex key>").to_string();
                    let p = join(path, &key);
                    if let Some(first) = seen.get(&key) {
                        self.index.duplicates.push((p.clone(), at, *first));
                    } else {
                        seen.insert(key.clone(), at);
                        self.index.keys.insert(p, at);
                    }
                    *pending_key = Some((key, at));
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = pos(&mark);
        match ev {
            Event::Scalar(s, ..) => {
                self.enter_value(at, Some(&s));
            }
            Event::Alias(_) => {
                self.enter_value(at, None);
            }
            Event::SequenceStart(..) => {
                let path = self.enter_value(at, None).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingStart(..) => {
                let path = self.enter_value(at, None).unwrap_or_default();
                self.stack.push(Frame::Map {
                    path,
                    pending_key: None,
                    seen: HashMap::new(),
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_does_not_overflow_a_small_stack() {
        // What the `profile` fuzz target found: 3.5 KB of nested flow sequences and
        // empty keys overflowed a 2 MiB stack (the parser's `load` recursed once per
        // level). On 256 KiB now, only a loop over events survives it.
        let deep = String::from_utf8_lossy(include_bytes!(
            "../../../../fuzz/corpus/profile/crash-deep-nesting-stack-overflow.yaml"
        ))
        .into_owned();
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || Index::build(&deep))
            .unwrap()
            .join()
            .expect("no stack overflow");
    }

    #[test]
    fn finds_nested_fields_and_list_items() {
        let text =
            "name: x\nservices:\n  web:\n    command: [a, b]\n    ports:\n      http: 8080\n";
        let ix = Index::build(text);
        assert_eq!(ix.key("services.web"), Some(Pos { line: 3, col: 3 }));
        assert_eq!(
            ix.value("services.web.ports.http"),
            Some(Pos { line: 6, col: 13 })
        );
        assert_eq!(
            ix.value("services.web.command[1]"),
            Some(Pos { line: 4, col: 18 })
        );
        // Unknown paths fall back to the closest parent.
        assert_eq!(
            ix.value("services.web.ports.ws"),
            Some(Pos { line: 5, col: 5 })
        );
    }

    #[test]
    fn reports_duplicate_keys() {
        let ix = Index::build("services:\n  a: {command: [x]}\n  a: {command: [y]}\n");
        assert_eq!(ix.duplicates.len(), 1);
        let (path, again, first) = &ix.duplicates[0];
        assert_eq!(path, "services.a");
        assert_eq!((again.line, first.line), (3, 2));
    }
}
