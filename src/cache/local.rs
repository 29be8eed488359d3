//! A cache in a local folder (`--cache DIR`).
//!
//! Why this exists apart from the bucket: a folder gives what a bucket
//! cannot, and uses it. An entry is built in a temporary folder beside its
//! place, synced, and renamed into place whole; when two runs store the
//! same request, the first rename wins and the other is dropped.
//!
//! Versions that knew only origins kept entries in `DIR/ORIGIN/`: those
//! are still taken for a base URL without a path (the only kind those
//! versions could tell apart), never for one with a path.
//!
//! Copies, never links: an output file and a stored file never share an
//! inode, so editing one never changes the other. Files are copied with
//! `std::io::copy`, which on Linux uses `copy_file_range`: a copy-on-write
//! reflink where the file system offers one (btrfs, XFS), else a kernel copy.
//!
//! Cancellation: nothing here is async; callers run it on the blocking pool.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{changed_since_saved, check, land, part_name, storable_format};
use super::{At, CacheError, Hit, Stored, StoredFile};
use super::{ENTRY_CAP, ENTRY_JSON, FILE_CAP};
use crate::disk;
use crate::gateway::Gateway;

/// One gateway's part of a store in a folder.
#[derive(Debug)]
pub(super) struct Folder {
    /// The store's folder, links resolved: nothing outside it is served.
    store: PathBuf,
    pub(super) root: PathBuf,
    /// Where versions that knew only origins kept this gateway's entries
    /// (for a base URL without a path; read, never written).
    legacy: Option<PathBuf>,
}

impl Folder {
    pub(super) fn open(dir: &Path, gateway: &Gateway) -> Result<Folder, CacheError> {
        let root = dir.join(part_name(gateway));
        // No stray clean-up here: another run may be building an entry.
        std::fs::create_dir_all(&root).map_err(CacheError::io(&root))?;
        let store = std::fs::canonicalize(dir).map_err(CacheError::io(dir))?;
        let legacy = (!gateway.has_path() && !gateway.is_simulated())
            .then(|| dir.join(legacy_name(gateway.origin())));
        Ok(Folder {
            store,
            root,
            legacy,
        })
    }

    /// The entry `identity` (its own folder first, then the one versions
    /// that knew only origins wrote).
    pub(super) fn lookup(&self, identity: &str) -> Option<Hit> {
        std::iter::once(&self.root)
            .chain(&self.legacy)
            .find_map(|root| {
                let dir = entry_dir(root, identity);
                let bytes = disk::read_regular(&dir.join(ENTRY_JSON), ENTRY_CAP).ok()?;
                let stored: Stored = serde_json::from_slice(&bytes).ok()?;
                stored.usable().then_some(Hit {
                    at: At::Folder { dir, stored },
                })
            })
    }

    pub(super) fn take(
        &self,
        entry: &Path,
        stored: &Stored,
        dir: &Path,
        stem: &str,
        temp_prefix: &str,
    ) -> Result<Vec<super::Taken>, CacheError> {
        land(
            &stored.files,
            entry,
            dir,
            stem,
            temp_prefix,
            &mut |f, file, damaged, out| {
                // Only what the store itself holds: a link (of the file, or
                // of its entry's folder) may lead outside it.
                let from = entry.join(&f.name);
                let from = std::fs::canonicalize(&from).map_err(CacheError::io(&from))?;
                if !from.starts_with(&self.store) {
                    return Err(damaged(format!(
                        "leads out of the store, to {}",
                        from.display()
                    )));
                }
                let src = disk::open_regular(&from, FILE_CAP)?;
                copy(src.get_ref(), file, f.bytes.min(FILE_CAP)).map_err(|e| {
                    if is_local(&e) {
                        out(e)
                    } else {
                        CacheError::io(&from)(e)
                    }
                })?;
                Ok(())
            },
        )
    }

    /// Stores `files` as the images of `identity`, as copies checked where
    /// they landed (never links: see the module).
    pub(super) fn store(
        &self,
        identity: &str,
        files: &[(PathBuf, String)],
    ) -> Result<(), CacheError> {
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
            let format = storable_format(path)?;
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
                .map_err(|why| changed_since_saved(path, why))?;
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

    /// Removes the entry's folder.
    pub(super) fn forget(entry: &Path) {
        let _ = std::fs::remove_dir_all(entry);
    }
}

pub(super) fn entry_dir(root: &Path, identity: &str) -> PathBuf {
    root.join(&identity[..2]).join(identity)
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
