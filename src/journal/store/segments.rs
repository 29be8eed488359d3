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
//! A put answered AlreadyExists may be our own, retried by object_store
//! after its first answer was lost: if the object holds exactly our bytes,
//! the lines are durable and the writer goes on. Any other failure of a
//! put (after object_store's own retries) leaves the writer broken: nothing
//! more is appended, as with the local journal after a write error.
//!
//! Cancellation: the task runs until the [`Writer`] is dropped or closed,
//! first finishing the lines it was given; dropping an `append` future does
//! not take its lines back. If the runtime stops mid-put, the segment
//! exists whole or not at all, and nobody was told its lines are durable.

use std::sync::{Arc, Mutex, MutexGuard};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::{mpsc, oneshot};

use super::super::format::Entry;
use super::super::replay::Replay;
use super::error::JournalStoreError;
use super::{names, read};

/// How many times [`open`] tries the next number before giving up.
const TAKEOVER_TRIES: u32 = 8;
/// The most callers one segment serves.
const MAX_GROUP: usize = 4096;

/// Why the writer stopped; every later append gets the same answer.
#[derive(Clone, Debug)]
enum Stop {
    /// Another run created this segment first.
    Fenced(String),
    /// A put failed (after object_store's retries): why.
    Broken(String),
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
}

/// The journal on a store, open for appending, with its replay kept current.
#[derive(Debug)]
pub struct Writer {
    store_name: String,
    queue: Option<mpsc::UnboundedSender<Job>>,
    shared: Arc<Mutex<Shared>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Takes over the journal under `prefix`: replays it (compacting it first
/// if most lines are history, or its last segment was cut short), creates
/// the next segment number as the fence, and starts the writer. Call it
/// once the lease is held ([`super::Lease::acquire`]).
pub async fn open(store: Arc<dyn ObjectStore>, prefix: &Path) -> Result<Writer, JournalStoreError> {
    let dir = names::dir(prefix);
    for _ in 0..TAKEOVER_TRIES {
        let mut replayed = read::replay(&*store, prefix).await?;
        if replayed.cut || replayed.replay.worth_compacting() {
            read::compact(&*store, prefix, &replayed).await?;
            replayed.replay.lines = replayed.replay.compacted().count();
        }
        let marker = names::segment(&dir, replayed.last + 1);
        let create = PutOptions::from(PutMode::Create);
        match store.put_opts(&marker, PutPayload::new(), create).await {
            Ok(_) => {
                // The fence holds only where a second create of one name
                // fails: some S3-compatible stores ignore `If-None-Match`
                // and overwrite. Creating the marker again must fail.
                match store
                    .put_opts(&marker, PutPayload::new(), PutMode::Create.into())
                    .await
                {
                    Err(object_store::Error::AlreadyExists { .. }) => {}
                    Ok(_) => {
                        return Err(JournalStoreError::NoCreateOnly {
                            store: store.to_string(),
                        })
                    }
                    Err(e) => return Err(JournalStoreError::store(&*store, &marker, e)),
                }
                return Ok(Writer::start(
                    store,
                    dir,
                    replayed.last + 2,
                    replayed.replay,
                ));
            }
            // The old writer got there first: read what it wrote, try the next.
            Err(object_store::Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(JournalStoreError::store(&*store, &marker, e)),
        }
    }
    Err(JournalStoreError::Contended {
        store: store.to_string(),
        tries: TAKEOVER_TRIES,
    })
}

impl Writer {
    fn start(store: Arc<dyn ObjectStore>, dir: Path, next: u64, replay: Replay) -> Writer {
        let shared = Arc::new(Mutex::new(Shared {
            replay,
            next,
            stopped: None,
            queued: 0,
        }));
        let (queue, jobs) = mpsc::unbounded_channel();
        let store_name = store.to_string();
        let task = tokio::spawn(commit_groups(store, dir, jobs, shared.clone()));
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

    /// Lets the writer finish the lines it was given, and waits for it.
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

/// The writer task: commits waiting groups until the queue closes.
async fn commit_groups(
    store: Arc<dyn ObjectStore>,
    dir: Path,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    shared: Arc<Mutex<Shared>>,
) {
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let (stopped, n) = {
            let mut sh = lock(&shared);
            sh.queued -= group.len();
            (sh.stopped.clone(), sh.next)
        };
        let outcome = match stopped {
            Some(stop) => Err(stop),
            None => {
                let body: Vec<u8> = group.iter().flat_map(|j| j.lines.iter().copied()).collect();
                let put = put_segment(&*store, &names::segment(&dir, n), body).await;
                let mut sh = lock(&shared);
                match put {
                    Ok(()) => {
                        sh.next = n + 1;
                        for entry in group.iter().flat_map(|j| j.entries.iter()) {
                            sh.replay.apply(entry.clone());
                        }
                        Ok(())
                    }
                    Err(stop) => {
                        sh.stopped = Some(stop.clone());
                        Err(stop)
                    }
                }
            }
        };
        for job in group {
            let _ = job.reply.send(outcome.clone());
        }
    }
}

/// Creates one segment; AlreadyExists holding other bytes is the fence.
async fn put_segment(store: &dyn ObjectStore, location: &Path, body: Vec<u8>) -> Result<(), Stop> {
    let create = PutOptions::from(PutMode::Create);
    let broken = |e: object_store::Error| Stop::Broken(format!("{location}: {e}"));
    match store
        .put_opts(location, PutPayload::from(body.clone()), create)
        .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let there = match store.get(location).await {
                Ok(got) => got.bytes().await.map_err(broken)?,
                Err(e) => return Err(broken(e)),
            };
            if there[..] == body[..] {
                Ok(()) // our own put, retried after its answer was lost
            } else {
                Err(Stop::Fenced(location.to_string()))
            }
        }
        Err(e) => Err(broken(e)),
    }
}
