//! Stage 4 of 4: what a run leaves in its output folder.
//!
//! Why this exists: users' scripts read `results.csv` and `summary.json`, and
//! training jobs read `images/`. File names, column names and status words
//! are a contract: they only ever grow. Everything here is written atomically
//! (a temporary file beside the target, renamed into place), so a crash
//! leaves the previous version, never half a file.
//!
//! Results are computed from the plan and the journal, not from memory, so
//! they say exactly what a resumed run would find.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::journal::{Charged, Record, Replay, State};
use crate::plan::{Kind, Plan, Row, Usd};

pub const IMAGES_DIR: &str = "images";
pub const RESULTS_CSV: &str = "results.csv";
pub const SUMMARY_JSON: &str = "summary.json";

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
];

/// A row's status word in `results.csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Completed,
    Failed,
    NotRun,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::NotRun => "not_run",
        }
    }
}

/// The file-name stems rows use for their images: the row id, unless a file
/// of another row (an older version of the manifest) already has that name.
/// Ids are sanitised to `[A-Za-z0-9._-]` with no leading dot, so a stem can
/// never leave the images folder; anything else falls back to the key.
#[derive(Debug, Default)]
pub struct Stems {
    /// Stem -> key of the row whose files bear it.
    claimed: HashMap<String, String>,
}

impl Stems {
    pub fn from_journal(replay: &Replay) -> Stems {
        let mut claimed = HashMap::new();
        for (key, rec) in &replay.records {
            if let State::Done { files, .. } = &rec.state {
                for f in files {
                    if let Some(stem) = file_stem(f) {
                        claimed.insert(stem, key.clone());
                    }
                }
            }
        }
        Stems { claimed }
    }

    pub fn stem(&self, row_id: &str, key: &str) -> String {
        let safe = !row_id.is_empty()
            && !row_id.starts_with('.')
            && row_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !safe {
            return key.to_string();
        }
        match self.claimed.get(row_id) {
            Some(owner) if owner != key => format!("{row_id}-{key}"),
            _ => row_id.to_string(),
        }
    }
}

/// `images/cat_s1_0.png` -> `cat_s1`.
fn file_stem(relative: &str) -> Option<String> {
    let name = Path::new(relative).file_stem()?.to_str()?;
    name.rsplit_once('_').map(|(stem, _)| stem.to_string())
}

/// Writes `path` atomically with what `fill` writes.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file());
        fill(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    crate::api::sync_dir(dir);
    Ok(())
}

/// One row's line of `results.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct RowResult {
    pub status: Status,
    pub request_id: Option<String>,
    pub attempts: u32,
    pub submitted_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub files: Vec<String>,
    pub sha256: Vec<String>,
    pub cost: Usd,
    pub possibly_charged: Usd,
    pub error_code: String,
    pub error_message: String,
}

/// What the journal says of a row, as a result. `stop_code` explains rows
/// the run never reached (`INTERRUPTED`, `UNAUTHORIZED`, `BUDGET`, …).
pub fn row_result(
    plan: &Plan,
    row: &Row,
    rec: Option<&Record>,
    stop_code: Option<&str>,
) -> RowResult {
    let mut r = RowResult {
        status: Status::NotRun,
        request_id: None,
        attempts: 0,
        submitted_at_ms: None,
        finished_at_ms: None,
        files: Vec::new(),
        sha256: Vec::new(),
        cost: Usd::default(),
        possibly_charged: Usd::default(),
        error_code: stop_code.unwrap_or_default().to_string(),
        error_message: String::new(),
    };
    let Some(rec) = rec else { return r };
    r.request_id = rec.ticket.as_ref().map(|t| t.request_id.clone());
    r.attempts = rec.attempts;
    r.submitted_at_ms = rec.submitted_at_ms;
    r.finished_at_ms = rec.finished_at_ms;
    match &rec.state {
        State::Pending => {}
        State::Uncertain => {
            r.status = Status::Failed;
            r.error_code = "SUBMIT_UNCERTAIN".into();
            r.error_message = UNCERTAIN_MESSAGE.into();
            r.possibly_charged = row_price(plan, row);
            r.finished_at_ms = None;
        }
        State::Submitted => {
            r.error_code = "IN_FLIGHT".into();
            r.error_message =
                "submitted and not yet collected: rerun the same command to collect it".into();
        }
        State::Done {
            files,
            sha256,
            cost_micros,
        } => {
            r.status = Status::Completed;
            r.files = files.clone();
            r.sha256 = sha256.clone();
            r.cost = Usd::from_micros(*cost_micros);
            r.error_code.clear();
        }
        State::Failed {
            code,
            message,
            charged,
            cost_micros,
        } => {
            r.status = Status::Failed;
            r.error_code = code.clone();
            r.error_message = message.clone();
            if *charged == Charged::Possibly {
                r.possibly_charged = Usd::from_micros(*cost_micros);
            }
        }
    }
    r
}

pub const UNCERTAIN_MESSAGE: &str =
    "a submit was sent and its answer never arrived: it may have been accepted and charged. \
It is not sent again unless you rerun with --retry-failed";

/// What a row costs if every image it asks for is made.
pub fn row_price(plan: &Plan, row: &Row) -> Usd {
    let req = plan.request(row);
    plan.pricing
        .per_image(req.kind())
        .times(u64::from(req.images()))
}

/// Run totals, as printed and as `summary.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub manifest: String,
    pub out_dir: String,
    pub rows: u64,
    pub rows_by_status: BTreeMap<&'static str, u64>,
    pub images: u64,
    pub cost_usd: Usd,
    pub cost_usd_by_kind: BTreeMap<&'static str, Usd>,
    /// Failed rows that may have been charged (status FAILED, lost results, uncertain submits).
    pub possibly_charged_usd: Usd,
    pub failures_by_code: BTreeMap<String, u64>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
    pub wall_time_s: f64,
    /// Rows and images finished by this run (a resumed run skips earlier work).
    pub rows_this_run: u64,
    pub images_this_run: u64,
    pub rows_per_minute: f64,
    pub images_per_minute: f64,
}

impl Summary {
    pub fn to_text(&self) -> String {
        let by = |s: &str| self.rows_by_status.get(s).copied().unwrap_or(0);
        let mut out = format!(
            "{} rows: {} completed, {} failed, {} not run · {} images · {} spent (text_to_image {}, image_to_image {})",
            self.rows,
            by("completed"),
            by("failed"),
            by("not_run"),
            self.images,
            self.cost_usd,
            self.cost_usd_by_kind.get("text_to_image").copied().unwrap_or_default(),
            self.cost_usd_by_kind.get("image_to_image").copied().unwrap_or_default(),
        );
        if self.possibly_charged_usd > Usd::default() {
            out.push_str(&format!(
                " · {} possibly charged for failed rows",
                self.possibly_charged_usd
            ));
        }
        out.push_str(&format!(
            " · this run: {} rows, {} images in {:.1} s ({:.1} images/min)\n",
            self.rows_this_run, self.images_this_run, self.wall_time_s, self.images_per_minute
        ));
        for (code, n) in &self.failures_by_code {
            out.push_str(&format!("  failed: {n} × {code}\n"));
        }
        if let Some(why) = &self.stopped {
            out.push_str(&format!("  stopped early: {why}\n"));
        }
        out.push_str(&format!(
            "  results: {}/{RESULTS_CSV}, {}/{SUMMARY_JSON}\n",
            self.out_dir, self.out_dir
        ));
        out
    }
}

/// Writes `results.csv` and `summary.json` for `plan` from the journal.
pub fn write(
    plan: &Plan,
    replay: &Replay,
    out_dir: &Path,
    stop: Option<(&str, String)>,
    wall: Duration,
    this_run: (u64, u64),
) -> std::io::Result<Summary> {
    let mut s = Summary {
        manifest: plan.manifest.display().to_string(),
        out_dir: out_dir.display().to_string(),
        rows: plan.rows.len() as u64,
        stopped: stop.as_ref().map(|(_, why)| why.clone()),
        wall_time_s: wall.as_secs_f64(),
        rows_this_run: this_run.0,
        images_this_run: this_run.1,
        ..Summary::default()
    };
    for status in [Status::Completed, Status::Failed, Status::NotRun] {
        s.rows_by_status.insert(status.as_str(), 0);
    }
    for kind in Kind::ALL {
        s.cost_usd_by_kind.insert(kind.as_str(), Usd::default());
    }
    let stop_code = stop.as_ref().map(|(code, _)| *code);
    write_atomic(&out_dir.join(RESULTS_CSV), |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(COLUMNS)?;
        for row in &plan.rows {
            let key = row.key.to_string();
            let r = row_result(plan, row, replay.records.get(&key), stop_code);
            let req = plan.request(row);
            let kind = req.kind();
            *s.rows_by_status.entry(r.status.as_str()).or_default() += 1;
            if r.status == Status::Completed {
                s.images += r.files.len() as u64;
                s.cost_usd = s.cost_usd + r.cost;
                let by_kind = s.cost_usd_by_kind.entry(kind.as_str()).or_default();
                *by_kind = *by_kind + r.cost;
            }
            if r.status == Status::Failed {
                *s.failures_by_code.entry(r.error_code.clone()).or_default() += 1;
            }
            s.possibly_charged_usd = s.possibly_charged_usd + r.possibly_charged;
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
                if r.status == Status::Completed {
                    format!("{:.6}", r.cost.dollars())
                } else {
                    String::new()
                },
                money(r.possibly_charged),
                r.error_code,
                r.error_message,
            ])?;
        }
        csv.flush()
    })?;
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

/// `2026-11-25T14:23:11.123Z` from milliseconds since the Unix epoch.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The output folder a manifest gets by default: `out/NAME`.
pub fn default_dir(plan: &Plan) -> PathBuf {
    Path::new("out").join(&plan.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_616_591_123), "2026-11-25T14:23:11.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn stems_never_leave_the_folder_and_never_collide() {
        let mut replay = Replay::default();
        replay.apply(crate::journal::Entry::Done {
            key: "k1".into(),
            at_ms: 0,
            files: vec!["images/cat_s1_0.png".into()],
            sha256: vec!["x".into()],
            cost_micros: 0,
        });
        let stems = Stems::from_journal(&replay);
        assert_eq!(stems.stem("cat_s1", "k1"), "cat_s1", "its own files");
        assert_eq!(
            stems.stem("cat_s1", "k2"),
            "cat_s1-k2",
            "another row's name"
        );
        assert_eq!(stems.stem("dog_s1", "k2"), "dog_s1");
        for evil in ["../x", "/abs", ".hidden", "a/b", ""] {
            assert_eq!(stems.stem(evil, "k3"), "k3", "{evil}");
        }
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.txt");
        write_atomic(&p, |w| w.write_all(b"one")).unwrap();
        write_atomic(&p, |w| w.write_all(b"two")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        let failed = write_atomic(&p, |_| Err(std::io::Error::other("boom")));
        assert!(failed.is_err());
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "two",
            "a failed write leaves the old file"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }
}
