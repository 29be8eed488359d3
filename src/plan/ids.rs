//! Job and row ids, and the file names made from them: one name, one row.
//!
//! Why this exists: a row's id names its images (`images/ID_N.EXT`) and their
//! sidecars, and `results.csv` names rows by it. Two rows with one id would
//! write one file, the second paid image over the first. So
//! [`expand`](super::expand()) refuses a plan (exit 2, nothing sent) in which
//! two jobs, or two rows, have ids that are equal, or equal but for case (one
//! file on macOS and Windows), naming both rows and where they are written.
//! No plan with such rows exists, so no run can pay for them.
//!
//! It refuses rather than renames: an id is the name a user and their scripts
//! know a row by; a renamed one could change when a job is added elsewhere in
//! the manifest (which of the two is "the second" moves); and the fix is one
//! edit (another job id) that changes no row's key, so a folder already
//! written resumes without paying again.
//!
//! It also names rows that send the byte-identical request of an earlier row
//! (same prompt, seed and parameters): each is paid for, for one image.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use super::{Axis, JobPlan, ParamValue, Row};
use crate::manifest::{Diagnostic, Job, Loc, Node, Value};

/// Rows sharing a name are shown one per pair of jobs, this many at most;
/// the rest are counted.
const SHOWN_CLASHES: usize = 10;
/// Rows repeating an earlier row's request are shown one per pair of jobs,
/// this many at most; the rest are counted.
const SHOWN_REPEATS: usize = 5;

/// Why two ids written for jobs cannot both be used, for the error.
const SAME_IN_CASE: &str = "ids that differ only in case name the same files on macOS and Windows";

/// Gives every job a unique, file-name-safe id: the sanitised id as written,
/// or one made from the prompt as written. Two jobs written with ids that
/// sanitise to the same name, or to names that differ only in case, are an
/// error; an id made from a prompt takes a `-N` suffix instead.
pub(super) fn job_ids(jobs: &[Job], diags: &mut Vec<Diagnostic>) -> Vec<String> {
    /// The id as written, if it is text, and its node.
    fn written(job: &Job) -> Option<(String, &Node)> {
        let node = job.get("id")?;
        match &node.value {
            Value::Str(s) => Some((s.clone(), node)),
            Value::Int(n) => Some((n.to_string(), node)),
            _ => None,
        }
    }
    // The id in lower case (the name's file on a case-insensitive disk) ->
    // the job that has it.
    let mut taken: HashMap<String, usize> = HashMap::with_capacity(jobs.len());
    let mut ids = vec![String::new(); jobs.len()];
    let mut pending = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let Some(node) = job.get("id") else {
            pending.push(i);
            continue;
        };
        let Some((raw, _)) = written(job) else {
            diags.push(
                Diagnostic::error(
                    &node.loc,
                    format!("expected text, found {}", node.describe()),
                )
                .field("id"),
            );
            pending.push(i);
            continue;
        };
        let id = sanitize(&raw);
        if id.is_empty() {
            diags.push(
                Diagnostic::error(&node.loc, format!("id \"{raw}\" has no letters or digits"))
                    .field("id"),
            );
        } else {
            match taken.entry(id.to_ascii_lowercase()) {
                Entry::Vacant(e) => {
                    e.insert(i);
                }
                Entry::Occupied(e) => {
                    let first = *e.get();
                    let (first_raw, first_node) =
                        written(&jobs[first]).expect("only ids written as text are taken");
                    let first_id = &ids[first];
                    let why = if *first_id != id {
                        format!(" as `{first_id}`: {SAME_IN_CASE}")
                    } else if first_raw != id || raw != id {
                        format!(
                            " (`{first_raw}` and `{raw}` both become `{id}`: ids keep only letters, digits, `.`, `_` and `-`)"
                        )
                    } else {
                        String::new()
                    };
                    diags.push(
                        Diagnostic::error(
                            &node.loc,
                            format!(
                                "id `{id}` is already used by the job at {}{why}; give one of the two jobs another id",
                                first_node.loc
                            ),
                        )
                        .job(Some(&id))
                        .field("id"),
                    );
                }
            }
        }
        ids[i] = id;
    }
    // Where each stem's search for a free `-N` resumes: the ones before are
    // taken for good, so ten thousand jobs of one prompt take no longer
    // than ten thousand of different prompts.
    let mut tried: HashMap<String, u32> = HashMap::new();
    for i in pending {
        let prompt = jobs[i].get("prompt").and_then(Node::as_str).unwrap_or("");
        let slug: String = sanitize(&prompt.to_lowercase()).chars().take(32).collect();
        let slug = slug.trim_end_matches(['-', '.', '_']).to_ascii_lowercase();
        let stem = if slug.is_empty() { "job" } else { &slug };
        let n = tried.entry(stem.to_string()).or_insert(1);
        let name = |n: u32| match n {
            1 => stem.to_string(),
            n => format!("{stem}-{n}"),
        };
        let mut id = name(*n);
        while taken.contains_key(&id) {
            *n += 1;
            id = name(*n);
        }
        taken.insert(id.clone(), i);
        ids[i] = id;
    }
    ids
}

/// Keeps `[A-Za-z0-9._-]`, turns runs of anything else into one `-`, and
/// strips leading dots and dashes, so an id is always a plain file-name part
/// (`../../x` becomes `x`). At most 64 characters.
pub fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(64));
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_start_matches(['.', '-']).trim_end_matches('-');
    trimmed.chars().take(64).collect()
}

impl JobPlan {
    /// The readable id of one of the job's rows: its stem (job id and swept
    /// values) and its tail (seed, and `_dupN` for the Nth repeat of an
    /// identical request).
    pub(super) fn row_id(&self, row: &Row) -> String {
        let mut id = String::new();
        self.id_stem(row.combo, &mut id);
        push_id_tail(&mut id, self.row_seed(row), row.occurrence);
        id
    }

    /// Writes into `out` the job id and the swept values of combination
    /// `combo` but the seed: what the ids of all its seeds share.
    fn id_stem(&self, combo: u64, out: &mut String) {
        out.clear();
        out.push_str(&self.id);
        for (k, axis) in self.axes.iter().enumerate() {
            if let Axis::List { values, .. } = axis {
                if !axis.is_seed() {
                    let inner: u64 = self.axes[k + 1..].iter().map(Axis::len).product();
                    // An axis's values are distinct: `i` is the value's place in its list.
                    let i = (combo / inner % axis.len()) as usize;
                    out.push('_');
                    values[i].push_id_part(i + 1, out);
                }
            }
        }
    }

    /// The seed a row sends, as [`super::Plan::request`] resolves it.
    fn row_seed(&self, row: &Row) -> u64 {
        let mut combo = row.combo;
        for axis in self.axes.iter().rev() {
            let i = combo % axis.len();
            combo /= axis.len();
            if axis.is_seed() {
                if let ParamValue::Seed(s) = axis.value(i) {
                    return s;
                }
            }
        }
        self.base.seed.unwrap_or_else(|| row.key.derived_seed())
    }

    /// The rows sharing a stem: one combination of the non-seed values, all
    /// its seeds (the seed axis is innermost), as [`super::keys::rows`] lays them.
    fn seeds_per_stem(&self) -> u64 {
        self.axes
            .last()
            .filter(|a| a.is_seed())
            .map_or(1, Axis::len)
    }
}

/// A row id's tail: `_s{seed}`, and `_dup{n}` for a repeated request.
///
/// Every id is a stem followed by such a tail, and the clash check relies on
/// its shape: a tail holds `_s` at its start and nowhere else (its only other
/// `_` is followed by `d`). So if stem1 + tail1 = stem2 + tail2 with stem1
/// the shorter, tail2 would start inside tail1, with `_s`, after its start:
/// impossible. Two ids are equal (in lower case too, as tails are) only if
/// their stems are and their tails are.
fn push_id_tail(id: &mut String, seed: u64, occurrence: u32) {
    let _ = write!(id, "_s{seed}");
    if occurrence > 0 {
        let _ = write!(id, "_dup{occurrence}");
    }
}

/// Rows whose ids are equal, or equal but for case, to an earlier row's.
#[derive(Debug, Default)]
pub(super) struct Clashes {
    /// (earlier row, later row): one per pair of jobs, [`SHOWN_CLASHES`] at most.
    pub shown: Vec<(u32, u32)>,
    pairs: HashSet<(u32, u32)>,
    /// Every later row of a clash.
    pub count: u64,
}

impl Clashes {
    fn note(&mut self, rows: &[Row], first: u32, row: u32) {
        self.count += 1;
        let pair = (rows[first as usize].job, rows[row as usize].job);
        if self.shown.len() < SHOWN_CLASHES && self.pairs.insert(pair) {
            self.shown.push((first, row));
        }
    }
}

/// Finds rows whose ids clash. Two ids are equal (ignoring case) only if
/// their stems are and their tails are (see [`push_id_tail`]), so stems are
/// hashed once per combination of non-seed values, not once per row, and
/// only rows of stems met twice are compared by seed: a million-row seed
/// sweep of a thousand prompts hashes a thousand stems.
pub(super) fn clashes(jobs: &[JobPlan], rows: &[Row]) -> Clashes {
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    // The rows of the stem starting at `start`.
    let run = |start: usize| -> std::ops::Range<usize> {
        let first = &rows[start];
        let per = jobs[first.job as usize].seeds_per_stem();
        let len = rows[start..]
            .iter()
            .take_while(|r| r.job == first.job && r.combo / per == first.combo / per)
            .count();
        start..start + len
    };
    let stem = |start: usize, out: &mut String| {
        jobs[rows[start].job as usize].id_stem(rows[start].combo, out);
        out.make_ascii_lowercase();
    };
    let tail = |r: &Row| (jobs[r.job as usize].row_seed(r), r.occurrence);
    let runs: u64 = jobs
        .iter()
        .map(|j| j.row_count() / j.seeds_per_stem())
        .sum();
    // Hash of a stem in lower case -> where its first run starts; where
    // later runs with that hash start.
    let mut first_run: HashMap<u64, u32> = HashMap::with_capacity(runs as usize);
    let mut later_runs: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut found = Clashes::default();
    let (mut folded, mut other) = (String::new(), String::new());
    let mut start = 0;
    while start < rows.len() {
        let this = run(start);
        stem(start, &mut folded);
        let hash = hasher.hash_one(folded.as_str());
        match first_run.entry(hash) {
            Entry::Vacant(e) => {
                e.insert(start as u32);
            }
            Entry::Occupied(e) => {
                let earlier: Vec<u32> = std::iter::once(*e.get())
                    .chain(later_runs.get(&hash).into_iter().flatten().copied())
                    .filter(|&s| {
                        stem(s as usize, &mut other);
                        other == folded
                    })
                    .collect();
                later_runs.entry(hash).or_default().push(start as u32);
                // The earliest row with each tail among the runs of this stem.
                let mut tails: HashMap<(u64, u32), u32> = HashMap::new();
                for s in earlier {
                    for r in run(s as usize) {
                        tails.entry(tail(&rows[r])).or_insert(r as u32);
                    }
                }
                for r in this.clone() {
                    if let Some(&first) = tails.get(&tail(&rows[r])) {
                        found.note(rows, first, r as u32);
                    }
                }
            }
        }
        start = this.end;
    }
    found
}

/// Errors for rows whose ids are equal, or equal but for case, to an
/// earlier row's: such rows would write the same files. One error per pair
/// of jobs, [`SHOWN_CLASHES`] at most, then a count.
pub(super) fn clashing_row_ids(jobs: &[JobPlan], rows: &[Row], top: &Loc) -> Vec<Diagnostic> {
    let found = clashes(jobs, rows);
    let row_id = |r: u32| jobs[rows[r as usize].job as usize].row_id(&rows[r as usize]);
    let mut diags: Vec<Diagnostic> = found
        .shown
        .iter()
        .map(|&(a, b)| {
            let (first, job) = (
                &jobs[rows[a as usize].job as usize],
                &jobs[rows[b as usize].job as usize],
            );
            let (first_id, id) = (row_id(a), row_id(b));
            let how = if first_id == id {
                format!(
                    "has the same id as row `{first_id}` of job `{}` at {}",
                    first.id, first.loc
                )
            } else {
                format!(
                    "and row `{first_id}` of job `{}` at {} differ only in case (one file on macOS and Windows)",
                    first.id, first.loc
                )
            };
            Diagnostic::error(
                &job.loc,
                format!(
                    "its row `{id}` {how}: both would write images/{id}_N.*; give one of the two jobs another id"
                ),
            )
            .job(Some(&job.id))
            .field("id")
        })
        .collect();
    let more = found.count - found.shown.len() as u64;
    if more > 0 {
        diags.push(Diagnostic::error(
            top,
            format!(
                "{more} more rows have the id of an earlier row (one is shown per pair of jobs)"
            ),
        ));
    }
    diags
}

/// Rows that repeat an earlier row's request, as [`super::keys::rows`] finds them.
#[derive(Debug, Default)]
pub(super) struct Repeats {
    /// (earlier row, repeating row): one per pair of jobs, [`SHOWN_REPEATS`] at most.
    shown: Vec<(u32, u32)>,
    /// The pairs of jobs of `shown`.
    pairs: HashSet<(u32, u32)>,
    count: u64,
}

impl Repeats {
    /// Row `row` (of job `job`) repeats row `first` (of job `first_job`).
    pub(super) fn note(&mut self, first_job: u32, first: u32, job: u32, row: u32) {
        self.count += 1;
        if self.shown.len() < SHOWN_REPEATS && self.pairs.insert((first_job, job)) {
            self.shown.push((first, row));
        }
    }
}

/// Warnings naming rows that send the byte-identical request of an earlier
/// row: each is paid for, for the same image.
pub(super) fn repeated_requests(
    jobs: &[JobPlan],
    rows: &[Row],
    repeats: &Repeats,
    top: &Loc,
) -> Vec<Diagnostic> {
    let mut diags: Vec<Diagnostic> = repeats
        .shown
        .iter()
        .map(|&(a, b)| {
            let (a, b) = (&rows[a as usize], &rows[b as usize]);
            let (first, job) = (&jobs[a.job as usize], &jobs[b.job as usize]);
            Diagnostic::warning(
                &job.loc,
                format!(
                    "its row `{}` sends the same request as row `{}` of job `{}` at {} (same prompt, seed and parameters), and pays again for the same image; to pay once, remove one of the two, or give one another seed",
                    job.row_id(b),
                    first.row_id(a),
                    first.id,
                    first.loc
                ),
            )
            .job(Some(&job.id))
        })
        .collect();
    let more = repeats.count - repeats.shown.len() as u64;
    if more > 0 {
        diags.push(Diagnostic::warning(
            top,
            format!(
                "{more} more rows send the same request as an earlier row, each paying again for the same image; to pay once, remove the repeats or give them other seeds"
            ),
        ));
    }
    diags
}
