//! How a run behaves: [`Settings`], built from the command line (or a
//! test) and validated before any work starts.
//!
//! Why this exists apart: every stage of a run reads it, and it is the one
//! type callers outside `run` build.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::Backoff;
use crate::gateway::Gateway;
use crate::plan::Usd;
use crate::progress;

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
    /// `--metrics-file`: written while the run works (the caller writes the last one).
    pub metrics: Option<progress::Metrics>,
    /// `--cache DIR|URL` (or the manifest's `cache:`): the store of
    /// fulfilled requests, a folder or a bucket prefix.
    pub cache: Option<crate::store::Location>,
    /// What messages and summary.json call the output, when not `out_dir`:
    /// a bucket URL (`out_dir` is then the run's local working folder).
    pub place: Option<String>,
    /// Tests only, no flag: the run keeps time on tokio's paused clock
    /// (see [`Journal::hold_paused_clock`](crate::journal::Journal::hold_paused_clock)).
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
            metrics: None,
            cache: None,
            place: None,
            paused_clock: false,
            thumbnails: false,
            #[cfg(test)]
            panic_on: None,
        }
    }
}
