//! The contact sheet's thumbnails, and what the sheet shows of each image.
//!
//! Why this exists apart from the page: this is where the report reads
//! files results.csv names and writes files of its own, so it is where both
//! are confined. An image is read only if it resolves inside the folder (or
//! a shard folder its merge recorded) and its bytes are the format its name
//! says ([`crate::confine`]); anything else is shown as text, never linked.
//! Thumbnails are written only under `DIR/thumbs/`, through folders that are
//! real folders (not links out of it), via temporaries a signal removes
//! ([`crate::temps`]). A thumbnail newer than its image is kept.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{inside, small, THUMBS_DIR};
use crate::confine::{self, Found, Sources};
use crate::disk;
use crate::temps::{self, Owner};

/// The longest side of a thumbnail, in pixels (shown at half that).
const THUMB_SIDE: u32 = 256;
/// The largest image a thumbnail is made from.
const MAX_IMAGE_BYTES: u64 = 256 << 20;
/// What stands for `..` in a thumbnail's path (an image of a shard folder
/// beside a merged one): never a name batchgen gives a file.
const UP: &str = "@up";

/// What the sheet shows of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Shown {
    /// Its thumbnail, linking the image; both paths relative to the folder.
    Thumb { image: PathBuf, thumb: PathBuf },
    /// The image, linked, without a thumbnail.
    Link { image: PathBuf },
    /// Not linked: not a readable image of this folder.
    Text(&'static str),
}

/// What the thumbnails of a sheet came to.
#[derive(Debug, Default)]
pub(super) struct Thumbs {
    pub shown: BTreeMap<String, Shown>,
    pub made: u64,
    /// (file, why) for each image without a thumbnail.
    pub unreadable: Vec<(String, String)>,
}

/// The thumbnail of an image at `image` (relative to the folder): `thumbs/`
/// + that path, as a JPEG.
pub fn thumb_path(image: &Path) -> PathBuf {
    let mut thumb = PathBuf::from(THUMBS_DIR);
    for part in image.components() {
        match part {
            Component::Normal(name) => thumb.push(name),
            Component::ParentDir => thumb.push(UP),
            _ => {}
        }
    }
    thumb.with_extension("jpg")
}

/// Refuses a `DIR/thumbs` that is not a folder of its own (a link to
/// elsewhere, a file): thumbnails are written nowhere else.
pub(super) fn check_root(dir: &Path) -> Result<(), String> {
    let root = dir.join(THUMBS_DIR);
    match std::fs::symlink_metadata(&root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) => Err(format!(
            "{}: is {}, not a folder of its own: the report writes thumbnails only into a real {THUMBS_DIR}/ folder of the sheet's folder; remove it",
            root.display(),
            if m.is_symlink() { "a symbolic link" } else { "a file" }
        )),
        Err(_) => Ok(()),
    }
}

/// Makes (or keeps) the thumbnail of every image, on every core.
pub(super) fn make_all(dir: &Path, sources: &Sources, images: &[String]) -> Thumbs {
    let next = AtomicUsize::new(0);
    let made = AtomicUsize::new(0);
    let results: Mutex<Vec<(String, Shown, Option<String>)>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(file) = images.get(i) else { break };
                let (shown, why) = show(dir, sources, file, &made);
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((file.clone(), shown, why));
            });
        }
    });
    let mut thumbs = Thumbs {
        made: made.into_inner() as u64,
        ..Thumbs::default()
    };
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by(|a, b| a.0.cmp(&b.0));
    for (file, shown, why) in results {
        if let Some(why) = why {
            thumbs.unreadable.push((file.clone(), why));
        }
        thumbs.shown.insert(file, shown);
    }
    thumbs
}

/// What the sheet shows of `file`, and why it has no thumbnail if it has none.
pub(super) fn show(
    dir: &Path,
    sources: &Sources,
    file: &str,
    made: &AtomicUsize,
) -> (Shown, Option<String>) {
    let real = match sources.resolve(file) {
        Ok(Found::Inside(real)) => real,
        Ok(Found::Outside(_)) => {
            return (
                Shown::Text("not a file of this folder"),
                Some(format!("{}; not read", sources.outside())),
            )
        }
        Err(e) => {
            return (
                Shown::Text("missing"),
                Some(format!("cannot be read: {}", disk::plain(&e))),
            )
        }
    };
    // As written when it is a plain path inside; else as seen from here.
    let image = inside(file).unwrap_or_else(|| confine::relative(sources.root(), &real));
    let head = match confine::head(&real) {
        Ok(head) => head,
        Err(why) => return (Shown::Text("unreadable"), Some(why)),
    };
    if let Err(why) = confine::image_as_named(file, &head) {
        return (Shown::Text("not an image"), Some(why));
    }
    let thumb = thumb_path(&image);
    match make(dir, &real, &thumb) {
        Ok(new) => {
            if new {
                made.fetch_add(1, Ordering::Relaxed);
            }
            (Shown::Thumb { image, thumb }, None)
        }
        Err(why) => (Shown::Link { image }, Some(why)),
    }
}

/// Creates the folders of `rel` under `root`, each a real folder: a link or
/// a file on the way is refused, so nothing is written outside `root`.
fn dirs_inside(root: &Path, rel: &Path) -> Result<(), String> {
    let mut at = root.to_path_buf();
    let parts = std::iter::once(Component::CurDir).chain(rel.components());
    for part in parts {
        if let Component::Normal(name) = part {
            at.push(name);
        }
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(format!(
                    "{} is not a folder of its own (a link or a file); no thumbnail is written through it",
                    at.display()
                ))
            }
            Err(_) => {}
        }
        match std::fs::create_dir(&at) {
            Ok(()) => {}
            // Made meanwhile by another worker: checked again.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
                    return Err(format!("{} is not a folder of its own", at.display()));
                }
            }
            Err(e) => {
                return Err(format!(
                    "cannot write {}: {}",
                    at.display(),
                    disk::plain(&e)
                ))
            }
        }
    }
    Ok(())
}

/// Makes the thumbnail `thumb` (relative to `dir`) of the image at `src`
/// unless one newer than it exists.
fn make(dir: &Path, src: &Path, thumb: &Path) -> Result<bool, String> {
    let inner = thumb
        .strip_prefix(THUMBS_DIR)
        .expect("a thumbnail is inside thumbs/");
    dirs_inside(
        &dir.join(THUMBS_DIR),
        inner.parent().unwrap_or(Path::new("")),
    )?;
    let dst = dir.join(thumb);
    // Kept: one newer than its image, unless a crash left it empty.
    let modified = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .filter(|m| m.len() > 0)
            .and_then(|m| m.modified().ok())
    };
    if let (Some(t), Some(i)) = (modified(&dst), modified(src)) {
        if t >= i {
            return Ok(false);
        }
    }
    let bytes = disk::read_regular(src, MAX_IMAGE_BYTES).map_err(|e| e.to_string())?;
    let jpeg = small::encode(&small::thumbnail(&bytes, THUMB_SIDE)?)?;
    // Not synced: a thumbnail is made again from its image. One a crash
    // left empty is made again too (see above).
    temps::write_atomic_unsynced(Owner::Report, &dst, |w| std::io::Write::write_all(w, &jpeg))
        .map_err(|e| format!("cannot write {}: {}", dst.display(), disk::plain(&e)))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_stay_inside_thumbs() {
        assert_eq!(
            thumb_path(Path::new("images/a_0.png")),
            Path::new("thumbs/images/a_0.jpg")
        );
        assert_eq!(
            thumb_path(Path::new("../s0/images/a_0.png")),
            Path::new("thumbs/@up/s0/images/a_0.jpg")
        );
        assert_eq!(
            thumb_path(Path::new("../../x/./a.png")),
            Path::new("thumbs/@up/@up/x/a.jpg")
        );
    }

    #[cfg(unix)]
    #[test]
    fn no_folder_on_the_way_leads_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("thumbs");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join("images")).unwrap();
        let e = dirs_inside(&root, Path::new("images/deeper")).unwrap_err();
        assert!(e.contains("not a folder of its own"), "{e}");
        assert!(!dir.path().join("elsewhere/deeper").exists());
        dirs_inside(&root, Path::new("@up/s0/images")).unwrap();
        assert!(root.join("@up/s0/images").is_dir());
        std::fs::remove_file(root.join("images")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), dir.path().join("t2")).unwrap();
        assert!(check_root(dir.path()).is_ok());
        std::fs::remove_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &root).unwrap();
        assert!(check_root(dir.path())
            .unwrap_err()
            .contains("symbolic link"));
    }
}
