//! Stage 1 of 4: read a YAML or CSV manifest into raw, located values.
//!
//! Why this exists: every later error must name the file, line (YAML) or row
//! (CSV), job and field at fault, so this stage keeps where each value was
//! written and checks only the *vocabulary* (which keys exist). What values
//! mean, and whether they are valid, is `plan`'s business.

mod csv_jobs;
mod suggest;
mod yaml;

pub(crate) use suggest::{suggest, unknown};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest YAML manifest read.
pub const MAX_YAML_BYTES: u64 = 16 << 20;
/// The largest CSV (manifest or `jobs_from:`) read.
pub const MAX_CSV_BYTES: u64 = 1 << 30;

/// Every request parameter of the gateway, as a manifest key.
pub const PARAMS: &[&str] = &[
    "prompt",
    "image_urls",
    "image_size",
    "num_inference_steps",
    "guidance_scale",
    "seed",
    "num_images",
    "enable_safety_checker",
    "output_format",
    "sync_mode",
    "enable_prompt_expansion",
];

const TOP_KEYS: &[&str] = &[
    "name",
    "defaults",
    "seeds",
    "sweep",
    "jobs",
    "jobs_from",
    "pricing",
    "budget_usd",
    "cache",
    "hold_seed",
];
const PRICING_KEYS: &[&str] = &["text_to_image", "image_to_image"];
/// Keys of a job besides [`PARAMS`].
const JOB_EXTRA_KEYS: &[&str] = &["id", "seeds", "sweep", "hold_seed"];
/// CSV columns besides [`PARAMS`].
const CSV_EXTRA_COLUMNS: &[&str] = &["id", "seeds", "width", "height", "hold_seed"];

/// Where a value was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Loc {
    pub file: Arc<Path>,
    pub pos: Pos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pos {
    /// A YAML line, 1-based.
    Line(usize),
    /// A CSV data row (1 = first row after the header) and the file line it starts on.
    Row { row: usize, line: usize },
}

impl Loc {
    pub(crate) fn line(file: &Arc<Path>, line: usize) -> Loc {
        Loc {
            file: file.clone(),
            pos: Pos::Line(line),
        }
    }

    /// The folder relative paths written at this location are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new(""))
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Pos::Line(line) => write!(f, "{}:{line}", self.file.display()),
            Pos::Row { row: 0, line } => write!(f, "{}:{line} (header)", self.file.display()),
            Pos::Row { row, line } => write!(f, "{}:{line} (row {row})", self.file.display()),
        }
    }
}

/// A raw value as written. CSV cells are always `Str`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// What kind of value this is, for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing".into(),
            Value::Bool(b) => format!("`{b}`"),
            Value::Int(i) => format!("`{i}`"),
            Value::Float(x) => format!("`{x}`"),
            Value::Str(s) if s.chars().count() > 40 => {
                format!("\"{}…\"", s.chars().take(40).collect::<String>())
            }
            Value::Str(s) => format!("\"{s}\""),
            Value::List(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }
}

/// The value under `key` in a mapping's entries.
pub fn entry<'a>(entries: &'a [(Node, Node)], key: &str) -> Option<&'a Node> {
    entries
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// The first key of a mapping's entries that is not in `allowed`.
pub fn stray_key<'a>(entries: &'a [(Node, Node)], allowed: &[&str]) -> Option<&'a Node> {
    entries
        .iter()
        .map(|(k, _)| k)
        .find(|k| !k.as_str().is_some_and(|name| allowed.contains(&name)))
}

/// A `key: value` pair, with the key's own location.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub value: Node,
}

/// One entry of `jobs:` or one CSV row, as written.
#[derive(Clone, Debug)]
pub struct Job {
    pub loc: Loc,
    /// Its values (and `id`, `seeds`, `hold_seed`), but not its `sweep`.
    pub fields: Vec<Field>,
    /// The job's own `sweep:`, parameter by parameter (YAML only).
    pub sweep: Vec<Field>,
}

impl Job {
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }

    /// The job id as written, for messages.
    pub fn written_id(&self) -> Option<&str> {
        self.get("id").and_then(Node::as_str)
    }
}

/// A manifest as written: nothing validated but its vocabulary.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub path: PathBuf,
    pub name: Option<Node>,
    pub defaults: Vec<Field>,
    pub seeds: Option<Node>,
    pub sweep: Vec<Field>,
    pub jobs: Vec<Job>,
    pub pricing: Vec<Field>,
    pub budget_usd: Option<Node>,
    /// `hold_seed:`: every job without seeds holds one seed across its sweep.
    pub hold_seed: Option<Node>,
    /// `cache:`: a folder, relative to the manifest.
    pub cache: Option<Node>,
    /// Vocabulary problems found while reading (unknown keys, wrong shapes).
    pub problems: Vec<Diagnostic>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem with a manifest, located as precisely as we can.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub loc: Loc,
    pub job: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl Diagnostic {
    pub fn error(loc: &Loc, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            loc: loc.clone(),
            job: None,
            field: None,
            message: message.into(),
        }
    }

    pub fn warning(loc: &Loc, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(loc, message)
        }
    }

    pub fn job(mut self, job: Option<&str>) -> Diagnostic {
        self.job = job.map(str::to_string);
        self
    }

    pub fn field(mut self, field: &str) -> Diagnostic {
        self.field = Some(field.to_string());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}:", self.loc)?;
        if let Some(job) = &self.job {
            write!(f, " job `{job}`:")?;
        }
        if let Some(field) = &self.field {
            write!(f, " {field}:")?;
        }
        write!(f, " {}", self.message)
    }
}

impl serde::Serialize for Diagnostic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (row, line) = match self.loc.pos {
            Pos::Line(line) => (None, line),
            Pos::Row { row, line } => (Some(row), line),
        };
        let mut st = s.serialize_struct("Diagnostic", 7)?;
        st.serialize_field("severity", &self.severity)?;
        st.serialize_field("file", &self.loc.file.display().to_string())?;
        st.serialize_field("line", &line)?;
        st.serialize_field("row", &row)?;
        st.serialize_field("job", &self.job)?;
        st.serialize_field("field", &self.field)?;
        st.serialize_field("message", &self.message)?;
        st.end()
    }
}

/// Why a manifest could not be read at all (as opposed to read with problems).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {0}")]
    Read(#[from] crate::disk::ReadError),
    #[error("{0}")]
    Invalid(Diagnostic),
    #[error("manifest {0} must end in .yaml, .yml or .csv")]
    UnknownFormat(PathBuf),
}

/// Reads a manifest. Vocabulary problems are collected in
/// [`Manifest::problems`]; only an unreadable or unparseable file is an `Err`.
pub fn load(path: &Path) -> Result<Manifest, LoadError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let file: Arc<Path> = Arc::from(path);
    let mut m = Manifest {
        path: path.to_path_buf(),
        name: None,
        defaults: Vec::new(),
        seeds: None,
        sweep: Vec::new(),
        jobs: Vec::new(),
        pricing: Vec::new(),
        budget_usd: None,
        hold_seed: None,
        cache: None,
        problems: Vec::new(),
    };
    match ext.as_deref() {
        Some("yaml" | "yml") => {
            let bytes = crate::disk::read_regular(path, MAX_YAML_BYTES)?;
            let text = yaml_text(path, &bytes)?;
            let root = yaml::parse(&file, text)
                .map_err(|(loc, msg)| LoadError::Invalid(Diagnostic::error(&loc, msg)))?;
            read_top(&mut m, root)?;
        }
        Some("csv") => {
            m.jobs = csv_jobs::load(&file, &mut m.problems)?;
        }
        _ => return Err(LoadError::UnknownFormat(path.to_path_buf())),
    }
    Ok(m)
}

/// The `name:` a YAML manifest gives, as written, reading nothing else
/// (the contact sheet's heading). `None` for a CSV, an unreadable file or
/// a manifest without one.
pub fn written_name(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    if ext != "yaml" && ext != "yml" {
        return None;
    }
    let bytes = crate::disk::read_regular(path, MAX_YAML_BYTES).ok()?;
    let root = yaml::parse(&Arc::from(path), yaml_text(path, &bytes).ok()?).ok()?;
    match root.value {
        Value::Map(entries) => entry(&entries, "name")?
            .as_str()
            .map(str::to_string)
            .filter(|n| !n.trim().is_empty()),
        _ => None,
    }
}

/// A YAML file's text: UTF-8, with a byte-order mark at its start accepted.
fn yaml_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, LoadError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        LoadError::Invalid(Diagnostic::error(
            &Loc::line(&Arc::from(path), line),
            "the file is not UTF-8 text",
        ))
    })
}

fn read_top(m: &mut Manifest, root: Node) -> Result<(), LoadError> {
    let entries = match root.value {
        Value::Map(entries) => entries,
        Value::Null => Vec::new(),
        _ => {
            return Err(LoadError::Invalid(Diagnostic::error(
                &root.loc,
                format!(
                    "a manifest is a mapping of {}; found {}",
                    TOP_KEYS.join(", "),
                    root.describe()
                ),
            )))
        }
    };
    let problems = &mut m.problems;
    for field in fields(entries, TOP_KEYS, "manifest key", None, problems) {
        let value = field.value;
        match field.name.as_str() {
            "name" => m.name = Some(value),
            "defaults" => m.defaults = mapping(value, PARAMS, "parameter", None, problems),
            "seeds" => m.seeds = Some(value),
            "sweep" => m.sweep = mapping(value, PARAMS, "parameter", None, problems),
            "pricing" => m.pricing = mapping(value, PRICING_KEYS, "pricing key", None, problems),
            "budget_usd" => m.budget_usd = Some(value),
            "hold_seed" => m.hold_seed = Some(value),
            "cache" => m.cache = Some(value),
            "jobs" => match value.value {
                Value::List(items) => {
                    for item in items {
                        if let Some(job) = job(item, problems) {
                            m.jobs.push(job);
                        }
                    }
                }
                Value::Null => {}
                _ => problems.push(
                    Diagnostic::error(
                        &value.loc,
                        format!("expected a list of jobs, found {}", value.describe()),
                    )
                    .field("jobs"),
                ),
            },
            "jobs_from" => {
                let paths = match value.value {
                    Value::List(items) => items,
                    _ => vec![value],
                };
                for p in paths {
                    let Some(rel) = p.as_str() else {
                        problems.push(
                            Diagnostic::error(
                                &p.loc,
                                format!("expected a CSV file path, found {}", p.describe()),
                            )
                            .field("jobs_from"),
                        );
                        continue;
                    };
                    let csv_path = p.loc.base_dir().join(rel);
                    match csv_jobs::load(&Arc::from(csv_path.as_path()), problems) {
                        Ok(jobs) => m.jobs.extend(jobs),
                        Err(LoadError::Invalid(d)) => problems.push(d),
                        Err(e) => problems
                            .push(Diagnostic::error(&p.loc, e.to_string()).field("jobs_from")),
                    }
                }
            }
            _ => unreachable!("fields() keeps only known keys"),
        }
    }
    Ok(())
}

/// A `jobs:` entry: a mapping, or a bare string taken as the prompt.
fn job(item: Node, problems: &mut Vec<Diagnostic>) -> Option<Job> {
    let loc = item.loc.clone();
    match item.value {
        Value::Str(_) => Some(Job {
            loc,
            fields: vec![Field {
                name: "prompt".into(),
                value: item,
            }],
            sweep: Vec::new(),
        }),
        Value::Map(entries) => {
            let id = entries
                .iter()
                .find(|(k, _)| k.as_str() == Some("id"))
                .and_then(|(_, v)| v.as_str().map(str::to_string));
            let allowed: Vec<&str> = PARAMS.iter().chain(JOB_EXTRA_KEYS).copied().collect();
            let mut fields = fields(entries, &allowed, "job key", id.as_deref(), problems);
            let sweep = match fields.iter().position(|f| f.name == "sweep") {
                Some(i) => {
                    let node = fields.remove(i).value;
                    mapping(node, PARAMS, "parameter", id.as_deref(), problems)
                }
                None => Vec::new(),
            };
            Some(Job { loc, fields, sweep })
        }
        _ => {
            problems.push(Diagnostic::error(
                &loc,
                format!(
                    "a job is a mapping (or a prompt string); found {}",
                    item.describe()
                ),
            ));
            None
        }
    }
}

fn mapping(
    node: Node,
    allowed: &[&str],
    what: &str,
    job: Option<&str>,
    problems: &mut Vec<Diagnostic>,
) -> Vec<Field> {
    match node.value {
        Value::Map(entries) => fields(entries, allowed, what, job, problems),
        Value::Null => Vec::new(),
        _ => {
            problems.push(
                Diagnostic::error(
                    &node.loc,
                    format!("expected a mapping, found {}", node.describe()),
                )
                .job(job),
            );
            Vec::new()
        }
    }
}

/// Keeps the entries whose keys are in `allowed`; reports unknown and repeated keys.
fn fields(
    entries: Vec<(Node, Node)>,
    allowed: &[&str],
    what: &str,
    job: Option<&str>,
    problems: &mut Vec<Diagnostic>,
) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let Some(name) = key.as_str() else {
            problems.push(
                Diagnostic::error(
                    &key.loc,
                    format!("a key must be text, found {}", key.describe()),
                )
                .job(job),
            );
            continue;
        };
        if !allowed.contains(&name) {
            problems.push(unknown(&key.loc, what, name, allowed).job(job));
        } else if out.iter().any(|f| f.name == name) {
            problems.push(
                Diagnostic::error(&key.loc, format!("`{name}` is given twice"))
                    .job(job)
                    .field(name),
            );
        } else {
            out.push(Field {
                name: name.to_string(),
                value,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_name_file_line_job_and_field() {
        let file: Arc<Path> = Arc::from(Path::new("m.yaml"));
        let d = Diagnostic::error(&Loc::line(&file, 7), "bad")
            .job(Some("cat"))
            .field("seed");
        assert_eq!(d.to_string(), "error: m.yaml:7: job `cat`: seed: bad");
        let row = Loc {
            file,
            pos: Pos::Row { row: 3, line: 4 },
        };
        assert_eq!(row.to_string(), "m.yaml:4 (row 3)");
    }
}
