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
//!
//! The rules every caller keeps, and this module makes cheap:
//!
//! - an `intent` is durable before its submit is sent, so no crash can
//!   leave money spent that the journal does not know may be spent;
//! - a request id is durable (`submitted`) before anything else is done
//!   with it, so a resumed run polls it instead of paying again;
//! - [`Journal::append`] returns once its line is synced, and concurrent
//!   appends share one sync (group commit, in `writer.rs`).
//!
//! Cancellation: dropping an `append` future does not take its line back
//! (it may still be written); dropping the [`Journal`] lets the writer
//! thread finish the lines it was given, then stops it.
//!
//! Layout: `format.rs` holds the records as written (the compatibility
//! contract), `replay.rs` folds them and compacts the file, `writer.rs` is the
//! thread that commits lines in groups, `error.rs` says what went wrong, and
//! this file holds the handle a run holds. `store/` keeps the same lines on
//! an object store (immutable segments, checkpoints, a lease, the fence that
//! stops an old writer); [`Journal::on_store`] puts the same handle over it.
//! The journal imports only the ground floor ([`crate::vocab`]),
//! [`crate::disk`] and the `object_store` crate; [`Records`], through which
//! output reads the fold, is defined here, below its user.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

mod error;
mod format;
mod replay;
pub mod store;
#[cfg(test)]
mod tests;
mod writer;

pub use error::JournalError;
pub use format::{now_ms, Charged, Entry, Held, Left, Record, State, FILE_NAME};
pub use replay::{read, Records, Replay};

use crate::vocab::Key;
use replay::parse;
use writer::{write_groups, Hold, Queued, Shared, Waiter};

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
    queue: Option<std::sync::mpsc::Sender<Queued>>,
    shared: std::sync::Arc<Mutex<Shared>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Set by [`Journal::hold_paused_clock`] (tests only).
    hold: Option<std::sync::Arc<Hold>>,
    /// The journal is kept on a store: every line goes there instead
    /// ([`Journal::on_store`]); the fields above stay idle.
    on_store: Option<store::Writer>,
}

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
                    entry.write_line(&mut *w)?;
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
            on_store: None,
        })
    }

    /// The journal kept on a store (`--out s3://…`), through its segment
    /// writer (opened once the run holds the prefix's lease): `append`
    /// returns once the segment holding the line is in the store, and the
    /// replay is the writer's. `name` is what messages call it.
    pub fn on_store(writer: store::Writer, name: &str) -> Journal {
        Journal {
            path: PathBuf::from(name),
            queue: None,
            shared: std::sync::Arc::new(Mutex::new(Shared {
                replay: Replay::default(),
                broken: false,
                room: 0,
                out_of_room: None,
            })),
            writer: None,
            hold: None,
            on_store: Some(writer),
        }
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

    fn job(&self, entry: &Entry, waiter: Waiter) -> Result<(), JournalError> {
        let mut line = Vec::new();
        entry
            .write_line(&mut line)
            .expect("journal entries serialise");
        let job = Queued {
            line,
            entry: entry.clone(),
            waiter,
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
        if let Some(writer) = &self.on_store {
            return Ok(writer.append(std::slice::from_ref(entry)).await?);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.job(entry, Waiter::Async(tx))?;
        let _held = self.hold.as_ref().map(Hold::enter);
        self.result(rx.await.ok())
    }

    /// [`Journal::append`] for code that is not async (it blocks its thread).
    /// On a store, it must be called from the blocking pool of the
    /// runtime the writer runs on.
    pub fn append_blocking(&self, entry: &Entry) -> Result<(), JournalError> {
        if let Some(writer) = &self.on_store {
            let handle = tokio::runtime::Handle::try_current()
                .map_err(|_| JournalError::Broken(self.path.clone()))?;
            return Ok(handle.block_on(writer.append(std::slice::from_ref(entry)))?);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.job(entry, Waiter::Blocking(tx))?;
        self.result(rx.recv().ok())
    }

    /// Reads the replay as it stands.
    pub fn with_replay<R>(&self, f: impl FnOnce(&Replay) -> R) -> R {
        if let Some(writer) = &self.on_store {
            return writer.with_replay(f);
        }
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

impl Records for Journal {
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
