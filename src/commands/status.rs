//! `batchgen status DIR`: a run's counts from its journal, without the manifest.

use std::collections::HashSet;
use std::path::Path;

use super::bucket::Place;
use super::print_stdout;
use crate::cli::StatusArgs;
use crate::exit::{self, Error};
use crate::{disk, journal, output, plan, run};

/// `batchgen status DIR`: what the journal knows, counted as `run` counts
/// it (the rows of the newest run's plan), without the manifest. A bucket
/// URL is read from a copy of its journal and `.plan-keys` (no images).
pub async fn command(args: &StatusArgs) -> Result<u8, Error> {
    match super::bucket::place(&args.dir, "status DIR")? {
        Place::Local(dir) => summarise(&dir, &dir.display().to_string(), args.json),
        Place::Bucket(store) => match super::on_bucket::status_copy(&store).await? {
            Some((copy, dir)) => {
                summarise(&dir, &store.to_string(), args.json).map_err(|e| copy.error(e))
            }
            None => Err(Error::NoRun(store.to_string())),
        },
    }
}

/// The counts of the run folder `dir`, shown as `shown`.
fn summarise(dir: &Path, shown: &str, json: bool) -> Result<u8, Error> {
    if !dir.join(journal::FILE_NAME).is_file() {
        return Err(Error::NoRun(shown.to_string()));
    }
    let replay = journal::read(dir).map_err(run::RunError::from)?;
    let keys = output::read_plan_keys(dir).map_err(|e| {
        Error::Io(format!(
            "{}: {}",
            dir.join(output::PLAN_KEYS).display(),
            disk::plain(&e)
        ))
    })?;
    let mut totals = output::ResultTotals::default();
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
    let by = |s: output::RowStatus| totals.count(s);
    if json {
        let json = serde_json::json!({
            "manifest": replay.last_run_manifest,
            "gateway": replay.gateway,
            "base_url": replay.base_url,
            "rows": totals.rows,
            "rows_by_status": totals.rows_by_status,
            "completed": by(output::RowStatus::Completed),
            "failed": by(output::RowStatus::Failed),
            "not_run": by(output::RowStatus::NotRun),
            "accepted": by(output::RowStatus::Accepted),
            // The names of older versions, kept for scripts.
            "in_flight": by(output::RowStatus::Accepted),
            "not_started": by(output::RowStatus::NotRun),
            "uncertain": totals.uncertain,
            "images": totals.images,
            "cost_usd": totals.cost_usd,
            "possibly_charged_usd": totals.possibly_charged_usd,
            "failures_by_code": totals.failures_by_code,
            "accepted_by_code": totals.accepted_by_code,
            "cached": totals.cached,
            "not_in_manifest": earlier,
        });
        print_stdout(&format!("{json:#}\n"));
    } else {
        let mut text = format!(
            "{}: from {} (gateway: {})\n  {}\n  {} images · {} spent",
            shown,
            replay.last_run_manifest.as_deref().unwrap_or("?"),
            replay
                .base_url
                .as_deref()
                .or(replay.gateway.as_deref())
                .unwrap_or("?"),
            totals.rows_line(),
            totals.images,
            totals.cost_usd,
        );
        if totals.possibly_charged_usd > plan::Usd::default() {
            text.push_str(&format!(
                " · {} possibly charged for rows not completed",
                totals.possibly_charged_usd
            ));
        }
        text.push('\n');
        text.push_str(&totals.detail_lines());
        if let Some(line) = earlier.line() {
            text.push_str(&line);
        }
        print_stdout(&text);
    }
    Ok(exit::OK)
}
