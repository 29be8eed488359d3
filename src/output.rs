//! Stage 4 of 4: what a run leaves in its output folder.
//!
//! Why this exists: users' scripts read `results.csv` and `summary.json`, and
//! training jobs read `images/`. File names, column names and status words
//! are a contract: they only ever grow. Everything here is written atomically
//! (a temporary file beside the target, renamed into place), so a crash
//! leaves the previous version, never half a file.
//!
//! Results are computed from the journal, not from a run's memory, and one
//! function ([`row_result`]) says what a journal record means, so `run`,
//! `status`, results.csv and summary.json always count the same rows the
//! same way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::disk::write_atomic;
use crate::journal::{Record, Replay, State};
use crate::plan::{Key, Kind, Plan, Row, Usd};

pub const IMAGES_DIR: &str = "images";
pub const RESULTS_CSV: &str = "results.csv";
pub const SUMMARY_JSON: &str = "summary.json";
/// The keys of the newest run's plan, one per line in plan order, so that
/// `status` counts the rows `run` counts without the manifest.
pub const PLAN_KEYS: &str = ".plan-keys";

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

/// A row's status word in `results.csv`. Add, never rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Completed,
    /// A final verdict (the vendor's `FAILED`, a 4xx), a submit that may have
    /// been accepted without an answer, or a row that gave up submitting
    /// (never accepted: a plain rerun submits it again).
    Failed,
    /// Nothing was sent, or nothing was accepted, before the run stopped.
    NotRun,
    /// Accepted by the gateway (it holds a request id) and not collected:
    /// a plain rerun collects it without paying again.
    Accepted,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Completed,
        Status::Failed,
        Status::NotRun,
        Status::Accepted,
    ];

    pub fn parse(word: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == word)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::NotRun => "not_run",
            Status::Accepted => "accepted",
        }
    }
}

/// The code of a submit whose answer never arrived.
pub const SUBMIT_UNCERTAIN: &str = "SUBMIT_UNCERTAIN";
/// The code of a request paid for whose result the gateway no longer has.
pub const RESULT_LOST: &str = "RESULT_LOST";
/// Codes of rows paid for whose images are gone: sent again only with `--resubmit-lost`.
pub const LOST: &[&str] = &[RESULT_LOST, "DOWNLOAD_LOST", "FILES_MISSING", "NOT_FOUND"];

pub const UNCERTAIN_MESSAGE: &str =
    "a submit was sent and its answer never arrived: it may have been accepted and charged. \
It is not sent again unless you rerun with --retry-failed";

/// The file-name stems rows use for their images: the row id, unless a file
/// of another row (an older version of the manifest) already has that name,
/// or a name equal to it but for case (one file on macOS and Windows).
/// Ids are sanitised to `[A-Za-z0-9._-]` with no leading dot, so a stem can
/// never leave the images folder; anything else falls back to the key. (Two
/// rows of one plan never have ids equal even ignoring case: the plan
/// refuses them.)
#[derive(Debug, Default)]
pub struct Stems {
    /// Hash of a stem in lower case -> key of the row whose files bear it.
    /// (Hashes, so that a million rows cost 16 bytes each; two stems sharing
    /// a hash only make a row take the longer `ID-KEY` name, never share a
    /// file.)
    claimed: HashMap<u64, Key>,
    /// Hashes of stems that the files of two rows bear (a folder written on a
    /// case-sensitive disk, or by a version that let ids clash): no row takes
    /// them again.
    contested: HashSet<u64>,
}

impl Stems {
    pub fn from_journal(replay: &Replay) -> Stems {
        let mut claimed = HashMap::new();
        let mut contested = HashSet::new();
        for (key, rec) in &replay.records {
            if let State::Done { files, .. } = &rec.state {
                for f in files {
                    if let Some(stem) = file_stem(f) {
                        let hash = stem_hash(stem);
                        if *claimed.entry(hash).or_insert(*key) != *key {
                            contested.insert(hash);
                        }
                    }
                }
            }
        }
        Stems { claimed, contested }
    }

    pub fn stem(&self, row_id: &str, key: Key) -> String {
        // A long id would make a name the file system refuses (255 bytes,
        // with `-KEY`, `_N.jpeg` and a temporary prefix), after the image
        // was paid for: such a row's files take its key.
        if !plain_name(row_id) || row_id.len() > MAX_STEM {
            return key.to_string();
        }
        let hash = stem_hash(row_id);
        match self.claimed.get(&hash) {
            Some(owner) if *owner != key || self.contested.contains(&hash) => {
                format!("{row_id}-{key}")
            }
            _ => row_id.to_string(),
        }
    }
}

/// The longest row id used as a file name as it is.
pub const MAX_STEM: usize = 160;

/// A name that is one plain file-name part: `[A-Za-z0-9._-]`, not empty,
/// not hidden (so never `.` or `..`).
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The hash of a stem as a case-insensitive disk sees it.
fn stem_hash(stem: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(stem.to_ascii_lowercase())
}

/// `images/cat_s1_0.png` -> `cat_s1`.
fn file_stem(relative: &str) -> Option<&str> {
    let name = Path::new(relative).file_stem()?.to_str()?;
    name.rsplit_once('_').map(|(stem, _)| stem)
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
    /// Its images came from the cache.
    pub cached: bool,
    pub cost: Usd,
    pub possibly_charged: Usd,
    pub error_code: String,
    pub error_message: String,
}

impl RowResult {
    /// A submit that may have been accepted without an answer.
    pub fn is_uncertain(&self) -> bool {
        self.status == Status::Failed && self.error_code == SUBMIT_UNCERTAIN
    }
}

/// What the journal says of a row. `price` is what the row costs if every
/// image it asks for is made (used when the journal predates recording it);
/// `stop` (a code and its description) explains rows the run never reached
/// (`INTERRUPTED`, `BUDGET`, …).
pub fn row_result(rec: Option<&Record>, price: Usd, stop: Option<(&str, &str)>) -> RowResult {
    let (stop_code, stop_why) = stop.unwrap_or_default();
    let mut r = RowResult {
        status: Status::NotRun,
        request_id: None,
        attempts: 0,
        submitted_at_ms: None,
        finished_at_ms: None,
        files: Vec::new(),
        sha256: Vec::new(),
        cached: false,
        cost: Usd::default(),
        possibly_charged: Usd::default(),
        error_code: stop_code.to_string(),
        error_message: stop_why.to_string(),
    };
    let Some(rec) = rec else { return r };
    let price = match rec.price_micros {
        0 => price,
        m => Usd::from_micros(m),
    };
    r.request_id = rec.request_id().map(str::to_string);
    r.attempts = rec.attempts;
    r.submitted_at_ms = rec.submitted_at_ms;
    r.finished_at_ms = rec.finished_at_ms;
    let left = |r: &mut RowResult| {
        if let Some(left) = &rec.left {
            r.error_code = left.code.clone();
            r.error_message = left.message.clone();
        }
    };
    match &rec.state {
        State::Pending if rec.left.is_some() => {
            // It gave up submitting: nothing was accepted, nothing charged.
            r.status = Status::Failed;
            left(&mut r);
        }
        State::Pending => {}
        State::Uncertain => {
            r.status = Status::Failed;
            r.error_code = SUBMIT_UNCERTAIN.into();
            r.error_message = UNCERTAIN_MESSAGE.into();
            r.possibly_charged = price;
        }
        State::Submitted => {
            r.status = Status::Accepted;
            r.error_code = "IN_FLIGHT".into();
            r.error_message =
                "submitted and not yet collected: rerun the same command to collect it".into();
            left(&mut r);
            r.possibly_charged = price;
        }
        State::Done {
            files,
            sha256,
            cost_micros,
            cached,
            ..
        } => {
            r.status = Status::Completed;
            r.cached = *cached;
            r.files = files.clone();
            r.sha256 = sha256.clone();
            r.cost = Usd::from_micros(*cost_micros);
            r.error_code.clear();
            r.error_message.clear();
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
            if charged.maybe() {
                r.possibly_charged = Usd::from_micros(*cost_micros);
            }
        }
    }
    r.possibly_charged = r.possibly_charged + Usd::from_micros(rec.earlier_micros);
    r
}

/// What a row costs if every image it asks for is made.
pub fn row_price(plan: &Plan, row: &Row) -> Usd {
    request_price(plan, &plan.request(row))
}

/// What `req` costs if every image it asks for is made.
pub fn request_price(plan: &Plan, req: &crate::plan::Request) -> Usd {
    plan.pricing
        .per_image(req.kind())
        .times(u64::from(req.images()))
}

/// Rows by status, images and money: what `run`, `status` and summary.json
/// all report, added up the same way.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Totals {
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

impl Default for Totals {
    fn default() -> Totals {
        Totals {
            rows: 0,
            rows_by_status: Status::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
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

impl Totals {
    pub fn add(&mut self, r: &RowResult) {
        let images = r.files.len() as u64;
        self.add_parts(r.status, &r.error_code, r.cost, r.possibly_charged, images);
        self.cached += u64::from(r.cached);
    }

    /// Adds one row, from what results.csv says of it.
    pub fn add_parts(
        &mut self,
        status: Status,
        error_code: &str,
        cost: Usd,
        possibly_charged: Usd,
        images: u64,
    ) {
        self.rows += 1;
        *self.rows_by_status.entry(status.as_str()).or_default() += 1;
        match status {
            Status::Completed => {
                self.images += images;
                self.cost_usd = self.cost_usd + cost;
            }
            Status::Failed => {
                *self
                    .failures_by_code
                    .entry(error_code.to_string())
                    .or_default() += 1;
            }
            Status::Accepted => {
                *self
                    .accepted_by_code
                    .entry(error_code.to_string())
                    .or_default() += 1;
            }
            Status::NotRun => {}
        }
        self.uncertain += u64::from(status == Status::Failed && error_code == SUBMIT_UNCERTAIN);
        self.possibly_charged_usd = self.possibly_charged_usd + possibly_charged;
    }

    pub fn count(&self, status: Status) -> u64 {
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
            self.count(Status::Completed),
            self.count(Status::Failed),
            self.count(Status::NotRun),
        );
        if self.count(Status::Accepted) > 0 {
            out.push_str(&format!(
                ", {} accepted to collect (rerun to collect them)",
                self.count(Status::Accepted)
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
        let mut t = Totals::default();
        for (key, rec) in &replay.records {
            if !in_plan(*key) {
                t.add(&row_result(Some(rec), Usd::default(), None));
            }
        }
        Earlier {
            rows: t.rows,
            completed: t.count(Status::Completed),
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
pub struct Summary {
    pub manifest: String,
    pub out_dir: String,
    /// The gateway's origin, or `simulated`.
    pub gateway: String,
    #[serde(flatten)]
    pub totals: Totals,
    pub cost_usd_by_kind: BTreeMap<&'static str, Usd>,
    /// Rows of earlier manifests in this folder, and what they cost.
    pub not_in_manifest: Earlier,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
    pub wall_time_s: f64,
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

impl Summary {
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

/// Where results read the journal's records (defined by the journal).
pub use crate::journal::Records;

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
) -> std::io::Result<(Totals, BTreeMap<&'static str, Usd>)> {
    let mut totals = Totals::default();
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
            let mut prices = reqs.iter().map(|req| request_price(plan, req));
            records.each(&keys, &mut |rec| {
                let price = prices.next().expect("one record per key");
                results.push(row_result(rec, price, stop));
            });
            for ((row, req), r) in chunk.iter().zip(reqs.drain(..)).zip(results.drain(..)) {
                let key = row.key.to_string();
                let kind = req.kind();
                totals.add(&r);
                if r.status == Status::Completed {
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
                    if r.status == Status::Completed {
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

/// What a run's end writes besides results.csv.
pub struct RunEnd {
    pub gateway: String,
    /// The stop's code and description, if the run stopped early.
    pub stop: Option<(String, String)>,
    pub wall: Duration,
    /// Rows and images finished by this run.
    pub this_run: (u64, u64),
    /// Submits this run that a limiter refused (429, or a 503 the gateway did not phrase).
    pub rate_limited: u64,
    /// Status calls this run made.
    pub status_calls: u64,
    /// Why the run's output stopped, if a write to stderr or stdout failed.
    pub logging_stopped: Option<String>,
}

/// Writes `results.csv` and `summary.json` for `plan` from the journal.
pub fn write(
    plan: &Plan,
    replay: &Replay,
    out_dir: &Path,
    end: RunEnd,
) -> std::io::Result<Summary> {
    let stop = end
        .stop
        .as_ref()
        .map(|(code, why)| (code.as_str(), why.as_str()));
    let (totals, cost_usd_by_kind) = write_results(plan, replay, out_dir, stop)?;
    let keys: HashSet<Key> = plan.rows.iter().map(|r| r.key).collect();
    let mut s = Summary {
        manifest: plan.manifest.display().to_string(),
        out_dir: out_dir.display().to_string(),
        gateway: end.gateway,
        totals,
        cost_usd_by_kind,
        not_in_manifest: Earlier::of(replay, |k| keys.contains(&k)),
        stopped: end.stop.as_ref().map(|(_, why)| why.clone()),
        wall_time_s: end.wall.as_secs_f64(),
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

/// Records which keys the current plan holds, for `status`.
pub fn write_plan_keys(plan: &Plan, out_dir: &Path) -> std::io::Result<()> {
    write_atomic(&out_dir.join(PLAN_KEYS), |w| {
        for row in &plan.rows {
            writeln!(w, "{}", row.key)?;
        }
        Ok(())
    })
}

/// The keys of the newest run's plan, if the folder records them.
pub fn read_plan_keys(out_dir: &Path) -> std::io::Result<Option<Vec<Key>>> {
    match std::fs::read_to_string(out_dir.join(PLAN_KEYS)) {
        Ok(text) => text
            .lines()
            .enumerate()
            .map(|(n, line)| {
                Key::parse(line).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("line {} is not a row key", n + 1),
                    )
                })
            })
            .collect::<std::io::Result<Vec<Key>>>()
            .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
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

/// The output folder a manifest gets by default: `out/NAME`, or
/// `out/NAME-sim` against the simulator, so simulated placeholders never
/// share a folder with a paid data set. A shard's is inside it,
/// `shards/I-of-N`, where `batchgen merge` finds it.
pub fn default_dir(plan: &Plan, simulated: bool) -> PathBuf {
    let name = if simulated {
        format!("{}-sim", plan.name)
    } else {
        plan.name.clone()
    };
    let dir = Path::new("out").join(name);
    match plan.shard {
        Some(s) => dir
            .join("shards")
            .join(format!("{}-of-{}", s.index, s.count)),
        None => dir,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Entry, Left};

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_616_591_123), "2026-11-25T14:23:11.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    /// The stems of a folder whose journal says row `key` saved `file`.
    fn stems_of(done: &[(u64, &str)]) -> Stems {
        let mut replay = Replay::default();
        for &(key, file) in done {
            replay.apply(Entry::Done {
                key: Key(key),
                at_ms: 0,
                files: vec![file.into()],
                sha256: vec!["x".into()],
                stamps: vec![],
                cost_micros: 0,
                seen_ms: None,
                cached: false,
            });
        }
        Stems::from_journal(&replay)
    }

    #[test]
    fn stems_never_leave_the_folder_and_never_collide() {
        let stems = stems_of(&[(1, "images/cat_s1_0.png")]);
        assert_eq!(stems.stem("cat_s1", Key(1)), "cat_s1", "its own files");
        assert_eq!(
            stems.stem("cat_s1", Key(2)),
            format!("cat_s1-{}", Key(2)),
            "another row's name"
        );
        assert_eq!(stems.stem("dog_s1", Key(2)), "dog_s1");
        for evil in ["../x", "/abs", ".hidden", "a/b", ""] {
            assert_eq!(stems.stem(evil, Key(3)), Key(3).to_string(), "{evil}");
        }
    }

    /// On macOS and Windows `Cat_s1_0.png` and `cat_s1_0.png` are one file:
    /// a row of today's manifest never takes the name of an older row's file
    /// but for case, and no row takes a name two rows' files already bear.
    #[test]
    fn stems_equal_but_for_case_are_another_rows_name() {
        let stems = stems_of(&[
            (1, "images/Cat_s1_0.png"),
            (2, "images/j_s2_0.png"),
            (3, "images/J_s2_0.png"),
        ]);
        assert_eq!(stems.stem("cat_s1", Key(9)), format!("cat_s1-{}", Key(9)));
        assert_eq!(stems.stem("cat_s1", Key(1)), "cat_s1", "its own files");
        for key in [Key(2), Key(3)] {
            assert_eq!(stems.stem("j_s2", key), format!("j_s2-{key}"));
        }
    }

    #[test]
    fn every_record_reads_as_one_status() {
        let price = Usd::from_micros(50_000);
        let rec = |state: State, left: Option<&str>| Record {
            state,
            left: left.map(|c| {
                Box::new(Left {
                    code: c.into(),
                    message: "why".into(),
                })
            }),
            ..Record::default()
        };
        let r = |rec: Option<&Record>| row_result(rec, price, Some(("INTERRUPTED", "")));
        let none = r(None);
        assert_eq!(
            (none.status, none.error_code.as_str()),
            (Status::NotRun, "INTERRUPTED")
        );
        let pending = r(Some(&rec(State::Pending, None)));
        assert_eq!(pending.status, Status::NotRun);
        let gave_up = r(Some(&rec(State::Pending, Some("CONNECTION_FAILED"))));
        assert_eq!(
            (
                gave_up.status,
                gave_up.error_code.as_str(),
                gave_up.possibly_charged
            ),
            (Status::Failed, "CONNECTION_FAILED", Usd::default())
        );
        let uncertain = r(Some(&rec(State::Uncertain, None)));
        assert!(uncertain.is_uncertain());
        assert_eq!(uncertain.possibly_charged, price);
        let accepted = r(Some(&rec(State::Submitted, Some("DISK"))));
        assert_eq!(
            (
                accepted.status,
                accepted.error_code.as_str(),
                accepted.possibly_charged
            ),
            (Status::Accepted, "DISK", price)
        );
        let mut t = Totals::default();
        for x in [&none, &pending, &gave_up, &uncertain, &accepted] {
            t.add(x);
        }
        assert_eq!(t.rows, 5);
        assert_eq!(t.count(Status::Failed), 2);
        assert_eq!(t.uncertain, 1);
        assert_eq!(t.possibly_charged_usd, Usd::from_micros(100_000));
        assert_eq!(t.accepted_by_code["DISK"], 1);
        assert_eq!(
            t.rows_line(),
            "5 rows: 0 completed, 2 failed, 2 not run, 1 accepted to collect (rerun to collect them) (1 uncertain)"
        );
    }
}
