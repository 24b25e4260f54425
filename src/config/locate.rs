//! Maps a field path (`models.gpt.provider`, `consumers.dev.keys[0]`) to its line and column
//! in the YAML text, so errors found after deserialisation can still point into the file.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path from the document root to one value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    pub fn root() -> Self {
        Self::default()
    }
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.into()));
        p
    }
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Index(i));
        p
    }
    pub fn parent(&self) -> Option<Self> {
        let mut p = self.clone();
        p.0.pop().map(|_| p)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// Every key and value position of one YAML document, read from its text when the first
/// problem asks for one: that is a second parse of the whole document and an entry for every
/// key and value (four for each consumer with a key), which a config without problems never
/// needs; with a million consumers it was most of the start-up's time and peak memory.
#[derive(Debug)]
pub struct Locator<'t> {
    text: &'t str,
    positions: std::cell::OnceCell<HashMap<FieldPath, Location>>,
}

impl<'t> Locator<'t> {
    pub fn new(text: &'t str) -> Self {
        Self {
            text,
            positions: std::cell::OnceCell::new(),
        }
    }

    /// Best effort: a document yaml-rust2 cannot read has no positions.
    fn read(text: &str) -> HashMap<FieldPath, Location> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        match parser.load(&mut builder, false) {
            Ok(()) => builder.positions,
            Err(_) => HashMap::new(),
        }
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &FieldPath) -> Option<Location> {
        let positions = self.positions.get_or_init(|| Self::read(self.text));
        let mut p = Some(path.clone());
        while let Some(cur) = p {
            if let Some(loc) = positions.get(&cur) {
                return Some(*loc);
            }
            p = cur.parent();
        }
        None
    }
}

enum Frame {
    /// In a mapping: the key we are waiting for a value of (None: waiting for a key).
    Map {
        path: FieldPath,
        pending_key: Option<String>,
    },
    Seq {
        path: FieldPath,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<FieldPath, Location>,
}

impl Builder {
    /// The path of the value that starts now, advancing the parent frame.
    fn next_value_path(&mut self) -> FieldPath {
        match self.stack.last_mut() {
            None => FieldPath::root(),
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                Some(k) => path.key(k),
                None => path.clone(),
            },
            Some(Frame::Seq { path, next }) => {
                *next += 1;
                path.index(*next - 1)
            }
        }
    }

    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Map {
                pending_key: None,
                ..
            })
        )
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let loc = Location {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match ev {
            Event::Scalar(value, ..) if self.expecting_key() => {
                if let Some(Frame::Map { path, pending_key }) = self.stack.last_mut() {
                    // A key's own line is the best place to point at for its value.
                    self.positions.insert(path.key(value.clone()), loc);
                    *pending_key = Some(value);
                }
            }
            Event::Scalar(..) | Event::Alias(_) => {
                let path = self.next_value_path();
                self.positions.entry(path).or_insert(loc);
            }
            Event::MappingStart(..) => {
                let path = self.next_value_path();
                self.positions.entry(path.clone()).or_insert(loc);
                self.stack.push(Frame::Map {
                    path,
                    pending_key: None,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.next_value_path();
                self.positions.entry(path.clone()).or_insert(loc);
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
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
    fn the_text_is_read_only_when_a_position_is_asked_for() {
        let loc = Locator::new("a:\n  b: 1\n");
        assert!(loc.positions.get().is_none(), "no problem, no second parse");
        assert_eq!(
            loc.find(&FieldPath::root().key("a").key("b")).unwrap().line,
            2
        );
        assert!(loc.positions.get().is_some());
    }

    #[test]
    fn finds_keys_items_and_nearest_ancestor() {
        let text = "a:\n  b: 1\n  list:\n    - x\n    - name: y\n\"llama3.2:1b\":\n  provider: p\n";
        let loc = Locator::new(text);
        let root = FieldPath::root();
        assert_eq!(loc.find(&root.key("a").key("b")).unwrap().line, 2);
        assert_eq!(
            loc.find(&root.key("a").key("list").index(1).key("name"))
                .unwrap()
                .line,
            5
        );
        assert_eq!(
            loc.find(&root.key("a").key("list").index(0)).unwrap().line,
            4
        );
        assert_eq!(
            loc.find(&root.key("llama3.2:1b").key("provider"))
                .unwrap()
                .line,
            7
        );
        // Unknown child: falls back to the parent's position.
        assert_eq!(loc.find(&root.key("a").key("zzz")).unwrap().line, 1);
        assert_eq!(root.key("a").key("list").index(1).to_string(), "a.list[1]");
    }
}
