//! The writer: segments created in groups, and the takeover that fences an
//! old writer.
//!
//! Why this exists: an `intent` must be in the store before its submit is
//! sent, and a put per line would queue every row on the store's latency.
//! One task owns the sequence: it takes every group of lines waiting, puts
//! them as the next segment (`PutMode::Create`), and only then tells each
//! caller its lines are durable; lines that arrive while a put is in flight
//! wait for the next segment (group commit).
//!
//! Fencing. [`open`] replays, then creates the next number itself, empty (a
//! marker; the line format has no "takeover" entry, and an unknown one
//! would not parse). If that create finds the number taken, the old writer
//! got there first: replay again, try the next. Once the marker stands, the
//! old writer's next create at that number fails with AlreadyExists, and it
//! stops for good ([`JournalStoreError::Fenced`]; never a retry at a higher number),
//! with no caller told "durable" for the lines it could not write. Every
//! segment it did write is numbered below the marker, so the new writer's
//! replay read it. An old writer's next number is always some marker (it
//! wrote every number up to it, and whoever wrote that number first wrote
//! a marker there), so compaction keeps empty segments and the fence holds
//! even after the segments around it are gone.
//!
//! A create that fails in a way that may be transient (a timeout, a reset
//! connection) is tried again a few times with backoff (`create.rs`;
//! object_store does not repeat conditional puts itself). An answer of
//! AlreadyExists may then be our own earlier try, which landed though its
//! answer was lost: if the object holds exactly our bytes, the lines are
//! durable and the writer goes on; other bytes are the fence. A marker
//! answered AlreadyExists is never taken for ours (an empty object says
//! nothing of who made it): the takeover replays and tries the next
//! number, which at worst leaves one marker more. Any other failure of a
//! put leaves the writer broken: nothing more is appended, as with the
//! local journal after a write error.
//!
//! Compaction while the run goes on. Every [`COMPACT_EVERY`] segments the
//! task writes (once the lines since the last checkpoint are at least a
//! quarter of the rows, so that checkpoints cost a bounded multiple of the
//! lines they replace), it clones its replay, which is exactly the fold of
//! every segment up to the last one it wrote, and compacts through that
//! number in a task of its own while appends go on: checkpoint first, then
//! deletes, as in `read.rs`, so a crash at any step loses nothing. The
//! fence argument still holds: a writer compacts only through numbers it
//! created itself, all below any marker a later run made, and it deletes
//! only non-empty segments, so every marker stays. A segment deleted by
//! one run's compaction and then created again by an old writer's retry
//! (its first try had landed) holds the same bytes and lies at or below
//! that compaction's checkpoint, which replay prefers: it is never read.
//!
//! Stopping. [`Writer::stop`] (or a [`Stopper`] taken from the writer, as
//! the lease [`super::Keeper`] does when a renewal fails) makes every later
//! append fail with [`JournalStoreError::Stopped`]; lines queued and not
//! yet put are never put, and the callers of a put in flight when it
//! stopped hear the stop too (their lines may be in the store: nobody is
//! told "durable" for a line that is not, and nobody goes on spending
//! after the stop).
//!
//! Cancellation: the task runs until the [`Writer`] is dropped or closed,
//! first finishing the lines it was given and a compaction it started;
//! dropping an `append` future does not take its lines back. If the
//! runtime stops mid-put, the segment exists whole or not at all, and
//! nobody was told its lines are durable; mid-compaction is a crash at
//! that step.

use std::sync::{Arc, Mutex, MutexGuard};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{mpsc, oneshot};

use super::super::format::Entry;
use super::super::replay::Replay;
use super::create::create;
use super::error::JournalStoreError;
use super::names;
use super::read::{self, Replayed};

/// How many times [`open`] tries the next number before giving up.
const TAKEOVER_TRIES: u32 = 8;
/// The most callers one segment serves.
const MAX_GROUP: usize = 4096;
/// How many segments the writer writes between compactions.
pub const COMPACT_EVERY: u64 = 256;

/// Knobs of a writer (tests make them small).
#[derive(Clone, Copy, Debug)]
pub(super) struct Tuning {
    /// Compact after this many segments written (0: never).
    pub(super) compact_every: u64,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            compact_every: COMPACT_EVERY,
        }
    }
}

/// Why the writer stopped; every later append gets the same answer.
#[derive(Clone, Debug)]
enum Stop {
    /// Another run created this segment first.
    Fenced(String),
    /// A put failed (after its retries): why.
    Broken(String),
    /// Stopped from outside ([`Writer::stop`]): why.
    Stopped(String),
}

struct Job {
    lines: Vec<u8>,
    entries: Vec<Entry>,
    reply: oneshot::Sender<Result<(), Stop>>,
}

#[derive(Debug)]
struct Shared {
    replay: Replay,
    /// The number the next segment gets.
    next: u64,
    stopped: Option<Stop>,
    /// Appends sent and not yet taken into a group.
    queued: usize,
    /// Compactions this writer finished while running.
    compactions: u64,
}

/// The journal on a store, open for appending, with its replay kept current.
#[derive(Debug)]
pub struct Writer {
    store_name: String,
    queue: Option<mpsc::UnboundedSender<Job>>,
    shared: Arc<Mutex<Shared>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Stops a [`Writer`] from elsewhere (the lease keeper), or runs whatever
/// a caller gave [`Stopper::new`]. Cheap to clone.
#[derive(Clone)]
pub struct Stopper(Arc<dyn Fn(String) + Send + Sync>);

impl Stopper {
    /// A stopper that calls `f` with the reason.
    pub fn new(f: impl Fn(String) + Send + Sync + 'static) -> Stopper {
        Stopper(Arc::new(f))
    }

    /// Stops (see [`Writer::stop`]).
    pub fn stop(&self, reason: String) {
        (self.0)(reason)
    }
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stopper")
    }
}

/// Takes over the journal under `prefix`: replays it (compacting it first
/// if most lines are history, or its last segment was cut short), creates
/// the next segment number as the fence, and starts the writer. Call it
/// once the lease is held ([`super::Lease::acquire`]).
pub async fn open(store: Arc<dyn ObjectStore>, prefix: &Path) -> Result<Writer, JournalStoreError> {
    open_tuned(store, prefix, Tuning::default()).await
}

/// [`open`], with knobs.
pub(super) async fn open_tuned(
    store: Arc<dyn ObjectStore>,
    prefix: &Path,
    tuning: Tuning,
) -> Result<Writer, JournalStoreError> {
    let dir = names::dir(prefix);
    for _ in 0..TAKEOVER_TRIES {
        let mut replayed = read::replay(&*store, prefix).await?;
        if replayed.cut || replayed.replay.worth_compacting() {
            read::compact(&*store, prefix, &replayed).await?;
            replayed.replay.lines = replayed.replay.compacted().count();
        }
        let marker = names::segment(&dir, replayed.last + 1);
        let failed = |e| JournalStoreError::store(&*store, &marker, e);
        // Taken (by the old writer, or by a try of ours whose answer was
        // lost: an empty object cannot tell): read what is there, try the next.
        if !create(&*store, &marker, PutPayload::new())
            .await
            .map_err(failed)?
        {
            continue;
        }
        // The fence holds only where a second create of one name fails:
        // some S3-compatible stores ignore `If-None-Match` and overwrite.
        // Creating the marker again must fail.
        if create(&*store, &marker, PutPayload::new())
            .await
            .map_err(failed)?
        {
            return Err(JournalStoreError::NoCreateOnly {
                store: store.to_string(),
            });
        }
        return Ok(Writer::start(
            store,
            dir,
            replayed.last + 2,
            replayed.replay,
            tuning,
        ));
    }
    Err(JournalStoreError::Contended {
        store: store.to_string(),
        tries: TAKEOVER_TRIES,
    })
}

impl Writer {
    fn start(
        store: Arc<dyn ObjectStore>,
        dir: Path,
        next: u64,
        replay: Replay,
        tuning: Tuning,
    ) -> Writer {
        let shared = Arc::new(Mutex::new(Shared {
            replay,
            next,
            stopped: None,
            queued: 0,
            compactions: 0,
        }));
        let (queue, jobs) = mpsc::unbounded_channel();
        let store_name = store.to_string();
        let task = Task {
            store,
            dir,
            shared: shared.clone(),
            tuning,
        };
        let task = tokio::spawn(task.commit_groups(jobs));
        Writer {
            store_name,
            queue: Some(queue),
            shared,
            task: Some(task),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    fn error(&self, stop: Stop) -> JournalStoreError {
        match stop {
            Stop::Fenced(location) => JournalStoreError::Fenced {
                store: self.store_name.clone(),
                location,
            },
            Stop::Broken(reason) => JournalStoreError::Broken {
                store: self.store_name.clone(),
                reason,
            },
            Stop::Stopped(reason) => JournalStoreError::Stopped {
                store: self.store_name.clone(),
                reason,
            },
        }
    }

    /// Writes `entries` (in a segment with whatever else is waiting) and
    /// returns once that segment is in the store and folded into the
    /// replay. No entries: nothing is written.
    pub async fn append(&self, entries: &[Entry]) -> Result<(), JournalStoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::new();
        for entry in entries {
            entry
                .write_line(&mut lines)
                .expect("journal entries serialise");
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            lines,
            entries: entries.to_vec(),
            reply,
        };
        let sent = {
            let mut sh = self.lock();
            if let Some(stop) = sh.stopped.clone() {
                drop(sh);
                return Err(self.error(stop));
            }
            let sent = self.queue.as_ref().is_some_and(|q| q.send(job).is_ok());
            sh.queued += usize::from(sent);
            sent
        };
        let stopped = || Stop::Broken("its writer has stopped".into());
        if !sent {
            return Err(self.error(self.lock().stopped.clone().unwrap_or_else(stopped)));
        }
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(stop)) => Err(self.error(stop)),
            Err(_) => Err(self.error(stopped())),
        }
    }

    /// Stops the writer for good: every later append, and every one queued
    /// and not yet put, fails with [`JournalStoreError::Stopped`] and
    /// `reason`. A writer already stopped keeps its first reason.
    pub fn stop(&self, reason: String) {
        self.stopper().stop(reason)
    }

    /// A handle that stops this writer ([`Writer::stop`]) from elsewhere,
    /// e.g. the lease's [`super::Keeper`] once the writer is handed on.
    pub fn stopper(&self) -> Stopper {
        let shared = self.shared.clone();
        Stopper::new(move |reason| {
            let mut sh = lock(&shared);
            if sh.stopped.is_none() {
                sh.stopped = Some(Stop::Stopped(reason));
            }
        })
    }

    /// Reads the replay as it stands (every line told durable is in it).
    pub fn with_replay<R>(&self, f: impl FnOnce(&Replay) -> R) -> R {
        f(&self.lock().replay)
    }

    /// The number the next segment gets.
    pub fn next_segment(&self) -> u64 {
        self.lock().next
    }

    /// Appends sent and not yet taken into a segment.
    pub fn queued(&self) -> usize {
        self.lock().queued
    }

    /// Compactions this writer finished while running.
    pub fn compactions(&self) -> u64 {
        self.lock().compactions
    }

    /// Lets the writer finish the lines it was given (and a compaction it
    /// started), and waits for it.
    pub async fn close(mut self) {
        drop(self.queue.take());
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The task finishes what it was given, then ends with its queue.
        drop(self.queue.take());
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the writer task owns.
struct Task {
    store: Arc<dyn ObjectStore>,
    dir: Path,
    shared: Arc<Mutex<Shared>>,
    tuning: Tuning,
}

/// Segments and lines written since the last compaction started.
#[derive(Default)]
struct Since {
    segments: u64,
    lines: usize,
    compacting: Option<tokio::task::JoinHandle<()>>,
}

impl Task {
    /// Commits waiting groups until the queue closes.
    async fn commit_groups(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut since = Since::default();
        while let Some(first) = jobs.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let outcome = self.commit(&group, &mut since).await;
            for job in group {
                let _ = job.reply.send(outcome.clone());
            }
        }
        if let Some(compacting) = since.compacting.take() {
            let _ = compacting.await;
        }
    }

    /// Puts one group as the next segment and folds it into the replay.
    async fn commit(&self, group: &[Job], since: &mut Since) -> Result<(), Stop> {
        let (stopped, n) = {
            let mut sh = lock(&self.shared);
            sh.queued -= group.len();
            (sh.stopped.clone(), sh.next)
        };
        if let Some(stop) = stopped {
            return Err(stop);
        }
        let body: Vec<u8> = group.iter().flat_map(|j| j.lines.iter().copied()).collect();
        let put = put_segment(&*self.store, &names::segment(&self.dir, n), body).await;
        let mut sh = lock(&self.shared);
        if let Err(stop) = put {
            sh.stopped.get_or_insert(stop.clone());
            return Err(sh.stopped.clone().unwrap_or(stop));
        }
        // In the store: folded, so that the replay stays the fold of the
        // segments, whatever the callers are told.
        sh.next = n + 1;
        for entry in group.iter().flat_map(|j| j.entries.iter()) {
            sh.replay.apply(entry.clone());
            since.lines += 1;
        }
        if let Some(stop) = sh.stopped.clone() {
            return Err(stop); // stopped while the put was in flight
        }
        since.segments += 1;
        let every = self.tuning.compact_every;
        let due = every > 0
            && since.segments >= every
            && since.lines * 4 >= sh.replay.records.len()
            && since.compacting.as_ref().is_none_or(|c| c.is_finished());
        if due {
            let replayed = Replayed {
                replay: sh.replay.clone(),
                checkpoint: None,
                last: n,
                cut: false,
            };
            drop(sh);
            since.segments = 0;
            since.lines = 0;
            since.compacting = Some(tokio::spawn(compact_live(
                self.store.clone(),
                self.dir.clone(),
                replayed,
                self.shared.clone(),
            )));
        }
        Ok(())
    }
}

/// Compacts through `replayed.last` from the writer's own replay: the
/// checkpoint, then the deletes. A failure is logged: the journal stays as
/// it was (or as a crash at that step leaves it, which replays the same),
/// and the next compaction tries again.
async fn compact_live(
    store: Arc<dyn ObjectStore>,
    dir: Path,
    replayed: Replayed,
    shared: Arc<Mutex<Shared>>,
) {
    let n = replayed.last;
    let done = match read::write_checkpoint(&*store, &dir, &replayed).await {
        Ok(()) => {
            drop(replayed);
            read::delete_covered(&*store, &dir, n).await
        }
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => lock(&shared).compactions += 1,
        Err(e) => tracing::warn!("could not compact the journal through segment {n}: {e}"),
    }
}

/// Creates one segment; AlreadyExists holding other bytes is the fence.
async fn put_segment(store: &dyn ObjectStore, location: &Path, body: Vec<u8>) -> Result<(), Stop> {
    let broken = |e: object_store::Error| Stop::Broken(format!("{location}: {e}"));
    if create(store, location, PutPayload::from(body.clone()))
        .await
        .map_err(broken)?
    {
        return Ok(());
    }
    let there = match store.get(location).await {
        Ok(got) => got.bytes().await.map_err(broken)?,
        Err(e) => return Err(broken(e)),
    };
    if there[..] == body[..] {
        Ok(()) // our own put, tried again after its answer was lost
    } else {
        Err(Stop::Fenced(location.to_string()))
    }
}
