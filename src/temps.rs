//! The temporary files of `export`, `merge` and `report`, which never
//! outlive the command that made them.
//!
//! Why this exists: these commands write each output under a temporary name
//! and rename it into place once whole. A command stopped by a signal
//! removes its temporaries before it exits ([`remove_all_before_exit`]); one
//! killed outright (SIGKILL, a crash, a power cut) leaves them, and the next
//! command of its kind sweeps them when it starts ([`sweep`]). A sweep must
//! never take the file of a command still at work (another export to the
//! same place, on this machine or on another one sharing the disk), so a
//! temporary says who made it and is locked while its maker lives:
//!
//! - its name is `.tmp-COMMAND-PID-RANDOM` (`.tmp-export-4711-a1B2c3`);
//! - its maker holds an exclusive lock (`flock`) on it until it is renamed
//!   into place or removed; the lock goes with the process, however it ends.
//!
//! A sweep removes such a file only if its lock is free and no process of
//! that id lives on this machine (the id covers the moment between the
//! file's creation and its lock). Files of an older batchgen (`.tmp-` and
//! six characters, anonymous, unlocked) are removed only where one command
//! alone writes, and only once an hour old.
//!
//! Test hook: with `BATCHGEN_PAUSE_AFTER_TEMP=COMMAND` in its environment,
//! that command says `batchgen: paused after creating PATH` on stderr each
//! time it has created a temporary file, and waits there for a signal, so
//! that tests interrupt it at a known point instead of guessing when. With
//! `BATCHGEN_PAUSE_AFTER_TEMP=export-commit`, an export pauses once its
//! first shard is in place ([`pause_in_commit_if_asked`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use crate::disk::{self, TEMP_PREFIX};

/// The command a temporary file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Export,
    Merge,
    Report,
}

impl Owner {
    const ALL: [Owner; 3] = [Owner::Export, Owner::Merge, Owner::Report];

    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Export => "export",
            Owner::Merge => "merge",
            Owner::Report => "report",
        }
    }
}

/// An older batchgen's temporaries older than this are taken as abandoned.
const ANONYMOUS_STALE_AFTER: Duration = Duration::from_secs(3600);

/// The temporary files this process holds, by path.
static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary file of this process: named for its owner, locked, removed
/// when dropped unless renamed into place.
#[derive(Debug)]
pub struct Temp {
    file: Option<tempfile::NamedTempFile>,
}

impl Temp {
    /// Creates a temporary file in `dir` for `owner`.
    pub fn new_in(dir: &Path, owner: Owner) -> std::io::Result<Temp> {
        let prefix = format!("{TEMP_PREFIX}{}-{}-", owner.as_str(), std::process::id());
        let mut live = live();
        let file = disk::temp_in(dir, &prefix)?;
        // Best effort: on a file system without locks the id still guards it.
        let _ = file.as_file().try_lock();
        live.insert(file.path().to_path_buf());
        drop(live);
        let shown = std::path::absolute(file.path()).unwrap_or_else(|_| file.path().into());
        pause_if_asked(owner, &shown);
        Ok(Temp { file: Some(file) })
    }

    pub fn as_file(&self) -> &File {
        self.file.as_ref().expect("a live temporary").as_file()
    }

    /// Renames the file to `to`, replacing what is there.
    pub fn persist(mut self, to: &Path) -> std::io::Result<()> {
        let file = self.file.take().expect("a live temporary");
        let mut live = live();
        live.remove(file.path());
        // On failure the temporary is dropped, so removed, here.
        file.persist(to).map(drop).map_err(|e| e.error)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            let mut live = live();
            live.remove(file.path());
            drop(file);
        }
    }
}

/// Writes `path` atomically and durably through a temporary file of
/// `owner` beside it (see [`disk::write_atomic`]).
pub fn write_atomic(
    owner: Owner,
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_in_place(owner, path, fill, true)
}

/// [`write_atomic`], not synced: for a file made again from others if a
/// crash loses it (a thumbnail).
pub fn write_atomic_unsynced(
    owner: Owner,
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_in_place(owner, path, fill, false)
}

fn write_in_place(
    owner: Owner,
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&File>) -> std::io::Result<()>,
    durable: bool,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    disk::fill_in_place(Temp::new_in(dir, owner)?, dir, path, fill, durable)
}

impl disk::Staged for Temp {
    fn file(&self) -> &File {
        self.as_file()
    }

    fn into_place(self, path: &Path) -> std::io::Result<()> {
        self.persist(path)
    }
}

/// Held while a command puts several outputs in place ([`commit`]).
static COMMIT: Mutex<()> = Mutex::new(());

/// Runs `renames`, which put a command's outputs in place one by one (an
/// export's shards): a signal meanwhile waits for them to end, so the
/// outputs are never left half old, half new. (A SIGKILL cannot wait.)
pub fn commit<T>(renames: impl FnOnce() -> T) -> T {
    let _commit = COMMIT.lock().unwrap_or_else(|e| e.into_inner());
    renames()
}

/// Waits for a [`commit`] under way to end, then keeps any other from
/// starting, for good: for a command about to exit on a signal (blocking;
/// the caller may give up waiting on a second signal).
pub fn hold_commits() {
    let commit = match COMMIT.try_lock() {
        Ok(commit) => commit,
        Err(_) => {
            crate::say!(
                "batchgen: waiting for the outputs being put in place (send it again to quit now)"
            );
            COMMIT.lock().unwrap_or_else(|e| e.into_inner())
        }
    };
    std::mem::forget(commit);
}

/// Removes every temporary file this process holds and keeps new ones from
/// being made: for a command about to exit on a signal, once
/// [`hold_commits`] returned. Returns how many were removed.
pub fn remove_all_before_exit() -> usize {
    let live = live();
    let removed = live
        .iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count();
    // Held until the process exits: a thread still at work blocks on its
    // next temporary instead of leaving it behind.
    std::mem::forget(live);
    removed
}

/// `.tmp-COMMAND-PID-…`: the owner's name and process id.
fn owned(name: &str) -> Option<(Owner, u32)> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    let (owner, rest) = rest.split_once('-')?;
    let owner = Owner::ALL.into_iter().find(|o| o.as_str() == owner)?;
    let (pid, random) = rest.split_once('-')?;
    (!random.is_empty()).then_some(())?;
    Some((owner, pid.parse().ok()?))
}

/// `.tmp-` and six letters or digits: what an older batchgen named them.
fn anonymous(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .is_some_and(|r| r.len() == 6 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Removes files in `dir` whose names start with `prefix` (temporary files
/// a killed run left behind), except those a live `export` or `report` holds
/// there ([`held`]). Returns how many were removed.
pub fn remove_stray(dir: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| !held(&e.path()))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// A working folder (in the system's temporary folder) left this long
/// unchanged, and locked by nobody, was left by a killed command.
const FOLDER_STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// The lock a bucket reader's copy holds while its command lives (not
/// `.lock`, which in a copy is a run folder's, as `status` reads it).
pub const COPY_LOCK: &str = ".batchgen-copy-lock";

/// Makes a working folder `PREFIX…` in the system's temporary folder and
/// locks it ([`COPY_LOCK`], held as long as the returned file is), after
/// sweeping the ones killed commands left ([`sweep_folders`]): a bucket
/// reader's copy.
pub fn working_folder(prefix: &str) -> std::io::Result<(tempfile::TempDir, File)> {
    let tmp = std::env::temp_dir();
    sweep_folders(&tmp, prefix, COPY_LOCK);
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(&tmp)?;
    let lock = File::create(dir.path().join(COPY_LOCK))?;
    lock.try_lock().map_err(std::io::Error::other)?;
    Ok((dir, lock))
}

/// Removes the working folders `PREFIX…` killed commands left in `tmp` (a
/// pod's disk goes with the pod; a laptop's does not): one whose lock file
/// `lock` nobody holds (its command holds it from its start to its end)
/// and that has not changed for ten minutes (so that one just made, not yet
/// locked, is kept). Best effort: what cannot be removed stays.
pub fn sweep_folders(tmp: &Path, prefix: &str, lock: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        let old = std::fs::symlink_metadata(&path).is_ok_and(|m| {
            m.is_dir()
                && m.modified()
                    .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > FOLDER_STALE_AFTER))
        });
        if !old {
            continue;
        }
        let unlocked = File::open(path.join(lock)).is_ok_and(|f| f.try_lock().is_ok());
        if unlocked && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether `path` is a batchgen temporary that a live process holds.
/// Anything else (another name, a maker gone) is `false`.
pub fn held(path: &Path) -> bool {
    let Some((_, pid)) = path.file_name().and_then(|n| n.to_str()).and_then(owned) else {
        return false;
    };
    if pid == std::process::id() {
        // Ours if we hold it; else a dead process's that had our id.
        let live = live();
        return live.contains(path) || live.iter().any(|p| same_file(p, path));
    }
    alive(pid) || locked(path)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Whether a process `pid` lives on this machine.
#[cfg(unix)]
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 checks for the process and sends nothing.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn alive(_pid: u32) -> bool {
    false
}

/// Whether another open file holds the lock on `path` (a file that cannot
/// be opened to check counts as locked: it is left alone).
fn locked(path: &Path) -> bool {
    match File::options().read(true).write(true).open(path) {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => true,
    }
}

/// Removes the temporaries of `owner` in `dir` that no live process holds;
/// with `anonymous_too`, also an older batchgen's that are an hour old (only
/// where `owner` alone writes). Returns how many were removed.
pub fn sweep(dir: &Path, owner: Owner, anonymous_too: bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                return false;
            };
            match owned(name) {
                Some((o, _)) => o == owner && !held(&e.path()),
                None => {
                    anonymous_too
                        && anonymous(name)
                        && e.metadata().and_then(|m| m.modified()).is_ok_and(|t| {
                            now.duration_since(t)
                                .is_ok_and(|age| age >= ANONYMOUS_STALE_AFTER)
                        })
                }
            }
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// [`sweep`] in `dir` and every folder under it (links not followed).
pub fn sweep_tree(dir: &Path, owner: Owner, anonymous_too: bool) -> usize {
    let mut removed = sweep(dir, owner, anonymous_too);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                removed += sweep_tree(&e.path(), owner, anonymous_too);
            }
        }
    }
    removed
}

/// The second test hook: with `BATCHGEN_PAUSE_AFTER_TEMP=export-commit`,
/// an export says `batchgen: paused in a commit` once it has put its first
/// shard in place, and waits there until the file `$BATCHGEN_RESUME_FILE`
/// exists.
pub fn pause_in_commit_if_asked() {
    if std::env::var("BATCHGEN_PAUSE_AFTER_TEMP").as_deref() != Ok("export-commit") {
        return;
    }
    crate::say!("batchgen: paused in a commit");
    let Some(resume) = std::env::var_os("BATCHGEN_RESUME_FILE").map(PathBuf::from) else {
        return;
    };
    while !resume.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The test hook (see the module's documentation).
fn pause_if_asked(owner: Owner, path: &Path) {
    static ASKED: OnceLock<Option<String>> = OnceLock::new();
    let asked = ASKED.get_or_init(|| std::env::var("BATCHGEN_PAUSE_AFTER_TEMP").ok());
    if asked.as_deref() == Some(owner.as_str()) {
        crate::say!("batchgen: paused after creating {}", path.display());
        loop {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn stray_temporary_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".part-abc"), b"x").unwrap();
        std::fs::write(dir.path().join("keep.png"), b"x").unwrap();
        assert_eq!(remove_stray(dir.path(), ".part-"), 1);
        assert!(dir.path().join("keep.png").exists());
    }

    #[test]
    fn names_say_whose_they_are() {
        assert_eq!(
            owned(".tmp-export-4711-a1B2c3"),
            Some((Owner::Export, 4711))
        );
        assert_eq!(owned(".tmp-report-1-x"), Some((Owner::Report, 1)));
        for other in [
            ".tmp-a1B2c3",
            ".tmp-run-1-x",
            ".tmp-export-x-y",
            ".tmp-merge-7-",
            "x",
        ] {
            assert_eq!(owned(other), None, "{other}");
        }
        assert!(anonymous(".tmp-a1B2c3"));
        assert!(!anonymous(".tmp-a1B2c"));
        assert!(!anonymous(".tmp-export-1-abcdef"));
    }

    #[test]
    fn a_live_temporary_is_kept_and_a_dead_ones_swept() {
        let dir = tempfile::tempdir().unwrap();
        let mine = Temp::new_in(dir.path(), Owner::Merge).unwrap();
        let path = mine.file.as_ref().unwrap().path().to_path_buf();
        assert!(held(&path));
        assert_eq!(sweep(dir.path(), Owner::Merge, true), 0);
        assert!(path.exists());
        // A process that is gone: no such id, no lock.
        let dead = dir
            .path()
            .join(format!(".tmp-merge-{}-abcdef", u32::MAX - 1));
        std::fs::write(&dead, b"x").unwrap();
        // Another command's is not this one's to sweep.
        let other = dir
            .path()
            .join(format!(".tmp-export-{}-abcdef", u32::MAX - 1));
        std::fs::write(&other, b"x").unwrap();
        assert_eq!(sweep(dir.path(), Owner::Merge, false), 1);
        assert!(!dead.exists() && other.exists() && path.exists());
        mine.persist(&dir.path().join("done")).unwrap();
        assert!(!path.exists() && dir.path().join("done").exists());
        assert!(!live().contains(&path));
    }

    #[test]
    fn a_locked_temporary_is_held_whatever_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join(format!(".tmp-export-{}-abcdef", u32::MAX - 1));
        let f = File::create(&path).unwrap();
        f.lock().unwrap();
        assert!(held(&path), "another machine's process holds it");
        drop(f);
        assert!(!held(&path));
    }

    fn folder(tmp: &Path, name: &str, age: Duration) -> PathBuf {
        let dir = tmp.join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(".lock"), b"").unwrap();
        let then = SystemTime::now() - age;
        File::open(&dir).unwrap().set_modified(then).unwrap();
        dir
    }

    #[test]
    fn only_old_unlocked_working_folders_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let stale = folder(tmp.path(), "batchgen-work-stale", hour);
        let live = folder(tmp.path(), "batchgen-work-live", hour);
        let fresh = folder(tmp.path(), "batchgen-work-fresh", Duration::ZERO);
        let other = folder(tmp.path(), "batchgen-copy-old", hour);
        let held = File::open(live.join(".lock")).unwrap();
        held.try_lock().unwrap();
        assert_eq!(sweep_folders(tmp.path(), "batchgen-work-", ".lock"), 1);
        assert!(!stale.exists(), "a killed command's folder is removed");
        assert!(live.exists(), "a live command's folder is kept");
        assert!(fresh.exists(), "a folder just made is kept");
        assert!(other.exists(), "folders of another prefix are not touched");
    }
}
