//! The house's shape, checked: what issue 24 built stays built.
//!
//! - no file in `src/` is past 600 lines (tests may live in their own files,
//!   which count too, so a test file past 600 lines is split as well);
//! - no top-level module imports one that imports it back;
//! - the ground floor (`vocab`) imports nothing from the crate;
//! - the journal imports nothing from `api` or `output`; `run` takes no
//!   prices or codes from `output`.
//!
//! Imports are read from the source text: every `crate::NAME` outside
//! comments and `#[cfg(test)]` modules (tests may reach anywhere).

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

/// Every `crate::NAME` and `crate::{A, B::…}` a text names.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
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
                .filter(|m| *m != module),
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

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports();
    let mut both = Vec::new();
    for (a, uses) in &graph {
        for b in uses {
            if a < b && graph.get(b).is_some_and(|u| u.contains(a)) {
                both.push(format!("{a} <-> {b}"));
            }
        }
    }
    assert!(both.is_empty(), "modules importing each other: {both:?}");
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
    let text = "use crate::plan::Row;\n// crate::output::x\n#[cfg(test)]\nmod tests {\n    use crate::sim::render;\n}\nfn f() { crate::disk::sync_dir(p); }\nuse crate::{api::Client, vocab};\n";
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
            let group = match rest.strip_prefix('{') {
                Some(g) => &g[..g.find('}').unwrap_or(g.len())],
                None => {
                    &rest[..rest
                        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len())]
                }
            };
            names.extend(
                group
                    .split(',')
                    .map(|n| n.trim().split(' ').next().unwrap_or("").to_string())
                    .filter(|n| !n.is_empty() && n != "self"),
            );
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
