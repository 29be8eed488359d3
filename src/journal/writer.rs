//! The writer thread and its group commit.
//!
//! Why this exists apart: a line must be on disk before the step that
//! depends on it, and a sync per line would queue every row on the disk.
//! One thread owns the file: it takes every line waiting, writes them,
//! syncs once, folds them into the replay, and only then replies to each
//! caller. It also keeps room allocated past the end (so the lines that
//! say why a row was left still fit on a full disk), and, for tests on
//! tokio's paused clock, holds the clock still while an async append waits.
//!
//! Cancellation: the thread runs until every sender of its queue is gone
//! ([`super::Journal`]'s drop), finishing the lines it was given first; a
//! caller that stops waiting for its [`Waiter`] does not take its line back.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::format::{Entry, FILE_NAME};
use super::replay::Replay;

/// Async appends still waiting for the writer, for [`Journal::hold_paused_clock`](super::Journal::hold_paused_clock).
#[derive(Debug, Default)]
pub(super) struct Hold {
    waiting: Mutex<usize>,
    none: std::sync::Condvar,
}

impl Hold {
    /// Counts one waiting append until the guard drops. The first one of a
    /// busy spell starts a blocking task that lasts until none waits: tokio
    /// keeps a paused clock still while a blocking task runs.
    pub(super) fn enter(self: &std::sync::Arc<Hold>) -> impl Drop {
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
pub(super) struct Shared {
    pub(super) replay: Replay,
    /// A write failed: nothing more is appended (a half line may be there).
    pub(super) broken: bool,
    /// Bytes to keep allocated past the end (0: none).
    pub(super) room: u64,
    /// Why that room could not be kept (the disk is full).
    pub(super) out_of_room: Option<String>,
}

/// One line to commit, and whom to tell.
pub(super) struct Queued {
    pub(super) line: Vec<u8>,
    pub(super) entry: Entry,
    pub(super) waiter: Waiter,
}

/// The writer's reply to one caller: its line is durable, or why not.
pub(super) enum Waiter {
    Async(tokio::sync::oneshot::Sender<Result<(), std::io::ErrorKind>>),
    Blocking(std::sync::mpsc::SyncSender<Result<(), std::io::ErrorKind>>),
}

impl Waiter {
    fn send(self, result: Result<(), std::io::ErrorKind>) {
        match self {
            Waiter::Async(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// The most lines one sync covers.
const MAX_GROUP: usize = 4096;

/// The writer thread: commits waiting lines in groups until every sender is gone.
pub(super) fn write_groups(
    dir: &Path,
    mut file: File,
    mut len: u64,
    jobs: std::sync::mpsc::Receiver<Queued>,
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
            job.waiter.send(written);
        }
    }
    if allocated > len {
        // The room past the end goes back to the disk.
        let _ = file.set_len(len);
    }
}
