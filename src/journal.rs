//! The run's memory: an append-only journal in the output folder, and its
//! replay on resume.
//!
//! Why this exists: users pay per request, and a run can be killed at any
//! moment. Every step that costs money or produces files is written here, and
//! synced to disk, *before* the next step depends on it:
//!
//! - `intent` before a submit is sent: if nothing follows it, the request may
//!   have been accepted, and the row is never resubmitted without the user's
//!   say-so (`--retry-failed`);
//! - `not_accepted` when a submit provably was not accepted (connection
//!   refused, 429, 5xx, status `ERROR`): the row may be submitted again;
//! - `submitted` with the request id the moment it is known: a resumed run
//!   polls it instead of paying again;
//! - `done` once the files are renamed into place, with their SHA-256;
//! - `failed` with the error and whether it may have been charged.
//!
//! Replay is a fold over those lines by row key. A crash can cut the last line
//! short; it is ignored, and removed before new lines are appended.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::api::Ticket;

pub const FILE_NAME: &str = "journal.jsonl";

/// Whether a failed row may have cost money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Charged {
    No,
    Possibly,
}

/// One journal line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum Entry {
    /// A run started (informational; `rows` is the size of its plan).
    Run {
        at_ms: u64,
        manifest: String,
        rows: u64,
        version: String,
    },
    Intent {
        key: String,
        at_ms: u64,
    },
    NotAccepted {
        key: String,
        code: String,
    },
    Submitted {
        key: String,
        at_ms: u64,
        /// Absent when the submit answered with finished images.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<Ticket>,
        /// Image URLs the submit itself returned, if any.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<String>,
    },
    Done {
        key: String,
        at_ms: u64,
        /// Relative to the output folder.
        files: Vec<String>,
        sha256: Vec<String>,
        cost_micros: u64,
    },
    Failed {
        key: String,
        at_ms: u64,
        code: String,
        message: String,
        charged: Charged,
        /// The cost the failure may have incurred.
        #[serde(default)]
        cost_micros: u64,
    },
}

/// What the journal knows of one row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub state: State,
    /// Submit attempts (intent lines), over all runs.
    pub attempts: u32,
    pub ticket: Option<Ticket>,
    pub images: Vec<String>,
    pub submitted_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub enum State {
    /// Never accepted: may be submitted.
    #[default]
    Pending,
    /// A submit was sent and nothing is known of its fate: may have been accepted.
    Uncertain,
    /// Accepted, result not yet on disk.
    Submitted,
    Done {
        files: Vec<String>,
        sha256: Vec<String>,
        cost_micros: u64,
    },
    Failed {
        code: String,
        message: String,
        charged: Charged,
        cost_micros: u64,
    },
}

/// Replayed journal: the records by key, and the newest run's plan size.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    pub records: HashMap<String, Record>,
    pub last_run_rows: Option<u64>,
    pub last_run_manifest: Option<String>,
    pub lines: usize,
}

impl Replay {
    pub fn apply(&mut self, entry: Entry) {
        self.lines += 1;
        match entry {
            Entry::Run { rows, manifest, .. } => {
                self.last_run_rows = Some(rows);
                self.last_run_manifest = Some(manifest);
            }
            Entry::Intent { key, .. } => {
                let r = self.records.entry(key).or_default();
                r.attempts += 1;
                r.state = State::Uncertain;
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
                r.ticket = ticket;
                r.images = images;
                r.submitted_at_ms = Some(at_ms);
                r.finished_at_ms = None;
            }
            Entry::Done {
                key,
                at_ms,
                files,
                sha256,
                cost_micros,
            } => {
                let r = self.records.entry(key).or_default();
                r.state = State::Done {
                    files,
                    sha256,
                    cost_micros,
                };
                r.finished_at_ms = Some(at_ms);
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
            }
        }
    }
}

/// Rows by state, money and failures, in one pass over a replayed journal.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub pending: u64,
    pub uncertain: u64,
    pub in_flight: u64,
    pub completed: u64,
    pub failed: u64,
    pub cost_micros: u64,
    pub possibly_charged_micros: u64,
    pub failures_by_code: std::collections::BTreeMap<String, u64>,
}

impl Replay {
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for rec in self.records.values() {
            match &rec.state {
                State::Pending => t.pending += 1,
                State::Uncertain => t.uncertain += 1,
                State::Submitted => t.in_flight += 1,
                State::Done { cost_micros, .. } => {
                    t.completed += 1;
                    t.cost_micros += cost_micros;
                }
                State::Failed {
                    code,
                    charged,
                    cost_micros,
                    ..
                } => {
                    t.failed += 1;
                    *t.failures_by_code.entry(code.clone()).or_default() += 1;
                    if *charged == Charged::Possibly {
                        t.possibly_charged_micros += cost_micros;
                    }
                }
            }
        }
        t
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot use the journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the journal {path} is damaged at line {line} (only the last line may be cut short): {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Reads a journal; a missing file is an empty journal.
pub fn replay(dir: &Path) -> Result<Replay, JournalError> {
    let path = dir.join(FILE_NAME);
    let io = |source| JournalError::Io {
        path: path.clone(),
        source,
    };
    let mut text = String::new();
    match File::open(&path) {
        Ok(mut f) => {
            f.read_to_string(&mut text).map_err(io)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replay::default()),
        Err(e) => return Err(io(e)),
    }
    let mut replay = Replay::default();
    // Only whole lines count: a crash may leave the last one without its newline.
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    for (n, line) in whole.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_str(line).map_err(|e| JournalError::Corrupt {
            path: path.clone(),
            line: n + 1,
            reason: e.to_string(),
        })?;
        replay.apply(entry);
    }
    Ok(replay)
}

/// The journal open for appending. Every line is synced before `append` returns.
///
/// Writes are small and synchronous (a `Mutex` around the file): a line must
/// be on disk before the step it guards, so there is nothing to gain from
/// making them asynchronous.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Opens (or creates) `dir/journal.jsonl`, dropping a last line cut short.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        let path = dir.join(FILE_NAME);
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if keep < bytes.len() {
            file.set_len(keep as u64).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        crate::api::sync_dir(dir);
        Ok(Journal {
            path,
            file: Mutex::new(file),
        })
    }

    pub fn append(&self, entry: &Entry) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(entry).expect("journal entries serialise");
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Kind;

    fn ticket(id: &str) -> Ticket {
        Ticket {
            kind: Kind::TextToImage,
            request_id: id.into(),
            status_url: None,
            response_url: None,
        }
    }

    #[test]
    fn replay_folds_the_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let k = |s: &str| s.to_string();
        for e in [
            Entry::Intent {
                key: k("a"),
                at_ms: 1,
            },
            Entry::NotAccepted {
                key: k("a"),
                code: k("HTTP_500"),
            },
            Entry::Intent {
                key: k("a"),
                at_ms: 2,
            },
            Entry::Submitted {
                key: k("a"),
                at_ms: 3,
                ticket: Some(ticket("r1")),
                images: vec![],
            },
            Entry::Done {
                key: k("a"),
                at_ms: 9,
                files: vec![k("images/a_0.png")],
                sha256: vec![k("ff")],
                cost_micros: 50_000,
            },
            Entry::Intent {
                key: k("b"),
                at_ms: 4,
            },
            Entry::Intent {
                key: k("c"),
                at_ms: 5,
            },
            Entry::Submitted {
                key: k("c"),
                at_ms: 6,
                ticket: Some(ticket("r2")),
                images: vec![],
            },
        ] {
            j.append(&e).unwrap();
        }
        let r = replay(dir.path()).unwrap();
        let t = r.tally();
        assert_eq!(
            (t.completed, t.uncertain, t.in_flight, t.cost_micros),
            (1, 1, 1, 50_000)
        );
        let a = &r.records["a"];
        assert_eq!(a.attempts, 2);
        assert!(matches!(
            &a.state,
            State::Done {
                cost_micros: 50_000,
                ..
            }
        ));
        assert_eq!((a.submitted_at_ms, a.finished_at_ms), (Some(3), Some(9)));
        assert_eq!(
            r.records["b"].state,
            State::Uncertain,
            "an intent alone may have been accepted"
        );
        assert_eq!(r.records["c"].state, State::Submitted);
        assert_eq!(r.records["c"].ticket.as_ref().unwrap().request_id, "r2");
    }

    #[test]
    fn a_line_cut_by_a_crash_is_ignored_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.append(&Entry::Intent {
            key: "a".into(),
            at_ms: 1,
        })
        .unwrap();
        drop(j);
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"e":"submitted","key":"a","at_ms":2,"tic"#)
            .unwrap();
        drop(f);
        assert_eq!(
            replay(dir.path()).unwrap().records["a"].state,
            State::Uncertain
        );
        let j = Journal::open(dir.path()).unwrap();
        j.append(&Entry::NotAccepted {
            key: "a".into(),
            code: "X".into(),
        })
        .unwrap();
        let r = replay(dir.path()).unwrap();
        assert_eq!(r.records["a"].state, State::Pending);
        assert_eq!(r.lines, 2);
    }

    #[test]
    fn damage_before_the_last_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "garbage\n{\"e\":\"intent\",\"key\":\"a\",\"at_ms\":1}\n",
        )
        .unwrap();
        let err = replay(dir.path()).unwrap_err();
        assert!(err.to_string().contains("damaged at line 1"), "{err}");
    }

    #[test]
    fn a_missing_journal_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(replay(dir.path()).unwrap().records.is_empty());
    }
}
