//! The contact sheet's thumbnails, made while a run works, each as its
//! image lands.
//!
//! Why this exists: made at the run's end, a thousand thumbnails kept the
//! user waiting after the last image. Made as the images land they cost no
//! wall time (the run is waiting for the gateway then), and the sheet at the
//! end keeps them: a thumbnail newer than its image is kept.
//!
//! How: one thread of its own, fed through a bounded queue. The run offers
//! it each image once the row's `done` line is synced; offering never
//! waits. A full queue, or a thumbnail that cannot be made, leaves that
//! image to the sheet at the end, which makes it or names why not: nothing
//! here can fail a row or slow the journal. Where thumbnails are written and
//! which images are read is decided exactly as the sheet decides it
//! ([`super::prepare`] once, [`thumbs::show`] for each image).
//!
//! Cancellation: [`Thumbnailer::finish`] closes the queue and waits while
//! the thread drains it (the run's end). [`Thumbnailer::cancel`] makes the
//! thread drop what is queued (a hard stop). Dropping a thumbnailer cancels
//! it without waiting for the thumbnail being made. A second signal, which
//! quits the process at once, removes that thumbnail's temporary file
//! ([`crate::temps`]); a kill leaves it to the next sheet's sweep.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::thumbs::{self, Shown};
use super::ReportError;

/// Images waiting for their thumbnail at most (a path each).
const QUEUE: usize = 1024;

/// What the thumbnails made as images landed came to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Landed {
    /// Thumbnails made.
    pub made: u64,
    /// Images whose thumbnail was there already (newer than the image).
    pub kept: u64,
    /// Images no thumbnail could be made of (the sheet says why).
    pub failed: u64,
    /// Images left to the sheet: the queue was full, or the run stopped hard.
    pub skipped: u64,
}

impl fmt::Display for Landed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} thumbnails made as images landed, {} kept, {} could not be made, {} left to the sheet",
            self.made, self.kept, self.failed, self.skipped
        )
    }
}

/// Makes thumbnails on a thread of its own, as images are offered.
pub struct Thumbnailer {
    queue: Option<SyncSender<String>>,
    cancelled: Arc<AtomicBool>,
    skipped: AtomicU64,
    worker: Option<JoinHandle<Landed>>,
}

impl Thumbnailer {
    /// Checks `dir` as the sheet does (its `index.html` and `thumbs/` are
    /// its own, not a run's files; what it may read) and starts the thread.
    /// Blocking: a little file work.
    pub fn start(dir: &Path) -> Result<Thumbnailer, ReportError> {
        let sources = super::prepare(dir)?;
        let (queue, images) = sync_channel::<String>(QUEUE);
        let cancelled = Arc::new(AtomicBool::new(false));
        let (stop, dir) = (cancelled.clone(), PathBuf::from(dir));
        let worker = std::thread::Builder::new()
            .name("batchgen-thumbnails".into())
            .spawn(move || {
                let made = AtomicUsize::new(0);
                let mut landed = Landed::default();
                for file in images {
                    if stop.load(Ordering::Relaxed) {
                        landed.skipped += 1;
                        continue;
                    }
                    let before = made.load(Ordering::Relaxed);
                    match thumbs::show(&dir, &sources, &file, &made) {
                        (Shown::Thumb { .. }, _) if made.load(Ordering::Relaxed) == before => {
                            landed.kept += 1
                        }
                        (Shown::Thumb { .. }, _) => {}
                        _ => landed.failed += 1,
                    }
                }
                landed.made = made.into_inner() as u64;
                landed
            })
            .map_err(ReportError::Thread)?;
        Ok(Thumbnailer {
            queue: Some(queue),
            cancelled,
            skipped: AtomicU64::new(0),
            worker: Some(worker),
        })
    }

    /// [`Thumbnailer::start`] off the async workers, for a run: `None` if
    /// the folder is not one a sheet may be written in (the sheet at the
    /// end says why).
    pub async fn start_for_run(dir: &Path) -> Option<Thumbnailer> {
        let dir = dir.to_path_buf();
        match tokio::task::spawn_blocking(move || Thumbnailer::start(&dir)).await {
            Ok(Ok(t)) => Some(t),
            Ok(Err(e)) => {
                tracing::debug!(target: "batchgen::report", "no thumbnails as images land: {e}");
                None
            }
            Err(_) => None,
        }
    }

    /// Queues the thumbnail of `file` (as results.csv names it, relative
    /// to the folder). Never waits: a full queue leaves it to the sheet.
    pub fn offer(&self, file: &str) {
        let queued = self
            .queue
            .as_ref()
            .is_some_and(|q| q.try_send(file.to_string()).is_ok());
        if !queued {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What is queued is dropped, left to the sheet.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Closes the queue and waits for the thread to drain it. Blocking.
    pub fn finish(mut self) -> Landed {
        drop(self.queue.take());
        let skipped = self.skipped.load(Ordering::Relaxed);
        let mut landed = match self.worker.take().map(JoinHandle::join) {
            Some(Ok(landed)) => landed,
            // A panic in a decoder: what it left is the sheet's to make.
            _ => Landed::default(),
        };
        landed.skipped += skipped;
        landed
    }
}

impl Drop for Thumbnailer {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ImageFormat;
    use crate::sim::render;

    /// A folder with `n` images of a run in images/, as results.csv names them.
    fn folder(n: usize) -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        let files = (0..n)
            .map(|i| {
                let file = format!("images/a_s{i}_0.jpg");
                let bytes = render::image("a", i as u64, 320, 240, ImageFormat::Jpeg);
                std::fs::write(dir.path().join(&file), bytes).unwrap();
                file
            })
            .collect();
        (dir, files)
    }

    #[test]
    fn what_is_offered_is_made_once_and_a_bad_image_is_counted_not_raised() {
        let (dir, files) = folder(3);
        std::fs::write(dir.path().join("images/bad_0.jpg"), b"\xFF\xD8\xFF\xD9").unwrap();
        let t = Thumbnailer::start(dir.path()).unwrap();
        for f in &files {
            t.offer(f);
        }
        t.offer("images/bad_0.jpg");
        t.offer(&files[0]);
        let landed = t.finish();
        assert_eq!(
            landed,
            Landed {
                made: 3,
                kept: 1,
                failed: 1,
                skipped: 0
            }
        );
        for f in &files {
            let thumb = dir.path().join("thumbs").join(f);
            assert!(thumb.is_file(), "{}", thumb.display());
        }
    }

    #[test]
    fn a_cancelled_thumbnailer_leaves_what_is_queued_to_the_sheet() {
        let (dir, files) = folder(2);
        let t = Thumbnailer::start(dir.path()).unwrap();
        t.cancel();
        for f in &files {
            t.offer(f);
        }
        let landed = t.finish();
        assert_eq!((landed.made, landed.skipped), (0, 2));
        assert!(!dir.path().join("thumbs/images").exists());
    }

    #[cfg(unix)]
    #[test]
    fn thumbnails_are_written_only_into_the_folders_own_thumbs() {
        let (dir, _) = folder(1);
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("thumbs")).unwrap();
        let Err(e) = Thumbnailer::start(dir.path()) else {
            panic!("a thumbs/ that leads elsewhere is taken");
        };
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
}
