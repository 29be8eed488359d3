//! Where `export`, `merge` and `report` may write, and which files they may
//! read.
//!
//! Why this exists: a run folder's own files (its journal above all) are
//! what keep a paid image from being lost or paid for again. An export
//! written over the journal, or a merge written into `images/`, would undo
//! that. So every output path is resolved as the system will resolve it when
//! it is written (symbolic links, `..`, relative or absolute spelling) and
//! refused, before anything is written, when it is or is inside a run
//! folder's own files, or is the folder being read ([`check_output`]).
//!
//! And results.csv is a file anyone who can write the folder may edit: the
//! files it names are read only if, once resolved, they lie inside the
//! folder given or inside a shard folder its merge recorded ([`Sources`]),
//! and an image only if its bytes are the format its name says
//! ([`image_as_named`]).

use std::path::{Component, Path, PathBuf};

use crate::api::ImageFormat;
use crate::journal;
use crate::output::{IMAGES_DIR, PLAN_KEYS, RESULTS_CSV, SUMMARY_JSON};

/// The contact sheet's thumbnails, beside its `index.html`.
pub const THUMBS_DIR: &str = "thumbs";

/// The lock file a run holds while it lives.
pub const LOCK_FILE: &str = ".lock";

/// A run folder's own files and folders: never written by another command.
pub const OWN: &[&str] = &[
    journal::FILE_NAME,
    RESULTS_CSV,
    SUMMARY_JSON,
    IMAGES_DIR,
    THUMBS_DIR,
    PLAN_KEYS,
    LOCK_FILE,
];

/// An output path refused, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", given.display())]
pub struct Refused {
    /// The path as the user wrote it (with its flag, if any).
    pub given: PathBuf,
    pub why: String,
}

/// What a command writes at the path it checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    /// One file.
    File,
    /// Files in a folder of its own.
    Folder,
    /// A merged folder: an earlier merge's folder may be merged into again.
    Merged,
}

/// `path` as the system will find it: absolute, the part that exists with
/// its links followed, the rest (which does not exist yet) read as written.
pub fn resolve(path: &Path) -> Result<PathBuf, String> {
    let abs = std::path::absolute(path).map_err(|e| crate::disk::plain(&e))?;
    let parts: Vec<Component> = abs.components().collect();
    for n in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..n].iter().collect();
        match std::fs::canonicalize(&prefix) {
            Ok(mut real) => {
                for part in &parts[n..] {
                    match part {
                        Component::ParentDir => {
                            real.pop();
                        }
                        Component::Normal(name) => real.push(name),
                        _ => {}
                    }
                }
                return Ok(real);
            }
            Err(_) if std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.is_symlink()) => {
                return Err(format!(
                    "{} is a symbolic link that leads nowhere",
                    prefix.display()
                ));
            }
            Err(_) => {}
        }
    }
    Ok(abs)
}

/// Whether `dir` is a run folder: it holds a journal, or a merge's (or a
/// run's) results.csv and summary.json.
pub fn is_run_folder(dir: &Path) -> bool {
    dir.join(journal::FILE_NAME).is_file()
        || (dir.join(RESULTS_CSV).is_file() && dir.join(SUMMARY_JSON).is_file())
}

/// Refuses `given` (shown as `flag given`) as an output when it is, or is
/// inside, a run folder's own files, when it is a run folder itself (for
/// [`Writes::Merged`], only a folder with a journal), or when it is one of
/// `inputs`. Returns the path resolved.
pub fn check_output(
    flag: &str,
    given: &Path,
    inputs: &[&Path],
    writes: Writes,
) -> Result<PathBuf, Refused> {
    let shown = if flag.is_empty() {
        given.to_path_buf()
    } else {
        PathBuf::from(format!("{flag} {}", given.display()))
    };
    let refuse = |why: String| Refused {
        given: shown.clone(),
        why,
    };
    let real = resolve(given).map_err(refuse)?;
    // An output is replaced whole (renamed into place): a device, a pipe or
    // a socket there would be replaced by a plain file.
    if let Ok(meta) = std::fs::metadata(&real) {
        let fits = match writes {
            Writes::File => meta.is_file(),
            Writes::Folder | Writes::Merged => meta.is_dir(),
        };
        if !fits {
            let (wanted, writes) = match writes {
                Writes::File => ("a plain file", "writes one file there"),
                Writes::Folder | Writes::Merged => ("a folder", "writes a folder of files there"),
            };
            let found = match (meta.is_dir(), meta.is_file()) {
                (true, _) => "a folder",
                (_, true) => "a plain file",
                _ => "a device, a pipe or a socket",
            };
            return Err(refuse(format!(
                "exists and is not {wanted} but {found}: this command {writes}, replacing what is there whole; give a new path or {wanted}"
            )));
        }
    }
    for input in inputs {
        if resolve(input).is_ok_and(|i| i == real) {
            return Err(refuse(format!(
                "is {} itself, the folder this command reads: write somewhere else",
                real.display()
            )));
        }
    }
    for folder in real.ancestors() {
        if !is_run_folder(folder) {
            continue;
        }
        if folder == real {
            let merged_again =
                writes == Writes::Merged && !folder.join(journal::FILE_NAME).exists();
            if merged_again {
                continue;
            }
            return Err(refuse(format!(
                "is the run folder {}: write into a folder of its own",
                folder.display()
            )));
        }
        let first = real
            .strip_prefix(folder)
            .ok()
            .and_then(|rest| rest.components().next());
        if let Some(Component::Normal(name)) = first {
            if let Some(own) = OWN.iter().find(|o| name == **o) {
                let what = if real == folder.join(own) {
                    "is"
                } else {
                    "is inside"
                };
                let shown = |o: &str| match o == IMAGES_DIR || o == THUMBS_DIR {
                    true => format!("{o}/"),
                    false => o.to_string(),
                };
                let all: Vec<String> = OWN.iter().map(|o| shown(o)).collect();
                return Err(refuse(format!(
                    "{what} {} of the run folder {}: batchgen never writes over a run's own files ({}); choose a path outside them",
                    shown(own),
                    folder.display(),
                    all.join(", ")
                )));
            }
        }
    }
    Ok(real)
}

/// A file results.csv names, resolved.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Inside the folder or a shard folder its merge recorded: readable.
    Inside(PathBuf),
    /// Anywhere else: never read.
    Outside(PathBuf),
}

/// The folders a folder's results.csv may name files in: the folder, and
/// for a merged folder the shard folders its merge recorded (each holding
/// a journal).
#[derive(Debug)]
pub struct Sources {
    dir: PathBuf,
    roots: Vec<PathBuf>,
}

/// The largest summary.json read.
const MAX_SUMMARY_BYTES: u64 = 16 << 20;

impl Sources {
    pub fn of(dir: &Path) -> Result<Sources, String> {
        let root = std::fs::canonicalize(dir)
            .map_err(|e| format!("{}: {}", dir.display(), crate::disk::plain(&e)))?;
        let mut roots = vec![root.clone()];
        let summary = crate::disk::read_regular(&dir.join(SUMMARY_JSON), MAX_SUMMARY_BYTES)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        if let Some(summary) = summary {
            let listed = |field: &str| -> Vec<PathBuf> {
                summary[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .map(PathBuf::from)
                    .collect()
            };
            // `shard_dirs`: relative to the merged folder. A merge of an
            // older batchgen recorded only `shards`, as given (usable when
            // absolute).
            let shards: Vec<PathBuf> = match summary.get("shard_dirs") {
                Some(_) => listed("shard_dirs")
                    .into_iter()
                    .map(|s| root.join(s))
                    .collect(),
                None => listed("shards")
                    .into_iter()
                    .filter(|s| s.is_absolute())
                    .collect(),
            };
            for shard in shards {
                if let Ok(real) = std::fs::canonicalize(&shard) {
                    if real.join(journal::FILE_NAME).is_file() && !roots.contains(&real) {
                        roots.push(real);
                    }
                }
            }
        }
        Ok(Sources {
            dir: dir.to_path_buf(),
            roots,
        })
    }

    /// The folder, resolved.
    pub fn root(&self) -> &Path {
        &self.roots[0]
    }

    /// Resolves `file` (as results.csv names it, relative to the folder).
    /// An error is a file that cannot be found (or a link to nowhere).
    pub fn resolve(&self, file: &str) -> std::io::Result<Found> {
        if file.is_empty() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        let real = std::fs::canonicalize(self.dir.join(file))?;
        Ok(if self.roots.iter().any(|r| real.starts_with(r)) {
            Found::Inside(real)
        } else {
            Found::Outside(real)
        })
    }

    /// Why a file resolved outside is not read, in words.
    pub fn outside(&self) -> &'static str {
        if self.roots.len() > 1 {
            "lies outside the folder and the shard folders its merge recorded"
        } else {
            "lies outside the folder"
        }
    }
}

pub use crate::api::image::MAGIC_BYTES;

/// Checks that `head` (the first bytes of `file`) begins the image format
/// `file`'s extension says: `.png` a PNG, `.jpg`/`.jpeg` a JPEG.
pub fn image_as_named(file: &str, head: &[u8]) -> Result<(), String> {
    let Some(format) = ImageFormat::of_name(Path::new(file)) else {
        return Err("is not named as an image (.png, .jpg or .jpeg)".into());
    };
    if format.begins(head) {
        return Ok(());
    }
    let ext = Path::new(file)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let name = match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
    };
    Err(format!(
        "is named .{ext} but its bytes are not a {name} image"
    ))
}

/// Reads the first [`MAGIC_BYTES`] of a regular file.
pub fn head(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = crate::disk::open_regular(path, u64::MAX).map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(MAGIC_BYTES);
    file.take(MAGIC_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| {
            format!(
                "{}: cannot be read: {}",
                path.display(),
                crate::disk::plain(&e)
            )
        })?;
    Ok(head)
}

/// `target` as seen from `base` (both absolute and resolved): a relative
/// path, with `..` where `target` is not below `base`.
pub fn relative(base: &Path, target: &Path) -> PathBuf {
    let (b, t): (Vec<Component>, Vec<Component>) =
        (base.components().collect(), target.components().collect());
    let common = b.iter().zip(&t).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..b.len() {
        rel.push("..");
    }
    for part in &t[common..] {
        rel.push(part);
    }
    rel
}

#[cfg(test)]
mod tests;
