//! What every row task of a run shares ([`Ctx`]), and the run's budget.
//!
//! Why this exists apart: the scheduler builds it once, and the row tasks,
//! the watchers and the results writer all hold it; its methods are the
//! run's shared verbs (stop, record, tell the progress line).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use super::shutdown::Shutdown;
use super::{poll, RateLimiter, Settings, Stop};
use crate::api::{ApiError, Client};
use crate::cache::Cache;
use crate::disk;
use crate::journal::{Entry, Journal};
use crate::output::Stems;
use crate::plan::{Plan, Usd};
use crate::progress::Event;

/// What this run has committed to spend, and its limit.
#[derive(Debug)]
pub(super) struct Budget {
    pub(super) limit: Option<Usd>,
    pub(super) committed: Usd,
}

impl Budget {
    pub(super) fn reserve(&mut self, cost: Usd) -> bool {
        if self.limit.is_some_and(|l| self.committed + cost > l) {
            return false;
        }
        self.committed = self.committed + cost;
        true
    }

    pub(super) fn release(&mut self, cost: Usd) {
        self.committed = Usd::from_micros(self.committed.micros().saturating_sub(cost.micros()));
    }
}

/// What every row task shares.
pub(super) struct Ctx {
    pub(super) plan: Arc<Plan>,
    pub(super) client: Client,
    pub(super) journal: Arc<Journal>,
    pub(super) settings: Settings,
    pub(super) limiter: RateLimiter,
    pub(super) budget: Mutex<Budget>,
    pub(super) stop: watch::Sender<Option<Stop>>,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) stems: Stems,
    pub(super) images_dir: PathBuf,
    pub(super) schedule: poll::Schedule,
    /// When the gateway last started refusing every connection.
    pub(super) refused_since: Mutex<Option<Instant>>,
    pub(super) status_calls: AtomicU64,
    /// `--concurrency`: a row holds one of these from before its submit
    /// until the gateway says its request finished (a hard bound on what
    /// the gateway is generating).
    pub(super) requests: Arc<Semaphore>,
    /// As many again for fetching finished requests' images.
    pub(super) downloads: Arc<Semaphore>,
    /// `--cache`: where fulfilled requests are stored and taken from.
    pub(super) cache: Option<Arc<Cache>>,
    /// A failure to store into the cache is told once.
    pub(super) cache_warned: AtomicBool,
    /// Makes the contact sheet's thumbnails as images land.
    pub(super) thumbs: Option<crate::report::Thumbnailer>,
    /// The bucket prefix the run writes to (`--out s3://…`), if it is one.
    pub(super) remote: Option<Arc<super::Remote>>,
}

impl Ctx {
    /// Stops new submissions; the first reason given is kept.
    pub(super) fn stop(&self, why: Stop) {
        self.stop.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// A task's own view of the stop (see [`Shutdown`]).
    pub(super) fn shutdown(&self) -> Shutdown {
        Shutdown::new(self.stop.subscribe())
    }

    /// Appends to the journal; a journal that cannot be written stops the
    /// run, and so does one that has lines left but no more room.
    pub(super) async fn record(&self, entry: &Entry) -> bool {
        match self.journal.append(entry).await {
            Ok(()) => {
                self.out_of_room();
                true
            }
            Err(e) => {
                self.stop(Stop::Disk(e.to_string()));
                false
            }
        }
    }

    /// Stops the run if the journal's room on the disk could not be kept.
    pub(super) fn out_of_room(&self) {
        if let Some(why) = self.journal.out_of_room() {
            self.stop(Stop::Disk(why));
        }
    }

    pub(super) fn event(&self, e: Event) {
        let _ = self.events.send(e);
    }

    pub(super) fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether every connection has failed for `unreachable_after`.
    pub(super) fn unreachable_long(&self) -> bool {
        let since = *self.refused_since.lock().unwrap_or_else(|e| e.into_inner());
        since.is_some_and(|t| t.elapsed() >= self.settings.unreachable_after)
    }

    /// Uploads `paths` (files in the working folder) to the run's bucket,
    /// if it has one; an upload that fails stops spending, as a local write
    /// failure does, and says why.
    pub(super) async fn publish(&self, paths: &[PathBuf]) -> Result<(), String> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let uploaded = remote.upload(paths).await;
        if let Err(why) = &uploaded {
            self.stop(Stop::Disk(why.clone()));
        }
        uploaded
    }

    /// Stops spending: the images folder cannot be written (`e`). Names no
    /// row (every row the stop leaves repeats it); the row that met the
    /// fault says so in its own line.
    pub(super) fn stop_images_unwritable(&self, e: &std::io::Error) {
        self.stop(Stop::Disk(format!(
            "cannot write in {}: {}",
            self.images_dir.display(),
            disk::plain(e)
        )));
    }

    /// Notes whether a keyed call reached the gateway at all.
    pub(super) fn observe<T>(&self, result: &Result<T, ApiError>) {
        let mut since = self.refused_since.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Err(e) if e.is_unreachable() => {
                since.get_or_insert_with(Instant::now);
            }
            _ => *since = None,
        }
    }
}
