//! The scheduler: [`Opened::execute`] runs an opened folder's rows under
//! the bounds (`--concurrency` for requests at the gateway and as many
//! again for downloads, the shared submit rate, the budget), then writes
//! `results.csv` and `summary.json`. Beside the row tasks it keeps two
//! watchers (a signal, the gateway's reachability) and the periodic
//! rewrite of results.csv.
//!
//! Cancellation: the row tasks are never aborted; each holds a
//! [`Shutdown`](super::shutdown::Shutdown) and ends as its row does. The
//! watchers are aborted once the rows are done; the results writer is told
//! to end (between writes), so no write of its lands after the final one.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use super::ctx::{Budget, Ctx};
use super::open::Opened;
use super::start::Start;
use super::tasks::Rows;
use super::{poll, row, RateLimiter, RunError, Signal, Stop};
use crate::api::Client;
use crate::disk;
use crate::journal::{self, Entry};
use crate::output::{self, RunEnd, RunSummary, Stems};
use crate::plan::Usd;
use crate::progress::{self, Counts};

/// The end of a run.
#[derive(Clone, Debug)]
pub struct Report {
    pub summary: RunSummary,
    pub stop: Option<Stop>,
    /// What the progress display counted: this run's rows, images, spend.
    pub counts: Counts,
}

impl Opened {
    /// Runs the rows, then writes `results.csv` and `summary.json`. Returns
    /// when every row has ended or been left.
    pub async fn execute(
        self,
        client: Client,
        shutdown: impl Future<Output = Signal> + Send + 'static,
    ) -> Result<Report, RunError> {
        let Opened {
            plan,
            settings,
            cache,
            journal,
            _lock,
            starts,
            fresh,
            verdicts,
            seeds,
            finished,
            remote,
            to_publish,
            ..
        } = self;
        let started = Instant::now();
        let started_ms = journal::now_ms();
        let out_dir = settings.out_dir.clone();
        // Earlier runs' wall time, carried in this run's line (compaction
        // keeps it): summary.json's total across runs.
        let wall_before_ms = journal.with_replay(|r| r.wall_ms());
        journal
            .append(&Entry::Run {
                at_ms: journal::now_ms(),
                manifest: plan.manifest.display().to_string(),
                rows: plan.rows.len() as u64,
                version: env!("CARGO_PKG_VERSION").into(),
                gateway: Some(settings.gateway.origin().to_string()),
                base_url: settings.gateway.recorded_base(),
                plan: Some(plan.digest.clone()),
                shard: plan.shard,
                wall_before_ms: Some(wall_before_ms),
            })
            .await?;
        for entry in &verdicts {
            journal.append(entry).await?;
        }
        let output_err = |source| RunError::Output {
            path: out_dir.clone(),
            source,
        };
        let stems = journal.with_replay(Stems::from_journal);
        let (first, dir) = (plan.clone(), out_dir.clone());
        let reader = journal.clone();
        blocking(move || {
            output::write_plan_keys(&first, &dir)?;
            output::write_results(&first, &*reader, &dir, None).map(drop)
        })
        .await
        .map_err(output_err)?;
        if let Some(remote) = &remote {
            let mut names = vec![
                output::PLAN_KEYS.to_string(),
                output::RESULTS_CSV.to_string(),
            ];
            names.extend(to_publish);
            remote.publish(&names).await.map_err(RunError::Upload)?;
        }

        let (stop_tx, _) = watch::channel(None);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let counts = Counts {
            total: plan.rows.len() as u64,
            already: finished,
            ..Counts::default()
        };
        let collector = tokio::spawn(progress::collect(
            settings.progress,
            settings.metrics.clone(),
            counts,
            events_rx,
        ));
        let thumbs = match settings.thumbnails {
            true => crate::report::Thumbnailer::start_for_run(&out_dir).await,
            false => None,
        };
        let ctx = Arc::new(Ctx {
            plan: plan.clone(),
            client,
            journal,
            limiter: RateLimiter::new(settings.rate_per_sec),
            budget: Mutex::new(Budget {
                limit: settings.max_cost,
                committed: Usd::default(),
            }),
            stop: stop_tx,
            events: events_tx,
            stems,
            // Absolute, so that no temporary file costs a look-up of the working folder.
            images_dir: std::path::absolute(out_dir.join(output::IMAGES_DIR))
                .unwrap_or_else(|_| out_dir.join(output::IMAGES_DIR)),
            schedule: match settings.poll_interval {
                Some(interval) => poll::Schedule::Fixed(interval),
                None => {
                    let learned = poll::Learned::default();
                    for (key, intervals) in seeds {
                        learned.seed(key, intervals);
                    }
                    poll::Schedule::Adaptive(learned)
                }
            },
            refused_since: Mutex::new(None),
            status_calls: AtomicU64::new(0),
            requests: Arc::new(Semaphore::new(settings.concurrency)),
            downloads: Arc::new(Semaphore::new(settings.concurrency)),
            cache,
            cache_warned: AtomicBool::new(false),
            thumbs,
            remote,
            settings,
        });
        // Background pieces: the watchers are aborted when the rows are done;
        // the results writer is told to end, so that no write of its lands
        // after the final one.
        let (rows_done, rows_done_rx) = watch::channel(false);
        let writer = tokio::spawn(rewrite_results(ctx.clone(), rows_done_rx));
        let watchers = [
            tokio::spawn({
                let ctx = ctx.clone();
                async move {
                    let signal = shutdown.await;
                    ctx.stop(Stop::Signal(signal));
                }
            }),
            tokio::spawn(watch_reachability(ctx.clone())),
            tokio::spawn(watch_lease(ctx.clone())),
        ];

        // The scheduler's own view of the stop, as every row task has one.
        let run_shutdown = ctx.shutdown();
        // A disk too full to keep the journal's room: nothing is sent.
        ctx.out_of_room();
        let mut rows = Rows::default();
        let total = starts.len() + fresh.len();
        let fresh = fresh.into_iter().map(|i| (i as usize, Start::Submit));
        for (started, (index, start)) in starts.into_iter().chain(fresh).enumerate() {
            // Rows that end while this waits for a slot are seen at once (a
            // panic among them stops the run, before the slot it freed is used).
            let permit = loop {
                tokio::select! {
                    biased;
                    Some(ended) = rows.tasks.join_next_with_id() => rows.ended(&ctx, ended).await,
                    permit = row::acquire(&ctx.requests) => break permit,
                }
            };
            if let poll::Schedule::Adaptive(learned) = &ctx.schedule {
                learned.rows_ahead(total - started, ctx.settings.concurrency);
            }
            if matches!(start, Start::Submit | Start::Cached { .. }) && run_shutdown.is_shutdown() {
                continue; // left unrun; the results say why
            }
            rows.spawn(&ctx, index, start, permit);
        }
        while let Some(ended) = rows.tasks.join_next_with_id().await {
            rows.ended(&ctx, ended).await;
        }
        for w in watchers {
            w.abort();
            let _ = w.await;
        }
        rows_done.send_replace(true);
        let _ = writer.await;
        let stop = ctx.stop.borrow().clone();
        let gateway = ctx.settings.gateway.origin().to_string();
        let ctx = Arc::into_inner(ctx).expect("every task holding the context has ended");
        drop(ctx.events);
        let counts = collector.await.unwrap_or_default();
        // The last thumbnails are made while the results are written.
        let thumbs = ctx.thumbs.map(|t| {
            if stop.as_ref().is_some_and(Stop::is_hard) {
                t.cancel();
            }
            tokio::task::spawn_blocking(move || t.finish())
        });

        let end = RunEnd {
            gateway,
            stop: stop.as_ref().map(|s| (s.code().to_string(), s.describe())),
            wall: started.elapsed(),
            started_ms,
            wall_before: Duration::from_millis(wall_before_ms),
            stopped_with: stop.as_ref().map(Stop::exit_code),
            this_run: (
                counts.completed + counts.failed + counts.left,
                counts.images,
            ),
            rate_limited: ctx.limiter.rate_limited(),
            status_calls: ctx.status_calls.load(Ordering::Relaxed),
            logging_stopped: crate::console::lost(),
            place: ctx.settings.place.clone(),
        };
        let (journal, dir) = (ctx.journal, out_dir.clone());
        let mut summary =
            blocking(move || journal.with_replay(|replay| output::write(&plan, replay, &dir, end)))
                .await
                .map_err(output_err)?;
        // On a bucket: a final upload that fails is the run's stop (exit 3),
        // and its totals are still shown (and notified) with it.
        let mut stop = stop;
        if let Some(remote) = &ctx.remote {
            let names = [output::RESULTS_CSV, output::SUMMARY_JSON].map(String::from);
            if let Err(why) = remote.publish(&names).await {
                let stop = stop.get_or_insert(Stop::Disk(why));
                summary.stopped.get_or_insert_with(|| stop.describe());
                summary.exit_code = stop.exit_code();
            }
        }
        if let Some(thumbs) = thumbs {
            if let Ok(landed) = thumbs.await {
                tracing::debug!(target: "batchgen::report", "{landed}");
            }
        }
        Ok(Report {
            summary,
            stop,
            counts,
        })
    }
}

/// Runs file work on the blocking pool, off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Stops the run once every connection to the gateway has failed for
/// `unreachable_after`, however many rows are waiting. Cancelled by abort.
async fn watch_reachability(ctx: Arc<Ctx>) {
    let after = ctx.settings.unreachable_after;
    let mut tick = tokio::time::interval(Duration::from_millis(250).min(after));
    loop {
        tick.tick().await;
        if ctx.unreachable_long() {
            // Named as the journal names it: no user name, password or query.
            let gateway = &ctx.settings.gateway;
            let url = match gateway.is_simulated() {
                true => ctx.client.shown_base_url(),
                false => gateway.base().to_string(),
            };
            ctx.stop(Stop::Unreachable { url, after });
            return;
        }
    }
}

/// Stops the run once its bucket's lease is lost (taken over, deleted, or
/// not renewed in time): its journal takes no more lines by then, and
/// rows waiting on the gateway would not find that out until they next
/// write. Ends at once for a run on a folder; otherwise cancelled by abort.
async fn watch_lease(ctx: Arc<Ctx>) {
    let Some(remote) = ctx.remote.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if let Some(why) = remote.lease_lost() {
            ctx.stop(Stop::Disk(why));
            return;
        }
    }
}

/// Rewrites results.csv every `results_every`, so a killed run leaves a
/// recent one. A write that fails stops spending. Ends, between writes, once
/// `rows_done` is set.
async fn rewrite_results(ctx: Arc<Ctx>, mut rows_done: watch::Receiver<bool>) {
    let every = ctx.settings.results_every;
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = rows_done.wait_for(|done| *done) => return,
        }
        let (plan, dir, journal) = (
            ctx.plan.clone(),
            ctx.settings.out_dir.clone(),
            ctx.journal.clone(),
        );
        let written = blocking(move || output::write_results(&plan, &*journal, &dir, None)).await;
        match written {
            Err(e) => ctx.stop(Stop::Disk(format!(
                "cannot write {}: {}",
                ctx.settings.out_dir.join(output::RESULTS_CSV).display(),
                disk::plain(&e)
            ))),
            Ok(_) => {
                let results = ctx.settings.out_dir.join(output::RESULTS_CSV);
                let _ = ctx.publish(&[results]).await;
            }
        }
    }
}
