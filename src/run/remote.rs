//! A run whose output is a bucket prefix (`--out s3://bucket/prefix`,
//! `gs://…`, `az://…`): [`Remote`].
//!
//! Why this exists: a pod's disk dies with the pod, so the prefix, not the
//! disk, is the place of record. The run itself works as it always does, in
//! a local working folder (a temporary one, removed at the end); this is
//! what makes the prefix hold everything a local run folder holds, with the
//! same guarantees:
//!
//! - the prefix's lease (`lease.json`, one writer per prefix), renewed while
//!   the run lives and released at its end; a live one held by another run
//!   refuses this one before anything is sent;
//! - the journal as segments on the store ([`crate::journal::store`]): an
//!   `intent` is in the store before its submit is sent, a `submitted` line
//!   before anything else happens to the request;
//! - every file the run completes, uploaded under the same name before
//!   anything depends on it: a row's images before its `done` line (so a
//!   `done` row's files are in the store), sidecars, results.csv (as often
//!   as a local run rewrites it), summary.json, `.plan-keys`, and the sheet;
//! - what a resumed run knows of files already there: one listing of the
//!   prefix's `images/`, by name and size (a pod starting over has none of
//!   them on its disk).
//!
//! An upload that fails (after object_store's retries) stops new spending,
//! as a local write failure does: the row it was for is left collectable,
//! and a plain rerun collects it.
//!
//! Cancellation: the lease's renewal task ([`Keeper`]) ends when
//! [`Remote::close`] runs or the `Remote` is dropped; a dropped upload sends nothing more (see
//! [`crate::store`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::journal::store::{self as segments, Holder, Keeper, Lease, Writer};
use crate::output::IMAGES_DIR;
use crate::report::{INDEX_HTML, THUMBS_DIR};
use crate::store::Store;

use super::RunError;

/// The working folders' names start so, in the temporary folder (a run
/// holds its `.lock` while it lives; see [`crate::temps::sweep_folders`]).
const WORK_PREFIX: &str = "batchgen-work-";
/// Uploads in flight at once, run-wide. An upload holds its file in memory
/// up to [`crate::store::PART`] (a put must know its body; S3's parts are
/// at least 5 MiB), so this bounds the memory uploads take, whatever
/// `--concurrency` is: 16 × 3 parts of 8 MiB at worst (a big file's part
/// filling while two go up), a few MB with images of a
/// few hundred KB.
const AT_ONCE: usize = 16;
/// The largest image or thumbnail fetched for the sheet (as the sheet reads).
const SHEET_FILE_CAP: u64 = 256 << 20;

/// The bucket side of a run: its store, lease, journal writer (until the
/// run takes it) and working folder.
pub struct Remote {
    store: Store,
    work: tempfile::TempDir,
    writer: Mutex<Option<Writer>>,
    /// Renews the lease; stops the writer if the lease is lost.
    keeper: Mutex<Option<Keeper>>,
    /// Uploads in flight, run-wide: each holds at most one part in memory.
    uploads: tokio::sync::Semaphore,
    /// `images/…` objects as listed when the run opened: name → size.
    listed: HashMap<String, u64>,
    /// `thumbs/…` objects as listed before the sheet: name → size.
    thumbs: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("store", &self.store)
            .field("work", &self.work.path())
            .finish_non_exhaustive()
    }
}

/// A run id no other process shares: a fresh [`segments::nonce`]
/// and the pid.
fn run_id() -> String {
    format!("{}-{}", segments::nonce(), std::process::id())
}

impl Remote {
    /// Takes the prefix: its lease (for `lease_for`, renewed by a [`Keeper`],
    /// which stops the journal's writer if the lease is lost), then its journal (replayed, fenced), then a listing of its
    /// images, and makes the working folder. Sends nothing to the gateway.
    pub async fn open(store: Store, lease_for: Duration) -> Result<Remote, RunError> {
        // The working folder first: nothing to give back if it cannot be made.
        // `.lock`: the run takes it in the folder (`run::open`) while it lives.
        crate::temps::sweep_folders(&std::env::temp_dir(), WORK_PREFIX, ".lock");
        let work = tempfile::Builder::new()
            .prefix(WORK_PREFIX)
            .tempdir()
            .map_err(|source| RunError::Output {
                path: std::env::temp_dir(),
                source,
            })?;
        // The images already there, listed before the lease and the fence
        // are taken, so that a prefix that cannot be listed (an object
        // named so object_store cannot read it) costs nothing to refuse.
        // Safe before the lease: an image listed late is only one the run
        // fetches again from its request.
        let listed = store
            .list(Some(IMAGES_DIR))
            .await
            .map_err(RunError::Bucket)?
            .into_iter()
            .map(|l| (l.name, l.size))
            .collect();
        let inner = store.inner().clone();
        let prefix = store.prefix().clone();
        let lease = Lease::acquire(
            inner.clone(),
            &prefix,
            Holder::this_process(&run_id()),
            lease_for.as_millis() as u64,
            segments::system_clock(),
        )
        .await
        .map_err(RunError::from_store)?;
        let writer = match segments::open(inner, &prefix).await {
            Ok(writer) => writer,
            Err(e) => {
                let _ = lease.release().await;
                return Err(RunError::from_store(e));
            }
        };
        let keeper = Keeper::start(lease, writer.stopper());
        Ok(Remote {
            store,
            work,
            writer: Mutex::new(Some(writer)),
            keeper: Mutex::new(Some(keeper)),
            uploads: tokio::sync::Semaphore::new(AT_ONCE),
            listed,
            thumbs: Mutex::default(),
        })
    }

    /// The working folder the run writes in.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The journal writer, for the run's `Journal` (once).
    pub(super) fn take_writer(&self) -> Option<Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The size of `name` (`images/…`) in the store when the run opened.
    pub(super) fn listed_size(&self, name: &str) -> Option<u64> {
        self.listed.get(name).copied()
    }

    /// Uploads each file (paths inside the working folder) under its name
    /// relative to it. An error names the object and says why.
    pub async fn upload(&self, paths: &[PathBuf]) -> Result<(), String> {
        let names = paths
            .iter()
            .map(|p| self.name_of(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.publish(&names).await
    }

    /// Uploads each of `names` (relative to the working folder), a few at a
    /// time; nothing once the lease is lost (another run may own the prefix
    /// by now, and its results.csv is not this run's to replace).
    pub async fn publish(&self, names: &[String]) -> Result<(), String> {
        if names.is_empty() {
            return Ok(());
        }
        if let Some(why) = self.lease_lost() {
            return Err(format!("{} was not uploaded: {why}", names.join(", ")));
        }
        let at_once = names.len().clamp(1, AT_ONCE);
        let _permits = self
            .uploads
            .acquire_many(at_once as u32)
            .await
            .map_err(|e| e.to_string())?;
        self.store
            .publish(self.work.path(), names, at_once)
            .await
            .map_err(|e| e.to_string())
    }

    fn name_of(&self, path: &Path) -> Result<String, String> {
        let rel = path
            .strip_prefix(self.work.path())
            .or_else(|_| {
                let abs = std::path::absolute(self.work.path()).unwrap_or_default();
                path.strip_prefix(abs)
            })
            .map_err(|_| format!("{} is not in the working folder", path.display()))?;
        Ok(rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"))
    }

    /// Brings to the working folder what the contact sheet needs and an
    /// earlier run (another pod) left only in the bucket: its images, then
    /// their thumbnails (fetched after, so they are newer and kept).
    pub async fn fetch_for_sheet(&self) -> Result<(), String> {
        // A name that is not a plain path is never fetched (nor followed):
        // the sheet goes without it.
        let listed: Vec<_> = (self.store.list(None).await.map_err(|e| e.to_string())?)
            .into_iter()
            .filter(|l| crate::store::local_path(self.work.path(), &l.name).is_some())
            .collect();
        let under = |dir: &'static str| move |name: &str| name.starts_with(&format!("{dir}/"));
        let image = |name: &str| under(IMAGES_DIR)(name) && !name.ends_with(".json");
        let work = self.work.path();
        self.store
            .fetch(&listed, work, image, SHEET_FILE_CAP, AT_ONCE)
            .await
            .map_err(|e| e.to_string())?;
        self.store
            .fetch(&listed, work, under(THUMBS_DIR), SHEET_FILE_CAP, AT_ONCE)
            .await
            .map_err(|e| e.to_string())?;
        *self.thumbs.lock().unwrap_or_else(|e| e.into_inner()) = listed
            .into_iter()
            .filter(|l| under(THUMBS_DIR)(&l.name))
            .map(|l| (l.name, l.size))
            .collect();
        Ok(())
    }

    /// Uploads the contact sheet (`index.html`) and the thumbnails the
    /// bucket lacks; returns the sheet's URL.
    pub async fn publish_sheet(&self) -> Result<String, String> {
        let work = self.work.path();
        let made = crate::store::files_under(&work.join(THUMBS_DIR)).map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        {
            let stored = self.thumbs.lock().unwrap_or_else(|e| e.into_inner());
            for name in made {
                let name = format!("{THUMBS_DIR}/{name}");
                let size = std::fs::metadata(work.join(&name)).map_or(0, |m| m.len());
                if stored.get(&name) != Some(&size) {
                    names.push(name);
                }
            }
        }
        // The page last: it links thumbnails that are there by then.
        self.publish(&names).await?;
        self.publish(&[INDEX_HTML.to_string()]).await?;
        Ok(format!("{}/{INDEX_HTML}", self.store))
    }

    /// Ends the run's hold on the prefix: stops renewing, releases the
    /// lease. The working folder goes with the `Remote`.
    pub async fn close(&self) {
        if let Some(writer) = self.take_writer() {
            writer.close().await;
        }
        let keeper = self.keeper.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(keeper) = keeper {
            if let Err(e) = keeper.release().await {
                tracing::warn!("could not release the lease: {e}");
            }
        }
    }

    /// Why the run lost the prefix's lease, if it did (its journal then
    /// takes no more lines, and the run stops spending).
    pub fn lease_lost(&self) -> Option<String> {
        let keeper = self.keeper.lock().unwrap_or_else(|e| e.into_inner());
        keeper.as_ref().and_then(Keeper::lost)
    }
}

impl RunError {
    fn from_store(e: segments::JournalStoreError) -> RunError {
        RunError::Journal(e.into())
    }
}
