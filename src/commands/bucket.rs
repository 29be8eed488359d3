//! A working copy of a bucket prefix, for the commands that read a run
//! (`status`, `report`, `export`, `merge`) when they are given a URL.
//!
//! Why this exists: those commands' code reads and writes local folders,
//! and its safety rules (confinement, bounded reads, outputs put in place
//! whole) are written for folders. For a URL it runs unchanged on a copy
//! in a temporary folder: what it reads is fetched first (the journal
//! replayed from its segments and written as a local `journal.jsonl`, other
//! objects downloaded, each under a size cap), and what it writes is
//! uploaded after ([`Copy::publish`]). The copy mirrors the bucket,
//! `TEMP/BUCKET/PREFIX/…`, so that a relative path between two prefixes (a
//! merge's `../shards/0-of-2/images/a_1.png`) means in the copy what it
//! means in the bucket, and so that every path in a message can be shown as
//! the URL it stands for ([`Copy::show`], [`Copy::error`]).
//!
//! Confinement on the bucket: only objects under the prefix given are
//! read, plus, for a merged prefix, those under the shard prefixes its
//! summary.json records (as `confine::Sources` allows for folders); an
//! object name that is not a plain relative one is never made a local path;
//! and a prefix written to is checked against the bucket's runs
//! ([`check_output`]) as `confine::check_output` checks folders.
//!
//! Cancellation: every step is a future of object_store calls, cancelled
//! by dropping it; a download lands whole or not at all. The copy is
//! removed when the [`Copy`] is dropped; a signal during the local work
//! ends the process (see `signals::interruptible`) and leaves it in the
//! system's temporary folder.

use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::confine::{self, Refused, Writes};
use crate::exit::{self, Error};
use crate::store::{local_path, Bucket, Location, Store, StoreError};
use crate::{disk, journal};

/// The largest results.csv fetched.
pub const MAX_RESULTS: u64 = 4 << 30;
/// The largest `.plan-keys` fetched (a key is 17 bytes a row).
pub const MAX_PLAN_KEYS: u64 = 1 << 30;
/// The largest summary.json, sidecar or thumbnail fetched.
pub const MAX_SMALL: u64 = 16 << 20;
/// The largest image fetched (as `report` and `export` read them).
pub const MAX_IMAGE: u64 = 256 << 20;
/// Objects moved at once.
pub const AT_ONCE: usize = 8;

/// On a bucket, beside a folder's own files (`confine::OWN`): the journal's
/// segments and the lease, never written by another command.
const OWN_ON_STORE: &[&str] = &["journal", "lease.json"];

/// Where a command reads or writes: a local path, or a bucket prefix.
pub enum Place {
    Local(PathBuf),
    Bucket(Store),
}

/// `path` as given for `what` (`status DIR`, `--out`, …): a local path as
/// always, or a bucket opened from the environment; an unknown scheme or a
/// bad URL is exit 2, before anything is read.
pub fn place(path: &Path, what: &'static str) -> Result<Place, Error> {
    match Location::of_path(path) {
        Ok(Location::Local(path)) => Ok(Place::Local(path)),
        Ok(Location::Bucket(bucket)) => bucket.open().map(Place::Bucket).map_err(store_error),
        Err(source) => Err(Error::Location { what, source }),
    }
}

/// A store error as the CLI reports it: a failed call (after retries) stops
/// the command as a disk fault does (exit 3); a store that cannot be opened
/// or a name that cannot be placed in it is invalid input (exit 2).
pub fn store_error(e: StoreError) -> Error {
    let code = match e {
        StoreError::Call { .. } => exit::ABORTED,
        _ => exit::INVALID,
    };
    Error::Bucket {
        text: e.to_string(),
        code,
    }
}

/// A store call on `name` that failed, as [`store_error`] reports it.
fn call_error(store: &dyn ObjectStore, name: &str, what: &str, e: impl ToString) -> Error {
    Error::Bucket {
        text: format!("cannot {what} {name} in {store}: {}", e.to_string()),
        code: exit::ABORTED,
    }
}

/// The prefix `rel` names from `base` (both `/`-separated, relative to the
/// bucket): `..` climbs, empty and `.` segments are skipped. `None` if it
/// climbs above the bucket, or a segment holds a backslash or a control
/// character.
pub fn join_key(base: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s if s.contains('\\') || s.chars().any(char::is_control) => return None,
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

/// `key` under `prefix` (or `prefix` itself): both relative to the bucket.
pub fn under(key: &str, prefix: &str) -> bool {
    prefix.is_empty() || key == prefix || key.starts_with(&format!("{prefix}/"))
}

/// `key` as seen from `base` (both relative to the bucket), with `..`
/// where it is not below it.
pub fn relative_key(base: &str, key: &str) -> String {
    let b: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
    let k: Vec<&str> = key.split('/').filter(|s| !s.is_empty()).collect();
    let common = b.iter().zip(&k).take_while(|(x, y)| x == y).count();
    let mut rel: Vec<&str> = vec![".."; b.len() - common];
    rel.extend(&k[common..]);
    rel.join("/")
}

/// A working copy of prefixes of one bucket in a temporary folder.
pub struct Copy {
    _temp: tempfile::TempDir,
    /// Held while the copy lives: a later command sweeps the copy only once
    /// its maker is gone (a signal ends the process without dropping it).
    _lock: std::fs::File,
    /// The temporary folder, resolved: paths in messages start with it.
    root: PathBuf,
    /// The bucket's root: every key below is relative to the bucket.
    bucket: Store,
}

/// The bucket of `store`, without its prefix: where keys are whole.
pub fn root_of(store: &Store) -> Result<Store, Error> {
    let whole = Bucket {
        prefix: String::new(),
        ..store.bucket().clone()
    };
    Store::over(whole, store.inner().clone()).map_err(store_error)
}

impl Copy {
    /// An empty copy for the bucket of `store`.
    pub fn new(store: &Store) -> Result<Copy, Error> {
        let b = store.bucket();
        if matches!(b.bucket.as_str(), "." | "..") {
            return Err(Error::Bucket {
                text: format!("`{}` is not a bucket name batchgen reads", b.bucket),
                code: exit::INVALID,
            });
        }
        let io = |e: std::io::Error| {
            Error::Io(format!(
                "cannot make a working copy of {store} in {} (the temporary folder: set TMPDIR, or mount a writable /tmp in a container): {}",
                std::env::temp_dir().display(),
                disk::plain(&e)
            ))
        };
        let (temp, lock) = crate::temps::working_folder("batchgen-copy-").map_err(io)?;
        let root = std::fs::canonicalize(temp.path()).map_err(io)?;
        let bucket = root_of(store)?;
        Ok(Copy {
            _temp: temp,
            _lock: lock,
            root,
            bucket,
        })
    }

    /// The bucket's root, as a store.
    pub fn bucket(&self) -> &Store {
        &self.bucket
    }

    /// The store for `prefix` (relative to the bucket) of this bucket.
    pub fn at(&self, prefix: &str) -> Result<Store, Error> {
        let b = Bucket {
            prefix: prefix.to_string(),
            ..self.bucket.bucket().clone()
        };
        Store::over(b, self.bucket.inner().clone()).map_err(store_error)
    }

    fn top(&self) -> PathBuf {
        self.root.join(&self.bucket.bucket().bucket)
    }

    /// The local folder standing for `store`'s prefix (not created).
    pub fn dir_of(&self, store: &Store) -> PathBuf {
        let prefix = &store.bucket().prefix;
        prefix
            .split('/')
            .filter(|s| !s.is_empty())
            .fold(self.top(), |d, s| d.join(s))
    }

    /// A temporary path in the copy outside the bucket's mirror, for a
    /// command's output that is uploaded after (`export --out URL`).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.root.join(format!("@{name}"))
    }

    /// `text` with every path of the copy shown as the URL it stands for.
    pub fn show(&self, text: &str) -> String {
        let scheme = self.bucket.bucket().scheme;
        text.replace(
            &format!("{}/", self.root.display()),
            &format!("{scheme}://"),
        )
    }

    /// `e`, met writing `path` of the copy, with the path shown as the URL
    /// it stands for.
    fn cannot_write(&self, path: &Path, e: std::io::Error) -> Error {
        Error::Io(format!(
            "cannot write {}: {}",
            self.show(&path.display().to_string()),
            disk::plain(&e)
        ))
    }

    /// `e` (from the local code run on the copy) with its paths shown as
    /// URLs, keeping its exit code.
    pub fn error(&self, e: Error) -> Error {
        Error::Bucket {
            text: self.show(&e.to_string()),
            code: e.code(),
        }
    }

    /// Replays the journal under `store`'s prefix into a local
    /// `journal.jsonl` of its folder in the copy. `false`: it holds none.
    pub async fn journal(&self, store: &Store) -> Result<bool, Error> {
        let replayed = journal::store::replay(&**store.inner(), store.prefix())
            .await
            .map_err(|e| Error::Bucket {
                text: format!("{store}: {e}"),
                code: exit::ABORTED,
            })?;
        if replayed.last == 0 && replayed.checkpoint.is_none() {
            return Ok(false);
        }
        let dir = self.dir_of(store);
        let replay = replayed.replay;
        let written = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            replay.write_local(&dir)
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))?;
        written.map_err(|e| {
            Error::Io(format!(
                "cannot copy the journal of {store}: {}",
                disk::plain(&e)
            ))
        })?;
        Ok(true)
    }

    /// The local path of `key` (relative to the bucket), if every segment
    /// is a plain name.
    fn local(&self, key: &str) -> Result<PathBuf, Error> {
        local_path(&self.top(), key).ok_or_else(|| Error::Bucket {
            text: format!("{}/{key}: not a plain object name; not read", self.bucket),
            code: exit::INVALID,
        })
    }

    /// Downloads each of `keys` (relative to the bucket) that exists to its
    /// place in the copy, refusing one over `max` bytes; returns how many
    /// were there.
    pub async fn fetch(&self, keys: Vec<String>, max: u64) -> Result<usize, Error> {
        let todo = keys
            .into_iter()
            .map(|k| self.local(&k).map(|l| (k, l)))
            .collect::<Result<Vec<_>, _>>()?;
        futures_util::stream::iter(todo)
            .map(|(key, local)| async move {
                if let Some(parent) = local.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| self.cannot_write(parent, e))?;
                }
                self.bucket
                    .download(&key, &local, max)
                    .await
                    .map(|got| usize::from(got.is_some()))
                    .map_err(store_error)
            })
            .buffer_unordered(AT_ONCE)
            .try_fold(0, |n, got| async move { Ok(n + got) })
            .await
    }

    /// Writes the first [`confine::MAGIC_BYTES`] of `key` at its place in
    /// the copy, reading no more than that of it: what `report` checks of
    /// an image whose thumbnail is already made. Returns whether it exists.
    pub async fn head_only(&self, key: &str) -> Result<bool, Error> {
        let local = self.local(key)?;
        let path = self.bucket.path(key).map_err(store_error)?;
        let inner = self.bucket.inner();
        let got = match inner.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(call_error(&**inner, key, "read", e)),
        };
        let mut stream = got.into_stream();
        let mut head = Vec::with_capacity(confine::MAGIC_BYTES);
        while head.len() < confine::MAGIC_BYTES {
            match stream.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(|e| call_error(&**inner, key, "read", e))?;
                    let take = chunk.len().min(confine::MAGIC_BYTES - head.len());
                    head.extend_from_slice(&chunk[..take]);
                }
                None => break,
            }
        }
        drop(stream);
        let io = |e| self.cannot_write(&local, e);
        if let Some(parent) = local.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        tokio::fs::write(&local, head).await.map_err(io)?;
        Ok(true)
    }

    /// An empty file at `key`'s place in the copy, unless one is there:
    /// a stand-in for an object outside what a command may read, which it
    /// then finds outside, never read.
    pub fn stand_in(&self, key: &str) -> Result<(), Error> {
        let local = self.local(key)?;
        let io = |e| self.cannot_write(&local, e);
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&local)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// Uploads each of `names` (relative to `store`'s folder in the copy)
    /// under its prefix.
    pub async fn publish(&self, store: &Store, names: &[String]) -> Result<(), Error> {
        store
            .publish(&self.dir_of(store), names, AT_ONCE)
            .await
            .map_err(store_error)
    }
}

/// Whether `prefix` (relative to the bucket) holds a journal on the store.
pub async fn has_journal(bucket: &Store, prefix: &str) -> Result<bool, Error> {
    let key = join_key(prefix, "journal").unwrap_or_default();
    let inner = bucket.inner();
    let listed = inner
        .list_with_delimiter(Some(&ObjectPath::from(key.as_str())))
        .await
        .map_err(|e| call_error(&**inner, &key, "list", e))?;
    Ok(!listed.objects.is_empty())
}

/// Whether `key` (relative to the bucket) is an object.
async fn exists(bucket: &Store, key: &str) -> Result<bool, Error> {
    let inner = bucket.inner();
    match inner.head(&ObjectPath::from(key)).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(call_error(&**inner, key, "read", e)),
    }
}

/// The shard prefixes directly under `store`'s prefix (`…/I-of-N`), sorted:
/// what a parent prefix given to `merge` stands for.
pub async fn shards_under(store: &Store) -> Result<Vec<String>, Error> {
    let inner = store.inner();
    let listed = inner
        .list_with_delimiter(Some(store.prefix()))
        .await
        .map_err(|e| call_error(&**inner, &store.bucket().prefix, "list", e))?;
    let is_shard = |name: &str| {
        name.split_once("-of-").is_some_and(|(i, n)| {
            [i, n]
                .iter()
                .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    let mut found: Vec<(u64, String)> = listed
        .common_prefixes
        .iter()
        .filter(|p| p.filename().is_some_and(is_shard))
        .map(|p| {
            let index = p
                .filename()
                .and_then(|f| f.split('-').next())
                .and_then(|i| i.parse().ok())
                .unwrap_or(u64::MAX);
            (index, p.to_string())
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Refuses writing at `key` (relative to the bucket; shown with `flag`)
/// when it is, or is inside, a run's own files on the bucket, when it is a
/// run's prefix itself (for [`Writes::Merged`], only one with a journal),
/// or when it is one of `inputs` (prefixes relative to the bucket): the
/// rules `confine::check_output` keeps for folders.
pub async fn check_output(
    bucket: &Store,
    flag: &str,
    key: &str,
    inputs: &[&str],
    writes: Writes,
) -> Result<Result<(), Refused>, Error> {
    let url = match key.is_empty() {
        true => bucket.to_string(),
        false => format!("{bucket}/{key}"),
    };
    let refuse = |why: String| {
        Ok(Err(Refused {
            given: PathBuf::from(match flag.is_empty() {
                true => url.clone(),
                false => format!("{flag} {url}"),
            }),
            why,
        }))
    };
    if inputs.contains(&key) {
        return refuse(format!(
            "is {url} itself, the prefix this command reads: write somewhere else"
        ));
    }
    let parts: Vec<&str> = key.split('/').filter(|s| !s.is_empty()).collect();
    for i in (0..=parts.len()).rev() {
        let at = parts[..i].join("/");
        let journal = has_journal(bucket, &at).await?;
        let run = journal
            || (exists(bucket, &join_key(&at, "results.csv").unwrap_or_default()).await?
                && exists(bucket, &join_key(&at, "summary.json").unwrap_or_default()).await?);
        if !run {
            continue;
        }
        let folder = match at.is_empty() {
            true => bucket.to_string(),
            false => format!("{bucket}/{at}"),
        };
        if i == parts.len() {
            if writes == Writes::Merged && !journal {
                continue;
            }
            return refuse(format!(
                "is the run prefix {folder}: write into a prefix of its own"
            ));
        }
        let first = parts[i];
        let own = confine::OWN
            .iter()
            .chain(OWN_ON_STORE)
            .find(|o| **o == first);
        if let Some(own) = own {
            let what = if i + 1 == parts.len() {
                "is"
            } else {
                "is inside"
            };
            return refuse(format!(
                "{what} {own} of the run prefix {folder}: batchgen never writes over a run's own files ({}, {}); choose a prefix outside them",
                confine::OWN.join(", "),
                OWN_ON_STORE.join(", ")
            ));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
#[path = "bucket_tests.rs"]
mod tests;
