//! What a run tells the tools people watch it with, besides its own
//! output: `--progress json`'s start and end events, `--metrics-file`'s
//! last write and `--notify`. The progress events and the metrics written
//! while the run works come from the collector ([`crate::progress`]); this
//! is the run command's side: before the run, and once its exit code is
//! known.
//!
//! Why this exists apart from `run.rs`: every way a run ends (rows done, a
//! stop, an error before anything was sent) goes through [`Watch::finish`],
//! and none of it may change the exit code. Cancellation: `finish` is
//! awaited whole; its one request is bounded ([`super::notify`]).

use serde::Serialize;

use super::notify::Target;
use crate::cli::{ProgressArg, RunArgs};
use crate::exit::Error;
use crate::progress::{self, json, metrics, Metrics};
use crate::run::Report;
use crate::vocab::rfc3339;

/// How a run command ended: its exit code, and the run's report if it got
/// as far as one.
pub struct Ended {
    pub code: u8,
    pub report: Option<Report>,
}

/// `--progress json`, `--metrics-file`, `--notify`, checked.
#[derive(Debug)]
pub struct Watch {
    pub json: bool,
    pub metrics: Option<Metrics>,
    notify: Option<Target>,
    started_ms: u64,
}

/// What `--notify` sends and the `end` event carries when a run ended
/// without a summary (refused before it began, or unable to write it).
#[derive(Serialize)]
struct Failed<'a> {
    manifest: String,
    exit_code: u8,
    error: String,
    version: &'a str,
    started_at: String,
    finished_at: String,
}

impl Watch {
    /// Checks the flags before anything is sent. `--notify` is checked
    /// against the API key (a URL holding it is refused); a key that
    /// cannot be loaded fails the run anyway, and then nothing is notified.
    /// A refused `--notify` is the run's error (exit 2); the watch is made
    /// all the same, without it, so that the end is still told.
    pub fn new(args: &RunArgs) -> (Watch, Result<(), Error>) {
        let started_ms = crate::journal::now_ms();
        // The key is checked even under `--simulate` (which sends it
        // nowhere): a URL holding the user's key must never be sent to.
        let key = crate::api::ApiKey::load(args.api_key_file.as_deref());
        let checked = match (&args.notify, key) {
            (None, _) => Ok(None),
            (Some(url), Ok(key)) => Target::check(url, Some(&key)).map(Some),
            (Some(url), Err(_)) if args.simulate => Target::check(url, None).map(Some),
            (Some(_), Err(_)) => Ok(None),
        };
        let (notify, checked) = match checked {
            Ok(notify) => (notify, Ok(())),
            Err(e) => (None, Err(e)),
        };
        let watch = Watch {
            json: args.progress == ProgressArg::Json,
            metrics: args
                .metrics_file
                .clone()
                .map(|path| Metrics::new(path, started_ms)),
            notify,
            started_ms,
        };
        (watch, checked)
    }

    /// The progress display the run gets.
    pub fn mode(&self, quiet: bool) -> progress::Mode {
        match (self.json, quiet) {
            (true, _) => progress::Mode::Json,
            (false, true) => progress::Mode::Quiet,
            (false, false) => progress::Mode::Auto,
        }
    }

    /// The end, whatever it was: the metrics file's last write, the `end`
    /// event, then the notification. A failure of any is said on stderr;
    /// none changes the exit code.
    pub async fn finish(&self, manifest: &std::path::Path, ended: &Result<Ended, Error>) {
        let code = match ended {
            Ok(e) => e.code,
            Err(e) => e.code(),
        };
        let report = ended.as_ref().ok().and_then(|e| e.report.as_ref());
        let failed = match ended {
            Err(e) => Some(Failed {
                manifest: manifest.display().to_string(),
                exit_code: code,
                error: e.to_string(),
                version: env!("CARGO_PKG_VERSION"),
                started_at: rfc3339(self.started_ms),
                finished_at: rfc3339(crate::journal::now_ms()),
            }),
            Ok(_) => None,
        };
        if let Some(m) = &self.metrics {
            let ending = metrics::Ending {
                exit_code: code,
                finished_ms: crate::journal::now_ms(),
                totals: report.map(|r| r.summary.totals.clone()),
            };
            let counts = report.map(|r| r.counts.clone()).unwrap_or_default();
            if let Err(why) = m.write_blocking(counts, Some(ending)).await {
                crate::say!("warning: {why}");
            }
        }
        if self.json {
            let error = failed.as_ref().map(|f| f.error.as_str());
            json::emit(
                "end",
                &json::End {
                    exit_code: code,
                    summary: report.map(|r| &r.summary),
                    error,
                },
            );
        }
        let Some(target) = &self.notify else {
            return;
        };
        let body = match (report, &failed) {
            (Some(r), _) => serde_json::to_vec_pretty(&r.summary),
            (None, Some(f)) => serde_json::to_vec_pretty(f),
            (None, None) => return,
        }
        .expect("a summary serialises");
        if let Err(why) = target.send(body).await {
            crate::say!(
                "warning: --notify: the summary was not delivered to {}: {why}; the exit code is the run's",
                target.origin()
            );
        }
    }
}
