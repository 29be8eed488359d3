//! Accounting: rows by status, images and money added up one way for `run`,
//! `status`, `merge` and summary.json, and the summary a run prints and
//! writes at its end.
//!
//! Why this exists apart: what a run spent and what it may have been charged
//! is what users pay by; every total is added from [`RowResult`]s, never
//! counted a second way.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::{row_result, write_results, RowResult, RowStatus, RESULTS_CSV, SUMMARY_JSON};
use crate::disk::write_atomic;
use crate::journal::Replay;
use crate::plan::Plan;
use crate::vocab::{exit_code, rfc3339, Code, Key, Usd};

/// Rows by status, images and money: what `run`, `status` and summary.json
/// all report, added up the same way.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResultTotals {
    pub rows: u64,
    pub rows_by_status: BTreeMap<&'static str, u64>,
    pub images: u64,
    pub cost_usd: Usd,
    /// Money that may have been charged and is not in `cost_usd`: uncertain
    /// submits, `FAILED` requests, accepted requests not yet collected, and
    /// earlier attempts of rows retried since.
    pub possibly_charged_usd: Usd,
    /// Failed rows whose submit may have been accepted (`SUBMIT_UNCERTAIN`).
    pub uncertain: u64,
    pub failures_by_code: BTreeMap<String, u64>,
    /// Why accepted rows were not collected (`POLL_TIMEOUT`, `DISK`, …).
    pub accepted_by_code: BTreeMap<String, u64>,
    /// Completed rows whose images came from the cache (`--cache`), at no cost.
    pub cached: u64,
}

impl Default for ResultTotals {
    fn default() -> ResultTotals {
        ResultTotals {
            rows: 0,
            rows_by_status: RowStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
            images: 0,
            cost_usd: Usd::default(),
            possibly_charged_usd: Usd::default(),
            uncertain: 0,
            failures_by_code: BTreeMap::new(),
            accepted_by_code: BTreeMap::new(),
            cached: 0,
        }
    }
}

impl ResultTotals {
    pub fn add(&mut self, r: &RowResult) {
        let images = r.files.len() as u64;
        self.add_parts(r.status, &r.error_code, r.cost, r.possibly_charged, images);
        self.cached += u64::from(r.cached);
    }

    /// Adds one row, from what results.csv says of it.
    pub fn add_parts(
        &mut self,
        status: RowStatus,
        error_code: &str,
        cost: Usd,
        possibly_charged: Usd,
        images: u64,
    ) {
        self.rows += 1;
        *self.rows_by_status.entry(status.as_str()).or_default() += 1;
        match status {
            RowStatus::Completed => {
                self.images += images;
                self.cost_usd = self.cost_usd + cost;
            }
            RowStatus::Failed => {
                *self
                    .failures_by_code
                    .entry(error_code.to_string())
                    .or_default() += 1;
            }
            RowStatus::Accepted => {
                *self
                    .accepted_by_code
                    .entry(error_code.to_string())
                    .or_default() += 1;
            }
            RowStatus::NotRun => {}
        }
        self.uncertain +=
            u64::from(status == RowStatus::Failed && error_code == Code::SubmitUncertain.as_str());
        self.possibly_charged_usd = self.possibly_charged_usd + possibly_charged;
    }

    pub fn count(&self, status: RowStatus) -> u64 {
        self.rows_by_status
            .get(status.as_str())
            .copied()
            .unwrap_or(0)
    }

    /// `12 rows: 10 completed, 1 failed, 0 not run, 1 accepted to collect`.
    pub fn rows_line(&self) -> String {
        let mut out = format!(
            "{} rows: {} completed, {} failed, {} not run",
            self.rows,
            self.count(RowStatus::Completed),
            self.count(RowStatus::Failed),
            self.count(RowStatus::NotRun),
        );
        if self.count(RowStatus::Accepted) > 0 {
            out.push_str(&format!(
                ", {} accepted to collect (rerun to collect them)",
                self.count(RowStatus::Accepted)
            ));
        }
        if self.uncertain > 0 {
            out.push_str(&format!(" ({} uncertain)", self.uncertain));
        }
        out
    }

    /// The money lines: spent, possibly charged, and the reasons rows did
    /// not complete.
    pub fn detail_lines(&self) -> String {
        let mut out = String::new();
        if self.cached > 0 {
            out.push_str(&format!(
                "  from the cache: {} rows, at no cost\n",
                self.cached
            ));
        }
        for (code, n) in &self.failures_by_code {
            out.push_str(&format!("  failed: {n} × {code}\n"));
        }
        for (code, n) in &self.accepted_by_code {
            out.push_str(&format!("  accepted, to collect: {n} × {code}\n"));
        }
        out
    }
}

/// Rows the folder's journal holds that the current plan does not: paid for
/// earlier, by an older version of the manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Earlier {
    pub rows: u64,
    pub completed: u64,
    pub images: u64,
    pub cost_usd: Usd,
    pub possibly_charged_usd: Usd,
}

impl Earlier {
    /// The records of `replay` whose keys `in_plan` does not hold.
    pub fn of(replay: &Replay, in_plan: impl Fn(Key) -> bool) -> Earlier {
        let mut t = ResultTotals::default();
        for (key, rec) in &replay.records {
            if !in_plan(*key) {
                t.add(&row_result(Some(rec), Usd::default(), None));
            }
        }
        Earlier {
            rows: t.rows,
            completed: t.count(RowStatus::Completed),
            images: t.images,
            cost_usd: t.cost_usd,
            possibly_charged_usd: t.possibly_charged_usd,
        }
    }

    pub fn line(&self) -> Option<String> {
        (self.rows > 0).then(|| {
            format!(
                "  not in this manifest: {} rows paid for by earlier runs in this folder ({} completed, {} images, {} spent, {} possibly charged)\n",
                self.rows, self.completed, self.images, self.cost_usd, self.possibly_charged_usd
            )
        })
    }
}

/// Run totals, as printed and as `summary.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    pub manifest: String,
    pub out_dir: String,
    /// The gateway's origin, or `simulated`.
    pub gateway: String,
    #[serde(flatten)]
    pub totals: ResultTotals,
    pub cost_usd_by_kind: BTreeMap<&'static str, Usd>,
    /// Rows of earlier manifests in this folder, and what they cost.
    pub not_in_manifest: Earlier,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
    /// The exit code the run ends with (see README's exit codes).
    pub exit_code: u8,
    /// The batchgen version that ran.
    pub version: String,
    /// When this run started and wrote this file: RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: String,
    /// The wall time of the last run only (this one), in seconds.
    pub wall_time_s: f64,
    /// The wall time of every run in this folder, this one included (an
    /// earlier run counts from its start to its last journal line).
    pub wall_time_total_s: f64,
    /// Rows and images finished by this run (a resumed run skips earlier work).
    pub rows_this_run: u64,
    pub images_this_run: u64,
    pub rows_per_minute: f64,
    pub images_per_minute: f64,
    /// Submits this run that a limiter refused (429, or a 503 the gateway did not phrase).
    pub rate_limited: u64,
    /// Status calls this run made.
    pub status_calls: u64,
    /// Set when the run's own output (stderr, stdout) could not be written,
    /// say to a closed pipe: later lines were dropped, the run went on.
    pub logging_stopped: Option<String>,
}

impl RunSummary {
    pub fn to_text(&self) -> String {
        let t = &self.totals;
        let mut out = format!(
            "{} · {} images · {} spent (text_to_image {}, image_to_image {})",
            t.rows_line(),
            t.images,
            t.cost_usd,
            self.cost_usd_by_kind
                .get("text_to_image")
                .copied()
                .unwrap_or_default(),
            self.cost_usd_by_kind
                .get("image_to_image")
                .copied()
                .unwrap_or_default(),
        );
        if t.possibly_charged_usd > Usd::default() {
            out.push_str(&format!(
                " · {} possibly charged for rows not completed",
                t.possibly_charged_usd
            ));
        }
        out.push_str(&format!(
            " · this run: {} rows, {} images in {:.1} s ({:.1} images/min)\n",
            self.rows_this_run, self.images_this_run, self.wall_time_s, self.images_per_minute
        ));
        out.push_str(&t.detail_lines());
        if let Some(line) = self.not_in_manifest.line() {
            out.push_str(&line);
        }
        if let Some(why) = &self.stopped {
            out.push_str(&format!("  stopped early: {why}\n"));
        }
        if let Some(why) = &self.logging_stopped {
            out.push_str(&format!("  log: {why}\n"));
        }
        out.push_str(&format!(
            "  results: {}/{RESULTS_CSV}, {}/{SUMMARY_JSON}\n",
            self.out_dir, self.out_dir
        ));
        out
    }
}

/// What a run's end writes besides results.csv.
pub struct RunEnd {
    pub gateway: String,
    /// The stop's code and description, if the run stopped early.
    pub stop: Option<(String, String)>,
    pub wall: Duration,
    /// When this run started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// The wall time of the folder's earlier runs (from the journal).
    pub wall_before: Duration,
    /// The exit code of the stop, if the run stopped early
    /// ([`crate::vocab::exit_code::of_run`] decides the rest).
    pub stopped_with: Option<u8>,
    /// Rows and images finished by this run.
    pub this_run: (u64, u64),
    /// Submits this run that a limiter refused (429, or a 503 the gateway did not phrase).
    pub rate_limited: u64,
    /// Status calls this run made.
    pub status_calls: u64,
    /// Why the run's output stopped, if a write to stderr or stdout failed.
    pub logging_stopped: Option<String>,
    /// Where the outputs are, as the user named it, when not the folder
    /// written (a bucket URL, for a run on a bucket's working folder).
    pub place: Option<String>,
}

/// Writes `results.csv` and `summary.json` for `plan` from the journal.
pub fn write(
    plan: &Plan,
    replay: &Replay,
    out_dir: &Path,
    end: RunEnd,
) -> std::io::Result<RunSummary> {
    let stop = end
        .stop
        .as_ref()
        .map(|(code, why)| (code.as_str(), why.as_str()));
    let (totals, cost_usd_by_kind) = write_results(plan, replay, out_dir, stop)?;
    let keys: HashSet<Key> = plan.rows.iter().map(|r| r.key).collect();
    let completed = totals.count(RowStatus::Completed);
    let exit_code = exit_code::of_run(end.stopped_with, totals.rows, completed);
    let mut s = RunSummary {
        manifest: plan.manifest.display().to_string(),
        out_dir: end
            .place
            .clone()
            .unwrap_or_else(|| out_dir.display().to_string()),
        gateway: end.gateway,
        totals,
        cost_usd_by_kind,
        not_in_manifest: Earlier::of(replay, |k| keys.contains(&k)),
        stopped: end.stop.as_ref().map(|(_, why)| why.clone()),
        exit_code,
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: rfc3339(end.started_ms),
        finished_at: rfc3339(crate::journal::now_ms()),
        wall_time_s: end.wall.as_secs_f64(),
        wall_time_total_s: (end.wall_before + end.wall).as_secs_f64(),
        rows_this_run: end.this_run.0,
        images_this_run: end.this_run.1,
        rows_per_minute: 0.0,
        images_per_minute: 0.0,
        rate_limited: end.rate_limited,
        status_calls: end.status_calls,
        logging_stopped: end.logging_stopped,
    };
    let minutes = (s.wall_time_s / 60.0).max(1e-9);
    s.rows_per_minute = s.rows_this_run as f64 / minutes;
    s.images_per_minute = s.images_this_run as f64 / minutes;
    let json = serde_json::to_vec_pretty(&s).expect("a summary serialises");
    write_atomic(&out_dir.join(SUMMARY_JSON), |w| {
        w.write_all(&json)?;
        w.write_all(b"\n")
    })?;
    Ok(s)
}
