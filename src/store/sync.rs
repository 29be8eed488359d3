//! Files between a local folder and a store's prefix: one upload, one
//! download, a listing, and whole trees of them.
//!
//! Why this exists: a run, and every command that reads or writes a run's
//! folder, works on a local folder; with a bucket, that folder is a working
//! copy, and these move its files to the prefix (after a file is complete)
//! and back (before a reader needs them), under the same relative names.
//!
//! Bounds. An upload streams the file through object_store's `BufWriter`:
//! a file under [`PART`] is one put, a bigger one a multipart upload of
//! [`PART`]-sized parts, two in flight, so memory is bounded by the number
//! of uploads at once, never by a file's size. A download streams to a
//! temporary file beside its target, refuses an object over the size it is
//! given, and renames the file into place whole.
//!
//! Names from a listing become local paths only if every segment is a plain
//! name (no `.`, `..`, backslash or control character): an object named to
//! climb out of the folder is refused, never followed.
//!
//! Cancellation: dropping an upload aborts nothing already sent (an object
//! exists whole or not at all; an unfinished multipart upload is aborted
//! when the error is seen, or left for the bucket's lifecycle rule); dropping
//! a download leaves at most a temporary file, which `tempfile` removes.

use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::open::{Store, StoreError};

/// Files up to this size are one put; bigger ones go up in parts this size.
pub const PART: usize = 8 << 20;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// One object under a prefix: its name relative to the prefix, and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub size: u64,
}

impl Store {
    fn failed(&self, name: &str, what: &str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Call {
            name: format!("{}/{name}", self),
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Uploads the file at `local` as `name` under the prefix, replacing
    /// what was there; returns its size. Streams (see the module's text).
    pub async fn upload(&self, local: &Path, name: &str) -> Result<u64, StoreError> {
        let path = self.path(name)?;
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| self.failed(name, "read", crate::disk::plain(&e)))?;
        let mut up = BufWriter::with_capacity(self.inner().clone(), path, PART)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        let mut buf = vec![0; 64 << 10];
        let mut size = 0u64;
        let written: std::io::Result<()> = async {
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                up.write_all(&buf[..n]).await?;
                size += n as u64;
            }
        }
        .await;
        if let Err(e) = written {
            // A multipart upload begun is aborted (its parts are billed).
            let _ = up.abort().await;
            return Err(self.failed(name, "upload", e));
        }
        // Completes the put or the multipart upload; once begun, a shutdown
        // cannot be aborted (object_store would panic): a failed one's parts
        // are left to the bucket's lifecycle rule.
        up.shutdown()
            .await
            .map_err(|e| self.failed(name, "upload", e))?;
        Ok(size)
    }

    /// Uploads `bytes` as `name` under the prefix, replacing what was there.
    pub async fn put_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path(name)?;
        self.inner()
            .put(&path, bytes.into())
            .await
            .map(drop)
            .map_err(|e| self.failed(name, "upload", e))
    }

    /// Downloads `name` to `local` (its folder must exist), refusing an
    /// object over `max` bytes; returns its size. `Ok(None)`: no such object.
    pub async fn download(
        &self,
        name: &str,
        local: &Path,
        max: u64,
    ) -> Result<Option<u64>, StoreError> {
        let Some(got) = self.get_at_most(name, max).await? else {
            return Ok(None);
        };
        let dir = local.parent().unwrap_or(Path::new("."));
        let io = |e: std::io::Error| self.failed(name, "download", crate::disk::plain(&e));
        let temp = tempfile::Builder::new()
            .prefix(crate::disk::TEMP_PREFIX)
            .tempfile_in(dir)
            .map_err(io)?;
        let (std_file, temp_path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        let mut stream = got.into_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.failed(name, "download", e))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(self.failed(name, "download", "grew past the size it was listed at"));
            }
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        drop(file);
        temp_path.persist(local).map_err(|e| io(e.error))?;
        Ok(Some(size))
    }

    /// The SHA-256 of `name` (lower-case hex), read as a stream, never held
    /// whole, refusing an object over `max` bytes. `Ok(None)`: no such
    /// object. An error is a read that failed, never a verdict on the bytes.
    pub async fn sha256(&self, name: &str, max: u64) -> Result<Option<String>, StoreError> {
        use sha2::{Digest, Sha256};
        let Some(got) = self.get_at_most(name, max).await? else {
            return Ok(None);
        };
        let mut stream = got.into_stream();
        let mut hash = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.failed(name, "read", e))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(self.failed(name, "read", "grew past the size it was listed at"));
            }
            hash.update(&chunk);
        }
        Ok(Some(crate::disk::hex(&hash.finalize())))
    }

    /// Reads `name` whole, refusing an object over `max` bytes. `Ok(None)`:
    /// no such object.
    pub async fn read_bytes(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(got) = self.get_at_most(name, max).await? else {
            return Ok(None);
        };
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.failed(name, "download", e))?;
        Ok(Some(bytes.to_vec()))
    }

    /// The answer to a get of `name`, refused if the object is over `max`
    /// bytes. `Ok(None)`: no such object.
    async fn get_at_most(
        &self,
        name: &str,
        max: u64,
    ) -> Result<Option<object_store::GetResult>, StoreError> {
        let path = self.path(name)?;
        let got = match self.inner().get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed(name, "download", e)),
        };
        if got.meta.size > max {
            return Err(self.failed(
                name,
                "download",
                format!("{} bytes, over the {max} this reads", got.meta.size),
            ));
        }
        Ok(Some(got))
    }

    /// Every object under the prefix (or under `under` inside it), named
    /// relative to the prefix, in the store's order.
    pub async fn list(&self, under: Option<&str>) -> Result<Vec<Listed>, StoreError> {
        let base = match under {
            Some(u) => self.path(u)?,
            None => self.prefix().clone(),
        };
        let skip = self.prefix().parts().count();
        let metas: Vec<_> =
            self.inner()
                .list(Some(&base))
                .try_collect()
                .await
                .map_err(|e| match e {
                    // One object named with `..`, `.` or `//` fails the listing.
                    object_store::Error::InvalidPath { .. } => self.failed(
                        under.unwrap_or(""),
                        "list",
                        format!(
                            "{e}; rename or delete that object: a prefix holding it cannot be read"
                        ),
                    ),
                    e => self.failed(under.unwrap_or(""), "list", e),
                })?;
        Ok(metas
            .into_iter()
            .map(|m| Listed {
                name: relative(&m.location, skip),
                size: m.size,
            })
            .collect())
    }

    /// Downloads every listed object `want` keeps into `dir`, under its
    /// name, `at_once` at a time; one whose local file already has its size
    /// is kept. Returns how many were downloaded. A name that is not a
    /// plain relative path is an error, never followed.
    pub async fn fetch(
        &self,
        listed: &[Listed],
        dir: &Path,
        want: impl Fn(&str) -> bool,
        max: u64,
        at_once: usize,
    ) -> Result<usize, StoreError> {
        let mut todo = Vec::new();
        for l in listed.iter().filter(|l| want(&l.name)) {
            let local = local_path(dir, &l.name).ok_or_else(|| {
                self.failed(
                    &l.name,
                    "download",
                    "not a plain relative name; not fetched",
                )
            })?;
            if std::fs::metadata(&local).is_ok_and(|m| m.is_file() && m.len() == l.size) {
                continue;
            }
            todo.push((l.name.clone(), local));
        }
        let count = todo.len();
        futures_util::stream::iter(todo)
            .map(|(name, local)| async move {
                if let Some(parent) = local.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| self.failed(&name, "download", crate::disk::plain(&e)))?;
                }
                self.download(&name, &local, max).await.map(drop)
            })
            .buffer_unordered(at_once.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(count)
    }

    /// Uploads each of `names` (relative to `dir`) under the prefix,
    /// `at_once` at a time.
    pub async fn publish(
        &self,
        dir: &Path,
        names: &[String],
        at_once: usize,
    ) -> Result<(), StoreError> {
        let todo: Vec<(String, Option<PathBuf>)> = names
            .iter()
            .map(|name| (name.clone(), local_path(dir, name)))
            .collect();
        futures_util::stream::iter(todo)
            .map(|(name, local)| async move {
                let local = local.ok_or_else(|| {
                    self.failed(&name, "upload", "not a plain relative name; not uploaded")
                })?;
                self.upload(&local, &name).await.map(drop)
            })
            .buffer_unordered(at_once.max(1))
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }
}

/// `location` without its first `skip` parts, joined by `/`.
fn relative(location: &ObjectPath, skip: usize) -> String {
    location
        .parts()
        .skip(skip)
        .map(|p| p.as_ref().to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// `dir/name`, if every segment of `name` is a plain file name.
pub fn local_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && !s.contains('\\')
            && !s.chars().any(char::is_control)
    };
    if !name.split('/').all(plain) {
        return None;
    }
    Some(name.split('/').fold(dir.to_path_buf(), |p, s| p.join(s)))
}

/// Every file under `dir` (not following links), relative, `/`-joined.
pub fn files_under(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let rel = match rel.is_empty() {
                true => name,
                false => format!("{rel}/{name}"),
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push((entry.path(), rel));
            } else if kind.is_file() {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}
