//! A store of finished images shared by runs and manifests (`--cache DIR`).
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
//! was). Versions that knew only origins kept entries in
//! `DIR/ORIGIN/`: those are still taken for a base URL without a path (the
//! only kind those versions could tell apart), never for one with a path.
//!
//! Trust: nothing in the store is taken on its word. A file is taken only
//! if the copy that landed in the output folder (the store may change under
//! a run) has the size and SHA-256 `entry.json` records and is a whole image
//! of the format its name declares (PNG or JPEG). Anything else is a miss:
//! the entry is forgotten, and the row is paid for and stored afresh.
//!
//! Copies, never links: an output file and a stored file never share an
//! inode, so editing one never changes the other. Files are copied with
//! `std::io::copy`, which on Linux uses `copy_file_range`: a copy-on-write
//! reflink where the file system offers one (btrfs, XFS), else a kernel copy.
//!
//! Safety: an entry appears whole or not at all (it is built in a temporary
//! folder beside it, synced, and renamed into place), so runs sharing one
//! store never see half an entry; when two store the same request, the
//! first rename wins and the other is dropped.
//!
//! Cancellation: nothing here is async; callers run it on the blocking pool.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{image, ImageFormat};
use crate::disk::{self, hex};
use crate::gateway::Gateway;
use crate::output::plain_name;
use crate::plan::{ImageInput, Request};

const ENTRY_JSON: &str = "entry.json";
/// The most an `entry.json` may hold.
const ENTRY_CAP: u64 = 64 * 1024;
/// The largest file taken from or put into the store: as large as the
/// largest download (each is checked whole, in memory).
const FILE_CAP: u64 = 64 * 1024 * 1024;

/// One gateway's part of a store.
#[derive(Debug)]
pub struct Cache {
    /// The store's folder, links resolved: nothing outside it is served.
    store: PathBuf,
    root: PathBuf,
    /// Where versions that knew only origins kept this gateway's entries
    /// (for a base URL without a path; read, never written).
    legacy: Option<PathBuf>,
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

/// A stored request found in the store: its folder, and what it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    dir: PathBuf,
    pub stored: Stored,
}

impl Hit {
    /// A hit that names no folder, for tests of what is decided with one.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Hit {
        Hit {
            dir: PathBuf::new(),
            stored: Stored { files: Vec::new() },
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
}

impl Cache {
    /// The part of the store at `dir` that holds `gateway`'s images.
    pub fn open(dir: &Path, gateway: &Gateway) -> Result<Cache, CacheError> {
        // The simulator is one gateway, in the folder it always had.
        let root = match gateway.is_simulated() {
            true => dir.join(crate::gateway::SIMULATED),
            false => dir.join(folder_name(gateway.base())),
        };
        // No stray clean-up here: another run may be building an entry.
        std::fs::create_dir_all(&root).map_err(CacheError::io(&root))?;
        let store = std::fs::canonicalize(dir).map_err(CacheError::io(dir))?;
        let legacy = (!gateway.has_path() && !gateway.is_simulated())
            .then(|| dir.join(legacy_name(gateway.origin())));
        Ok(Cache {
            store,
            root,
            legacy,
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

    /// The stored request `identity`, if the store has it (its own folder
    /// first, then the one versions that knew only origins wrote).
    pub fn lookup(&self, identity: &str) -> Option<Hit> {
        std::iter::once(&self.root)
            .chain(&self.legacy)
            .find_map(|root| {
                let dir = entry_dir(root, identity);
                let bytes = disk::read_regular(&dir.join(ENTRY_JSON), ENTRY_CAP).ok()?;
                let stored: Stored = serde_json::from_slice(&bytes).ok()?;
                (!stored.files.is_empty() && stored.files.iter().all(|f| plain_name(&f.name)))
                    .then_some(Hit { dir, stored })
            })
    }

    /// Copies the stored files of `hit` into `dir` as `STEM_N.EXT`. Each
    /// copy is checked where it landed (size, SHA-256, a whole image of the
    /// format its name declares); only when all are whole are they renamed
    /// into place.
    pub fn take(
        &self,
        hit: &Hit,
        dir: &Path,
        stem: &str,
        temp_prefix: &str,
    ) -> Result<Vec<Taken>, CacheError> {
        let mut landed = Vec::new();
        for (n, f) in hit.stored.files.iter().enumerate() {
            let damaged = |why: String| CacheError::Damaged {
                entry: hit.dir.clone(),
                why: format!("{}: {why}", f.name),
            };
            let format = ImageFormat::of_name(Path::new(&f.name))
                .ok_or_else(|| damaged("not named as a PNG or JPEG image".into()))?;
            let from = hit.dir.join(&f.name);
            let to = dir.join(format!("{stem}_{n}.{}", format.extension()));
            let out = |source| CacheError::Output {
                path: to.clone(),
                source,
            };
            // Only what the store itself holds: a link (of the file, or of
            // its entry's folder) may lead outside it.
            let from = std::fs::canonicalize(&from).map_err(CacheError::io(&from))?;
            if !from.starts_with(&self.store) {
                return Err(damaged(format!(
                    "leads out of the store, to {}",
                    from.display()
                )));
            }
            let src = disk::open_regular(&from, FILE_CAP)?;
            let tmp = disk::temp_in(dir, temp_prefix).map_err(out)?;
            copy(src.get_ref(), tmp.as_file(), f.bytes.min(FILE_CAP)).map_err(|e| {
                if is_local(&e) {
                    out(e)
                } else {
                    CacheError::io(&from)(e)
                }
            })?;
            tmp.as_file().sync_all().map_err(out)?;
            let bytes = check(tmp.as_file(), &f.sha256, format)
                .map_err(out)?
                .map_err(&damaged)?;
            if bytes != f.bytes {
                return Err(damaged(format!(
                    "{bytes} bytes, not the {} recorded",
                    f.bytes
                )));
            }
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

    /// Stores `files` (paths and SHA-256) as the images of `identity`, as
    /// copies checked where they landed (never links: see the module).
    /// Storing what is already stored changes nothing.
    pub fn store(&self, identity: &str, files: &[(PathBuf, String)]) -> Result<(), CacheError> {
        let entry = entry_dir(&self.root, identity);
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
            let unstorable = |why: String| CacheError::Unstorable {
                path: path.clone(),
                why,
            };
            let format = ImageFormat::of_name(path)
                .ok_or_else(|| unstorable("not named as a PNG or JPEG image".into()))?;
            let name = format!("{n}.{}", format.extension());
            let to = tmp.path().join(&name);
            let src = disk::open_regular(path, FILE_CAP)?;
            let copied = File::create_new(&to).and_then(|dst| {
                copy(src.get_ref(), &dst, FILE_CAP)?;
                dst.sync_all()?;
                Ok(dst)
            });
            let dst = copied.map_err(CacheError::io(&to))?;
            let bytes = check(&dst, sha256, format)
                .map_err(CacheError::io(&to))?
                .map_err(|why| unstorable(format!("{why} (was it changed since it was saved?)")))?;
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
    pub fn forget(&self, hit: &Hit) {
        let _ = std::fs::remove_dir_all(&hit.dir);
    }
}

fn entry_dir(root: &Path, identity: &str) -> PathBuf {
    root.join(&identity[..2]).join(identity)
}

/// The folder of the gateway at `base`: readable, and unique by its hash.
fn folder_name(base: &str) -> String {
    let readable: String = crate::plan::sanitize(base).chars().take(40).collect();
    let hash = hex(&Sha256::digest(base.as_bytes()));
    format!("{}-{}", readable.trim_end_matches(['.', '-']), &hash[..16])
}

/// The folder versions that knew only origins gave `origin`.
fn legacy_name(origin: &str) -> String {
    let slug = crate::plan::sanitize(origin);
    if slug.is_empty() {
        "gateway".into()
    } else {
        slug
    }
}

/// Copies at most `cap` + 1 bytes of `from` into `to` (the kernel's copy:
/// a reflink where the file system offers one).
fn copy(from: &File, to: &File, cap: u64) -> std::io::Result<u64> {
    std::io::copy(&mut from.take(cap + 1), &mut &*to)
}

/// A failure of the file system being written, not of the one read.
fn is_local(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::StorageFull | K::QuotaExceeded | K::ReadOnlyFilesystem | K::FileTooLarge
    )
}

/// Reads `file` from its start (at most [`FILE_CAP`] bytes) and checks that
/// it is `sha256` and a whole image of `format`. Its size, or why not.
fn check(file: &File, sha256: &str, format: ImageFormat) -> std::io::Result<Result<u64, String>> {
    let mut f = file;
    f.rewind()?;
    let mut bytes = Vec::new();
    f.take(FILE_CAP + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > FILE_CAP {
        return Ok(Err(format!("larger than {}", disk::human_bytes(FILE_CAP))));
    }
    if hex(&Sha256::digest(&bytes)) != sha256 {
        return Ok(Err("its SHA-256 is not the one recorded".into()));
    }
    Ok(match image::inspect(&bytes) {
        Ok(info) if info.format == format => Ok(bytes.len() as u64),
        Ok(info) => Err(format!(
            "a {} image under the name of a {} one",
            info.format.extension(),
            format.extension()
        )),
        Err(why) => Err(why.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::render;

    fn gateway(url: &str) -> Gateway {
        Gateway::of_url(&reqwest::Url::parse(url).unwrap())
    }

    #[test]
    fn stored_files_come_back_checked_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let src = out.join("a_0.png");
        let picture = render::image("cat", 1, 8, 8, ImageFormat::Png);
        std::fs::write(&src, &picture).unwrap();
        let sha = hex(&Sha256::digest(&picture));
        let cache = Cache::open(&dir.path().join("cache"), &Gateway::simulated()).unwrap();
        let id = hex(&Sha256::digest(b"request"));
        assert!(cache.lookup(&id).is_none());
        cache.store(&id, &[(src.clone(), sha.clone())]).unwrap();
        cache.store(&id, &[(src.clone(), sha.clone())]).unwrap();
        let hit = cache.lookup(&id).expect("stored");
        assert_eq!(hit.stored.files[0].bytes, picture.len() as u64);

        let elsewhere = dir.path().join("other");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let taken = cache.take(&hit, &elsewhere, "b_s1", ".part-").unwrap();
        assert_eq!(taken[0].path, elsewhere.join("b_s1_0.png"));
        assert_eq!(std::fs::read(&taken[0].path).unwrap(), picture);
        assert_eq!(taken[0].sha256, sha);

        // A stored file changed behind the store's back is refused.
        let entry = hit.dir.join("0.png");
        std::fs::remove_file(&entry).unwrap();
        let mut other = picture.clone();
        other[40] ^= 1;
        std::fs::write(&entry, &other).unwrap();
        assert!(matches!(
            cache.take(&hit, &elsewhere, "c", ".part-"),
            Err(CacheError::Damaged { .. })
        ));
        assert!(!elsewhere.join("c_0.png").exists());
        cache.forget(&hit);
        assert!(cache.lookup(&id).is_none());
        let left: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[cfg(unix)]
    #[test]
    fn the_store_and_the_outputs_never_share_a_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a_0.jpg");
        let picture = render::image("cat", 1, 8, 8, ImageFormat::Jpeg);
        std::fs::write(&src, &picture).unwrap();
        let sha = hex(&Sha256::digest(&picture));
        let cache = Cache::open(&dir.path().join("cache"), &Gateway::simulated()).unwrap();
        let id = hex(&Sha256::digest(b"request"));
        cache.store(&id, &[(src.clone(), sha.clone())]).unwrap();
        let hit = cache.lookup(&id).unwrap();
        let stored = std::fs::metadata(hit.dir.join("0.jpg")).unwrap();
        let taken = cache.take(&hit, dir.path(), "b", ".part-").unwrap();
        for path in [&src, &taken[0].path] {
            let meta = std::fs::metadata(path).unwrap();
            assert_eq!(meta.nlink(), 1, "{}", path.display());
            assert_ne!((meta.dev(), meta.ino()), (stored.dev(), stored.ino()));
        }
        // An output changed before it is stored is not stored.
        let changed = dir.path().join("c_0.jpg");
        std::fs::write(&changed, b"not what was saved").unwrap();
        let other = hex(&Sha256::digest(b"other request"));
        assert!(matches!(
            cache.store(&other, &[(changed, sha)]),
            Err(CacheError::Unstorable { .. })
        ));
        assert!(cache.lookup(&other).is_none());
    }

    #[test]
    fn only_whole_images_of_the_declared_format_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache"), &Gateway::simulated()).unwrap();
        let png = render::image("cat", 1, 8, 8, ImageFormat::Png);
        let jpg = render::image("cat", 1, 8, 8, ImageFormat::Jpeg);
        let page = b"<html><script>alert(1)</script></html>".to_vec();
        for (n, (name, bytes)) in [
            ("0.png", page.clone()),
            ("0.html", page),
            ("0.png", jpg),
            ("0.png", png[..png.len() - 4].to_vec()),
        ]
        .into_iter()
        .enumerate()
        {
            let id = hex(&Sha256::digest(format!("request {n}")));
            let folder = entry_dir(&cache.root, &id);
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join(name), &bytes).unwrap();
            let entry = Stored {
                files: vec![StoredFile {
                    name: name.into(),
                    bytes: bytes.len() as u64,
                    sha256: hex(&Sha256::digest(&bytes)),
                }],
            };
            std::fs::write(folder.join(ENTRY_JSON), serde_json::to_vec(&entry).unwrap()).unwrap();
            let hit = cache.lookup(&id).expect("an entry");
            let got = cache.take(&hit, dir.path(), "x", ".part-");
            assert!(
                matches!(got, Err(CacheError::Damaged { .. })),
                "{name} {n}: {got:?}"
            );
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                1,
                "nothing left"
            );
        }
    }

    #[test]
    fn entries_stored_by_origin_serve_only_base_urls_without_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("cache");
        let picture = render::image("cat", 1, 8, 8, ImageFormat::Png);
        let src = dir.path().join("a_0.png");
        std::fs::write(&src, &picture).unwrap();
        let sha = hex(&Sha256::digest(&picture));
        let id = hex(&Sha256::digest(b"request"));
        // Stored as versions that knew only origins laid the store out.
        let root = gateway("https://h.example");
        Cache::open(&store, &root)
            .unwrap()
            .store(&id, &[(src, sha)])
            .unwrap();
        let now = store.join(folder_name(root.base()));
        std::fs::rename(&now, store.join("https-h.example")).unwrap();

        assert!(Cache::open(&store, &gateway("HTTPS://h.example:443/"))
            .unwrap()
            .lookup(&id)
            .is_some());
        for other in [
            "https://h.example/a",
            "https://h.example:8443",
            "http://h.example",
        ] {
            let cache = Cache::open(&store, &gateway(other)).unwrap();
            assert!(cache.lookup(&id).is_none(), "{other}");
        }
        let names: std::collections::HashSet<String> = [
            "http://h/a",
            "http://h/b",
            "http://h/a/b",
            "http://h/a-b",
            "http://h",
            "http://h:81",
        ]
        .iter()
        .map(|u| folder_name(gateway(u).base()))
        .collect();
        assert_eq!(names.len(), 6, "{names:?}");
    }
}
