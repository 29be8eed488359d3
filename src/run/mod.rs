//! Stage 3 of 4: run a plan against the gateway, never paying twice.
//!
//! Why this exists: this is where money is spent. [`open`] takes the output
//! folder (one process, one gateway), reads its journal once and decides
//! where every row starts ([`start`]), so the caller can check what this run
//! would newly spend against the budget before anything is sent. Then
//! [`Opened::execute`] bounds the requests in flight (`--concurrency`, a
//! semaphore whose permit each row holds from before its submit until the
//! gateway says the request finished, or the learned latencies make that
//! all but sure; its images are then fetched under a
//! second bound of the same size, so the slot serves the next row at once) and
//! the submit rate (`--rate`, shared, slowed by 429s), keeps new spending
//! under the budget, and stops submitting when told to. [`row`] drives one
//! row through its life.
//!
//! Cancellation: a signal (Ctrl-C, SIGTERM, SIGHUP) and any stop-the-run
//! error set one stop flag. From then on no new submit is sent and rows
//! waiting to submit end as not run. After a *soft* stop (a signal, the
//! budget, a rejected key) rows already accepted are still polled and
//! downloaded, so what was paid for is collected. After a *hard* stop (the
//! local disk failed, the gateway is unreachable) nothing more can be
//! collected now: accepted rows are left as they stand, and a plain rerun
//! collects them. Killing the process outright is safe too: the journal is
//! synced before every step it guards.

mod limiter;
mod poll;
mod row;
mod start;
mod tasks;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use crate::api::{ApiError, Backoff, Client, PART_PREFIX};
use crate::cache::Cache;
use crate::disk;
use crate::gateway::Gateway;
use crate::journal::{self, Entry, Journal, JournalError};
use crate::output::{self, ResultTotals as Totals, RunEnd, RunSummary as Summary, Stems};
use crate::plan::{Plan, Usd};
use crate::progress::{self, Counts, Event};
use crate::sidecar;
pub use limiter::RateLimiter;
use start::{decide, Flags, Start};
use tasks::Rows;

/// The `error_code` of a row whose task panicked, and of rows the panic's
/// stop left unrun.
pub const PANICKED: &str = crate::vocab::Code::Panicked.as_str();

pub use crate::gateway::SIMULATED;

/// How a run behaves; built from the command line and validated before work starts.
#[derive(Clone, Debug)]
pub struct Settings {
    pub out_dir: PathBuf,
    /// Which gateway this run talks to (its base URL), or the simulator.
    pub gateway: Gateway,
    pub concurrency: usize,
    /// `--rate`: a ceiling on submits per second (none: found from the gateway).
    pub rate_per_sec: Option<f64>,
    /// What this run may newly spend.
    pub max_cost: Option<Usd>,
    pub retry_failed: bool,
    /// `--poll-interval-ms`: a fixed schedule, the first poll and every next
    /// one this far apart (±20%). None: a schedule learned from the run.
    pub poll_interval: Option<Duration>,
    /// `--resubmit-lost`: pay again for results the gateway lost.
    pub resubmit_lost: bool,
    /// `--verify`: check completed rows' files by their SHA-256, not their size and time.
    pub verify: bool,
    /// How long a run polls one accepted request before leaving it (`POLL_TIMEOUT`).
    pub row_deadline: Duration,
    /// Submits per row per run that may fail before the row gives up (429s and
    /// connections that never opened do not count).
    pub max_attempts: u32,
    /// Status calls in a row that may fail before the row is left to a rerun.
    pub max_status_failures: u32,
    pub download_attempts: u32,
    pub backoff: Backoff,
    /// How long every connection to the gateway may fail before the run stops.
    pub unreachable_after: Duration,
    /// How often results.csv is rewritten while the run works.
    pub results_every: Duration,
    pub progress: progress::Mode,
    /// `--cache DIR` (or the manifest's `cache:`): the store of fulfilled requests.
    pub cache: Option<PathBuf>,
    /// Tests only, no flag: the run keeps time on tokio's paused clock
    /// (see [`Journal::hold_paused_clock`]).
    pub paused_clock: bool,
    /// Make the contact sheet's thumbnails as images land (the sheet at
    /// the end keeps them): see [`crate::report::Thumbnailer`].
    pub thumbnails: bool,
    /// Tests only: the row whose task panics once its request is accepted.
    #[cfg(test)]
    pub panic_on: Option<crate::plan::Key>,
}

impl Settings {
    pub fn new(out_dir: PathBuf) -> Settings {
        Settings {
            out_dir,
            gateway: Gateway::simulated(),
            concurrency: 8,
            rate_per_sec: None,
            max_cost: None,
            retry_failed: false,
            poll_interval: None,
            resubmit_lost: false,
            verify: false,
            row_deadline: Duration::from_secs(20 * 60),
            max_attempts: 8,
            max_status_failures: 6,
            download_attempts: 6,
            backoff: Backoff::default(),
            unreachable_after: Duration::from_secs(30),
            results_every: Duration::from_secs(30),
            progress: progress::Mode::Auto,
            cache: None,
            paused_clock: false,
            thumbnails: false,
            #[cfg(test)]
            panic_on: None,
        }
    }
}

/// A signal that asks the run to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (what Kubernetes, systemd and CI send first).
    Terminate,
    /// SIGHUP (the terminal went away).
    Hangup,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "Ctrl-C",
            Signal::Terminate => "SIGTERM",
            Signal::Hangup => "SIGHUP",
        }
    }

    /// The exit code of a run it stopped: 128 + the signal's number.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
            Signal::Hangup => 129,
        }
    }
}

/// Why a run stopped submitting before its end.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    Signal(Signal),
    /// 401, 403, `INSUFFICIENT_FUNDS`, a redirect: no later request can succeed.
    Rejected {
        code: String,
        message: String,
    },
    /// The next submit would have taken this run's spending past the budget.
    Budget {
        limit: Usd,
    },
    /// The journal or the output folder cannot be written: what cannot be,
    /// and why, in words that name no row (every row the stop leaves
    /// repeats them; the row that met the fault says so in its own line).
    Disk(String),
    /// Every connection to the gateway has failed for a while.
    Unreachable {
        url: String,
        after: Duration,
    },
    /// A row's task panicked (a bug in batchgen): `row` is its id.
    Panicked {
        row: String,
        message: String,
    },
}

impl Stop {
    /// The `error_code` of rows this stop left unrun.
    pub fn code(&self) -> &str {
        match self {
            Stop::Signal(Signal::Interrupt) => "INTERRUPTED",
            Stop::Signal(Signal::Terminate) => "TERMINATED",
            Stop::Signal(Signal::Hangup) => "HANGUP",
            Stop::Rejected { code, .. } => code,
            Stop::Budget { .. } => "BUDGET",
            Stop::Disk(_) => "DISK",
            Stop::Unreachable { .. } => "GATEWAY_UNREACHABLE",
            Stop::Panicked { .. } => PANICKED,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Stop::Signal(s) => format!("interrupted ({})", s.name()),
            Stop::Rejected { code, message } => {
                format!("the gateway refused the run: {code}: {message}")
            }
            Stop::Budget { limit } => {
                format!(
                    "the next request would take this run's spending past the budget of {limit}"
                )
            }
            Stop::Disk(why) => format!("cannot write the output, so nothing more is spent: {why}"),
            Stop::Unreachable { url, after } => format!(
                "gateway unreachable at {url}: every connection failed for {} s",
                after.as_secs()
            ),
            Stop::Panicked { row, message } => {
                format!("row {row} failed inside batchgen (a bug; please report it): {message}")
            }
        }
    }

    /// Nothing more can be collected in this run either.
    pub fn is_hard(&self) -> bool {
        matches!(self, Stop::Disk(_) | Stop::Unreachable { .. })
    }
}

/// The end of a run.
#[derive(Clone, Debug)]
pub struct Report {
    pub summary: Summary,
    pub stop: Option<Stop>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write {path}: {}", crate::disk::plain(source))]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another batchgen run is using {0}; wait for it to end (a folder is run by one process at a time)")]
    Locked(PathBuf),
    #[error("{0} is a symbolic link: a run writes its images only inside its own folder; replace the link with a folder; nothing was sent")]
    ImagesLink(PathBuf),
    #[error("{0}")]
    Cache(crate::cache::CacheError),
    #[error("{dir} was made against {made_by}, not {this}: one folder holds the results of one gateway. {hint}")]
    OtherGateway {
        dir: PathBuf,
        made_by: String,
        this: String,
        hint: String,
    },
}

/// The output folder, taken for this run, with every row's start decided.
pub struct Opened {
    plan: Arc<Plan>,
    settings: Settings,
    cache: Option<Arc<Cache>>,
    journal: Arc<Journal>,
    _lock: std::fs::File,
    /// Rows with work to do, accepted ones first, then new ones in plan order.
    starts: Vec<(usize, Start)>,
    /// Rows to submit, in plan order (indices: a million of them cost 4 MB).
    fresh: Vec<u32>,
    /// Verdicts the decisions reached (lost results), journaled at the start.
    verdicts: Vec<Entry>,
    /// What earlier runs saw of each kind of request's latency, in seconds.
    seeds: HashMap<poll::ModelKey, Vec<(f64, f64)>>,
    /// Rows already finished for good (this run does nothing for them).
    finished: u64,
    /// What the folder already holds for this plan.
    before: Totals,
    /// What this run would spend if every row it submits makes every image.
    to_spend: Usd,
    to_submit: u64,
}

/// Takes the output folder: creates it (durably), locks it, checks that it
/// belongs to this gateway, removes temporary files a killed run left,
/// replays the journal once and decides where every row starts.
pub fn open(plan: Arc<Plan>, settings: Settings) -> Result<Opened, RunError> {
    let out_dir = settings.out_dir.clone();
    let images_dir = out_dir.join(output::IMAGES_DIR);
    let output_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Output { path, source }
    };
    // Files are only ever written inside the folder: an `images` that
    // leads elsewhere (another run's images, say) is not followed.
    if std::fs::symlink_metadata(&images_dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(RunError::ImagesLink(images_dir));
    }
    disk::create_dir_durable(&images_dir).map_err(output_err(&images_dir))?;
    let lock = lock(&out_dir)?;
    let mut journal = Journal::open(&out_dir)?;
    if settings.paused_clock {
        journal.hold_paused_clock();
    }
    journal.keep_room(journal_room(settings.concurrency));
    let cache = match &settings.cache {
        Some(dir) => Some(Arc::new(
            Cache::open(dir, &settings.gateway).map_err(RunError::Cache)?,
        )),
        None => None,
    };
    let (made_by, made_at) = journal.with_replay(|r| (r.gateway.clone(), r.base_url.clone()));
    if let Some(made_by) = made_by {
        if !settings.gateway.made(&made_by, made_at.as_deref()) {
            let made_by = made_at.unwrap_or(made_by);
            return Err(other_gateway(&out_dir, made_by, settings.gateway.base()));
        }
    }
    disk::remove_stray(&images_dir, PART_PREFIX);
    disk::remove_stray(&images_dir, disk::TEMP_PREFIX);
    disk::remove_stray(&out_dir, disk::TEMP_PREFIX);

    let mut resumed = Vec::new();
    let mut fresh = Vec::new();
    let mut verdicts = Vec::new();
    let mut finished = 0;
    let mut to_spend = Usd::default();
    let mut before = Totals::default();
    let mut seeds: HashMap<poll::ModelKey, Vec<(f64, f64)>> = HashMap::new();
    let flags = Flags {
        retry_failed: settings.retry_failed,
        resubmit_lost: settings.resubmit_lost,
    };
    let mut sidecars = Ok(());
    journal.with_replay(|replay| {
        for (i, row) in plan.rows.iter().enumerate() {
            let key = row.key;
            let req = plan.request(row);
            let price = plan.request_price(&req);
            let rec = replay.records.get(&key).map(|r| &**r);
            before.add(&output::row_result(rec, price, None));
            if let Some([lo, hi]) = rec.and_then(|r| r.seen_ms) {
                seeds
                    .entry((req.kind(), req.images()))
                    .or_default()
                    .push((lo as f64 / 1000.0, hi as f64 / 1000.0));
            }
            let in_cache = || {
                let cache = cache.as_ref()?;
                cache.lookup(&cache.identity(&req).ok()?)
            };
            let d = decide(
                rec,
                key,
                price,
                flags,
                |done| files_intact(&out_dir, done, settings.verify),
                in_cache,
            );
            // A completed row's provenance is what the journal says (and
            // names the row's current id): missing or other, it is written again.
            if let (Start::End, None, Some(r)) = (&d.start, &d.record, rec) {
                if sidecars.is_ok() {
                    let id = plan.row_id(row);
                    sidecars = sidecar::restore(&out_dir, &id, key, &req, r, settings.verify)
                        .map(drop)
                        .map_err(output_err(&images_dir));
                }
            }
            verdicts.extend(d.record);
            // A request fulfilled before, by any run, is taken from the cache.
            let cached = match &d.start {
                Start::Submit => in_cache(),
                _ => None,
            };
            if let Some(hit) = cached {
                let or_submit = true;
                resumed.push((i, Start::Cached { hit, or_submit }));
                continue;
            }
            match d.start {
                Start::End => finished += 1,
                Start::Submit => {
                    to_spend = to_spend + price;
                    fresh.push(i as u32);
                }
                other => resumed.push((i, other)),
            }
        }
    });
    sidecars?;
    let to_submit = fresh.len() as u64;
    Ok(Opened {
        plan,
        settings,
        cache,
        journal: Arc::new(journal),
        _lock: lock,
        starts: resumed,
        fresh,
        verdicts,
        seeds,
        finished,
        before,
        to_spend,
        to_submit,
    })
}

/// Room the journal keeps on the disk for the lines a disk fault makes
/// rows write: for every row that can hold a request id at once (in
/// flight or downloading), its `submitted` line if its
/// submit is under way and an `unfinished` line (each under a KiB, with a
/// long path), twice over, since only half the room is sure to be left
/// when the disk fills.
fn journal_room(concurrency: usize) -> u64 {
    let rows = 2 * concurrency;
    (rows as u64 * 4096).max(64 << 10)
}

fn other_gateway(dir: &Path, made_by: String, this: &str) -> RunError {
    let hint = if made_by == SIMULATED {
        format!(
            "Its images are the simulator's placeholders. Run into another folder (--out), or remove {} to start over.",
            dir.display()
        )
    } else {
        "Run into another folder (--out), or give the --base-url it was made with to resume it."
            .to_string()
    };
    let name = |g: &str| {
        if g == SIMULATED {
            "the built-in simulator (--simulate)".to_string()
        } else {
            format!("the gateway at {g}")
        }
    };
    RunError::OtherGateway {
        dir: dir.to_path_buf(),
        made_by: name(&made_by),
        this: name(this),
        hint,
    }
}

impl Opened {
    /// What this run would newly spend at most (every row it submits making
    /// every image it asks for).
    pub fn to_spend(&self) -> Usd {
        self.to_spend
    }

    /// What the folder already holds for this plan.
    pub fn before(&self) -> &Totals {
        &self.before
    }

    /// The line printed before a run: already done and spent, then what
    /// this run will do and may spend.
    pub fn describe(&self) -> String {
        let b = &self.before;
        let rows = self.plan.rows.len() as u64;
        let mut text = format!("batchgen: {rows} rows");
        if self.finished > 0 || b.cost_usd > Usd::default() {
            text.push_str(&format!(
                " ({} finished earlier, {} spent",
                self.finished, b.cost_usd
            ));
            if b.possibly_charged_usd > Usd::default() {
                text.push_str(&format!(", {} possibly charged", b.possibly_charged_usd));
            }
            text.push(')');
        }
        let cached = self
            .starts
            .iter()
            .filter(|(_, s)| matches!(s, Start::Cached { .. }))
            .count() as u64;
        if cached > 0 {
            text.push_str(&format!("; {cached} from the cache"));
        }
        let collect = self.starts.len() as u64 - cached;
        if collect > 0 {
            text.push_str(&format!("; {collect} accepted earlier to collect"));
        }
        text.push_str(&format!(
            "; {} to submit, {} at most → {}",
            self.to_submit,
            self.to_spend,
            self.settings.out_dir.display()
        ));
        text
    }

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
            ..
        } = self;
        let started = Instant::now();
        let out_dir = settings.out_dir.clone();
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

        let (stop_tx, _) = watch::channel(None);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let counts = Counts {
            total: plan.rows.len() as u64,
            already: finished,
            ..Counts::default()
        };
        let collector = tokio::spawn(progress::collect(settings.progress, counts, events_rx));
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
        ];

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
            if matches!(start, Start::Submit | Start::Cached { .. }) && ctx.stopped() {
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
            this_run: (
                counts.completed + counts.failed + counts.left,
                counts.images,
            ),
            rate_limited: ctx.limiter.rate_limited(),
            status_calls: ctx.status_calls.load(Ordering::Relaxed),
            logging_stopped: crate::console::lost(),
        };
        let (journal, dir) = (ctx.journal, out_dir.clone());
        let summary =
            blocking(move || journal.with_replay(|replay| output::write(&plan, replay, &dir, end)))
                .await
                .map_err(output_err)?;
        if let Some(thumbs) = thumbs {
            if let Ok(landed) = thumbs.await {
                tracing::debug!(target: "batchgen::report", "{landed}");
            }
        }
        Ok(Report { summary, stop })
    }
}

/// Runs file work on the blocking pool, off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Holds an exclusive lock on `DIR/.lock` while the run lives.
fn lock(dir: &Path) -> Result<std::fs::File, RunError> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| RunError::Output { path, source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(RunError::Locked(dir.to_path_buf())),
    }
}

/// Every file of a completed row is there as it was written. A file whose
/// size and modification time are those its `done` line recorded is taken
/// as intact without reading it; otherwise (a copied folder, `--verify`, a
/// journal older than those records) its SHA-256 decides. A file of another
/// size is damaged.
fn files_intact(out_dir: &Path, done: &journal::State, verify: bool) -> bool {
    let journal::State::Done {
        files,
        sha256,
        stamps,
        ..
    } = done
    else {
        return false;
    };
    if files.len() != sha256.len() {
        return false;
    }
    files.iter().enumerate().all(|(i, f)| {
        let path = out_dir.join(f);
        let Ok(meta) = std::fs::metadata(&path) else {
            return false;
        };
        match stamps.get(i).filter(|_| stamps.len() == files.len()) {
            Some(&[size, _]) if meta.len() != size => return false,
            Some(&[_, mtime]) if !verify && disk::mtime_ns(&meta) == mtime => return true,
            _ => {}
        }
        std::fs::read(&path)
            .map(|bytes| disk::hex(&Sha256::digest(&bytes)) == sha256[i])
            .unwrap_or(false)
    })
}

/// What this run has committed to spend, and its limit.
#[derive(Debug)]
struct Budget {
    limit: Option<Usd>,
    committed: Usd,
}

impl Budget {
    fn reserve(&mut self, cost: Usd) -> bool {
        if self.limit.is_some_and(|l| self.committed + cost > l) {
            return false;
        }
        self.committed = self.committed + cost;
        true
    }

    fn release(&mut self, cost: Usd) {
        self.committed = Usd::from_micros(self.committed.micros().saturating_sub(cost.micros()));
    }
}

/// What every row task shares.
struct Ctx {
    plan: Arc<Plan>,
    client: Client,
    journal: Arc<Journal>,
    settings: Settings,
    limiter: RateLimiter,
    budget: Mutex<Budget>,
    stop: watch::Sender<Option<Stop>>,
    events: mpsc::UnboundedSender<Event>,
    stems: Stems,
    images_dir: PathBuf,
    schedule: poll::Schedule,
    /// When the gateway last started refusing every connection.
    refused_since: Mutex<Option<Instant>>,
    status_calls: AtomicU64,
    /// `--concurrency`: a row holds one of these from before its submit
    /// until the gateway says its request finished (a hard bound on what
    /// the gateway is generating).
    requests: Arc<Semaphore>,
    /// As many again for fetching finished requests' images.
    downloads: Arc<Semaphore>,
    /// `--cache`: where fulfilled requests are stored and taken from.
    cache: Option<Arc<Cache>>,
    /// A failure to store into the cache is told once.
    cache_warned: AtomicBool,
    /// Makes the contact sheet's thumbnails as images land.
    thumbs: Option<crate::report::Thumbnailer>,
}

impl Ctx {
    /// Stops new submissions; the first reason given is kept.
    fn stop(&self, why: Stop) {
        self.stop.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(why);
                true
            } else {
                false
            }
        });
    }

    fn stopped(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// The stop, if it is one after which nothing can be collected.
    fn hard_stop(&self) -> Option<Stop> {
        self.stop.borrow().clone().filter(Stop::is_hard)
    }

    /// Resolves when the run stops hard. Cancelled by dropping it.
    async fn until_hard_stop(&self) -> Stop {
        let mut rx = self.stop.subscribe();
        let stop = match rx.wait_for(|s| s.as_ref().is_some_and(Stop::is_hard)).await {
            Ok(s) => s.clone(),
            Err(_) => None,
        };
        match stop {
            Some(stop) => stop,
            None => std::future::pending().await,
        }
    }

    /// Appends to the journal; a journal that cannot be written stops the
    /// run, and so does one that has lines left but no more room.
    async fn record(&self, entry: &Entry) -> bool {
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
    fn out_of_room(&self) {
        if let Some(why) = self.journal.out_of_room() {
            self.stop(Stop::Disk(why));
        }
    }

    fn event(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether every connection has failed for `unreachable_after`.
    fn unreachable_long(&self) -> bool {
        let since = *self.refused_since.lock().unwrap_or_else(|e| e.into_inner());
        since.is_some_and(|t| t.elapsed() >= self.settings.unreachable_after)
    }

    /// Stops spending: the images folder cannot be written (`e`). Names no
    /// row (every row the stop leaves repeats it); the row that met the
    /// fault says so in its own line.
    fn stop_images_unwritable(&self, e: &std::io::Error) {
        self.stop(Stop::Disk(format!(
            "cannot write in {}: {}",
            self.images_dir.display(),
            disk::plain(e)
        )));
    }

    /// Notes whether a keyed call reached the gateway at all.
    fn observe<T>(&self, result: &Result<T, ApiError>) {
        let mut since = self.refused_since.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Err(e) if e.is_unreachable() => {
                since.get_or_insert_with(Instant::now);
            }
            _ => *since = None,
        }
    }
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
        if let Err(e) = written {
            ctx.stop(Stop::Disk(format!(
                "cannot write {}: {}",
                ctx.settings.out_dir.join(output::RESULTS_CSV).display(),
                disk::plain(&e)
            )));
        }
    }
}
