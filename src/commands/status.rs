//! `batchgen status DIR`: a run's counts from its journal, without the
//! manifest; who is running in it now, if a run is; a merged folder's
//! totals; and, with `--check`, an exit code a scheduler can gate on.
//!
//! Cancellation: a folder is read in one go; on a bucket, the copy's
//! downloads are plain futures (see [`super::bucket`]), dropped on Ctrl-C.

use std::collections::HashSet;
use std::path::Path;

use super::bucket::Place;
use super::print_stdout;
use crate::cli::StatusArgs;
use crate::exit::{self, Error};
use crate::output::{ResultTotals, RowStatus, SUMMARY_JSON};
use crate::run::Live;
use crate::{disk, journal, output, plan, run};
use serde_json::{json, Value};

/// The largest merged summary.json read.
const MAX_SUMMARY: u64 = 16 << 20;

/// `batchgen status DIR`: what the journal knows, counted as `run` counts
/// it (the rows of the newest run's plan), without the manifest. A bucket
/// URL is read from a copy of its journal and `.plan-keys` (no images).
/// Exit 0; with `--check`, 1 unless every row is completed and no run
/// holds the folder.
pub async fn command(args: &StatusArgs) -> Result<u8, Error> {
    let complete = match super::bucket::place(&args.dir, "status DIR")? {
        Place::Local(dir) => {
            let live = run::holder(&dir);
            summarise(&dir, &dir.display().to_string(), args.json, live)?
        }
        Place::Bucket(store) => {
            // The copy first: a machine with no temporary folder is told so
            // before any request.
            let (copy, dir) = super::on_bucket::status_copy(&store).await?;
            let live = super::on_bucket::live_lease(&store).await?;
            summarise(&dir, &store.to_string(), args.json, live).map_err(|e| copy.error(e))?
        }
    };
    Ok(if args.check && !complete {
        exit::ROWS_FAILED
    } else {
        exit::OK
    })
}

/// Prints the counts of the folder `dir`, shown as `shown`, with `live`
/// the run holding it now; returns whether it is complete (every row of
/// the newest plan completed, and no run going on).
fn summarise(dir: &Path, shown: &str, json: bool, live: Option<Live>) -> Result<bool, Error> {
    if !dir.join(journal::FILE_NAME).is_file() {
        if let Some(merged) = Merged::read(dir) {
            return Ok(merged.print(shown, json));
        }
        // A run that took the folder has not written its first line yet.
        if live.is_none() {
            return Err(Error::NoRun(shown.to_string()));
        }
    }
    let replay = journal::read(dir).map_err(run::RunError::from)?;
    let keys = output::read_plan_keys(dir).map_err(|e| {
        Error::Io(format!(
            "{}: {}",
            dir.join(output::PLAN_KEYS).display(),
            disk::plain(&e)
        ))
    })?;
    let mut totals = ResultTotals::default();
    let mut add = |rec: Option<&journal::Record>| {
        totals.add(&output::row_result(rec, plan::Usd::default(), None));
    };
    let earlier = match &keys {
        Some(keys) => {
            for key in keys {
                add(replay.records.get(key).map(|r| &**r));
            }
            let set: HashSet<plan::Key> = keys.iter().copied().collect();
            output::Earlier::of(&replay, |k| set.contains(&k))
        }
        // A folder from before plans recorded their keys: every row it knows.
        None => {
            let rows = replay.last_run_rows.unwrap_or(0);
            for rec in replay.records.values() {
                add(Some(rec));
            }
            for _ in (replay.records.len() as u64)..rows {
                add(None);
            }
            output::Earlier::default()
        }
    };
    let by = |s: RowStatus| totals.count(s);
    let complete = live.is_none() && by(RowStatus::Completed) == totals.rows;
    if json {
        let json = as_json(
            [
                ("manifest", json!(replay.last_run_manifest)),
                ("gateway", json!(replay.gateway)),
                ("base_url", json!(replay.base_url)),
            ],
            &totals,
            [
                ("not_in_manifest", json!(earlier)),
                ("running", json!(live.as_ref().map(Live::to_json))),
                (
                    "not_reached",
                    json!(live.as_ref().map_or(0, |_| by(RowStatus::NotRun))),
                ),
                ("complete", json!(complete)),
                ("merged", json!(false)),
            ],
        );
        print_stdout(&format!("{json:#}\n"));
    } else {
        let mut text = format!(
            "{}: from {} (gateway: {})\n",
            shown,
            replay.last_run_manifest.as_deref().unwrap_or("?"),
            replay
                .base_url
                .as_deref()
                .or(replay.gateway.as_deref())
                .unwrap_or("?"),
        );
        text.push_str(&counts(&totals, live.as_ref()));
        if let Some(line) = earlier.line() {
            text.push_str(&line);
        }
        print_stdout(&text);
    }
    Ok(complete)
}

/// `status --json`: `head`, the counts of `totals`, then `tail`.
fn as_json<const H: usize, const T: usize>(
    head: [(&str, Value); H],
    totals: &ResultTotals,
    tail: [(&str, Value); T],
) -> Value {
    let by = |s: RowStatus| totals.count(s);
    let counts = [
        ("rows", json!(totals.rows)),
        ("rows_by_status", json!(totals.rows_by_status)),
        ("completed", json!(by(RowStatus::Completed))),
        ("failed", json!(by(RowStatus::Failed))),
        ("not_run", json!(by(RowStatus::NotRun))),
        ("accepted", json!(by(RowStatus::Accepted))),
        // The names of older versions, kept for scripts.
        ("in_flight", json!(by(RowStatus::Accepted))),
        ("not_started", json!(by(RowStatus::NotRun))),
        ("uncertain", json!(totals.uncertain)),
        ("images", json!(totals.images)),
        ("cost_usd", json!(totals.cost_usd)),
        ("possibly_charged_usd", json!(totals.possibly_charged_usd)),
        ("failures_by_code", json!(totals.failures_by_code)),
        ("accepted_by_code", json!(totals.accepted_by_code)),
        ("cached", json!(totals.cached)),
    ];
    let fields = head.into_iter().chain(counts).chain(tail);
    Value::Object(fields.map(|(k, v)| (k.to_string(), v)).collect())
}

/// The lines under the heading: who runs now, rows, images and money, why
/// rows did not complete.
fn counts(totals: &ResultTotals, live: Option<&Live>) -> String {
    let by = |s: RowStatus| totals.count(s);
    let mut text = String::new();
    let rows = match live {
        // While a run goes on, rows not run are rows it has not reached,
        // and accepted rows are in its hands.
        Some(live) => {
            text.push_str(&format!("  running now: {}\n", live.describe()));
            let mut line = format!(
                "{} rows so far: {} completed, {} failed, {} in flight, {} not reached yet",
                totals.rows,
                by(RowStatus::Completed),
                by(RowStatus::Failed),
                by(RowStatus::Accepted),
                by(RowStatus::NotRun),
            );
            if totals.uncertain > 0 {
                line.push_str(&format!(" ({} uncertain)", totals.uncertain));
            }
            line
        }
        None => totals.rows_line(),
    };
    text.push_str(&format!(
        "  {rows}\n  {} images · {} spent",
        totals.images, totals.cost_usd
    ));
    if totals.possibly_charged_usd > plan::Usd::default() {
        text.push_str(&format!(
            " · {} possibly charged for rows not completed",
            totals.possibly_charged_usd
        ));
    }
    text.push('\n');
    text.push_str(&totals.detail_lines());
    text
}

/// A merged folder (`batchgen merge`'s output): no journal, and a
/// summary.json that lists its shards. Its totals are the merge's.
struct Merged {
    summary: serde_json::Value,
    totals: ResultTotals,
    missing: Vec<u64>,
}

impl Merged {
    /// The merged folder at `dir`, if it is one.
    fn read(dir: &Path) -> Option<Merged> {
        let bytes = disk::read_regular(&dir.join(SUMMARY_JSON), MAX_SUMMARY).ok()?;
        let summary: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        summary.get("shards")?.as_array()?;
        let number = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let usd = |field: &str| {
            summary[field]
                .as_f64()
                .and_then(plan::Usd::from_dollars)
                .unwrap_or_default()
        };
        let codes = |field: &str| {
            summary[field]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(code, n)| (code.clone(), number(n)))
                .collect()
        };
        let mut totals = ResultTotals {
            rows: number(&summary["rows"]),
            images: number(&summary["images"]),
            cost_usd: usd("cost_usd"),
            possibly_charged_usd: usd("possibly_charged_usd"),
            uncertain: number(&summary["uncertain"]),
            failures_by_code: codes("failures_by_code"),
            accepted_by_code: codes("accepted_by_code"),
            cached: number(&summary["cached"]),
            ..ResultTotals::default()
        };
        for status in RowStatus::ALL {
            let n = number(&summary["rows_by_status"][status.as_str()]);
            totals.rows_by_status.insert(status.as_str(), n);
        }
        let missing = summary["shards_missing"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_u64)
            .collect();
        Some(Merged {
            summary,
            totals,
            missing,
        })
    }

    /// Prints it; returns whether it is complete (every shard merged, every
    /// row completed). No run holds a merged folder: its shards' runs each
    /// hold their own.
    fn print(&self, shown: &str, json: bool) -> bool {
        let t = &self.totals;
        let by = |s: RowStatus| t.count(s);
        let complete = self.missing.is_empty() && by(RowStatus::Completed) == t.rows;
        let shards = &self.summary["shards"];
        if json {
            let json = as_json(
                [
                    ("manifest", self.summary["manifest"].clone()),
                    ("gateway", self.summary["gateway"].clone()),
                    ("base_url", json!(null)),
                ],
                t,
                [
                    ("running", json!(null)),
                    ("not_reached", json!(0)),
                    ("complete", json!(complete)),
                    ("merged", json!(true)),
                    ("shards", shards.clone()),
                    ("shards_missing", json!(self.missing)),
                ],
            );
            print_stdout(&format!("{json:#}\n"));
            return complete;
        }
        let n = shards.as_array().map_or(0, Vec::len);
        let mut text = format!(
            "{shown}: merged from {n} shard(s) of {} (gateway: {}), as the merge counted them\n",
            self.summary["manifest"].as_str().unwrap_or("?"),
            self.summary["gateway"].as_str().unwrap_or("?"),
        );
        text.push_str(&counts(t, None));
        if !self.missing.is_empty() {
            let missing: Vec<String> = self.missing.iter().map(u64::to_string).collect();
            text.push_str(&format!(
                "  missing: shard(s) {} were not merged; their rows are not counted\n",
                missing.join(", ")
            ));
        }
        print_stdout(&text);
        complete
    }
}
