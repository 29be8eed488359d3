//! `results.csv`: its columns, how a run writes it from the journal, and
//! how `report` and `export` read it back (`merge` by its [`COLUMNS`]).
//!
//! Why this exists apart: the file is a contract with users' scripts; its
//! columns only ever grow, and it is written whole (atomically) from the
//! journal a few thousand rows at a time.

use std::collections::BTreeMap;
use std::path::Path;

use super::{row_result, Records, ResultTotals, RowStatus, RESULTS_CSV};
use crate::disk::write_atomic;
use crate::plan::Plan;
use crate::vocab::{rfc3339, Kind, Usd};

/// `results.csv` columns, in order. Add, never rename.
pub const COLUMNS: &[&str] = &[
    "id",
    "key",
    "kind",
    "prompt",
    "seed",
    "image_urls",
    "image_size",
    "num_inference_steps",
    "guidance_scale",
    "num_images",
    "enable_safety_checker",
    "output_format",
    "sync_mode",
    "enable_prompt_expansion",
    "status",
    "request_id",
    "attempts",
    "submitted_at",
    "finished_at",
    "latency_s",
    "files",
    "sha256",
    "cost_usd",
    "possibly_charged_usd",
    "error_code",
    "error_message",
    "row",
    "cached",
];

/// Rows whose records one look at the journal reads.
const RESULTS_CHUNK: usize = 4096;

/// Writes `results.csv` for `plan` from the journal; returns the totals and
/// the cost by kind. `stop`: the code and description of what stopped the
/// run early, which rows it never reached carry.
pub fn write_results(
    plan: &Plan,
    records: &dyn Records,
    out_dir: &Path,
    stop: Option<(&str, &str)>,
) -> std::io::Result<(ResultTotals, BTreeMap<&'static str, Usd>)> {
    let mut totals = ResultTotals::default();
    let mut by_kind: BTreeMap<&'static str, Usd> = Kind::ALL
        .iter()
        .map(|k| (k.as_str(), Usd::default()))
        .collect();
    write_atomic(&out_dir.join(RESULTS_CSV), |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(COLUMNS)?;
        let mut keys = Vec::with_capacity(RESULTS_CHUNK);
        let mut results = Vec::with_capacity(RESULTS_CHUNK);
        let mut reqs = Vec::with_capacity(RESULTS_CHUNK);
        for chunk in plan.rows.chunks(RESULTS_CHUNK) {
            keys.clear();
            keys.extend(chunk.iter().map(|row| row.key));
            reqs.clear();
            reqs.extend(chunk.iter().map(|row| plan.request(row)));
            results.clear();
            let mut prices = reqs.iter().map(|req| plan.request_price(req));
            records.each(&keys, &mut |rec| {
                let price = prices.next().expect("one record per key");
                results.push(row_result(rec, price, stop));
            });
            for ((row, req), r) in chunk.iter().zip(reqs.drain(..)).zip(results.drain(..)) {
                let key = row.key.to_string();
                let kind = req.kind();
                totals.add(&r);
                if r.status == RowStatus::Completed {
                    let k = by_kind.entry(kind.as_str()).or_default();
                    *k = *k + r.cost;
                }
                let opt = |v: Option<String>| v.unwrap_or_default();
                let latency = match (r.submitted_at_ms, r.finished_at_ms) {
                    (Some(a), Some(b)) if b >= a => format!("{:.3}", (b - a) as f64 / 1000.0),
                    _ => String::new(),
                };
                let money = |u: Usd| {
                    if u == Usd::default() {
                        String::new()
                    } else {
                        format!("{:.6}", u.dollars())
                    }
                };
                csv.write_record([
                    plan.row_id(row),
                    key,
                    kind.as_str().to_string(),
                    req.prompt.to_string(),
                    opt(req.seed.map(|v| v.to_string())),
                    opt(req
                        .image_urls
                        .as_ref()
                        .map(|u| u.iter().map(|i| i.written()).collect::<Vec<_>>().join("|"))),
                    opt(req.image_size.map(|v| v.to_string())),
                    opt(req.num_inference_steps.map(|v| v.to_string())),
                    opt(req.guidance_scale.map(|v| v.to_string())),
                    opt(req.num_images.map(|v| v.to_string())),
                    opt(req.enable_safety_checker.map(|v| v.to_string())),
                    opt(req.output_format.map(|v| v.as_str().to_string())),
                    opt(req.sync_mode.map(|v| v.to_string())),
                    opt(req.enable_prompt_expansion.map(|v| v.to_string())),
                    r.status.as_str().to_string(),
                    opt(r.request_id),
                    r.attempts.to_string(),
                    opt(r.submitted_at_ms.map(rfc3339)),
                    opt(r.finished_at_ms.map(rfc3339)),
                    latency,
                    r.files.join(";"),
                    r.sha256.join(";"),
                    if r.status == RowStatus::Completed {
                        format!("{:.6}", r.cost.dollars())
                    } else {
                        String::new()
                    },
                    money(r.possibly_charged),
                    r.error_code,
                    r.error_message,
                    row.index.to_string(),
                    r.cached.to_string(),
                ])?;
            }
        }
        csv.flush()
    })?;
    Ok((totals, by_kind))
}

/// One line of a folder's `results.csv`, as `report` and `export` read it
/// back. Every field is optional in the file (an older version wrote fewer
/// columns); absent ones read as empty.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct ResultLine {
    pub id: String,
    pub key: String,
    pub kind: String,
    pub prompt: String,
    pub seed: String,
    pub image_urls: String,
    pub image_size: String,
    pub num_inference_steps: String,
    pub guidance_scale: String,
    pub num_images: String,
    pub enable_safety_checker: String,
    pub output_format: String,
    pub sync_mode: String,
    pub enable_prompt_expansion: String,
    pub status: String,
    pub request_id: String,
    pub attempts: String,
    pub submitted_at: String,
    pub finished_at: String,
    pub latency_s: String,
    pub files: String,
    pub sha256: String,
    pub cost_usd: String,
    pub possibly_charged_usd: String,
    pub error_code: String,
    pub error_message: String,
    pub row: String,
    pub cached: String,
}

impl ResultLine {
    /// The row's files (relative to the folder), with their SHA-256 when known.
    pub fn files(&self) -> Vec<(&str, Option<&str>)> {
        let shas: Vec<&str> = self.sha256.split(';').collect();
        self.files
            .split(';')
            .filter(|f| !f.is_empty())
            .enumerate()
            .map(|(i, f)| (f, shas.get(i).copied().filter(|s| !s.is_empty())))
            .collect()
    }
}

/// Reads `dir/results.csv` a line at a time. The error names the file and
/// says what is wrong with it.
pub fn read_results(
    dir: &Path,
) -> Result<impl Iterator<Item = Result<ResultLine, String>>, String> {
    let path = dir.join(RESULTS_CSV);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{}: no such file; {} is not a batchgen output folder (or its run has not written results yet)",
                path.display(),
                dir.display()
            ))
        }
        Err(e) => {
            return Err(format!(
                "{}: cannot be read: {}",
                path.display(),
                crate::disk::plain(&e)
            ))
        }
    };
    let mut reader = csv::Reader::from_reader(std::io::BufReader::new(file));
    let shown = path.display().to_string();
    if let Err(e) = reader.headers() {
        return Err(format!("{shown}: not a results file: {e}"));
    }
    Ok(reader.into_deserialize().map(move |r| {
        r.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            format!("{shown}: line {line}: {e}")
        })
    }))
}
