//! A YAML document as a tree of [`Node`]s that remember where they were written.
//!
//! Why this exists: validation errors must name the line of the value at fault,
//! and serde-based YAML loaders throw positions away once a value is parsed. We
//! build the tree from `yaml-rust2`'s marked event stream instead.
//!
//! An alias (`*name`) repeats the value its anchor names, so a few hundred
//! bytes of nested aliases can describe billions of values, or a kilobyte
//! string a million times over. Two caps bound what a manifest may expand
//! to, both counted with aliases expanded: [`MAX_VALUES`] values, and
//! [`MAX_TEXT_BYTES`] of text (keys and scalars), so that long strings
//! count as well as many values. A document with aliases is first read
//! without building anything, weighing each anchor once: a bomb is refused
//! at the line that crossed a cap, in little more memory than its own text
//! takes, and only a document within both caps is built.

use std::path::Path;
use std::sync::Arc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

use super::{Loc, Node, Value};

/// The most values a manifest's tree may hold.
pub const MAX_VALUES: usize = 2_000_000;

/// The most values the tree of a manifest with aliases may hold once they
/// are expanded. With [`MAX_TEXT_BYTES`], such a tree stays under 200 MB
/// however its aliases are arranged: the worst measured, 1.5 million
/// aliased strings of 8 to 22 bytes from a file of a few kilobytes, peaked
/// at 159 MB. (A manifest without aliases is bounded by its file's size.)
pub const MAX_ALIASED_VALUES: usize = 1_500_000;

/// The most text (keys and scalars, in bytes) a manifest's tree may hold
/// once aliases are expanded: twice the largest file read
/// ([`super::MAX_YAML_BYTES`]), so that only aliases can reach it.
pub const MAX_TEXT_BYTES: usize = 2 * super::MAX_YAML_BYTES as usize;

/// Parses `text` (read from `file`) into a located tree.
///
/// Errors are YAML syntax errors and refusals of documents past the caps,
/// already phrased for the user with their line.
pub(crate) fn parse(file: &Arc<Path>, text: &str) -> Result<Node, (Loc, String)> {
    // Without a `*`, there is no alias: the tree is its text, and building
    // it counts its values.
    let aliased = text.contains('*');
    if aliased {
        run(file, text, false, aliased)?;
    }
    let builder = run(file, text, true, aliased)?;
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

/// Reads `text` once: weighing it, and building its tree if `build`.
fn run(file: &Arc<Path>, text: &str, build: bool, aliased: bool) -> Result<Builder, (Loc, String)> {
    let mut builder = Builder {
        file: file.clone(),
        build,
        aliased,
        stack: Vec::new(),
        anchors: Vec::new(),
        root: None,
        documents: 0,
        values: 0,
        text_bytes: 0,
        refused: None,
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| {
        (
            Loc::line(file, e.marker().line()),
            format!("YAML syntax error: {}", e.info()),
        )
    })?;
    match builder.refused.take() {
        Some(refused) => Err(refused),
        None => Ok(builder),
    }
}

/// How much of the tree a value takes, itself and everything in it:
/// values, and bytes of text.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Weight {
    values: usize,
    text: usize,
}

impl Weight {
    /// One value, with `text` bytes of text (0 for a collection).
    fn one(text: usize) -> Weight {
        Weight { values: 1, text }
    }

    fn add(&mut self, other: Weight) {
        self.values = self.values.saturating_add(other.values);
        self.text = self.text.saturating_add(other.text);
    }
}

/// A collection being read, with a mapping's pending key and its weight so far.
struct Open {
    node: Node,
    anchor: usize,
    key: Option<Node>,
    weight: Weight,
}

struct Builder {
    file: Arc<Path>,
    /// Whether nodes are kept; if not, the document is only weighed.
    build: bool,
    /// Whether the document may hold aliases (its text has a `*`).
    aliased: bool,
    stack: Vec<Open>,
    /// Anchored values (empty placeholders when not building), with their weight.
    anchors: Vec<(usize, Node, Weight)>,
    root: Option<Node>,
    documents: usize,
    /// Values in the tree so far, and their text, aliases expanded.
    values: usize,
    text_bytes: usize,
    /// Where and why a cap was crossed; nothing more is read after.
    refused: Option<(Loc, String)>,
}

impl Builder {
    /// Counts `w` more; false (and reading stops) past a cap.
    fn count(&mut self, w: Weight, loc: &Loc) -> bool {
        self.values = self.values.saturating_add(w.values);
        self.text_bytes = self.text_bytes.saturating_add(w.text);
        let why = if self.aliased && self.values > MAX_ALIASED_VALUES {
            format!("the manifest holds more than {MAX_ALIASED_VALUES} values once its aliases (`*name`) are expanded")
        } else if self.values > MAX_VALUES {
            format!("the manifest holds more than {MAX_VALUES} values")
        } else if self.text_bytes > MAX_TEXT_BYTES {
            format!(
                "the manifest holds more than {} MiB of text once its aliases (`*name`) are expanded",
                MAX_TEXT_BYTES >> 20
            )
        } else {
            return true;
        };
        if self.refused.is_none() {
            self.refused = Some((
                loc.clone(),
                format!("{why}: write fewer, or move jobs to a `jobs_from:` CSV"),
            ));
        }
        false
    }

    fn insert(&mut self, node: Node, anchor: usize, weight: Weight) {
        if anchor > 0 {
            let kept = if self.build {
                node.clone()
            } else {
                empty(&node)
            };
            self.anchors.push((anchor, kept, weight));
        }
        match self.stack.last_mut() {
            None => self.root = self.build.then_some(node),
            Some(open) => {
                open.weight.add(weight);
                if !self.build {
                    return;
                }
                match &mut open.node.value {
                    Value::List(items) => items.push(node),
                    Value::Map(entries) => match open.key.take() {
                        None => open.key = Some(node),
                        Some(key) => entries.push((key, node)),
                    },
                    _ => unreachable!("only collections are pushed on the stack"),
                }
            }
        }
    }

    fn open(&mut self, value: Value, anchor: usize, loc: Loc) {
        self.stack.push(Open {
            node: Node { value, loc },
            anchor,
            key: None,
            weight: Weight::one(0),
        });
    }
}

/// A placeholder for a node that is weighed, not kept.
fn empty(node: &Node) -> Node {
    Node {
        value: Value::Null,
        loc: node.loc.clone(),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.refused.is_some() {
            return;
        }
        let loc = Loc::line(&self.file, mark.line());
        match ev {
            Event::DocumentStart => self.documents += 1,
            Event::SequenceStart(anchor, _) => {
                if self.count(Weight::one(0), &loc) {
                    self.open(Value::List(Vec::new()), anchor, loc);
                }
            }
            Event::MappingStart(anchor, _) => {
                if self.count(Weight::one(0), &loc) {
                    self.open(Value::Map(Vec::new()), anchor, loc);
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(mut open) = self.stack.pop() {
                    // A vector's spare room is most of a small collection's size.
                    match &mut open.node.value {
                        Value::List(items) => items.shrink_to_fit(),
                        Value::Map(entries) => entries.shrink_to_fit(),
                        _ => {}
                    }
                    self.insert(open.node, open.anchor, open.weight);
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let weight = Weight::one(text.len());
                if !self.count(weight, &loc) {
                    return;
                }
                let value = if !self.build {
                    Value::Null
                } else if style == TScalarStyle::Plain {
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
                self.insert(Node { value, loc }, anchor, weight);
            }
            Event::Alias(id) => {
                let Some(at) = self.anchors.iter().rposition(|(a, _, _)| *a == id) else {
                    self.insert(
                        Node {
                            value: Value::Null,
                            loc,
                        },
                        0,
                        Weight::one(0),
                    );
                    return;
                };
                // Counted before it is copied: a bomb is refused, never built.
                let weight = self.anchors[at].2;
                if self.count(weight, &loc) {
                    let node = self.anchors[at].1.clone();
                    self.insert(node, 0, weight);
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
    fn long_text_repeated_by_aliases_is_refused_at_its_line() {
        // A kilobyte, ten times per level: 100 MB of text by line 6.
        let mut text = format!("a: &a \"{}\"\n", "x".repeat(1000));
        for (prev, name) in ["a", "b", "c", "d", "e"]
            .iter()
            .zip(["b", "c", "d", "e", "f"])
        {
            let items = vec![format!("*{prev}"); 10].join(", ");
            text.push_str(&format!("{name}: &{name} [{items}]\n"));
        }
        let err = parse(&Arc::from(Path::new("t.yaml")), &text).unwrap_err();
        assert!(
            err.1.contains("32 MiB of text") && err.1.contains("aliases"),
            "{}",
            err.1
        );
        assert_eq!(err.0.pos, super::super::Pos::Line(6));
        // One level less (10 MB) is a manifest like any other.
        let cut: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
        parse(&Arc::from(Path::new("t.yaml")), &cut).unwrap();
    }

    #[test]
    fn weighing_a_document_builds_nothing() {
        let file: Arc<Path> = Arc::from(Path::new("t.yaml"));
        let weighed = run(&file, "a: &a [1, 2]\nb: *a\n", false, true).unwrap();
        assert!(weighed.root.is_none());
        assert_eq!(weighed.values, 9, "a map, 2 keys, 2 lists of 2");
        assert_eq!(weighed.text_bytes, 6);
        let built = run(&file, "a: &a [1, 2]\nb: *a\n", true, true).unwrap();
        assert_eq!((built.values, built.text_bytes), (9, 6));
    }

    #[test]
    fn several_documents_are_refused() {
        let err = parse(&Arc::from(Path::new("t.yaml")), "a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.1.contains("one YAML document"));
    }
}
