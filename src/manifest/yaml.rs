//! A YAML document as a tree of [`Node`]s that remember where they were written.
//!
//! Why this exists: validation errors must name the line of the value at fault,
//! and serde-based YAML loaders throw positions away once a value is parsed. We
//! build the tree from `yaml-rust2`'s marked event stream instead.
//!
//! An alias (`*name`) repeats the value its anchor names, so a few hundred
//! bytes of nested aliases can describe billions of values. The tree is
//! capped at [`MAX_VALUES`] values, aliases expanded; past it, parsing stops
//! with the line of the value that crossed it.

use std::path::Path;
use std::sync::Arc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

use super::{Loc, Node, Value};

/// The most values a manifest's tree may hold once aliases are expanded.
pub const MAX_VALUES: usize = 2_000_000;

/// Parses `text` (read from `file`) into a located tree.
///
/// Errors are YAML syntax errors, already phrased for the user with their line.
pub(crate) fn parse(file: &Arc<Path>, text: &str) -> Result<Node, (Loc, String)> {
    let mut builder = Builder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: Vec::new(),
        root: None,
        documents: 0,
        values: 0,
        too_many: None,
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| {
        (
            Loc::line(file, e.marker().line()),
            format!("YAML syntax error: {}", e.info()),
        )
    })?;
    if let Some(loc) = builder.too_many {
        return Err((
            loc,
            format!(
                "the manifest holds more than {MAX_VALUES} values once its aliases (`*name`) are expanded: \
write fewer, or move jobs to a `jobs_from:` CSV"
            ),
        ));
    }
    if builder.documents > 1 {
        return Err((
            Loc::line(file, 1),
            "a manifest is one YAML document; found several (`---`)".into(),
        ));
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        loc: Loc::line(file, 1),
    }))
}

struct Builder {
    file: Arc<Path>,
    /// Open collections; a mapping's pending key is kept beside it.
    stack: Vec<(Node, usize, Option<Node>)>,
    /// Anchored values, with how many values each holds.
    anchors: Vec<(usize, Node, usize)>,
    root: Option<Node>,
    documents: usize,
    /// Values in the tree so far, aliases expanded.
    values: usize,
    /// Where the tree passed [`MAX_VALUES`]; nothing more is built after.
    too_many: Option<Loc>,
}

/// How many values `node` holds, itself included.
fn size(node: &Node) -> usize {
    1 + match &node.value {
        Value::List(items) => items.iter().map(size).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| size(k) + size(v)).sum(),
        _ => 0,
    }
}

impl Builder {
    /// Counts `n` more values; false (and building stops) past the cap.
    fn count(&mut self, n: usize, loc: &Loc) -> bool {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_VALUES && self.too_many.is_none() {
            self.too_many = Some(loc.clone());
        }
        self.too_many.is_none()
    }

    fn insert(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let n = size(&node);
            self.anchors.push((anchor, node.clone(), n));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some((parent, _, pending_key)) => match &mut parent.value {
                Value::List(items) => items.push(node),
                Value::Map(entries) => match pending_key.take() {
                    None => *pending_key = Some(node),
                    Some(key) => entries.push((key, node)),
                },
                _ => unreachable!("only collections are pushed on the stack"),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.too_many.is_some() {
            return;
        }
        let loc = Loc::line(&self.file, mark.line());
        let new_value = matches!(
            ev,
            Event::SequenceStart(..) | Event::MappingStart(..) | Event::Scalar(..)
        );
        if new_value && !self.count(1, &loc) {
            return;
        }
        match ev {
            Event::DocumentStart => self.documents += 1,
            Event::SequenceStart(anchor, _) => self.stack.push((
                Node {
                    value: Value::List(Vec::new()),
                    loc,
                },
                anchor,
                None,
            )),
            Event::MappingStart(anchor, _) => self.stack.push((
                Node {
                    value: Value::Map(Vec::new()),
                    loc,
                },
                anchor,
                None,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, anchor, _)) = self.stack.pop() {
                    self.insert(node, anchor);
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let value = if style == TScalarStyle::Plain {
                    match Yaml::from_str(&text) {
                        Yaml::Integer(i) => Value::Int(i),
                        Yaml::Real(r) => r.parse().map(Value::Float).unwrap_or(Value::Str(r)),
                        Yaml::Boolean(b) => Value::Bool(b),
                        Yaml::Null => Value::Null,
                        _ => Value::Str(text),
                    }
                } else {
                    Value::Str(text)
                };
                self.insert(Node { value, loc }, anchor);
            }
            Event::Alias(id) => {
                let anchored = |b: &Builder| b.anchors.iter().rposition(|(a, _, _)| *a == id);
                let Some(at) = anchored(self) else {
                    self.insert(
                        Node {
                            value: Value::Null,
                            loc,
                        },
                        0,
                    );
                    return;
                };
                // Counted before it is copied: a bomb is refused, never built.
                if self.count(self.anchors[at].2, &loc) {
                    let node = self.anchors[at].1.clone();
                    self.insert(node, 0);
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Node {
        parse(&Arc::from(Path::new("t.yaml")), text).unwrap()
    }

    #[test]
    fn scalars_are_typed_and_located() {
        let root = tree("a: 1\nb: 1.5\nc: true\nd: \"7\"\ne: ~\nf: text\n");
        let Value::Map(entries) = root.value else {
            panic!("not a map")
        };
        let got: Vec<_> = entries
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_string(), v.value.clone(), v.loc.pos))
            .collect();
        assert_eq!(got[0].1, Value::Int(1));
        assert_eq!(got[1].1, Value::Float(1.5));
        assert_eq!(got[2].1, Value::Bool(true));
        assert_eq!(got[3].1, Value::Str("7".into()), "quoted stays a string");
        assert_eq!(got[4].1, Value::Null);
        assert_eq!(got[5].1, Value::Str("text".into()));
        assert_eq!(got[5].2, super::super::Pos::Line(6));
    }

    #[test]
    fn aliases_resolve_to_the_anchored_value() {
        let root = tree("base: &b {x: 1}\nother: *b\n");
        let Value::Map(entries) = root.value else {
            panic!()
        };
        assert_eq!(entries[0].1.value, entries[1].1.value);
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let err = parse(&Arc::from(Path::new("t.yaml")), "a: 1\nb: [1, 2\n").unwrap_err();
        assert!(err.1.contains("YAML syntax error"), "{}", err.1);
        assert!(matches!(err.0.pos, super::super::Pos::Line(n) if n >= 2));
    }

    #[test]
    fn an_alias_bomb_is_refused_at_its_line_without_being_built() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i", "j"]
            .iter()
            .enumerate()
        {
            let prev = ["a", "b", "c", "d", "e", "f", "g", "h", "i"][i];
            let items = vec![format!("*{prev}"); 10].join(", ");
            text.push_str(&format!("{name}: &{name} [{items}]\n"));
        }
        assert!(text.len() < 512, "{}", text.len());
        let err = parse(&Arc::from(Path::new("t.yaml")), &text).unwrap_err();
        assert!(err.1.contains("aliases"), "{}", err.1);
        assert_eq!(
            err.0.pos,
            super::super::Pos::Line(7),
            "the line that crossed the cap"
        );
    }

    #[test]
    fn several_documents_are_refused() {
        let err = parse(&Arc::from(Path::new("t.yaml")), "a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.1.contains("one YAML document"));
    }
}
