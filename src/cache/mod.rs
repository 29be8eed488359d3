//! A store of finished images shared by runs and manifests (`--cache DIR`,
//! or `--cache s3://BUCKET/PREFIX` and the other bucket URLs).
//!
//! Why this exists: nightly jobs overlap. A request already fulfilled by
//! any earlier run, of any manifest, need not be paid for again: its images
//! are taken from the store, and the row is completed at no cost.
//!
//! What a request is: the gateway it went to (its base URL, normalised: see
//! [`crate::gateway`]), its endpoint, every parameter as sent (the seed
//! included, derived or given) and the content of every local image it
//! sends. Two rows with the same identity would send the same request.
//! Layout: `DIR/GATEWAY-HASH/ab/IDENTITY/` holds the images (`0.png`, …)
//! and `entry.json` (their names, sizes and SHA-256). `GATEWAY` is the base
//! URL made a file name, `HASH` the start of its SHA-256, so no two base
//! URLs share a folder (the simulator's is `DIR/simulated/`, as it always
//! was). A bucket holds the same layout under its prefix
//! (`PREFIX/GATEWAY-HASH/ab/IDENTITY/entry.json`).
//!
//! Trust: nothing in the store is taken on its word. A file is taken only
//! if the copy that landed in the output folder (the store may change under
//! a run) has the size and SHA-256 `entry.json` records and is a whole image
//! of the format its name declares (PNG or JPEG). Anything else is a miss:
//! the entry is forgotten, and the row is paid for and stored afresh.
//!
//! Safety: an entry appears whole or not at all, so runs sharing one store
//! never see half an entry, and when two store the same request the first
//! wins and the other's copy is dropped: in a folder by a rename
//! (`local.rs`), in a bucket by creating `entry.json` last and only if absent
//! (`bucket.rs`).
//!
//! Cancellation: the API is synchronous, and callers run it on tokio's
//! blocking pool. A bucket's calls are object_store futures driven to their
//! end there (see `bucket.rs`); [`Cache::forget`] on a bucket only starts
//! its delete, a task dropped with the runtime.

mod bucket;
mod local;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{image, ImageFormat};
use crate::disk::{self, hex};
use crate::gateway::Gateway;
use crate::output::plain_name;
use crate::plan::{ImageInput, Request};
use crate::store::{Location, Store, StoreError};

const ENTRY_JSON: &str = "entry.json";
/// The most an `entry.json` may hold.
const ENTRY_CAP: u64 = 64 * 1024;
/// The largest file taken from or put into the store: as large as the
/// largest download (each is checked whole, in memory).
const FILE_CAP: u64 = 64 * 1024 * 1024;

/// One gateway's part of a store.
#[derive(Debug)]
pub struct Cache {
    place: Place,
    /// SHA-256 of local images, by path, read once per run.
    local: Mutex<HashMap<PathBuf, String>>,
}

/// Where the gateway's part is.
#[derive(Debug)]
enum Place {
    Folder(local::Folder),
    Bucket(bucket::Part),
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

impl Stored {
    /// Whether it names files, each a plain file name (never a path).
    fn usable(&self) -> bool {
        !self.files.is_empty() && self.files.iter().all(|f| plain_name(&f.name))
    }
}

/// A stored request found in the store.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    at: At,
}

#[derive(Clone, Debug, PartialEq)]
enum At {
    /// An entry's folder, and its `entry.json` as read when it was found.
    Folder { dir: PathBuf, stored: Stored },
    /// An entry in a bucket, by identity (its `entry.json` is read when
    /// it is taken).
    Bucket { identity: String },
}

impl Hit {
    /// A hit that names no folder, for tests of what is decided with one.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Hit {
        Hit {
            at: At::Folder {
                dir: PathBuf::new(),
                stored: Stored { files: Vec::new() },
            },
        }
    }
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
    /// A call on a bucket failed (after object_store's retries). The reason
    /// holds no query string of any URL in it (where a signature would be).
    #[error("cannot use the cache {url}: {reason}")]
    Store { url: String, reason: String },
    /// An entry whose files are not what it records, or not images.
    #[error("the cache entry {entry} is damaged: {why}")]
    Damaged { entry: PathBuf, why: String },
    /// A file that cannot go into the store as it is.
    #[error("{path} is not stored: {why}")]
    Unstorable { path: PathBuf, why: String },
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

    /// A store's failure, for the cache at `store`.
    fn store(store: &Store, e: impl std::fmt::Display) -> CacheError {
        CacheError::Store {
            url: store.to_string(),
            reason: without_queries(&e.to_string()),
        }
    }
}

impl Cache {
    /// The part of the store at `dir` that holds `gateway`'s images.
    pub fn open(dir: &Path, gateway: &Gateway) -> Result<Cache, CacheError> {
        Ok(Cache::at(Place::Folder(local::Folder::open(dir, gateway)?)))
    }

    /// The part of the bucket `store` (under its prefix) that holds
    /// `gateway`'s images, listed once: lookups are answered from that
    /// listing and what this cache stores.
    ///
    /// Blocking: call it, and every other method of the cache it returns,
    /// on tokio's blocking pool (`spawn_blocking`), never on an async task.
    pub fn open_store(store: Store, gateway: &Gateway) -> Result<Cache, CacheError> {
        Ok(Cache::at(Place::Bucket(bucket::Part::open(
            store,
            part_name(gateway),
        )?)))
    }

    /// [`Cache::open`] for a local location, [`Cache::open_store`] for a
    /// bucket (opened from the environment): what `--cache` names.
    /// Blocking, as [`Cache::open_store`] is.
    pub fn open_location(location: &Location, gateway: &Gateway) -> Result<Cache, CacheError> {
        match location {
            Location::Local(dir) => Cache::open(dir, gateway),
            Location::Bucket(b) => {
                let store = b.open().map_err(|e: StoreError| CacheError::Store {
                    url: b.to_string(),
                    reason: without_queries(&e.to_string()),
                })?;
                Cache::open_store(store, gateway)
            }
        }
    }

    fn at(place: Place) -> Cache {
        Cache {
            place,
            local: Mutex::new(HashMap::new()),
        }
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

    /// The stored request `identity`, if the store has it. A folder's
    /// `entry.json` is read here; a bucket's answer comes from memory.
    pub fn lookup(&self, identity: &str) -> Option<Hit> {
        if !is_identity(identity) {
            return None;
        }
        match &self.place {
            Place::Folder(f) => f.lookup(identity),
            Place::Bucket(b) => b.lookup(identity),
        }
    }

    /// Copies the stored files of `hit` into `dir` as `STEM_N.EXT`. Each
    /// copy is checked where it landed (size, SHA-256, a whole image of the
    /// format its name declares); only when all are whole are they renamed
    /// into place. Blocking.
    pub fn take(
        &self,
        hit: &Hit,
        dir: &Path,
        stem: &str,
        temp_prefix: &str,
    ) -> Result<Vec<Taken>, CacheError> {
        match (&self.place, &hit.at) {
            (Place::Folder(f), At::Folder { dir: entry, stored }) => {
                f.take(entry, stored, dir, stem, temp_prefix)
            }
            (Place::Bucket(b), At::Bucket { identity }) => b.take(identity, dir, stem, temp_prefix),
            _ => Err(CacheError::Damaged {
                entry: PathBuf::new(),
                why: "found in another cache than this one".into(),
            }),
        }
    }

    /// Stores `files` (paths and SHA-256) as the images of `identity`, each
    /// checked as it goes in. Storing what is already stored changes
    /// nothing. Blocking.
    pub fn store(&self, identity: &str, files: &[(PathBuf, String)]) -> Result<(), CacheError> {
        if !is_identity(identity) {
            return Err(CacheError::Unstorable {
                path: PathBuf::from(identity),
                why: "not a cache identity".into(),
            });
        }
        match &self.place {
            Place::Folder(f) => f.store(identity, files),
            Place::Bucket(b) => b.store(identity, files),
        }
    }

    /// Removes a damaged entry, so that the next payer stores it afresh.
    /// Never blocks: callable from an async task too.
    pub fn forget(&self, hit: &Hit) {
        match (&self.place, &hit.at) {
            (Place::Folder(_), At::Folder { dir, .. }) => local::Folder::forget(dir),
            (Place::Bucket(b), At::Bucket { identity }) => b.forget(identity),
            _ => {}
        }
    }
}

/// Whether `s` is an identity as [`Cache::identity`] makes them (64
/// lower-case hex digits): nothing else names an entry.
fn is_identity(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The name of `gateway`'s part of a store (a folder, or a prefix).
fn part_name(gateway: &Gateway) -> String {
    // The simulator is one gateway, in the folder it always had.
    match gateway.is_simulated() {
        true => crate::gateway::SIMULATED.to_string(),
        false => folder_name(gateway.base()),
    }
}

/// The folder of the gateway at `base`: readable, and unique by its hash.
fn folder_name(base: &str) -> String {
    let readable: String = crate::plan::sanitize(base).chars().take(40).collect();
    let hash = hex(&Sha256::digest(base.as_bytes()));
    format!("{}-{}", readable.trim_end_matches(['.', '-']), &hash[..16])
}

/// `text` with the query string of every URL in it cut (`?…` up to the next
/// space or quote): a pre-signed URL or a SAS token carries its secret there.
fn without_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_url = false;
    let mut skipping = false;
    let mut word = String::new();
    for c in text.chars() {
        let ends = c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ',');
        if ends {
            in_url = false;
            skipping = false;
            word.clear();
            out.push(c);
            continue;
        }
        word.push(c);
        if !in_url && word.contains("://") {
            in_url = true;
        }
        if in_url && c == '?' {
            skipping = true;
            out.push_str("?…");
        }
        if !skipping {
            out.push(c);
        }
    }
    out
}

/// Where file `n` of an entry lands in `dir` (`STEM_N.EXT`), and the image
/// format its name says; `damaged` if it names none.
fn landing(
    dir: &Path,
    stem: &str,
    n: usize,
    f: &StoredFile,
    damaged: impl Fn(String) -> CacheError,
) -> Result<(ImageFormat, PathBuf), CacheError> {
    let format = ImageFormat::of_name(Path::new(&f.name))
        .ok_or_else(|| damaged("not named as a PNG or JPEG image".into()))?;
    Ok((
        format,
        dir.join(format!("{stem}_{n}.{}", format.extension())),
    ))
}

/// Checks `file`, the bytes of `f` landed beside `to`, against its entry
/// (see [`check`]) and the size the entry records; `damaged` if it is not
/// what was stored.
fn checked(
    file: &File,
    f: &StoredFile,
    format: ImageFormat,
    to: &Path,
    damaged: impl Fn(String) -> CacheError,
) -> Result<(), CacheError> {
    let size = check(file, &f.sha256, format)
        .map_err(|source| CacheError::Output {
            path: to.to_path_buf(),
            source,
        })?
        .map_err(&damaged)?;
    if size != f.bytes {
        return Err(damaged(format!(
            "{size} bytes, not the {} recorded",
            f.bytes
        )));
    }
    Ok(())
}

/// Reads `file` from its start (at most [`FILE_CAP`] bytes) and checks that
/// it is `sha256` and a whole image of `format`. Its size, or why not.
fn check(file: &File, sha256: &str, format: ImageFormat) -> std::io::Result<Result<u64, String>> {
    let mut f = file;
    f.rewind()?;
    let mut bytes = Vec::new();
    f.take(FILE_CAP + 1).read_to_end(&mut bytes)?;
    Ok(check_bytes(&bytes, sha256, format))
}

/// Whether `bytes` are `sha256` and a whole image of `format`: their size,
/// or why not.
fn check_bytes(bytes: &[u8], sha256: &str, format: ImageFormat) -> Result<u64, String> {
    if bytes.len() as u64 > FILE_CAP {
        return Err(format!("larger than {}", disk::human_bytes(FILE_CAP)));
    }
    if hex(&Sha256::digest(bytes)) != sha256 {
        return Err("its SHA-256 is not the one recorded".into());
    }
    match image::inspect(bytes) {
        Ok(info) if info.format == format => Ok(bytes.len() as u64),
        Ok(info) => Err(format!(
            "a {} image under the name of a {} one",
            info.format.extension(),
            format.extension()
        )),
        Err(why) => Err(why.to_string()),
    }
}

/// The format a file to store is named as (PNG or JPEG), or why it cannot
/// be stored.
fn storable_format(path: &Path) -> Result<ImageFormat, CacheError> {
    ImageFormat::of_name(path).ok_or_else(|| CacheError::Unstorable {
        path: path.to_path_buf(),
        why: "not named as a PNG or JPEG image".into(),
    })
}

/// A file to store whose bytes fail their check ([`check_bytes`]): `why`,
/// and the likely cause.
fn changed_since_saved(path: &Path, why: String) -> CacheError {
    CacheError::Unstorable {
        path: path.to_path_buf(),
        why: format!("{why} (was it changed since it was saved?)"),
    }
}

/// What fills one landed file: the entry's record of it, the temporary
/// file to write, then how to report the entry damaged and how to report
/// a fault of the output folder.
type Fill<'a> = dyn FnMut(
        &StoredFile,
        &File,
        &dyn Fn(String) -> CacheError,
        &dyn Fn(std::io::Error) -> CacheError,
    ) -> Result<(), CacheError>
    + 'a;

/// Lands every file of `entry` (named so in a damage report) in `dir` as
/// `{stem}_{n}.{ext}`: each is written by `fill` into a temporary file
/// beside where it goes, synced and checked there against what the entry
/// records, and only once all are whole are they renamed into place. A
/// backend differs only in where the bytes come from.
fn land(
    files: &[StoredFile],
    entry: &Path,
    dir: &Path,
    stem: &str,
    temp_prefix: &str,
    fill: &mut Fill<'_>,
) -> Result<Vec<Taken>, CacheError> {
    let mut landed = Vec::new();
    for (n, f) in files.iter().enumerate() {
        let damaged = |why: String| CacheError::Damaged {
            entry: entry.to_path_buf(),
            why: format!("{}: {why}", f.name),
        };
        let (format, to) = landing(dir, stem, n, f, damaged)?;
        let out = |source| CacheError::Output {
            path: to.clone(),
            source,
        };
        let tmp = disk::temp_in(dir, temp_prefix).map_err(out)?;
        fill(f, tmp.as_file(), &damaged, &out)?;
        tmp.as_file().sync_all().map_err(out)?;
        checked(tmp.as_file(), f, format, &to, damaged)?;
        landed.push((tmp, to, f));
    }
    let mut taken = Vec::new();
    for (tmp, to, f) in landed {
        let out = |source| CacheError::Output {
            path: to.clone(),
            source,
        };
        let file = tmp.persist(&to).map_err(|e| out(e.error))?;
        let meta = file.metadata().map_err(out)?;
        taken.push(Taken {
            path: to,
            sha256: f.sha256.clone(),
            bytes: f.bytes,
            mtime_ns: disk::mtime_ns(&meta),
        });
    }
    Ok(taken)
}

#[cfg(test)]
mod tests;
