//! How a row ends: its `done` line with the files it saved (then their
//! provenance, and a copy in the cache), a verdict (`failed`), or *left*
//! (`unfinished`) for a rerun to collect or submit again.
//!
//! Cancellation: none of its own; a row ending is journaled whatever the
//! run's stop.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::RowRun;
use crate::api::ApiError;
use crate::journal::{now_ms, Charged, Entry, State};
use crate::output::IMAGES_DIR;
use crate::plan::Usd;
use crate::progress::Event;
use crate::run::{Start, Stop};
use crate::sidecar;
use crate::vocab::Ticket;

impl RowRun {
    /// Stores a paid row's images in the cache, if the run has one. A
    /// failure costs nothing but later savings: it is told once, not fatal.
    pub(super) async fn store_in_cache(&self, files: Vec<(PathBuf, String)>) {
        let Some(cache) = self.ctx.cache.clone() else {
            return;
        };
        let req = self.req.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let identity = cache.identity(&req)?;
            cache.store(&identity, &files)
        })
        .await;
        let e = match stored {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        if !self.ctx.cache_warned.swap(true, Ordering::Relaxed) {
            self.say(format!(
                "warning: cannot store images in the cache ({e}); the run goes on without storing"
            ));
        }
    }

    /// Offers the row's images to the contact sheet's thumbnailer, and
    /// writes their provenance, from its `done` record (durable by now). A
    /// failure to write stops spending, as a download's does; the row stays
    /// done and the next run writes what is missing.
    pub(super) async fn write_sidecars(&self) {
        let ctx = self.ctx.clone();
        let Some(rec) = ctx
            .journal
            .with_replay(|r| r.records.get(&self.key).map(|r| (**r).clone()))
        else {
            return;
        };
        // Its thumbnails, off the async workers; never waited for.
        if let (Some(thumbs), State::Done { files, .. }) = (&ctx.thumbs, &rec.state) {
            files.iter().for_each(|f| thumbs.offer(f));
        }
        let (out_dir, id, key, req) = (
            ctx.settings.out_dir.clone(),
            self.id.clone(),
            self.key,
            self.req.clone(),
        );
        let written = crate::run::blocking(move || sidecar::write(&out_dir, &id, key, &req, &rec));
        match written.await {
            // On a bucket, they go up too (nothing to do on a folder).
            Ok(paths) => {
                if let Err(why) = ctx.publish(&paths).await {
                    self.say(format!(
                        "error: cannot upload the provenance of row {}: {why}; no new requests will be sent",
                        self.id
                    ));
                }
            }
            Err(e) => {
                self.say(format!(
                    "error: cannot write the provenance of row {} in {}: {}; no new requests will be sent",
                    self.id,
                    ctx.images_dir.display(),
                    crate::disk::plain(&e)
                ));
                ctx.stop_images_unwritable(&e);
            }
        }
    }

    /// The `done` line of this row, with the files it saved.
    pub(super) fn done(&self, saved: Saved, cost: Usd, cached: bool) -> Entry {
        Entry::Done {
            key: self.key,
            at_ms: now_ms(),
            files: saved.files,
            sha256: saved.sha256,
            stamps: saved.stamps,
            cost_micros: cost.micros(),
            seen_ms: self
                .seen
                .map(|(lo, hi)| [(lo * 1000.0) as u64, (hi * 1000.0) as u64]),
            cached,
        }
    }

    /// Records a verdict. `Charged::No` frees its share of the budget.
    pub(super) async fn fail(&mut self, code: &str, message: &str, charged: Charged) -> Start {
        let cost = match charged {
            Charged::No => Usd::default(),
            Charged::Possibly | Charged::Yes => self.price,
        };
        self.ctx
            .record(&Entry::Failed {
                key: self.key,
                at_ms: now_ms(),
                code: code.to_string(),
                message: message.to_string(),
                charged,
                cost_micros: cost.micros(),
            })
            .await;
        if charged == Charged::No {
            self.release();
        }
        self.ctx.event(Event::Failed { possibly: cost });
        self.say(format!("error: row {}: {code}: {message}", self.id));
        Start::End
    }

    /// Leaves an accepted row for a rerun to collect; it keeps its request id.
    pub(super) async fn leave_accepted(
        &mut self,
        code: &str,
        message: &str,
        ticket: &Ticket,
    ) -> Start {
        self.leave_collectable(code, message, &ticket.request_id)
            .await
    }

    pub(super) async fn leave_collectable(
        &mut self,
        code: &str,
        message: &str,
        request: &str,
    ) -> Start {
        let message = if request.is_empty() {
            format!("{message}; accepted: rerun the same command to collect it")
        } else {
            format!(
                "{message}; accepted as request {request}: rerun the same command to collect it"
            )
        };
        self.record_left(code, &message).await;
        self.ctx.event(Event::Left {
            possibly: self.price,
        });
        self.say(format!("warning: row {}: {code}: {message}", self.id));
        Start::End
    }

    pub(super) async fn record_left(&self, code: &str, message: &str) {
        self.ctx
            .record(&Entry::Unfinished {
                key: self.key,
                at_ms: now_ms(),
                code: code.to_string(),
                message: message.to_string(),
            })
            .await;
    }

    pub(super) fn stop_run(&self, e: &ApiError) {
        self.say(format!(
            "error: row {}: {e}; no new requests will be sent",
            self.id
        ));
        self.ctx.stop(Stop::Rejected {
            code: e.code.clone(),
            message: e.message.clone(),
        });
    }
}

/// The files a row saved, as its `done` line records them.
#[derive(Default)]
pub(super) struct Saved {
    /// Relative to the output folder.
    pub(super) files: Vec<String>,
    sha256: Vec<String>,
    stamps: Vec<[u64; 2]>,
    paths: Vec<PathBuf>,
}

impl Saved {
    pub(super) fn push(&mut self, path: PathBuf, sha256: String, bytes: u64, mtime_ns: u64) {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        self.files.push(format!("{IMAGES_DIR}/{file}"));
        self.sha256.push(sha256);
        self.stamps.push([bytes, mtime_ns]);
        self.paths.push(path);
    }

    /// Each file's path.
    pub(super) fn paths(&self) -> Vec<PathBuf> {
        self.paths.clone()
    }

    /// Each file's path and SHA-256, for the cache.
    pub(super) fn pairs(&self) -> Vec<(PathBuf, String)> {
        self.paths
            .iter()
            .cloned()
            .zip(self.sha256.iter().cloned())
            .collect()
    }
}
