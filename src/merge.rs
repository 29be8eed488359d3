//! `batchgen merge DIR... --out DIR`: one results.csv and one summary.json
//! from the folders of a sharded run.
//!
//! Why this exists: a sharded run (`run --shard I/N`) writes one folder per
//! shard, each with its own journal, lock and results, so that shards on
//! different machines never share a file. Merging checks that the folders
//! are distinct shards of one plan run against one gateway, then streams
//! their results.csv files into one, in manifest order (the `row` column;
//! each shard's file is already in that order, so memory stays flat however
//! many rows there are), with file paths relative to the merged folder
//! (`../s0/images/…` for a shard beside it), so that the whole tree can be
//! moved or mounted elsewhere; summary.json adds the merged rows up as `run`
//! would and records the shard folders (`shard_dirs`, relative too), the
//! only folders outside it that `report` and `export` read.
//!
//! A merge never runs on part of a set by accident: the shard count is the
//! one each shard's journal recorded (`run --shard I/N`), and a shard of it
//! not given, or given as a folder without a journal (its run never
//! started), refuses the merge before anything is written, unless
//! `--partial` asks for the shards that are there. A shard that ran but left
//! rows not completed is merged (exit 1), and named. A folder holding no
//! journal but `I-of-N` folders stands for them ([`shards_under`]). The merged
//! folder may not be a shard or inside a run's own files
//! ([`crate::confine`]), and its files are written through temporaries that
//! a signal removes ([`crate::temps`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::confine::{self, Writes};
use crate::journal;
use crate::output::{ResultTotals, RowStatus, COLUMNS, RESULTS_CSV, SUMMARY_JSON};
use crate::plan::{Shard, Usd};
use crate::temps::{self, write_atomic, Owner};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{0} holds no batchgen run (no journal.jsonl)")]
    NoRun(PathBuf),
    #[error(
        "{0} is not a shard: its run did the whole plan (only `run --shard` folders are merged)"
    )]
    NotAShard(PathBuf),
    #[error("{dir} is a shard of another manifest (or another version of it) than {first}: only shards of one plan are merged")]
    OtherPlan { dir: PathBuf, first: PathBuf },
    #[error("{dir} was run against {this}, {first} against {that}: one merged folder holds one gateway's results")]
    OtherGateway {
        dir: PathBuf,
        first: PathBuf,
        this: String,
        that: String,
    },
    #[error("{dir} is shard {shard}, {first} is a shard of {count}: shards of one run share their count")]
    OtherCount {
        dir: PathBuf,
        shard: Shard,
        first: PathBuf,
        count: u32,
    },
    #[error("{0} and {1} are the same shard ({2})")]
    SameShard(PathBuf, PathBuf, Shard),
    /// Shards of the set not given, or given without a journal, and no
    /// `--partial`: nothing was written.
    #[error("{}", missing_text(*count, missing, no_run))]
    Missing {
        count: u32,
        missing: Vec<u32>,
        no_run: Vec<PathBuf>,
    },
    #[error("{0} holds a run (journal.jsonl): merge into a folder of its own")]
    OutIsRun(PathBuf),
    /// The merged folder would be inside a run's own files.
    #[error(transparent)]
    Refused(#[from] confine::Refused),
    #[error("{path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("cannot write {path}: {}", crate::disk::plain(source))]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `merge` wrote, as printed and as summary.json.
#[derive(Clone, Debug, Serialize)]
pub struct MergeSummary {
    pub out_dir: String,
    pub manifest: Option<String>,
    pub gateway: Option<String>,
    /// The shard folders merged, in shard order, as given.
    pub shards: Vec<String>,
    /// The same folders relative to the merged folder, as the file paths in
    /// its results.csv are: `report` and `export` read files only there.
    pub shard_dirs: Vec<String>,
    /// Shards of the run not given to the merge, or given without a
    /// journal, with `--partial` (their rows are missing).
    pub shards_missing: Vec<u32>,
    /// Shards merged whose rows are not all completed (their runs failed
    /// rows or were stopped: `run --shard I/N` again resumes them).
    pub shards_incomplete: Vec<u32>,
    #[serde(flatten)]
    pub totals: ResultTotals,
    pub cost_usd_by_kind: BTreeMap<String, Usd>,
    /// How many shards the run was split into.
    pub shard_count: u32,
    /// As a run's summary.json says them: the merge's exit code (0: every
    /// row of every shard completed; 1: not), the batchgen that merged, and
    /// when (RFC 3339).
    pub exit_code: u8,
    pub version: String,
    pub started_at: String,
    pub finished_at: String,
}

impl MergeSummary {
    pub fn to_text(&self) -> String {
        let t = &self.totals;
        let mut out = format!(
            "merged {} shard(s) into {}: {} · {} images · {} spent",
            self.shards.len(),
            self.out_dir,
            t.rows_line(),
            t.images,
            t.cost_usd
        );
        if t.possibly_charged_usd > Usd::default() {
            out.push_str(&format!(
                " · {} possibly charged for rows not completed",
                t.possibly_charged_usd
            ));
        }
        out.push('\n');
        out.push_str(&t.detail_lines());
        if !self.shards_missing.is_empty() {
            let missing: Vec<String> = self.shards_missing.iter().map(u32::to_string).collect();
            out.push_str(&format!(
                "  missing: shard(s) {} were not given, or never ran (--partial): their rows are not in the results\n",
                missing.join(", ")
            ));
        }
        if !self.shards_incomplete.is_empty() {
            let count = self.shard_count;
            let names: Vec<String> = self
                .shards_incomplete
                .iter()
                .map(|i| format!("{i}-of-{count}"))
                .collect();
            out.push_str(&format!(
                "  not completed: shard(s) {} have rows not completed; `run --shard I/{count}` again resumes them, then merge again\n",
                names.join(", ")
            ));
        }
        out
    }

    /// Every row of the whole plan is there, completed.
    pub fn complete(&self) -> bool {
        self.shards_missing.is_empty()
            && self.totals.count(RowStatus::Completed) == self.totals.rows
    }
}

/// The refusal's text: which shards of `count` are missing, which folders
/// hold no run, and what to do.
fn missing_text(count: u32, missing: &[u32], no_run: &[PathBuf]) -> String {
    let mut why: Vec<String> = Vec::new();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|i| format!("{i}-of-{count}")).collect();
        why.push(format!(
            "shard(s) {} missing (the run was split into {count})",
            names.join(", ")
        ));
    }
    why.extend(no_run.iter().map(|dir| {
        format!(
            "{} holds no batchgen run (no journal: its run never started)",
            dir.display()
        )
    }));
    format!("{}: nothing was written. Merge once every shard has run (`batchgen status` on a shard's folder says how far it is), or give --partial to merge the shards that are there (exit 1, the missing shards' rows left out)", why.join("; "))
}

/// The `I-of-N` folders directly inside `dir`, in shard order, if `dir`
/// holds no run of its own: what a parent folder given to `merge` stands
/// for (as a parent prefix does on a bucket). Empty otherwise.
pub fn shards_under(dir: &Path) -> Vec<PathBuf> {
    if dir.join(journal::FILE_NAME).exists() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let (i, n) = name.split_once("-of-")?;
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            (digits(i) && digits(n)).then(|| (i.parse().unwrap_or(u64::MAX), e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// One shard folder, checked.
struct ShardDir {
    dir: PathBuf,
    shard: Shard,
}

/// Merges the shard folders `dirs` into `out`. Without `partial`, every
/// shard of the set must be among them, each with its journal.
pub fn merge(dirs: &[PathBuf], out: &Path, partial: bool) -> Result<MergeSummary, MergeError> {
    let started_ms = journal::now_ms();
    if out.join(journal::FILE_NAME).exists() {
        return Err(MergeError::OutIsRun(out.to_path_buf()));
    }
    let inputs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    confine::check_output("--out", out, &inputs, Writes::Merged)?;
    let mut shards: Vec<ShardDir> = Vec::new();
    let mut first: Option<(PathBuf, journal::Replay)> = None;
    let mut no_run: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if !dir.join(journal::FILE_NAME).is_file() {
            no_run.push(dir.clone());
            continue;
        }
        let replay = journal::read(dir).map_err(|e| MergeError::Read {
            path: dir.clone(),
            why: e.to_string(),
        })?;
        let (Some(shard), Some(_)) = (replay.last_run_shard, &replay.last_run_plan) else {
            return Err(MergeError::NotAShard(dir.clone()));
        };
        if let Some((first_dir, f)) = &first {
            if f.last_run_plan != replay.last_run_plan {
                return Err(MergeError::OtherPlan {
                    dir: dir.clone(),
                    first: first_dir.clone(),
                });
            }
            // Two base URLs on one origin are two gateways too (shards of
            // versions that recorded origins only have none to compare).
            let other_base =
                matches!((&f.base_url, &replay.base_url), (Some(a), Some(b)) if a != b);
            if f.gateway != replay.gateway || other_base {
                let name = |r: &journal::Replay| {
                    r.base_url.clone().or(r.gateway.clone()).unwrap_or_default()
                };
                return Err(MergeError::OtherGateway {
                    dir: dir.clone(),
                    first: first_dir.clone(),
                    this: name(&replay),
                    that: name(f),
                });
            }
            let count = f.last_run_shard.map_or(0, |s| s.count);
            if shard.count != count {
                return Err(MergeError::OtherCount {
                    dir: dir.clone(),
                    shard,
                    first: first_dir.clone(),
                    count,
                });
            }
        }
        if let Some(twin) = shards.iter().find(|s| s.shard == shard) {
            return Err(MergeError::SameShard(twin.dir.clone(), dir.clone(), shard));
        }
        shards.push(ShardDir {
            dir: dir.clone(),
            shard,
        });
        if first.is_none() {
            // What the runs said of themselves is kept, not every row's record.
            let mut runs = replay;
            runs.records = Default::default();
            first = Some((dir.clone(), runs));
        }
    }
    let Some((_, first)) = first else {
        return Err(match no_run.into_iter().next() {
            Some(dir) => MergeError::NoRun(dir),
            None => MergeError::Read {
                path: out.to_path_buf(),
                why: "no shard folders given".into(),
            },
        });
    };
    shards.sort_by_key(|s| s.shard.index);
    let count = shards[0].shard.count;
    let shards_missing: Vec<u32> = (0..count)
        .filter(|i| !shards.iter().any(|s| s.shard.index == *i))
        .collect();
    if !partial && (!shards_missing.is_empty() || !no_run.is_empty()) {
        return Err(MergeError::Missing {
            count,
            missing: shards_missing,
            no_run,
        });
    }

    crate::disk::create_dir_durable(out).map_err(|source| MergeError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    temps::sweep(out, Owner::Merge, false);
    let real_out = std::fs::canonicalize(out).map_err(|source| MergeError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut totals = ResultTotals::default();
    let mut by_kind: BTreeMap<String, Usd> = BTreeMap::new();
    let mut readers: Vec<ShardRows> = shards
        .iter()
        .map(|s| ShardRows::open(&s.dir, &real_out))
        .collect::<Result<_, _>>()?;
    let mut incomplete = vec![false; readers.len()];
    let results = out.join(RESULTS_CSV);
    let mut failure: Option<MergeError> = None;
    write_atomic(Owner::Merge, &results, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(COLUMNS)?;
        loop {
            // The next row in manifest order is the least among the shards' next rows.
            let next = readers
                .iter_mut()
                .enumerate()
                .filter_map(|(i, r)| match r.peek() {
                    Ok(Some(row)) => Some(Ok((row.index, i))),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>();
            let next = match next {
                Ok(n) => n.into_iter().min(),
                Err(e) => {
                    failure = Some(e);
                    return Err(std::io::Error::other("a shard's results could not be read"));
                }
            };
            let Some((_, i)) = next else { break };
            let row = readers[i].take();
            incomplete[i] |= row.status != RowStatus::Completed;
            totals.add_parts(
                row.status,
                &row.fields[row.error_code],
                row.cost,
                row.possibly_charged,
                row.images,
            );
            totals.cached += u64::from(row.fields[column("cached")] == "true");
            if row.status == RowStatus::Completed {
                let k = by_kind.entry(row.fields[row.kind].clone()).or_default();
                *k = *k + row.cost;
            }
            csv.write_record(&row.fields)?;
        }
        csv.flush()
    })
    .map_err(|source| {
        failure.take().unwrap_or(MergeError::Write {
            path: results.clone(),
            source,
        })
    })?;
    let summary = MergeSummary {
        out_dir: out.display().to_string(),
        manifest: first.last_run_manifest.clone(),
        gateway: first.gateway.clone(),
        shards: shards.iter().map(|s| s.dir.display().to_string()).collect(),
        shard_dirs: readers
            .iter()
            .map(|r| r.prefix.display().to_string())
            .collect(),
        shards_missing,
        shards_incomplete: shards
            .iter()
            .zip(&incomplete)
            .filter(|(_, i)| **i)
            .map(|(s, _)| s.shard.index)
            .collect(),
        totals,
        cost_usd_by_kind: by_kind,
        shard_count: count,
        exit_code: crate::vocab::exit_code::OK,
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: crate::vocab::rfc3339(started_ms),
        finished_at: crate::vocab::rfc3339(journal::now_ms()),
    };
    let mut summary = summary;
    if !summary.complete() {
        summary.exit_code = crate::vocab::exit_code::ROWS_FAILED;
    }
    let json = serde_json::to_vec_pretty(&summary).expect("a summary serialises");
    let path = out.join(SUMMARY_JSON);
    write_atomic(Owner::Merge, &path, |w| {
        w.write_all(&json)?;
        w.write_all(b"\n")
    })
    .map_err(|source| MergeError::Write { path, source })?;
    Ok(summary)
}

/// One results.csv line, in `COLUMNS` order, with what the totals need.
struct Line {
    index: u64,
    fields: Vec<String>,
    status: RowStatus,
    cost: Usd,
    possibly_charged: Usd,
    images: u64,
    error_code: usize,
    kind: usize,
}

/// A shard's results.csv, read a line at a time.
struct ShardRows {
    path: PathBuf,
    reader: csv::Reader<std::fs::File>,
    /// Where each of `COLUMNS` is in this file.
    at: Vec<Option<usize>>,
    /// The shard folder as seen from the merged folder (relative).
    prefix: PathBuf,
    next: Option<Line>,
    done: bool,
}

impl ShardRows {
    /// `out` is the merged folder, resolved.
    fn open(dir: &Path, out: &Path) -> Result<ShardRows, MergeError> {
        let path = dir.join(RESULTS_CSV);
        let bad = |why: String| MergeError::Read {
            path: path.clone(),
            why,
        };
        let real = std::fs::canonicalize(dir).map_err(|e| MergeError::Read {
            path: dir.to_path_buf(),
            why: crate::disk::plain(&e),
        })?;
        let mut reader = csv::Reader::from_path(&path).map_err(|e| bad(e.to_string()))?;
        let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
        let at: Vec<Option<usize>> = COLUMNS
            .iter()
            .map(|c| headers.iter().position(|h| h == *c))
            .collect();
        for required in ["row", "status", "files", "kind"] {
            if at[column(required)].is_none() {
                return Err(bad(format!(
                    "no `{required}` column (written by an older batchgen?)"
                )));
            }
        }
        Ok(ShardRows {
            prefix: confine::relative(out, &real),
            path,
            reader,
            at,
            next: None,
            done: false,
        })
    }

    fn peek(&mut self) -> Result<Option<&Line>, MergeError> {
        if self.next.is_none() && !self.done {
            let mut record = csv::StringRecord::new();
            let more = self
                .reader
                .read_record(&mut record)
                .map_err(|e| MergeError::Read {
                    path: self.path.clone(),
                    why: e.to_string(),
                })?;
            if more {
                self.next = Some(self.line(&record)?);
            } else {
                self.done = true;
            }
        }
        Ok(self.next.as_ref())
    }

    fn take(&mut self) -> Line {
        self.next.take().expect("peeked first")
    }

    fn line(&self, record: &csv::StringRecord) -> Result<Line, MergeError> {
        let mut fields: Vec<String> = self
            .at
            .iter()
            .map(|i| i.and_then(|i| record.get(i)).unwrap_or("").to_string())
            .collect();
        let bad = |what: &str| MergeError::Read {
            path: self.path.clone(),
            why: format!("line {}: {what}", record.position().map_or(0, |p| p.line())),
        };
        let index = fields[column("row")]
            .parse()
            .map_err(|_| bad("no row number"))?;
        let status = RowStatus::parse(&fields[column("status")]).ok_or_else(|| bad("no status"))?;
        let money = |c: &str| {
            let text = &fields[column(c)];
            if text.is_empty() {
                Ok(Usd::default())
            } else {
                text.parse::<f64>()
                    .ok()
                    .and_then(Usd::from_dollars)
                    .ok_or_else(|| bad(c))
            }
        };
        let (cost, possibly_charged) = (money("cost_usd")?, money("possibly_charged_usd")?);
        if fields[column("cached")].is_empty() {
            fields[column("cached")] = "false".into(); // a shard from before the cache
        }
        let files = &mut fields[column("files")];
        let images = if files.is_empty() {
            0
        } else {
            let moved: Vec<String> = files
                .split(';')
                .map(|f| self.prefix.join(f).to_string_lossy().into_owned())
                .collect();
            *files = moved.join(";");
            moved.len() as u64
        };
        Ok(Line {
            index,
            fields,
            status,
            cost,
            possibly_charged,
            images,
            error_code: column("error_code"),
            kind: column("kind"),
        })
    }
}

fn column(name: &str) -> usize {
    COLUMNS
        .iter()
        .position(|c| *c == name)
        .expect("a results.csv column")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_what_is_missing_and_what_never_ran() {
        let text = missing_text(8, &[3, 5], &[PathBuf::from("s/5-of-8")]);
        assert!(text.starts_with("shard(s) 3-of-8, 5-of-8 missing (the run was split into 8); s/5-of-8 holds no batchgen run"), "{text}");
        // A folder without a run beside a whole set is named alone.
        let text = missing_text(2, &[], &[PathBuf::from("junk")]);
        assert!(text.starts_with("junk holds no batchgen run (no journal: its run never started): nothing was written."), "{text}");
        assert!(text.contains("--partial"));
    }
}
