//! Stage 3 of 4: run a plan against the gateway, never paying twice.
//!
//! Why this exists: this is where money is spent. The scheduler here decides
//! which rows need work (from the journal, so a killed run resumes), bounds
//! the requests in flight (`--concurrency`, a semaphore whose permit each row
//! holds from submit to its last file) and the submit rate (`--rate`, shared
//! with every row, slowed by 429s), keeps the spend under the budget, and
//! stops submitting when told to. [`row`] drives one row through its life.
//!
//! Cancellation: `shutdown` (Ctrl-C) and any stop-the-run error set one stop
//! flag. From then on no new submit is sent, rows waiting to submit end as
//! not run, and rows already accepted are still polled and downloaded, so
//! what was paid for is collected. Killing the process outright is safe too:
//! the journal is synced before every step it guards.

mod limiter;
mod row;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::api::{Backoff, Client, Ticket};
use crate::journal::{self, Charged, Entry, Journal, JournalError, State};
use crate::output::{self, Stems, Summary};
use crate::plan::{Plan, Usd};
use crate::progress::{self, Counts, Event};
pub use limiter::RateLimiter;

/// How a run behaves; built from the command line and validated before work starts.
#[derive(Clone, Debug)]
pub struct Settings {
    pub out_dir: PathBuf,
    pub concurrency: usize,
    pub rate_per_sec: f64,
    pub max_cost: Option<Usd>,
    pub retry_failed: bool,
    /// The wait before the first poll and between polls (jittered ±20%).
    pub poll_interval: Duration,
    /// How long a run polls one accepted request before giving up on it (`POLL_TIMEOUT`).
    pub row_deadline: Duration,
    /// Submits per row per run that may fail before the row is failed (429s do not count).
    pub max_attempts: u32,
    pub download_attempts: u32,
    pub backoff: Backoff,
    pub progress: progress::Mode,
}

impl Settings {
    pub fn new(out_dir: PathBuf) -> Settings {
        Settings {
            out_dir,
            concurrency: 8,
            rate_per_sec: 2.0,
            max_cost: None,
            retry_failed: false,
            poll_interval: Duration::from_millis(2500),
            row_deadline: Duration::from_secs(20 * 60),
            max_attempts: 8,
            download_attempts: 6,
            backoff: Backoff::default(),
            progress: progress::Mode::Auto,
        }
    }
}

/// Why a run stopped submitting before its end.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    /// Ctrl-C.
    Interrupted,
    /// 401, 403, `INSUFFICIENT_FUNDS`: no later request can succeed.
    Rejected { code: String, message: String },
    /// The next submit would have taken the spend past the budget.
    Budget { limit: Usd },
    /// The journal or the output folder cannot be written.
    Disk(String),
}

impl Stop {
    /// The `error_code` of rows this stop left unrun.
    pub fn code(&self) -> &str {
        match self {
            Stop::Interrupted => "INTERRUPTED",
            Stop::Rejected { code, .. } => code,
            Stop::Budget { .. } => "BUDGET",
            Stop::Disk(_) => "DISK",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Stop::Interrupted => "interrupted (Ctrl-C)".into(),
            Stop::Rejected { code, message } => {
                format!("the gateway refused the run: {code}: {message}")
            }
            Stop::Budget { limit } => {
                format!("the next request would take the spend past the budget of {limit}")
            }
            Stop::Disk(why) => format!("cannot write the output: {why}"),
        }
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
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another batchgen run is using {0}; wait for it to end (a folder is run by one process at a time)")]
    Locked(PathBuf),
}

/// Where a row's work starts in this run.
#[derive(Clone, Debug)]
enum Start {
    Submit,
    Poll {
        ticket: Ticket,
        since_ms: u64,
    },
    Download {
        images: Vec<String>,
        ticket: Option<Ticket>,
    },
    End,
}

/// The spend already committed (done, possibly charged, in flight) and the limit.
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
    journal: Journal,
    settings: Settings,
    limiter: RateLimiter,
    budget: Mutex<Budget>,
    stop: watch::Sender<Option<Stop>>,
    events: mpsc::UnboundedSender<Event>,
    stems: Stems,
    images_dir: PathBuf,
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

    /// Appends to the journal; a journal that cannot be written stops the run.
    fn record(&self, entry: &Entry) -> bool {
        match self.journal.append(entry) {
            Ok(()) => true,
            Err(e) => {
                self.stop(Stop::Disk(e.to_string()));
                false
            }
        }
    }

    fn event(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `plan` into `settings.out_dir`, then writes `results.csv` and
/// `summary.json`. Returns when every row has ended or been left unrun.
pub async fn execute(
    plan: Arc<Plan>,
    client: Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Report, RunError> {
    let started = tokio::time::Instant::now();
    let out_dir = settings.out_dir.clone();
    let images_dir = out_dir.join(output::IMAGES_DIR);
    std::fs::create_dir_all(&images_dir).map_err(|source| RunError::Output {
        path: images_dir.clone(),
        source,
    })?;
    let _lock = lock(&out_dir)?;

    let replay = journal::replay(&out_dir)?;
    let journal = Journal::open(&out_dir)?;
    journal.append(&Entry::Run {
        at_ms: journal::now_ms(),
        manifest: plan.manifest.display().to_string(),
        rows: plan.rows.len() as u64,
        version: env!("CARGO_PKG_VERSION").into(),
    })?;
    let stems = Stems::from_journal(&replay);

    // Decide each row's start from what the journal knows.
    let mut resumed = Vec::new();
    let mut fresh = Vec::new();
    let mut already = 0u64;
    let mut committed = Usd::default();
    for (i, row) in plan.rows.iter().enumerate() {
        let key = row.key.to_string();
        let price = output::row_price(&plan, row);
        let start = start_for(
            &out_dir,
            &journal,
            &settings,
            replay.records.get(&key),
            &key,
            price,
        )?;
        if let Some(rec) = replay.records.get(&key) {
            committed = committed + spent(rec, price, &start);
        }
        match start {
            Start::End => already += 1,
            Start::Submit => fresh.push((i, start)),
            _ => {
                committed = committed + price;
                resumed.push((i, start));
            }
        }
    }

    let (stop_tx, _) = watch::channel(None);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let counts = Counts {
        total: plan.rows.len() as u64,
        already,
        ..Counts::default()
    };
    let collector = tokio::spawn(progress::collect(settings.progress, counts, events_rx));
    let ctx = Arc::new(Ctx {
        plan: plan.clone(),
        client,
        journal,
        limiter: RateLimiter::new(settings.rate_per_sec),
        budget: Mutex::new(Budget {
            limit: settings.max_cost,
            committed,
        }),
        stop: stop_tx,
        events: events_tx,
        stems,
        images_dir,
        settings,
    });
    let watcher = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            shutdown.await;
            ctx.stop(Stop::Interrupted);
        })
    };

    // Accepted rows first (they cost nothing more), then new ones in plan order.
    let permits = Arc::new(Semaphore::new(ctx.settings.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, start) in resumed.into_iter().chain(fresh) {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if matches!(start, Start::Submit) && ctx.stopped() {
            continue; // left unrun; the results say why
        }
        tasks.spawn(row::drive(ctx.clone(), index, start, permit));
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    watcher.abort();
    let stop = ctx.stop.borrow().clone();
    drop(ctx);
    let counts = collector.await.unwrap_or_default();

    let replay = journal::replay(&out_dir)?;
    let stop_pair = stop.as_ref().map(|s| (s.code(), s.describe()));
    let this_run = (counts.completed + counts.failed, counts.images);
    let summary = output::write(
        &plan,
        &replay,
        &out_dir,
        stop_pair,
        started.elapsed(),
        this_run,
    )
    .map_err(|source| RunError::Output {
        path: out_dir.clone(),
        source,
    })?;
    Ok(Report { summary, stop })
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

/// The spend a journal record already commits us to (besides in-flight rows).
fn spent(rec: &journal::Record, price: Usd, start: &Start) -> Usd {
    match (&rec.state, start) {
        (State::Done { cost_micros, .. }, Start::End) => Usd::from_micros(*cost_micros),
        (
            State::Failed {
                charged: Charged::Possibly,
                cost_micros,
                ..
            },
            _,
        ) => Usd::from_micros(*cost_micros),
        (State::Uncertain, _) => price,
        _ => Usd::default(),
    }
}

/// Failures whose request is still worth polling under `--retry-failed`.
const RESUMABLE: &[&str] = &["POLL_TIMEOUT", "DOWNLOAD_FAILED", "FILES_MISSING"];

fn start_for(
    out_dir: &Path,
    journal: &Journal,
    settings: &Settings,
    rec: Option<&journal::Record>,
    key: &str,
    price: Usd,
) -> Result<Start, RunError> {
    let Some(rec) = rec else {
        return Ok(Start::Submit);
    };
    let resume = |rec: &journal::Record| match (&rec.ticket, rec.images.is_empty()) {
        (_, false) => Some(Start::Download {
            images: rec.images.clone(),
            ticket: rec.ticket.clone(),
        }),
        (Some(t), true) => Some(Start::Poll {
            ticket: t.clone(),
            since_ms: rec.submitted_at_ms.unwrap_or_else(journal::now_ms),
        }),
        (None, true) => None,
    };
    let fail = |code: &str, message: &str| -> Result<Start, RunError> {
        journal.append(&Entry::Failed {
            key: key.to_string(),
            at_ms: journal::now_ms(),
            code: code.into(),
            message: message.into(),
            charged: Charged::Possibly,
            cost_micros: price.micros(),
        })?;
        Ok(Start::End)
    };
    Ok(match &rec.state {
        State::Pending => Start::Submit,
        State::Uncertain if settings.retry_failed => Start::Submit,
        State::Uncertain => return fail("SUBMIT_UNCERTAIN", output::UNCERTAIN_MESSAGE),
        State::Submitted => match resume(rec) {
            Some(start) => start,
            None => return fail("RESULT_LOST", "accepted with images that were never saved; rerun with --retry-failed to pay for it again"),
        },
        State::Done { files, sha256, .. } => {
            if files_intact(out_dir, files, sha256) {
                Start::End
            } else {
                match resume(rec) {
                    Some(start) => start,
                    None => return fail("FILES_MISSING", "its files are missing or damaged and the request cannot be polled again"),
                }
            }
        }
        State::Failed { code, .. } if settings.retry_failed => {
            match resume(rec).filter(|_| RESUMABLE.contains(&code.as_str())) {
                Some(start) => start,
                None => Start::Submit,
            }
        }
        State::Failed { .. } => Start::End,
    })
}

/// Every file of a completed row is there, with the bytes we saved.
fn files_intact(out_dir: &Path, files: &[String], sha256: &[String]) -> bool {
    files.len() == sha256.len()
        && files.iter().zip(sha256).all(|(f, want)| {
            std::fs::read(out_dir.join(f))
                .map(|bytes| crate::api::hex(&Sha256::digest(&bytes)) == *want)
                .unwrap_or(false)
        })
}
