//! A cache in a bucket (`--cache s3://BUCKET/PREFIX`, `gs://…`, `az://…`):
//! the folder's layout under the prefix, through [`crate::store::Store`].
//!
//! Why this exists apart from the folder: a bucket has no rename and no
//! cheap "is it there?" for a million rows, so it is used differently.
//!
//! - Lookups. The gateway's part is listed once when the cache is opened
//!   (one paginated listing); every identity with an `entry.json` goes into
//!   an index in memory, and lookups are answered from it, plus what this
//!   cache stored (or found stored) since, minus what it forgot.
//! - Storing. The images go up first, under names no other writer uses
//!   (`N-NONCE.EXT`), then `entry.json` LAST and only if absent
//!   (`PutMode::Create`, `If-None-Match: *`): a reader never sees half an
//!   entry, and when two store one request the first `entry.json` wins; the
//!   other sees `AlreadyExists` and deletes its own images, never touching
//!   the winner's. Images of a writer killed before its `entry.json` are
//!   never named by one, so never taken (a lifecycle rule may sweep them).
//! - Taking. `entry.json` and each file are read whole (at most [`ENTRY_CAP`]
//!   and [`FILE_CAP`] bytes), the files written to temporary files in the
//!   output folder and checked there exactly as the folder's are.
//! - Forgetting deletes `entry.json` (the images stay, unnamed).
//!
//! Blocking: these are synchronous methods over object_store futures,
//! driven with `Handle::block_on` inside `block_in_place` on the calling
//! thread's runtime. Callers must be on tokio's blocking pool (as the run's
//! `spawn_blocking` is) or on a multi-threaded runtime's worker; on a
//! current-thread runtime's own thread `block_in_place` panics. With no
//! runtime at all (a plain thread), a current-thread runtime is made for
//! the call. Cancellation: a call runs to its end once begun (object_store's
//! retries bound it); [`Part::forget`] never blocks: it spawns its delete,
//! a task dropped with the runtime, in which case a later run finds the
//! damage again and forgets it then.

use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use object_store::{ObjectStore, ObjectStoreExt, PutMode};
use sha2::{Digest, Sha256};

use super::{changed_since_saved, check_bytes, is_identity, land, storable_format};
use super::{At, CacheError, Hit, Stored, StoredFile};
use super::{ENTRY_CAP, ENTRY_JSON, FILE_CAP};
use crate::disk::{self, hex};
use crate::store::Store;

/// One gateway's part of a cache in a bucket.
#[derive(Debug)]
pub(super) struct Part {
    store: Store,
    /// The part's name under the prefix (`GATEWAY-HASH`, or `simulated`).
    root: String,
    /// Identities with an `entry.json`: listed at open, then kept by this
    /// cache's own stores and forgets.
    index: Mutex<HashSet<String>>,
}

impl Part {
    /// Lists the part once and indexes its entries.
    pub(super) fn open(store: Store, root: String) -> Result<Part, CacheError> {
        let listed = block(async { store.list(Some(&root)).await })
            .and_then(|r| r.map_err(|e| CacheError::store(&store, e)))?;
        let under = format!("{root}/");
        let index = listed
            .iter()
            .filter_map(|l| {
                let rest = l.name.strip_prefix(&under)?;
                let mut parts = rest.split('/');
                let (ab, id, file) = (parts.next()?, parts.next()?, parts.next()?);
                (parts.next().is_none() && file == ENTRY_JSON && is_identity(id) && ab == &id[..2])
                    .then(|| id.to_string())
            })
            .collect();
        Ok(Part {
            store,
            root,
            index: Mutex::new(index),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `ROOT/ab/IDENTITY`: the entry's name under the prefix.
    fn entry(&self, identity: &str) -> String {
        format!("{}/{}/{identity}", self.root, &identity[..2])
    }

    /// How an entry is named in messages: its URL.
    fn url(&self, entry: &str) -> PathBuf {
        PathBuf::from(format!("{}/{entry}", self.store))
    }

    pub(super) fn lookup(&self, identity: &str) -> Option<Hit> {
        self.index().contains(identity).then(|| Hit {
            at: At::Bucket {
                identity: identity.to_string(),
            },
        })
    }

    /// Reads the entry's `entry.json` and files into `dir`, checked there.
    pub(super) fn take(
        &self,
        identity: &str,
        dir: &Path,
        stem: &str,
        temp_prefix: &str,
    ) -> Result<Vec<super::Taken>, CacheError> {
        let entry = self.entry(identity);
        let damaged = |why: String| CacheError::Damaged {
            entry: self.url(&entry),
            why,
        };
        let store = &self.store;
        let failed = |e| CacheError::store(store, e);
        let json = block(store.read_bytes(&format!("{entry}/{ENTRY_JSON}"), ENTRY_CAP))?
            .map_err(failed)?
            .ok_or_else(|| damaged(format!("its {ENTRY_JSON} is gone")))?;
        let stored: Stored = serde_json::from_slice(&json)
            .map_err(|e| damaged(format!("its {ENTRY_JSON} does not read: {e}")))?;
        if !stored.usable() {
            return Err(damaged(format!(
                "its {ENTRY_JSON} names no files, or a name that is not a plain file name"
            )));
        }
        land(
            &stored.files,
            &self.url(&entry),
            dir,
            stem,
            temp_prefix,
            &mut |f, mut file, damaged, out| {
                if f.bytes > FILE_CAP {
                    return Err(damaged(format!(
                        "larger than {}",
                        disk::human_bytes(FILE_CAP)
                    )));
                }
                // One byte over what it records, so that a longer file is
                // seen as one (and refused when checked) rather than cut.
                let name = format!("{entry}/{}", f.name);
                let bytes = block(store.read_bytes(&name, f.bytes + 1))?
                    .map_err(failed)?
                    .ok_or_else(|| damaged("missing".into()))?;
                file.write_all(&bytes).map_err(out)
            },
        )
    }

    /// Uploads the images, then `entry.json` only if absent (see the module).
    pub(super) fn store(
        &self,
        identity: &str,
        files: &[(PathBuf, String)],
    ) -> Result<(), CacheError> {
        if files.is_empty() || self.index().contains(identity) {
            return Ok(());
        }
        block(async {
            // Stored by another run since this one listed: nothing to send.
            if !self.stands(identity).await? {
                self.upload(identity, files).await?;
            }
            Ok::<_, CacheError>(())
        })??;
        self.index().insert(identity.to_string());
        Ok(())
    }

    /// `entry.json` of `identity`, under the prefix.
    fn json_path(&self, identity: &str) -> Result<object_store::path::Path, CacheError> {
        let name = format!("{}/{ENTRY_JSON}", self.entry(identity));
        self.store
            .path(&name)
            .map_err(|e| CacheError::store(&self.store, e))
    }

    /// Whether the entry `identity` has its `entry.json`.
    async fn stands(&self, identity: &str) -> Result<bool, CacheError> {
        match self.store.inner().head(&self.json_path(identity)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(CacheError::store(&self.store, e)),
        }
    }

    /// Stores the entry; `Ok` once an `entry.json` stands, this writer's or
    /// another's (whose images this one's never replace: its own are
    /// deleted again).
    async fn upload(&self, identity: &str, files: &[(PathBuf, String)]) -> Result<(), CacheError> {
        let store = &self.store;
        let entry = self.entry(identity);
        let json_path = self.json_path(identity)?;
        let mut sent = Vec::new();
        let result = self.send(&entry, files, &json_path, &mut sent).await;
        if !matches!(result, Ok(true)) {
            for path in &sent {
                let _ = store.inner().delete(path).await;
            }
        }
        result.map(drop)
    }

    /// Uploads each image under a name of this writer's own (recorded in
    /// `sent` as it goes), then `entry.json` if absent: whether it was.
    async fn send(
        &self,
        entry: &str,
        files: &[(PathBuf, String)],
        json_path: &object_store::path::Path,
        sent: &mut Vec<object_store::path::Path>,
    ) -> Result<bool, CacheError> {
        let store = &self.store;
        let failed = |e| CacheError::store(store, e);
        let nonce = nonce(entry);
        let mut stored = Stored { files: Vec::new() };
        for (n, (path, sha256)) in files.iter().enumerate() {
            let format = storable_format(path)?;
            // What goes up is what was checked: the bytes read once.
            let bytes = disk::read_regular(path, FILE_CAP)?;
            let size = check_bytes(&bytes, sha256, format)
                .map_err(|why| changed_since_saved(path, why))?;
            let name = format!("{n}-{nonce}.{}", format.extension());
            let object = format!("{entry}/{name}");
            sent.push(store.path(&object).map_err(failed)?);
            store.put_bytes(&object, bytes).await.map_err(failed)?;
            stored.files.push(StoredFile {
                name,
                bytes: size,
                sha256: sha256.clone(),
            });
        }
        let json = serde_json::to_vec(&stored).expect("an entry serialises");
        let put = store
            .inner()
            .put_opts(json_path, json.into(), PutMode::Create.into())
            .await;
        match put {
            Ok(_) => Ok(true),
            // Another run stored it first: theirs stands.
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(CacheError::store(store, e)),
        }
    }

    /// Deletes the entry's `entry.json` (see the module: never blocks).
    pub(super) fn forget(&self, identity: &str) {
        self.index().remove(identity);
        let Ok(path) = self.json_path(identity) else {
            return;
        };
        let inner = self.store.inner().clone();
        let delete = async move {
            let _ = inner.delete(&path).await;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(delete)),
            Err(_) => {
                let _ = block(delete);
            }
        }
    }
}

/// Runs `fut` to its end from synchronous code (see the module: callers
/// are on the blocking pool). An error only if no runtime could be made.
fn block<F: Future>(fut: F) -> Result<F::Output, CacheError> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => Ok(tokio::task::block_in_place(|| runtime.block_on(fut))),
        Err(_) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(CacheError::io(Path::new("a runtime for the cache")))?;
            Ok(runtime.block_on(fut))
        }
    }
}

/// A name part no other writer uses: this process, this moment, a count.
fn nonce(identity: &str) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let seed = format!(
        "{identity} {} {now} {}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    );
    hex(&Sha256::digest(seed.as_bytes()))[..12].to_string()
}

#[cfg(test)]
#[path = "bucket_tests.rs"]
mod tests;
