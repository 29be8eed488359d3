//! The run's memory: an append-only journal in the output folder, and its
//! replay on resume.
//!
//! Why this exists: users pay per request, and a run can be killed at any
//! moment. Every step that costs money or produces files is written here, and
//! synced to disk, *before* the next step depends on it:
//!
//! - `run` when a run starts, with the gateway it talks to: one output folder
//!   belongs to one gateway;
//! - `intent` before a submit is sent: if nothing follows it, the request may
//!   have been accepted, and the row is never resubmitted without the user's
//!   say-so (`--retry-failed`). An intent forgets any earlier request id;
//! - `not_accepted` when a submit provably was not accepted (connection
//!   refused, 429, 503, the documented 500, status `ERROR`): the row may be
//!   submitted again;
//! - `submitted` with the request id the moment it is known: a resumed run
//!   polls it instead of paying again;
//! - `unfinished` when a run leaves a row without a verdict (it gave up
//!   submitting, or could not collect an accepted request): a plain rerun
//!   picks it up where it stands;
//! - `done` once the files are renamed into place, with their SHA-256;
//! - `failed` with the vendor's (or our) final verdict and whether it may
//!   have been charged;
//! - `row`: a row's whole record. When most lines are history (a finished
//!   run leaves three per row), the next run replaces the journal with the
//!   run lines and one `row` line per row, so that startup stays fast as
//!   nightly runs accumulate.
//!
//! Replay is a fold over those lines by row key, over bytes: a crash can cut
//! the last line short, even inside a UTF-8 character; [`Journal::open`]
//! removes such a tail before anything reads the journal, and keeps the fold
//! in memory, up to date with every line it appends, so a run reads the file
//! once.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::api::Ticket;
use crate::plan::Key;

pub const FILE_NAME: &str = "journal.jsonl";

/// Whether a failed row may have cost money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Charged {
    No,
    Possibly,
    /// Paid for: the gateway accepted and finished it (its result was lost).
    Yes,
}

impl Charged {
    /// Whether it counts as money that may be gone.
    pub fn maybe(self) -> bool {
        self != Charged::No
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One journal line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum Entry {
    /// A run started (`rows` is the size of its plan).
    Run {
        at_ms: u64,
        manifest: String,
        rows: u64,
        version: String,
        /// The gateway's origin, or `simulated` (absent in older journals).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<String>,
        /// The gateway's base URL, normalised (see [`crate::gateway`]);
        /// absent for the simulator and in journals of versions that knew
        /// only origins.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_url: Option<String>,
        /// The digest of the whole plan's row keys (shards of one manifest share it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<String>,
        /// The shard this run did, if it did one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<crate::plan::Shard>,
    },
    Intent {
        key: Key,
        at_ms: u64,
        /// What the submit may cost (absent in older journals).
        #[serde(default, skip_serializing_if = "is_zero")]
        price_micros: u64,
    },
    NotAccepted {
        key: Key,
        code: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        message: String,
    },
    Submitted {
        key: Key,
        /// When the accepted submit was sent.
        at_ms: u64,
        /// Absent when the submit answered with finished images.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<Ticket>,
        /// Image URLs the submit itself returned, if any.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<String>,
    },
    /// The run left the row without a verdict; where it stands is unchanged.
    Unfinished {
        key: Key,
        at_ms: u64,
        code: String,
        message: String,
    },
    Done {
        key: Key,
        at_ms: u64,
        /// Relative to the output folder.
        files: Vec<String>,
        sha256: Vec<String>,
        /// Each file's size and modification time (ns since the epoch) as
        /// written: a rerun checks these instead of hashing the files again.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stamps: Vec<[u64; 2]>,
        cost_micros: u64,
        /// When its request was last seen pending and first seen done, in
        /// milliseconds since its submit (absent if it was never polled).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seen_ms: Option<[u64; 2]>,
        /// Taken from the cache (`--cache`), at no cost.
        #[serde(default, skip_serializing_if = "is_false")]
        cached: bool,
    },
    Failed {
        key: Key,
        at_ms: u64,
        code: String,
        message: String,
        charged: Charged,
        /// The cost the failure may have incurred.
        #[serde(default)]
        cost_micros: u64,
    },
    /// A row's whole record, as the lines before it folded it: what
    /// compaction writes in place of the row's history.
    Row { key: Key, row: Box<Record> },
}

/// Why a run left a row without a verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    pub code: String,
    pub message: String,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// What the journal knows of one row (a compacted journal writes it whole).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub state: State,
    /// Submit attempts (intent lines), over all runs.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempts: u32,
    /// The latest accepted request, held compactly (a big run holds one
    /// per row): see [`Record::ticket`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Box<Held>>,
    /// Image URLs its submit returned (`sync_mode`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// What the latest submit may have cost (0 if the journal predates it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub price_micros: u64,
    /// Set when the latest run left the row unfinished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<Box<Left>>,
    /// When the request was last seen pending and first seen done (ms since submit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_ms: Option<[u64; 2]>,
    /// What earlier submits of this row may have cost: ones whose answer
    /// never came, `FAILED` ones, and results paid for and then lost. A
    /// retry never hides them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub earlier_micros: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "is", rename_all = "snake_case")]
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
        /// Size and modification time of each file (absent in older journals).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stamps: Vec<[u64; 2]>,
        cost_micros: u64,
        /// Taken from the cache, at no cost.
        #[serde(default, skip_serializing_if = "is_false")]
        cached: bool,
    },
    Failed {
        code: String,
        message: String,
        charged: Charged,
        cost_micros: u64,
    },
}

impl Record {
    /// The latest accepted request, whole.
    pub fn ticket(&self) -> Option<Ticket> {
        self.ticket.as_deref().map(|h| Ticket::from(h.clone()))
    }

    pub fn request_id(&self) -> Option<&str> {
        self.ticket.as_deref().map(|h| &*h.request_id)
    }

    /// What its state says may have been charged without images to show
    /// for it: an uncertain submit, a `FAILED` or lost request.
    fn at_stake_micros(&self) -> u64 {
        match &self.state {
            State::Uncertain => self.price_micros,
            State::Failed {
                charged: Charged::Possibly | Charged::Yes,
                cost_micros,
                ..
            } => *cost_micros,
            _ => 0,
        }
    }
}

/// A [`Ticket`] as a replay holds it. Status and result URLs are nearly
/// always a prefix shared by every request followed by the request id: the
/// prefix is held once (a few distinct ones per process), not per row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "Ticket", into = "Ticket")]
pub struct Held {
    kind: crate::plan::Kind,
    request_id: Box<str>,
    status_url: HeldUrl,
    response_url: HeldUrl,
    sync_images: u32,
}

#[derive(Clone, Debug, PartialEq)]
enum HeldUrl {
    None,
    /// A shared prefix, then the request id.
    Id(std::sync::Arc<str>),
    Full(Box<str>),
}

/// The URL prefixes held so far; past a few, URLs are held whole.
static PREFIXES: Mutex<Vec<std::sync::Arc<str>>> = Mutex::new(Vec::new());
const MAX_PREFIXES: usize = 16;

impl HeldUrl {
    fn hold(url: Option<String>, id: &str) -> HeldUrl {
        let Some(url) = url else {
            return HeldUrl::None;
        };
        let Some(prefix) = url.strip_suffix(id).filter(|_| !id.is_empty()) else {
            return HeldUrl::Full(url.into());
        };
        let mut known = PREFIXES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = known.iter().find(|p| ***p == *prefix) {
            return HeldUrl::Id(p.clone());
        }
        if known.len() < MAX_PREFIXES {
            let p: std::sync::Arc<str> = prefix.into();
            known.push(p.clone());
            return HeldUrl::Id(p);
        }
        HeldUrl::Full(url.into())
    }

    fn whole(&self, id: &str) -> Option<String> {
        match self {
            HeldUrl::None => None,
            HeldUrl::Id(prefix) => Some(format!("{prefix}{id}")),
            HeldUrl::Full(url) => Some(url.to_string()),
        }
    }
}

impl From<Ticket> for Held {
    fn from(t: Ticket) -> Held {
        Held {
            status_url: HeldUrl::hold(t.status_url, &t.request_id),
            response_url: HeldUrl::hold(t.response_url, &t.request_id),
            kind: t.kind,
            request_id: t.request_id.into(),
            sync_images: t.sync_images,
        }
    }
}

impl From<Held> for Ticket {
    fn from(h: Held) -> Ticket {
        Ticket {
            kind: h.kind,
            status_url: h.status_url.whole(&h.request_id),
            response_url: h.response_url.whole(&h.request_id),
            request_id: h.request_id.into(),
            sync_images: h.sync_images,
        }
    }
}

/// Replayed journal: the records by key, and what the runs said of themselves.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// Boxed: a million-row map then holds 16 bytes per slot, not a record's 200.
    pub records: HashMap<Key, Box<Record>>,
    pub last_run_rows: Option<u64>,
    pub last_run_manifest: Option<String>,
    pub last_run_plan: Option<String>,
    pub last_run_shard: Option<crate::plan::Shard>,
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
}

impl Replay {
    /// Whether most of the lines are history that one line per row would
    /// replace (a finished run leaves three per row).
    fn worth_compacting(&self) -> bool {
        self.lines >= 2 * self.records.len() + COMPACT_SLACK
    }

    /// The lines of a compacted journal: the run lines kept, then each row's
    /// record, by key. Folding them gives this replay back.
    fn compacted(&self) -> impl Iterator<Item = Entry> + '_ {
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

    pub fn apply(&mut self, entry: Entry) {
        self.lines += 1;
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

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot use the journal {path}: {}", crate::disk::plain(source))]
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
    #[error(
        "the journal {0} could not be written earlier in this run; nothing more is written to it"
    )]
    Broken(PathBuf),
}

/// Folds the whole lines `from` gives, one at a time (a million-row journal
/// is never held whole); returns the replay and the length of the whole
/// lines (what follows is a line cut short by a crash).
fn parse(path: &Path, from: impl Read) -> Result<(Replay, u64), JournalError> {
    let mut reader = std::io::BufReader::with_capacity(1 << 16, from);
    let mut replay = Replay::default();
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
    Ok((replay, whole))
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

/// The journal open for appending, with its replay kept current.
///
/// One writer thread owns the file and commits in groups: it takes every
/// line waiting, writes them, syncs once, folds them into the replay, and
/// only then tells each caller its line is durable. A line is on disk before
/// `append` returns, as before, but concurrent rows share one sync instead
/// of queueing on one each, and no runtime worker ever blocks on the disk.
/// Before a group with `done` lines, the folders holding their files are
/// synced once, so that the renames a `done` line records are durable first.
///
/// A run keeps room allocated past the journal's end ([`Journal::keep_room`]),
/// so that when the disk fills, the lines that say why each accepted row was
/// left (`unfinished`, `DISK`) still fit and `status` reads them; once the
/// room cannot be kept, [`Journal::out_of_room`] says so, and the run stops
/// spending while there is room left.
///
/// Cancellation: dropping an `append` future does not take its line back
/// (it may still be written); dropping the `Journal` lets the writer finish
/// what it was given, then stops it.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    queue: Option<std::sync::mpsc::Sender<Job>>,
    shared: std::sync::Arc<Mutex<Shared>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Set by [`Journal::hold_paused_clock`] (tests only).
    hold: Option<std::sync::Arc<Hold>>,
}

/// Async appends still waiting for the writer, for [`Journal::hold_paused_clock`].
#[derive(Debug, Default)]
struct Hold {
    waiting: Mutex<usize>,
    none: std::sync::Condvar,
}

impl Hold {
    /// Counts one waiting append until the guard drops. The first one of a
    /// busy spell starts a blocking task that lasts until none waits: tokio
    /// keeps a paused clock still while a blocking task runs.
    fn enter(self: &std::sync::Arc<Hold>) -> impl Drop {
        let mut n = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        if *n == 1 {
            let hold = self.clone();
            drop(tokio::task::spawn_blocking(move || {
                let mut n = hold.waiting.lock().unwrap_or_else(|e| e.into_inner());
                while *n > 0 {
                    n = hold.none.wait(n).unwrap_or_else(|e| e.into_inner());
                }
            }));
        }
        struct Left(std::sync::Arc<Hold>);
        impl Drop for Left {
            fn drop(&mut self) {
                let mut n = self.0.waiting.lock().unwrap_or_else(|e| e.into_inner());
                *n -= 1;
                if *n == 0 {
                    self.0.none.notify_all();
                }
            }
        }
        Left(self.clone())
    }
}

#[derive(Debug)]
struct Shared {
    replay: Replay,
    /// A write failed: nothing more is appended (a half line may be there).
    broken: bool,
    /// Bytes to keep allocated past the end (0: none).
    room: u64,
    /// Why that room could not be kept (the disk is full).
    out_of_room: Option<String>,
}

/// One line to commit, and whom to tell.
struct Job {
    line: Vec<u8>,
    entry: Entry,
    done: Done,
}

enum Done {
    Async(tokio::sync::oneshot::Sender<Result<(), std::io::ErrorKind>>),
    Blocking(std::sync::mpsc::SyncSender<Result<(), std::io::ErrorKind>>),
}

impl Done {
    fn send(self, result: Result<(), std::io::ErrorKind>) {
        match self {
            Done::Async(tx) => {
                let _ = tx.send(result);
            }
            Done::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// The most lines one sync covers.
const MAX_GROUP: usize = 4096;

/// Lines of history tolerated beyond two per row before a run compacts.
const COMPACT_SLACK: usize = 8;

impl Journal {
    /// Opens (or creates) `dir/journal.jsonl`, reads it once, removes a last
    /// line cut short, replays it, and starts its writer.
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
        let (mut replay, mut whole) = parse(&path, &file)?;
        if whole < file.metadata().map_err(io)?.len() {
            file.set_len(whole).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        if replay.worth_compacting() {
            // Earlier runs' lines become one line per row, so that startup
            // reads what is known, not how it came to be known. The journal
            // is replaced whole (written beside it, synced, renamed): a
            // crash leaves the old one or the new one.
            let mut lines = 0;
            crate::disk::write_atomic(&path, |w| {
                for entry in replay.compacted() {
                    serde_json::to_writer(&mut *w, &entry).map_err(std::io::Error::other)?;
                    w.write_all(b"\n")?;
                    lines += 1;
                }
                Ok(())
            })
            .map_err(io)?;
            replay.lines = lines;
            file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io)?;
            whole = file.metadata().map_err(io)?.len();
        }
        crate::disk::sync_dir(dir);
        let shared = std::sync::Arc::new(Mutex::new(Shared {
            replay,
            broken: false,
            room: 0,
            out_of_room: None,
        }));
        let (queue, jobs) = std::sync::mpsc::channel();
        let writer = {
            let (shared, dir) = (shared.clone(), dir.to_path_buf());
            std::thread::Builder::new()
                .name("batchgen-journal".into())
                .spawn(move || write_groups(&dir, file, whole, jobs, shared))
                .map_err(io)?
        };
        Ok(Journal {
            path,
            queue: Some(queue),
            shared,
            writer: Some(writer),
            hold: None,
        })
    }

    /// Tests only: the caller's runtime keeps time on tokio's paused clock
    /// (`start_paused`). The writer is a thread tokio cannot see, so while
    /// an async append waits for its sync the runtime looks idle and would
    /// move the clock on, by as much as the disk is slow; from now on a
    /// blocking task stands for the writer while any async append waits,
    /// and the clock stays still until the line is synced.
    pub fn hold_paused_clock(&mut self) {
        self.hold = Some(std::sync::Arc::default());
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn job(&self, entry: &Entry, done: Done) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(entry).expect("journal entries serialise");
        line.push(b'\n');
        let job = Job {
            line,
            entry: entry.clone(),
            done,
        };
        match &self.queue {
            Some(q) if q.send(job).is_ok() => Ok(()),
            _ => Err(JournalError::Broken(self.path.clone())),
        }
    }

    fn result(&self, r: Option<Result<(), std::io::ErrorKind>>) -> Result<(), JournalError> {
        match r {
            Some(Ok(())) => Ok(()),
            Some(Err(kind)) => Err(JournalError::Io {
                path: self.path.clone(),
                source: kind.into(),
            }),
            None => Err(JournalError::Broken(self.path.clone())),
        }
    }

    /// Writes one line and returns once it is synced and folded into the replay.
    pub async fn append(&self, entry: &Entry) -> Result<(), JournalError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.job(entry, Done::Async(tx))?;
        let _held = self.hold.as_ref().map(Hold::enter);
        self.result(rx.await.ok())
    }

    /// [`Journal::append`] for code that is not async (it blocks its thread).
    pub fn append_blocking(&self, entry: &Entry) -> Result<(), JournalError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.job(entry, Done::Blocking(tx))?;
        self.result(rx.recv().ok())
    }

    /// Reads the replay as it stands.
    pub fn with_replay<R>(&self, f: impl FnOnce(&Replay) -> R) -> R {
        f(&self.lock().replay)
    }

    /// Keeps at least `bytes` allocated past the journal's end from the next
    /// line on (and half of it at all times), where the filesystem allows;
    /// the room is given back when the journal is dropped.
    pub fn keep_room(&self, bytes: u64) {
        self.lock().room = bytes;
    }

    /// Why the room asked for could not be kept: the disk is full, and only
    /// what room is left takes more lines.
    pub fn out_of_room(&self) -> Option<String> {
        self.lock().out_of_room.clone()
    }
}

impl crate::output::Records for Journal {
    fn each(&self, keys: &[Key], f: &mut dyn FnMut(Option<&Record>)) {
        self.with_replay(|replay| replay.each(keys, f));
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The writer thread: commits waiting lines in groups until every sender is gone.
fn write_groups(
    dir: &Path,
    mut file: File,
    mut len: u64,
    jobs: std::sync::mpsc::Receiver<Job>,
    shared: std::sync::Arc<Mutex<Shared>>,
) {
    let mut buf = Vec::new();
    // Where the room allocated past the end ends, and whether it can be.
    let mut allocated = len;
    let mut reserving = true;
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        buf.clear();
        for job in &group {
            buf.extend_from_slice(&job.line);
        }
        let mut folders: Vec<PathBuf> = group
            .iter()
            .filter_map(|job| match &job.entry {
                Entry::Done { files, .. } => Some(files),
                _ => None,
            })
            .flatten()
            .filter_map(|f| dir.join(f).parent().map(Path::to_path_buf))
            .collect();
        folders.sort();
        folders.dedup();
        for folder in &folders {
            crate::disk::sync_dir(folder);
        }
        let (broken, room) = {
            let sh = shared.lock().unwrap_or_else(|e| e.into_inner());
            (sh.broken, sh.room)
        };
        // Room for this group and then `room`, taken again once half of it is used.
        let need = len + buf.len() as u64;
        if room > 0 && reserving && !broken && allocated < need + room / 2 {
            match crate::disk::reserve(&file, len, buf.len() as u64 + room) {
                Ok(()) => allocated = need + room,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                    let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                    sh.out_of_room.get_or_insert_with(|| {
                        format!(
                            "cannot keep room for the journal {}: {}",
                            dir.join(FILE_NAME).display(),
                            crate::disk::plain(&e)
                        )
                    });
                }
                Err(_) => reserving = false,
            }
        }
        let written = if broken {
            Err(std::io::ErrorKind::BrokenPipe)
        } else {
            file.write_all(&buf)
                .and_then(|()| file.sync_data())
                .map_err(|e| e.kind())
        };
        let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
        match written {
            Ok(()) => {
                len += buf.len() as u64;
                for job in &group {
                    sh.replay.apply(job.entry.clone());
                }
            }
            Err(_) if !broken => {
                // Take back a half-written group, so that the journal stays readable.
                let _ = file.set_len(len);
                sh.broken = true;
            }
            Err(_) => {}
        }
        drop(sh);
        for job in group {
            job.done.send(written);
        }
    }
    if allocated > len {
        // The room past the end goes back to the disk.
        let _ = file.set_len(len);
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
            sync_images: 0,
        }
    }

    const A: Key = Key(0xa);
    const B: Key = Key(0xb);
    const C: Key = Key(0xc);

    fn intent(key: Key, at_ms: u64) -> Entry {
        Entry::Intent {
            key,
            at_ms,
            price_micros: 50_000,
        }
    }

    #[test]
    fn replay_folds_the_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let k = |s: &str| s.to_string();
        for e in [
            intent(A, 1),
            Entry::NotAccepted {
                key: A,
                code: k("HTTP_500"),
                message: String::new(),
            },
            intent(A, 2),
            Entry::Submitted {
                key: A,
                at_ms: 3,
                ticket: Some(ticket("r1")),
                images: vec![],
            },
            Entry::Done {
                key: A,
                at_ms: 9,
                files: vec![k("images/a_0.png")],
                sha256: vec![k("ff")],
                stamps: vec![[10, 20]],
                cost_micros: 50_000,
                seen_ms: Some([2_000, 3_000]),
                cached: false,
            },
            intent(B, 4),
            intent(C, 5),
            Entry::Submitted {
                key: C,
                at_ms: 6,
                ticket: Some(ticket("r2")),
                images: vec![],
            },
            Entry::Unfinished {
                key: C,
                at_ms: 7,
                code: k("POLL_TIMEOUT"),
                message: k("slow"),
            },
        ] {
            j.append_blocking(&e).unwrap();
        }
        let r = read(dir.path()).unwrap();
        assert_eq!(r.lines, 9);
        let a = &r.records[&A];
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
            r.records[&B].state,
            State::Uncertain,
            "an intent alone may have been accepted"
        );
        let c = &r.records[&C];
        assert_eq!(
            c.state,
            State::Submitted,
            "unfinished leaves the state alone"
        );
        assert_eq!(c.request_id(), Some("r2"));
        assert_eq!(c.left.as_ref().unwrap().code, "POLL_TIMEOUT");
        assert_eq!(c.price_micros, 50_000);
        // The in-memory fold is the file's.
        assert_eq!(j.with_replay(|r| r.records.clone()), r.records);
    }

    #[test]
    fn an_intent_forgets_an_earlier_request_id() {
        let mut r = Replay::default();
        r.apply(intent(A, 1));
        r.apply(Entry::Submitted {
            key: A,
            at_ms: 2,
            ticket: Some(ticket("old")),
            images: vec!["http://x/1.png".into()],
        });
        r.apply(intent(A, 3));
        let a = &r.records[&A];
        assert_eq!(a.state, State::Uncertain);
        assert_eq!((a.ticket(), a.images.len()), (None, 0));
        assert_eq!(a.earlier_micros, 0, "an accepted submit is not lost money");
    }

    #[test]
    fn what_earlier_attempts_may_have_cost_is_kept() {
        let mut r = Replay::default();
        r.apply(intent(A, 1));
        r.apply(Entry::Failed {
            key: A,
            at_ms: 2,
            code: "FAILED".into(),
            message: String::new(),
            charged: Charged::Possibly,
            cost_micros: 50_000,
        });
        r.apply(intent(A, 3));
        r.apply(intent(A, 4));
        assert_eq!(r.records[&A].earlier_micros, 100_000);
    }

    #[test]
    fn a_line_cut_by_a_crash_is_ignored_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.append_blocking(&intent(A, 1)).unwrap();
        drop(j);
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"e":"submitted","key":"000000000000000a","at_ms":2,"tic"#)
            .unwrap();
        drop(f);
        assert_eq!(
            read(dir.path()).unwrap().records[&A].state,
            State::Uncertain
        );
        let j = Journal::open(dir.path()).unwrap();
        j.append_blocking(&Entry::NotAccepted {
            key: A,
            code: "X".into(),
            message: String::new(),
        })
        .unwrap();
        let r = read(dir.path()).unwrap();
        assert_eq!(r.records[&A].state, State::Pending);
        assert_eq!(r.lines, 2);
    }

    #[test]
    fn a_line_cut_inside_a_character_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.append_blocking(&intent(A, 1)).unwrap();
        drop(j);
        let path = dir.path().join(FILE_NAME);
        let whole = std::fs::read(&path).unwrap();
        let failed = Entry::Failed {
            key: A,
            at_ms: 2,
            code: "FAILED".into(),
            message: "l’image a échoué".into(),
            charged: Charged::Possibly,
            cost_micros: 0,
        };
        let line = serde_json::to_vec(&failed).unwrap();
        let cut = line.iter().position(|b| *b >= 0x80).unwrap() + 1;
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&line[..cut]).unwrap();
        drop(f);
        assert!(read(dir.path()).is_ok(), "a reader ignores the cut line");
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), whole, "the cut line is gone");
        j.append_blocking(&failed).unwrap();
        let r = read(dir.path()).unwrap();
        assert!(matches!(r.records[&A].state, State::Failed { .. }));
    }

    #[test]
    fn damage_before_the_last_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "garbage\n{\"e\":\"intent\",\"key\":\"000000000000000a\",\"at_ms\":1}\n",
        )
        .unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("damaged at line 1"), "{err}");
        assert!(Journal::open(dir.path()).is_err());
    }

    #[test]
    fn a_missing_journal_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().records.is_empty());
    }

    #[test]
    fn history_is_compacted_into_one_line_per_row() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let run = |gateway: Option<&str>| Entry::Run {
            at_ms: 1,
            manifest: "m.yaml".into(),
            rows: 100,
            version: "0".into(),
            gateway: gateway.map(str::to_string),
            base_url: None,
            plan: None,
            shard: None,
        };
        j.append_blocking(&run(Some("simulated"))).unwrap();
        for k in 0..100u64 {
            let key = Key(k);
            j.append_blocking(&intent(key, 2)).unwrap();
            j.append_blocking(&Entry::Submitted {
                key,
                at_ms: 3,
                ticket: Some(ticket(&format!("r{k}"))),
                images: vec![],
            })
            .unwrap();
            let last = match k % 3 {
                0 => Entry::Done {
                    key,
                    at_ms: 9,
                    files: vec![format!("images/{k}_0.png")],
                    sha256: vec!["ff".into()],
                    stamps: vec![[10, 20]],
                    cost_micros: 50_000,
                    seen_ms: Some([0, 2_000]),
                    cached: false,
                },
                1 => Entry::Failed {
                    key,
                    at_ms: 9,
                    code: "FAILED".into(),
                    message: "no".into(),
                    charged: Charged::Possibly,
                    cost_micros: 50_000,
                },
                _ => Entry::Unfinished {
                    key,
                    at_ms: 9,
                    code: "POLL_TIMEOUT".into(),
                    message: "slow".into(),
                },
            };
            j.append_blocking(&last).unwrap();
        }
        j.append_blocking(&intent(Key(0), 10)).unwrap();
        j.append_blocking(&run(Some("simulated"))).unwrap();
        drop(j);
        let before = read(dir.path()).unwrap();
        assert_eq!(before.lines, 303);

        let j = Journal::open(dir.path()).unwrap();
        let path = dir.path().join(FILE_NAME);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 101, "one run line and one per row");
        let after = read(dir.path()).unwrap();
        assert_eq!(after.records, before.records);
        assert_eq!(after.records[&Key(0)].earlier_micros, 50_000);
        assert_eq!(after.records[&Key(0)].attempts, 2);
        assert_eq!(
            (after.gateway, after.last_run_rows, after.last_run_manifest),
            (
                before.gateway,
                before.last_run_rows,
                before.last_run_manifest
            )
        );
        assert_eq!(j.with_replay(|r| r.records.clone()), before.records);
        // It goes on from there, and is not compacted again.
        j.append_blocking(&intent(Key(500), 11)).unwrap();
        drop(j);
        drop(Journal::open(dir.path()).unwrap());
        let again = read(dir.path()).unwrap();
        assert_eq!(again.lines, 102);
        assert_eq!(again.records[&Key(500)].state, State::Uncertain);
    }

    #[test]
    fn the_base_url_a_folder_was_first_run_against_outlives_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let run = |base_url: Option<&str>| Entry::Run {
            at_ms: 1,
            manifest: "m.yaml".into(),
            rows: 1,
            version: "0".into(),
            gateway: Some("https://h".into()),
            base_url: base_url.map(str::to_string),
            plan: None,
            shard: None,
        };
        // A version that recorded origins only, this one, then that one again.
        j.append_blocking(&run(None)).unwrap();
        j.append_blocking(&run(Some("https://h/a"))).unwrap();
        for at_ms in 0..20 {
            j.append_blocking(&intent(Key(1), at_ms)).unwrap();
        }
        j.append_blocking(&run(Some("https://h/a"))).unwrap();
        j.append_blocking(&run(None)).unwrap();
        drop(j);
        assert_eq!(
            read(dir.path()).unwrap().base_url.as_deref(),
            Some("https://h/a")
        );
        drop(Journal::open(dir.path()).unwrap());
        let after = read(dir.path()).unwrap();
        assert_eq!(after.lines, 3, "compacted");
        assert_eq!(
            (after.gateway.as_deref(), after.base_url.as_deref()),
            (Some("https://h"), Some("https://h/a"))
        );
    }

    #[test]
    fn tickets_are_held_whole() {
        for (status, response) in [
            (
                Some("http://g/v2/requests/status/r-1"),
                Some("http://g/v2/requests/status/r-1"),
            ),
            (Some("http://g/status/r-1"), Some("http://elsewhere/x")),
            (None, Some("http://g/result?id=r-1")),
            (None, None),
        ] {
            let t = Ticket {
                status_url: status.map(str::to_string),
                response_url: response.map(str::to_string),
                sync_images: 2,
                ..ticket("r-1")
            };
            let held = Held::from(t.clone());
            assert_eq!(Ticket::from(held.clone()), t);
            let line = serde_json::to_string(&held).unwrap();
            assert_eq!(serde_json::from_str::<Ticket>(&line).unwrap(), t, "{line}");
        }
    }

    #[test]
    fn older_lines_still_read() {
        let mut r = Replay::default();
        let old = r#"{"e":"run","at_ms":1,"manifest":"m.yaml","rows":2,"version":"0.1.0"}
{"e":"intent","key":"000000000000000a","at_ms":2}
{"e":"not_accepted","key":"000000000000000a","code":"HTTP_500"}
"#;
        for line in old.lines() {
            r.apply(serde_json::from_str(line).unwrap());
        }
        assert_eq!(r.gateway, None);
        assert_eq!(r.records[&A].state, State::Pending);
        assert_eq!(r.records[&A].price_micros, 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_run_keeps_room_past_the_end_and_gives_it_back() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let probe = File::create(dir.path().join("probe")).unwrap();
        if crate::disk::reserve(&probe, 0, 4096).is_err() {
            return; // this filesystem cannot allocate ahead
        }
        let path = dir.path().join(FILE_NAME);
        let held = || std::fs::metadata(&path).unwrap().blocks() * 512;
        let j = Journal::open(dir.path()).unwrap();
        j.keep_room(1 << 20);
        j.append_blocking(&intent(A, 1)).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 200, "the size is the lines'");
        assert!(held() >= 1 << 20, "{} bytes held", held());
        assert_eq!(j.out_of_room(), None);
        drop(j);
        assert!(held() < 64 << 10, "given back: {} bytes held", held());
        assert_eq!(
            read(dir.path()).unwrap().records[&A].state,
            State::Uncertain
        );
    }

    /// On a paused clock, an async append held still: the clock does not
    /// run ahead to the next timer (a second away here) while the writer
    /// syncs. Without the hold it does, by as much as the disk is slow.
    #[tokio::test(start_paused = true)]
    async fn a_held_journal_keeps_a_paused_clock_still_while_it_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.hold_paused_clock();
        let timer = tokio::spawn(tokio::time::sleep(std::time::Duration::from_secs(1)));
        let start = tokio::time::Instant::now();
        for n in 0..20 {
            j.append(&intent(A, n)).await.unwrap();
        }
        assert_eq!(tokio::time::Instant::now(), start);
        timer.abort();
    }
}
