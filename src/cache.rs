//! A store of finished images shared by runs and manifests (`--cache DIR`).
//!
//! Why this exists: nightly jobs overlap. A request already fulfilled by
//! any earlier run, of any manifest, need not be paid for again: its images
//! are taken from the store, and the row is completed at no cost.
//!
//! What a request is: the gateway it went to, its endpoint, every parameter
//! as sent (the seed included, derived or given) and the content of every
//! local image it sends. Two rows with the same identity would send the
//! same request. Layout: `DIR/GATEWAY/ab/IDENTITY/` holds the images
//! (`0.png`, …) and `entry.json` (their names, sizes and SHA-256).
//!
//! Safety: an entry appears whole or not at all (it is built in a temporary
//! folder beside it, synced, and renamed into place), so runs sharing one
//! store never see half an entry; when two store the same request, the
//! first rename wins and the other is dropped. A file taken from the store
//! is checked against its SHA-256 as it is copied; an entry that fails is
//! treated as missing (the row is paid for, and stored again).
//!
//! Cancellation: nothing here is async; callers run it on the blocking pool.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::disk::{self, hex};
use crate::output::plain_name;
use crate::plan::{ImageInput, Request};

const ENTRY_JSON: &str = "entry.json";
/// The most an `entry.json` may hold.
const ENTRY_CAP: u64 = 64 * 1024;
/// The largest file taken from the store.
const FILE_CAP: u64 = 256 * 1024 * 1024;

/// One gateway's part of a store.
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    /// SHA-256 of local images, by path, read once per run.
    local: Mutex<HashMap<PathBuf, String>>,
}

/// What a stored request holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub files: Vec<StoredFile>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredFile {
    /// `0.png`, …: the file in the entry's folder.
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A file taken from the store into the output folder.
#[derive(Debug)]
pub struct Taken {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    pub mtime_ns: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot use the cache {path}: {}", crate::disk::plain(source))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the cache entry {0} is damaged")]
    Damaged(PathBuf),
    #[error(transparent)]
    Read(#[from] disk::ReadError),
    /// Writing into the output folder failed (a local fault, not the cache's).
    #[error("cannot write {path}: {}", crate::disk::plain(source))]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CacheError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
        move |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Cache {
    /// The part of the store at `dir` that holds `gateway`'s images.
    pub fn open(dir: &Path, gateway: &str) -> Result<Cache, CacheError> {
        let mut slug = crate::plan::sanitize(gateway);
        if slug.is_empty() {
            slug = "gateway".into();
        }
        let root = dir.join(slug);
        // No stray clean-up here: another run may be building an entry.
        std::fs::create_dir_all(&root).map_err(CacheError::io(&root))?;
        Ok(Cache {
            root,
            local: Mutex::new(HashMap::new()),
        })
    }

    /// The identity of `req` as it would be sent (its local images read and
    /// hashed once per run).
    pub fn identity(&self, req: &Request) -> Result<String, CacheError> {
        let mut h = Sha256::new();
        h.update(b"batchgen-cache-1\n");
        h.update(req.kind().as_str().as_bytes());
        h.update(b"\n");
        h.update(req.canonical_without_seed().as_bytes());
        h.update(Request::canonical_seed(req.seed).as_bytes());
        for input in req.image_urls.iter().flat_map(|u| u.iter()) {
            if let ImageInput::File { path, .. } = input {
                h.update(b"\nfile:");
                h.update(self.local_hash(path)?.as_bytes());
            }
        }
        Ok(hex(&h.finalize()))
    }

    fn local_hash(&self, path: &Path) -> Result<String, CacheError> {
        let mut known = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = known.get(path) {
            return Ok(h.clone());
        }
        let bytes = disk::read_regular(path, crate::plan::MAX_LOCAL_IMAGE_BYTES)?;
        let h = hex(&Sha256::digest(&bytes));
        known.insert(path.to_path_buf(), h.clone());
        Ok(h)
    }

    fn entry_dir(&self, identity: &str) -> PathBuf {
        self.root.join(&identity[..2]).join(identity)
    }

    /// The stored request `identity`, if the store has it.
    pub fn lookup(&self, identity: &str) -> Option<Stored> {
        let path = self.entry_dir(identity).join(ENTRY_JSON);
        let bytes = disk::read_regular(&path, ENTRY_CAP).ok()?;
        let stored: Stored = serde_json::from_slice(&bytes).ok()?;
        (!stored.files.is_empty() && stored.files.iter().all(|f| plain_name(&f.name)))
            .then_some(stored)
    }

    /// Copies the stored files of `identity` into `dir` as `STEM_N.EXT`,
    /// each checked against its SHA-256 and renamed into place whole.
    pub fn take(
        &self,
        identity: &str,
        stored: &Stored,
        dir: &Path,
        stem: &str,
        temp_prefix: &str,
    ) -> Result<Vec<Taken>, CacheError> {
        let entry = self.entry_dir(identity);
        let mut taken = Vec::new();
        for (n, f) in stored.files.iter().enumerate() {
            let from = entry.join(&f.name);
            let to = dir.join(format!("{stem}_{n}{}", dot_ext(Path::new(&f.name))));
            let mut src = disk::open_regular(&from, FILE_CAP)?;
            let out = |source| CacheError::Output {
                path: to.clone(),
                source,
            };
            let tmp = disk::temp_in(dir, temp_prefix).map_err(out)?;
            let mut h = Sha256::new();
            let mut bytes = 0u64;
            let mut buf = vec![0; 1 << 16];
            let mut w = tmp.as_file();
            loop {
                let got = src.read(&mut buf).map_err(CacheError::io(&from))?;
                if got == 0 {
                    break;
                }
                h.update(&buf[..got]);
                w.write_all(&buf[..got]).map_err(out)?;
                bytes += got as u64;
            }
            if bytes != f.bytes || hex(&h.finalize()) != f.sha256 {
                return Err(CacheError::Damaged(entry));
            }
            tmp.as_file().sync_all().map_err(out)?;
            let file = tmp.persist(&to).map_err(|e| out(e.error))?;
            let meta = file.metadata().map_err(out)?;
            taken.push(Taken {
                path: to,
                sha256: f.sha256.clone(),
                bytes,
                mtime_ns: disk::mtime_ns(&meta),
            });
        }
        Ok(taken)
    }

    /// Stores `files` (paths and SHA-256) as the images of `identity`:
    /// linked when the store is on the same file system, else copied.
    /// Storing what is already stored changes nothing.
    pub fn store(&self, identity: &str, files: &[(PathBuf, String)]) -> Result<(), CacheError> {
        let entry = self.entry_dir(identity);
        if entry.join(ENTRY_JSON).is_file() {
            return Ok(());
        }
        let io = CacheError::io(&self.root);
        let tmp = tempfile::Builder::new()
            .prefix(disk::TEMP_PREFIX)
            .tempdir_in(&self.root)
            .map_err(io)?;
        let mut stored = Stored { files: Vec::new() };
        for (n, (path, sha256)) in files.iter().enumerate() {
            let name = format!("{n}{}", dot_ext(path));
            let to = tmp.path().join(&name);
            if std::fs::hard_link(path, &to).is_err() {
                std::fs::copy(path, &to).map_err(CacheError::io(path))?;
                File::open(&to)
                    .and_then(|f| f.sync_all())
                    .map_err(CacheError::io(&to))?;
            }
            let bytes = std::fs::metadata(&to).map_err(CacheError::io(&to))?.len();
            stored.files.push(StoredFile {
                name,
                bytes,
                sha256: sha256.clone(),
            });
        }
        let json = serde_json::to_vec(&stored).expect("an entry serialises");
        let json_path = tmp.path().join(ENTRY_JSON);
        let mut f = File::create(&json_path).map_err(CacheError::io(&json_path))?;
        f.write_all(&json)
            .and_then(|()| f.sync_all())
            .map_err(CacheError::io(&json_path))?;
        disk::sync_dir(tmp.path());
        let parent = entry.parent().expect("an entry has a parent");
        std::fs::create_dir_all(parent).map_err(CacheError::io(parent))?;
        let tmp = tmp.keep();
        match std::fs::rename(&tmp, &entry) {
            Ok(()) => {
                disk::sync_dir(parent);
                Ok(())
            }
            // Another run stored it first: theirs stands.
            Err(_) if entry.join(ENTRY_JSON).is_file() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(source) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(CacheError::Io {
                    path: entry,
                    source,
                })
            }
        }
    }

    /// Removes a damaged entry, so that the next payer stores it afresh.
    pub fn forget(&self, identity: &str) {
        let _ = std::fs::remove_dir_all(self.entry_dir(identity));
    }
}

/// `.png` for `x.png`; empty for a name without an extension.
fn dot_ext(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .map_or(String::new(), |e| format!(".{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_files_come_back_checked_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let src = out.join("a_0.png");
        std::fs::write(&src, b"picture").unwrap();
        let sha = hex(&Sha256::digest(b"picture"));
        let cache = Cache::open(&dir.path().join("cache"), "simulated").unwrap();
        let id = hex(&Sha256::digest(b"request"));
        assert!(cache.lookup(&id).is_none());
        cache.store(&id, &[(src.clone(), sha.clone())]).unwrap();
        cache.store(&id, &[(src.clone(), sha.clone())]).unwrap();
        let stored = cache.lookup(&id).expect("stored");
        assert_eq!(stored.files[0].bytes, 7);

        let elsewhere = dir.path().join("other");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let taken = cache
            .take(&id, &stored, &elsewhere, "b_s1", ".part-")
            .unwrap();
        assert_eq!(taken[0].path, elsewhere.join("b_s1_0.png"));
        assert_eq!(std::fs::read(&taken[0].path).unwrap(), b"picture");
        assert_eq!(taken[0].sha256, sha);

        // A stored file changed behind the store's back is refused.
        let entry = cache.entry_dir(&id).join("0.png");
        std::fs::remove_file(&entry).unwrap();
        std::fs::write(&entry, b"pictura").unwrap();
        assert!(matches!(
            cache.take(&id, &stored, &elsewhere, "c", ".part-"),
            Err(CacheError::Damaged(_))
        ));
        assert!(!elsewhere.join("c_0.png").exists());
        cache.forget(&id);
        assert!(cache.lookup(&id).is_none());
        let left: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }
}
