//! Replay: the journal's lines folded by row key into what is known of each
//! row, and compaction, which writes that fold back as one line per row.
//!
//! Why this exists apart: `status`, `merge` and a resuming run read a
//! journal without writing it ([`read`]), and the writer folds every line it
//! commits into the same [`Replay`]; the fold is the one place that says
//! what a sequence of lines means. [`Records`] is how later stages read the
//! fold (the journal, the lower layer, defines it, as a searcher defines its
//! sink), so output depends on the journal and never the other way round.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Read};
use std::path::Path;

use super::error::JournalError;
use super::format::{Entry, Held, Left, Record, State, FILE_NAME};
use crate::vocab::Key;

/// Replayed journal: the records by key, and what the runs said of themselves.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// Boxed: a million-row map then holds 16 bytes per slot, not a record's 200.
    pub records: HashMap<Key, Box<Record>>,
    pub last_run_rows: Option<u64>,
    pub last_run_manifest: Option<String>,
    pub last_run_plan: Option<String>,
    pub last_run_shard: Option<crate::vocab::Shard>,
    /// The gateway the folder belongs to (the first one a run recorded).
    pub gateway: Option<String>,
    /// Its base URL (the first one a run recorded; runs of versions that
    /// recorded origins only have none).
    pub base_url: Option<String>,
    pub lines: usize,
    /// The run line that named the gateway (and its base URL, once one
    /// did), and the newest run line: what compaction keeps of the runs.
    first_run: Option<Box<Entry>>,
    last_run: Option<Box<Entry>>,
    /// The wall time of the runs before the newest one, in milliseconds.
    runs_wall_ms: u64,
    /// The newest run's start, and the latest time any line since names.
    open_run: Option<(u64, u64)>,
}

impl Replay {
    /// Whether most of the lines are history that one line per row would
    /// replace (a finished run leaves three per row).
    pub(super) fn worth_compacting(&self) -> bool {
        self.lines >= 2 * self.records.len() + COMPACT_SLACK
    }

    /// The lines of a compacted journal: the run lines kept, then each row's
    /// record, by key. Folding them gives this replay back.
    pub(super) fn compacted(&self) -> impl Iterator<Item = Entry> + '_ {
        let mut keys: Vec<Key> = self.records.keys().copied().collect();
        keys.sort_unstable();
        let runs = match (&self.first_run, &self.last_run) {
            (Some(a), Some(b)) if a == b => vec![a],
            (a, b) => a.iter().chain(b.iter()).collect(),
        };
        runs.into_iter()
            .map(|e| Entry::clone(e))
            .chain(keys.into_iter().map(|key| Entry::Row {
                key,
                row: self.records[&key].clone(),
            }))
    }

    /// Writes this replay as a local journal, `dir/journal.jsonl`, one
    /// line per row (as compaction leaves it), atomically: how a reader
    /// works on a copy of a journal kept on a store.
    pub fn write_local(&self, dir: &std::path::Path) -> std::io::Result<()> {
        crate::disk::write_atomic(&dir.join(super::FILE_NAME), |w| {
            self.compacted()
                .try_for_each(|entry| entry.write_line(&mut *w))
        })
    }

    /// The wall time of every run this journal records, in milliseconds:
    /// a run counts from its start to the latest time its lines name (a
    /// run's end writes no line), and a run line that carries the total of
    /// the runs before it is taken at its word.
    pub fn wall_ms(&self) -> u64 {
        let newest = self.open_run.map_or(0, |(start, last)| last - start);
        self.runs_wall_ms.saturating_add(newest)
    }

    /// Keeps the time of runs: a run line closes the one before it.
    fn time_runs(&mut self, entry: &Entry) {
        let at = match entry {
            Entry::Run {
                at_ms,
                wall_before_ms,
                ..
            } => {
                self.runs_wall_ms = match wall_before_ms {
                    Some(before) => *before,
                    None => self.wall_ms(),
                };
                self.open_run = Some((*at_ms, *at_ms));
                return;
            }
            Entry::Intent { at_ms, .. }
            | Entry::Submitted { at_ms, .. }
            | Entry::Unfinished { at_ms, .. }
            | Entry::Done { at_ms, .. }
            | Entry::Failed { at_ms, .. } => *at_ms,
            Entry::Row { row, .. } => row.finished_at_ms.max(row.submitted_at_ms).unwrap_or(0),
            Entry::NotAccepted { .. } => return,
        };
        if let Some((_, last)) = &mut self.open_run {
            *last = (*last).max(at);
        }
    }

    pub fn apply(&mut self, entry: Entry) {
        self.lines += 1;
        self.time_runs(&entry);
        if let Entry::Run {
            gateway, base_url, ..
        } = &entry
        {
            let names_more = (self.gateway.is_none() && gateway.is_some())
                || (self.base_url.is_none() && base_url.is_some());
            if self.first_run.is_none() || names_more {
                self.first_run = Some(Box::new(entry.clone()));
            }
            self.last_run = Some(Box::new(entry.clone()));
        }
        match entry {
            Entry::Run {
                rows,
                manifest,
                gateway,
                base_url,
                plan,
                shard,
                ..
            } => {
                self.last_run_rows = Some(rows);
                self.last_run_manifest = Some(manifest);
                self.last_run_plan = plan;
                self.last_run_shard = shard;
                if self.gateway.is_none() {
                    self.gateway = gateway;
                }
                if self.base_url.is_none() {
                    self.base_url = base_url;
                }
            }
            Entry::Intent {
                key, price_micros, ..
            } => {
                let r = self.records.entry(key).or_default();
                // A new attempt: the earlier one's charge, possible or paid,
                // is history.
                r.earlier_micros += match &r.state {
                    State::Done { cost_micros, .. } => *cost_micros,
                    _ => r.at_stake_micros(),
                };
                r.attempts += 1;
                r.state = State::Uncertain;
                // A new submit: whatever an earlier one left is not this one's.
                r.ticket = None;
                r.images.clear();
                r.submitted_at_ms = None;
                r.finished_at_ms = None;
                r.price_micros = price_micros;
                r.left = None;
            }
            Entry::NotAccepted { key, .. } => {
                let r = self.records.entry(key).or_default();
                r.state = State::Pending;
                r.ticket = None;
                r.images.clear();
            }
            Entry::Submitted {
                key,
                at_ms,
                ticket,
                images,
            } => {
                let r = self.records.entry(key).or_default();
                r.state = State::Submitted;
                r.ticket = ticket.map(|t| Box::new(Held::from(t)));
                r.images = images;
                r.submitted_at_ms = Some(at_ms);
                r.finished_at_ms = None;
                r.left = None;
            }
            Entry::Unfinished {
                key, code, message, ..
            } => {
                let r = self.records.entry(key).or_default();
                r.left = Some(Box::new(Left { code, message }));
            }
            Entry::Done {
                key,
                at_ms,
                files,
                sha256,
                stamps,
                cost_micros,
                seen_ms,
                cached,
            } => {
                let r = self.records.entry(key).or_default();
                if cached {
                    // Taken from the cache without an intent line: what the
                    // attempt before it may have cost stays reported.
                    r.earlier_micros += r.at_stake_micros();
                }
                r.seen_ms = seen_ms;
                r.state = State::Done {
                    files,
                    sha256,
                    stamps,
                    cost_micros,
                    cached,
                };
                r.finished_at_ms = Some(at_ms);
                r.left = None;
            }
            Entry::Row { key, row } => {
                self.records.insert(key, row);
            }
            Entry::Failed {
                key,
                at_ms,
                code,
                message,
                charged,
                cost_micros,
            } => {
                let r = self.records.entry(key).or_default();
                r.state = State::Failed {
                    code,
                    message,
                    charged,
                    cost_micros,
                };
                r.finished_at_ms = Some(at_ms);
                r.left = None;
            }
        }
    }
}

/// Lines of history tolerated beyond two per row before a run compacts.
const COMPACT_SLACK: usize = 8;

/// Folds the whole lines `from` gives, one at a time (a million-row journal
/// is never held whole); returns the replay and the length of the whole
/// lines (what follows is a line cut short by a crash).
pub(super) fn parse(path: &Path, from: impl Read) -> Result<(Replay, u64), JournalError> {
    let mut replay = Replay::default();
    let whole = parse_into(&mut replay, path, from)?;
    Ok((replay, whole))
}

/// [`parse`], folding into a replay already begun (the journal on a store
/// is a checkpoint and segments, each folded in turn); returns the length
/// of the whole lines `from` gave.
pub(super) fn parse_into(
    replay: &mut Replay,
    path: &Path,
    from: impl Read,
) -> Result<u64, JournalError> {
    let mut reader = std::io::BufReader::with_capacity(1 << 16, from);
    let mut line = Vec::new();
    let mut whole = 0u64;
    for n in 1.. {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| JournalError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 || line.last() != Some(&b'\n') {
            break; // the end, or a last line cut short
        }
        whole += read as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry: Entry = serde_json::from_slice(&line).map_err(|e| JournalError::Corrupt {
            path: path.to_path_buf(),
            line: n,
            reason: e.to_string(),
        })?;
        replay.apply(entry);
    }
    Ok(whole)
}

/// Reads a journal without changing it (a missing file is an empty journal;
/// a line cut short at the end is ignored).
pub fn read(dir: &Path) -> Result<Replay, JournalError> {
    let path = dir.join(FILE_NAME);
    match File::open(&path) {
        Ok(file) => parse(&path, file).map(|(replay, _)| replay),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Replay::default()),
        Err(source) => Err(JournalError::Io { path, source }),
    }
}

/// Where results read the journal's records: a replay held whole, or a
/// journal still being written, read a few thousand rows at a time so that
/// its writer is never held up long and nothing is copied whole.
pub trait Records {
    /// Calls `f` with the record of each of `keys`, in order.
    fn each(&self, keys: &[Key], f: &mut dyn FnMut(Option<&Record>));
}

impl Records for Replay {
    fn each(&self, keys: &[Key], f: &mut dyn FnMut(Option<&Record>)) {
        for key in keys {
            f(self.records.get(key).map(|r| &**r));
        }
    }
}
