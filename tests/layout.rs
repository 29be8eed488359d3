//! The house's shape, checked: what issue 24 built stays built.
//!
//! - no file in `src/` is past 600 lines (tests may live in their own files,
//!   which count too, so a test file past 600 lines is split as well);
//! - every top-level module sits on one of the floors `src/lib.rs` draws and
//!   imports only from its floor or below, and no modules import each other
//!   round a circle of any length;
//! - the ground floor (`vocab`) imports nothing from the crate;
//! - the journal imports nothing from `api` or `output`; `run` takes no
//!   prices or codes from `output`.
//!
//! Imports are read from the source text: every `crate::NAME` (and each
//! item of a `crate::{…}` group) outside `//` comment lines and
//! `#[cfg(test)] mod … {}` blocks (tests may reach anywhere). The reader is
//! crude on purpose: it may see an import in a string or a block comment
//! (which only makes the checks stricter), and it does not follow `super::`
//! out of a top-level file or `use crate::x as y` renames.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file belongs to (`None` for lib.rs and main.rs).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).expect("under src/");
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Whether `name` is a top-level module (not a macro or an item of lib.rs).
fn is_module(name: &str) -> bool {
    src().join(format!("{name}.rs")).is_file() || src().join(name).join("mod.rs").is_file()
}

/// Whether a file holds only tests (`tests.rs`, `*_tests.rs`).
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name == "tests.rs" || name.ends_with("_tests.rs")
}

/// The text of a file that is not a comment or a `#[cfg(test)]` module.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            // A test module runs from here to the end of its block: the
            // closing brace at the same indent as the attribute.
            let indent = line.len() - t.len();
            if lines
                .peek()
                .is_some_and(|l| l.trim_start().starts_with("mod ") && l.trim_end().ends_with('{'))
            {
                for l in lines.by_ref() {
                    if l.len() - l.trim_start().len() == indent && l.trim() == "}" {
                        break;
                    }
                }
            }
            continue;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The first path segment of each item of a `{…}` group (nested groups
/// matched by depth): `{a::{B, C}, d}` gives `a` and `d`.
fn group_heads(group: &str) -> Vec<String> {
    let (mut heads, mut depth, mut item) = (Vec::new(), 0, String::new());
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => heads.push(std::mem::take(&mut item)),
            _ if depth == 0 => item.push(c),
            _ => {}
        }
    }
    heads.push(item);
    heads
        .iter()
        .map(|i| {
            i.trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// Every `crate::NAME` and `crate::{A, B::…}` a text names.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            names.extend(group_heads(group));
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// Top-level module → the top-level modules its non-test code names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&file) else {
            continue;
        };
        if is_test_file(&file) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a source file reads");
        let uses = graph.entry(module.clone()).or_default();
        uses.extend(
            crate_paths(&code_of(&text))
                .into_iter()
                .filter(|m| *m != module && is_module(m)),
        );
    }
    graph
}

#[test]
fn no_source_file_is_past_600_lines() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).expect("reads").lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "files past {MAX_LINES} lines: {long:#?}");
}

/// The floors `src/lib.rs` draws, lowest first. A module imports only
/// from its own floor or those below; a new module must be given a floor.
const FLOORS: &[&[&str]] = &[
    &["vocab"],
    &["disk", "console", "store"],
    &["plan", "manifest"],
    &["journal", "api", "sim", "gateway"],
    &["output", "sidecar"],
    &["report", "export", "merge", "confine", "temps"],
    &["run", "progress", "cache"],
    &["commands", "cli", "exit"],
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

#[test]
fn every_module_imports_only_from_its_floor_or_below() {
    let graph = imports();
    let mut wrong = Vec::new();
    for (a, uses) in &graph {
        let Some(fa) = floor_of(a) else {
            wrong.push(format!("{a} has no floor (add it to FLOORS and lib.rs)"));
            continue;
        };
        for b in uses {
            match floor_of(b) {
                Some(fb) if fb <= fa => {}
                _ => wrong.push(format!("{a} (floor {fa}) imports {b}, above it")),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// A cycle among `graph`'s modules, if any (depth-first, any length).
fn a_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit<'g>(
        m: &'g str,
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'g str>,
        done: &mut BTreeSet<&'g str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| *p == m) {
            return Some(path[at..].iter().map(|s| s.to_string()).collect());
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for next in graph.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_modules_import_each_other_round_a_circle() {
    assert_eq!(a_cycle(&imports()), None);
}

#[test]
fn the_circle_finder_finds_long_circles() {
    let edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")];
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (x, y) in edges {
        graph.entry(x.into()).or_default().insert(y.into());
    }
    assert_eq!(a_cycle(&graph).map(|c| c.len()), Some(3));
    graph.get_mut("c").unwrap().remove("a");
    assert_eq!(a_cycle(&graph), None);
}

#[test]
fn the_ground_floor_imports_nothing_from_the_crate() {
    let graph = imports();
    let vocab = graph.get("vocab").expect("src/vocab/ exists");
    assert!(vocab.is_empty(), "vocab imports {vocab:?}");
}

#[test]
fn the_journal_takes_nothing_from_the_client_or_the_output() {
    let graph = imports();
    let journal = graph.get("journal").expect("src/journal exists");
    for upper in ["api", "output", "run"] {
        assert!(
            !journal.contains(upper),
            "journal imports {upper}: {journal:?}"
        );
    }
}

#[test]
fn the_reader_sees_through_comments_and_test_modules() {
    let text = "use crate::plan::Row;\n// crate::output::x\n#[cfg(test)]\nmod tests {\n    use crate::sim::render;\n}\nfn f() { crate::disk::sync_dir(p); }\nuse crate::{api::{Client, wire::Reply}, vocab};\n";
    let seen = crate_paths(&code_of(text));
    let want: BTreeSet<String> = ["plan", "disk", "api", "vocab"].map(String::from).into();
    assert_eq!(seen, want);
}

/// The names `run` reaches `output` for, in its non-test code.
fn run_takes_from_output() -> BTreeSet<String> {
    let mut files = Vec::new();
    sources(&src().join("run"), &mut files);
    let mut names = BTreeSet::new();
    for file in files.iter().filter(|f| !is_test_file(f)) {
        let code = code_of(&std::fs::read_to_string(file).expect("reads"));
        for (at, _) in code.match_indices("output::") {
            let rest = &code[at + "output::".len()..];
            let taken = match rest.strip_prefix('{') {
                Some(group) => group_heads(group),
                None => group_heads(rest),
            };
            names.extend(taken.into_iter().filter(|n| n != "self"));
        }
    }
    names
}

#[test]
fn run_takes_no_prices_or_codes_from_the_output() {
    let taken = run_takes_from_output();
    let forbidden = [
        "row_price",
        "request_price",
        "LOST",
        "SUBMIT_UNCERTAIN",
        "RESULT_LOST",
    ];
    for name in forbidden {
        assert!(
            !taken.contains(name),
            "run takes {name} from output: {taken:?}"
        );
    }
    // What it does take is the folder's layout and the results it writes.
    assert!(taken.contains("write_results"), "{taken:?}");
}
