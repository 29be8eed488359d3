//! Who is running in a folder now: the note a run writes into its lock
//! file, `DIR/.lock`, and the look `status` and `export` take at it.
//!
//! Why this exists: a run holds an exclusive lock on `DIR/.lock` while it
//! lives (the system lets it go when the process ends, however it ends).
//! Once it holds the lock, it writes its pid, host and start time into the
//! file, so that a reader can say who holds the folder instead of counting
//! the rows it has not reached yet as "not run". A reader tries the lock:
//! if it gets it, nobody runs (it lets go at once; the note left by an
//! earlier run means nothing); if it cannot, the note says who does. The
//! try takes a moment, and a run that starts in that moment tries again
//! ([`take`]) rather than being refused.
//!
//! A bucket prefix has no lock file: its live `lease.json` says the same
//! ([`Live::of_lease`]).
//!
//! Cancellation: plain synchronous file calls, nothing to cancel.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::journal::store::{Holder, LeaseBody};

/// The lock file's name in a run folder.
pub const LOCK_FILE: &str = ".lock";

/// The largest note read from a lock file.
const MAX_NOTE: u64 = 4096;

/// How often, and how long apart, a run tries a lock that is held: a
/// reader holds it for a moment only.
const TRIES: u32 = 10;
const PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// A run that holds a folder (or a bucket prefix) now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    /// Its process id (0 if the note was not written yet).
    pub pid: u32,
    /// The host it runs on ("" if unknown).
    pub host: String,
    /// When it started, ms since the epoch (0 if unknown).
    pub since_ms: u64,
    /// The run's id, for a run on a bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl Live {
    /// The run holding a live lease (`now_ms` by the reader's clock);
    /// `None` for one that has run out.
    pub fn of_lease(body: LeaseBody, now_ms: u64) -> Option<Live> {
        (body.expires_at_ms > now_ms).then_some(Live {
            pid: body.pid,
            host: body.host,
            since_ms: body.started_at_ms,
            run_id: Some(body.run_id),
        })
    }

    /// "pid 4242 on host pod-a, since 2026-12-04T22:10:03.000Z".
    pub fn describe(&self) -> String {
        let mut text = match self.pid {
            0 => "a run (it has not said who yet)".to_string(),
            pid => format!("pid {pid}"),
        };
        if !self.host.is_empty() {
            text.push_str(&format!(" on host {}", self.host));
        }
        if let Some(id) = &self.run_id {
            text.push_str(&format!(" (run {id})"));
        }
        if self.since_ms > 0 {
            text.push_str(&format!(", since {}", crate::vocab::rfc3339(self.since_ms)));
        }
        text
    }

    /// As `status --json` shows it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "pid": (self.pid > 0).then_some(self.pid),
            "host": (!self.host.is_empty()).then_some(&self.host),
            "since": (self.since_ms > 0).then(|| crate::vocab::rfc3339(self.since_ms)),
            "since_ms": (self.since_ms > 0).then_some(self.since_ms),
            "run_id": self.run_id,
        })
    }
}

/// Takes the lock on `dir/.lock` for a run and writes this process's note
/// into it. `Ok(None)` if another run holds it (after a few tries).
pub fn take(dir: &Path) -> std::io::Result<Option<File>> {
    let path = dir.join(LOCK_FILE);
    // Never truncated before the lock is ours: the note is the holder's.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)?;
    for n in 1..=TRIES {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if n < TRIES => std::thread::sleep(PAUSE),
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
    let note = Live {
        pid: std::process::id(),
        host: Holder::this_process("").host,
        since_ms: crate::journal::now_ms(),
        run_id: None,
    };
    // The note is a courtesy: a folder whose lock file cannot take it
    // still runs (readers then say "a run" without who).
    let bytes = serde_json::to_vec(&note).expect("a note serialises");
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(&bytes))
        .and_then(|()| file.flush());
    Ok(Some(file))
}

/// The run holding `dir` now, if one does. Reads only: a folder without a
/// lock file has no run (none is created), and a lock that cannot be tried
/// (a file system without locks) counts as none.
pub fn holder(dir: &Path) -> Option<Live> {
    let file = File::open(dir.join(LOCK_FILE)).ok()?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => {
            let mut text = Vec::new();
            let _ = (&file).take(MAX_NOTE).read_to_end(&mut text);
            // Empty while the run has the lock but has not written yet.
            Some(serde_json::from_slice(&text).unwrap_or_default())
        }
        Err(TryLockError::Error(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_folder_names_its_run_and_a_free_one_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()), None, "no lock file: no run");
        assert!(
            !dir.path().join(LOCK_FILE).exists(),
            "a reader creates nothing"
        );
        let lock = take(dir.path()).unwrap().expect("free");
        let live = holder(dir.path()).expect("held");
        assert_eq!(live.pid, std::process::id());
        assert!(!live.host.is_empty());
        assert!(live.since_ms > 0);
        assert!(live.describe().contains(&format!("pid {}", live.pid)));
        // A second run is refused; the reader's look did not take it.
        assert!(take(dir.path()).unwrap().is_none());
        assert!(holder(dir.path()).is_some());
        drop(lock);
        // The note stays behind, but nobody holds the lock.
        assert_eq!(holder(dir.path()), None);
        assert!(take(dir.path()).unwrap().is_some());
    }

    #[test]
    fn a_lease_is_live_until_it_expires() {
        let body = LeaseBody {
            run_id: "r1".into(),
            host: "pod-a".into(),
            pid: 7,
            expires_at_ms: 2_000,
            nonce: "n".into(),
            started_at_ms: 1_000,
        };
        let live = Live::of_lease(body.clone(), 1_999).expect("live");
        assert_eq!(live.since_ms, 1_000);
        assert!(live.describe().contains("run r1"), "{}", live.describe());
        assert_eq!(live.to_json()["since"], "1970-01-01T00:00:01.000Z");
        assert_eq!(Live::of_lease(body, 2_000), None);
    }
}
