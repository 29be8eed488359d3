//! Taking an output folder for a run, and resuming it: create and lock the
//! folder, check that it belongs to this gateway, replay the journal once
//! and decide where every row starts ([`super::start`]), all before
//! anything is sent, so the caller can check what this run would newly
//! spend against the budget.
//!
//! Why this exists apart from the scheduler: it is synchronous file work
//! that spends nothing; [`Opened::execute`] (in [`super::scheduler`]) is
//! where money is spent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::start::{decide, Flags, Start};
use super::{poll, RunError, Settings, SIMULATED};
use crate::api::PART_PREFIX;
use crate::cache::Cache;
use crate::disk;
use crate::journal::{self, Entry, Journal};
use crate::output::{self, ResultTotals};
use crate::plan::{Plan, Usd};
use crate::sidecar;

/// The output folder, taken for this run, with every row's start decided.
pub struct Opened {
    pub(super) plan: Arc<Plan>,
    pub(super) settings: Settings,
    pub(super) cache: Option<Arc<Cache>>,
    pub(super) journal: Arc<Journal>,
    pub(super) _lock: std::fs::File,
    /// The bucket prefix the run writes to, if it is one.
    pub(super) remote: Option<Arc<super::Remote>>,
    /// Files to upload before anything is sent (sidecars written again).
    pub(super) to_publish: Vec<String>,
    /// Rows with work to do, accepted ones first, then new ones in plan order.
    pub(super) starts: Vec<(usize, Start)>,
    /// Rows to submit, in plan order (indices: a million of them cost 4 MB).
    pub(super) fresh: Vec<u32>,
    /// Verdicts the decisions reached (lost results), journaled at the start.
    pub(super) verdicts: Vec<Entry>,
    /// What earlier runs saw of each kind of request's latency, in seconds.
    pub(super) seeds: HashMap<poll::ModelKey, Vec<(f64, f64)>>,
    /// Rows already finished for good (this run does nothing for them).
    pub(super) finished: u64,
    /// What the folder already holds for this plan.
    pub(super) before: ResultTotals,
    /// What this run would spend if every row it submits makes every image.
    pub(super) to_spend: Usd,
    pub(super) to_submit: u64,
}

/// Takes the output folder: creates it (durably), locks it, checks that it
/// belongs to this gateway, removes temporary files a killed run left,
/// replays the journal once and decides where every row starts.
pub fn open(plan: Arc<Plan>, settings: Settings) -> Result<Opened, RunError> {
    open_with(plan, settings, None)
}

/// [`open()`], for a run whose output is a bucket prefix when `remote` is
/// given: `settings.out_dir` is then its working folder, the journal is the
/// one on the store, and a completed row's files are checked against the
/// store's listing (and, with `--verify`, downloaded and hashed). Call it
/// from the blocking pool (it may wait on the store).
pub fn open_with(
    plan: Arc<Plan>,
    settings: Settings,
    remote: Option<Arc<super::Remote>>,
) -> Result<Opened, RunError> {
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
    let mut journal = match remote.as_ref().and_then(|r| Some((r, r.take_writer()?))) {
        Some((r, writer)) => Journal::on_store(writer, &r.store().to_string()),
        None => Journal::open(&out_dir)?,
    };
    if settings.paused_clock {
        journal.hold_paused_clock();
    }
    journal.keep_room(journal_room(settings.concurrency));
    let cache = match &settings.cache {
        Some(at) => Some(Arc::new(Cache::open_location(at, &settings.gateway)?)),
        None => None,
    };
    let (made_by, made_at) = journal.with_replay(|r| (r.gateway.clone(), r.base_url.clone()));
    if let Some(made_by) = made_by {
        if !settings.gateway.made(&made_by, made_at.as_deref()) {
            let made_by = made_at.unwrap_or(made_by);
            return Err(other_gateway(&out_dir, made_by, settings.gateway.base()));
        }
    }
    // `--verify` on a bucket: every completed row's files hashed first, a
    // few at a time, streamed. A file that cannot be read stops the run
    // (exit 3): "could not check" is never taken for "damaged", which would
    // send a paid row back to its request.
    let hashes = match (&remote, settings.verify) {
        (Some(remote), true) => Some(stored_hashes(remote, &journal)?),
        _ => None,
    };
    crate::temps::remove_stray(&images_dir, PART_PREFIX);
    crate::temps::remove_stray(&images_dir, disk::TEMP_PREFIX);
    crate::temps::remove_stray(&out_dir, disk::TEMP_PREFIX);

    let mut resumed = Vec::new();
    let mut fresh = Vec::new();
    let mut verdicts = Vec::new();
    let mut finished = 0;
    let mut to_spend = Usd::default();
    let mut before = ResultTotals::default();
    let mut seeds: HashMap<poll::ModelKey, Vec<(f64, f64)>> = HashMap::new();
    let flags = Flags {
        retry_failed: settings.retry_failed,
        resubmit_lost: settings.resubmit_lost,
    };
    let mut sidecars = Ok(());
    let mut unreadable = None;
    let mut to_publish = Vec::new();
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
                |done| match &remote {
                    Some(r) => stored_intact(r, done, hashes.as_ref()),
                    None => files_intact(&out_dir, done, settings.verify, &mut unreadable),
                },
                in_cache,
            );
            // A completed row's provenance is what the journal says (and
            // names the row's current id): missing or other, it is written again.
            if let (Start::End, None, Some(r)) = (&d.start, &d.record, rec) {
                if sidecars.is_ok() {
                    let id = plan.row_id(row);
                    sidecars = match &remote {
                        // Only what the store lacks: the pod's disk holds none.
                        Some(remote) => sidecar::write_missing(
                            &out_dir,
                            &id,
                            key,
                            &req,
                            r,
                            |name| remote.listed_size(name).is_some(),
                            &mut to_publish,
                        ),
                        None => {
                            sidecar::restore(&out_dir, &id, key, &req, r, settings.verify).map(drop)
                        }
                    }
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
    if let Some((path, source)) = unreadable {
        return Err(RunError::Unreadable { path, source });
    }
    sidecars?;
    let to_submit = fresh.len() as u64;
    Ok(Opened {
        plan,
        settings,
        cache,
        journal: Arc::new(journal),
        _lock: lock,
        remote,
        to_publish,
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
    pub fn before(&self) -> &ResultTotals {
        &self.before
    }

    /// Rows taken from the cache, and accepted rows to collect.
    fn resumed(&self) -> (u64, u64) {
        let cached = self
            .starts
            .iter()
            .filter(|(_, s)| matches!(s, Start::Cached { .. }))
            .count() as u64;
        (cached, self.starts.len() as u64 - cached)
    }

    /// What this run will do, as `--progress json`'s `start` event says it.
    pub fn outlook(&self) -> Outlook {
        let (cached, collect) = self.resumed();
        Outlook {
            version: env!("CARGO_PKG_VERSION"),
            manifest: self.plan.manifest.display().to_string(),
            out_dir: match &self.settings.place {
                Some(place) => place.clone(),
                None => self.settings.out_dir.display().to_string(),
            },
            gateway: self.settings.gateway.origin().to_string(),
            shard: self.plan.shard,
            rows: self.plan.rows.len() as u64,
            rows_finished_before: self.finished,
            rows_to_collect: collect,
            rows_from_cache: cached,
            rows_to_submit: self.to_submit,
            spend_max_usd: self.to_spend,
            spent_before_usd: self.before.cost_usd,
            possibly_charged_before_usd: self.before.possibly_charged_usd,
            budget_usd: self.settings.max_cost,
            concurrency: self.settings.concurrency,
            rate: self.settings.rate_per_sec,
        }
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
        let (cached, collect) = self.resumed();
        if cached > 0 {
            text.push_str(&format!("; {cached} from the cache"));
        }
        if collect > 0 {
            text.push_str(&format!("; {collect} accepted earlier to collect"));
        }
        text.push_str(&format!(
            "; {} to submit, {} at most → {}",
            self.to_submit,
            self.to_spend,
            match &self.settings.place {
                Some(place) => place.clone(),
                None => self.settings.out_dir.display().to_string(),
            }
        ));
        text
    }
}

/// What a run will do, before it sends anything: `--progress json`'s
/// `start` event (docs/watching.md).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outlook {
    pub version: &'static str,
    pub manifest: String,
    pub out_dir: String,
    pub gateway: String,
    pub shard: Option<crate::vocab::Shard>,
    /// The plan's rows (this shard's).
    pub rows: u64,
    pub rows_finished_before: u64,
    /// Accepted by an earlier run, collected by this one.
    pub rows_to_collect: u64,
    pub rows_from_cache: u64,
    pub rows_to_submit: u64,
    /// The most this run may newly spend (every submitted row making every image).
    pub spend_max_usd: Usd,
    pub spent_before_usd: Usd,
    pub possibly_charged_before_usd: Usd,
    /// `--max-cost` (or the manifest's budget), if any.
    pub budget_usd: Option<Usd>,
    pub concurrency: usize,
    /// `--rate`, if given.
    pub rate: Option<f64>,
}

/// Holds an exclusive lock on `DIR/.lock` while the run lives, with this
/// run's note in it (see [`super::live`]).
fn lock(dir: &Path) -> Result<std::fs::File, RunError> {
    let path = dir.join(super::LOCK_FILE);
    match super::live::take(dir) {
        Ok(Some(file)) => Ok(file),
        Ok(None) => Err(RunError::Locked(dir.to_path_buf())),
        Err(source) => Err(RunError::Output { path, source }),
    }
}

/// Every file of a completed row is in the bucket with the size its `done`
/// line recorded (one listing, made when the run opened); with `--verify`,
/// `hashes` (from [`stored_hashes`]) has its SHA-256 too, which decides.
fn stored_intact(
    remote: &super::Remote,
    done: &journal::State,
    hashes: Option<&HashMap<String, String>>,
) -> bool {
    every_file(done, |f, sha256, stamp| {
        let Some(size) = remote.listed_size(f) else {
            return false;
        };
        if stamp.is_some_and(|&[recorded, _]| recorded != size) {
            return false;
        }
        hashes.is_none_or(|h| h.get(f).is_some_and(|got| got == sha256))
    })
}

/// The SHA-256 of every file of a completed row the bucket lists, read as
/// streams, 16 at a time, never held whole. A read that fails is an error
/// naming the object (the run stops before sending anything), never a
/// verdict. Runs on the blocking pool, waiting on the run's runtime.
fn stored_hashes(
    remote: &super::Remote,
    journal: &Journal,
) -> Result<HashMap<String, String>, RunError> {
    use futures_util::{StreamExt, TryStreamExt};
    let files: Vec<(String, u64)> = journal.with_replay(|replay| {
        replay
            .records
            .values()
            .filter_map(|r| match &r.state {
                journal::State::Done { files, .. } => Some(files.clone()),
                _ => None,
            })
            .flatten()
            .filter_map(|f| Some((f.clone(), remote.listed_size(&f)?)))
            .collect()
    });
    let store = remote.store();
    let hashed = futures_util::stream::iter(files)
        .map(|(f, size)| async move {
            let got = store.sha256(&f, size).await?;
            Ok::<_, crate::store::StoreError>(got.map(|sha| (f, sha)))
        })
        .buffer_unordered(16)
        .try_filter_map(|found| async move { Ok(found) })
        .try_collect();
    let handle = tokio::runtime::Handle::try_current().map_err(|e| RunError::Output {
        path: PathBuf::from(store.to_string()),
        source: std::io::Error::other(e),
    })?;
    handle.block_on(hashed).map_err(RunError::Bucket)
}

/// Every file of a completed row is there as it was written. A file whose
/// size and modification time are those its `done` line recorded is taken
/// as intact without reading it; otherwise (a copied folder, `--verify`, a
/// journal older than those records) its SHA-256 decides. A file of another
/// size is damaged. A file that is there but cannot be read is no verdict:
/// it is kept in `unreadable` (the first one), the row counts as intact for
/// now, and the run refuses to start.
fn files_intact(
    out_dir: &Path,
    done: &journal::State,
    verify: bool,
    unreadable: &mut Option<(PathBuf, std::io::Error)>,
) -> bool {
    every_file(done, |f, sha256, stamp| {
        let path = out_dir.join(f);
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(e) => return keep_unreadable(unreadable, path, e),
        };
        match stamp {
            Some(&[size, _]) if meta.len() != size => return false,
            Some(&[_, mtime]) if !verify && disk::mtime_ns(&meta) == mtime => return true,
            _ => {}
        }
        match std::fs::read(&path) {
            Ok(bytes) => disk::hex(&Sha256::digest(&bytes)) == sha256,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => keep_unreadable(unreadable, path, e),
        }
    })
}

/// Keeps the first file that could not be read; the row is taken as intact
/// until the run, which refuses to start, is run again.
fn keep_unreadable(
    unreadable: &mut Option<(PathBuf, std::io::Error)>,
    path: PathBuf,
    e: std::io::Error,
) -> bool {
    unreadable.get_or_insert((path, e));
    true
}

/// Whether `intact(file, sha256, stamp)` holds for every file of a
/// completed row, `stamp` being the `[size, mtime]` its `done` line
/// recorded (`None` in a journal that recorded none, or not one a file).
/// False for any other state, or a `done` line whose lists disagree.
fn every_file(
    done: &journal::State,
    mut intact: impl FnMut(&str, &str, Option<&[u64; 2]>) -> bool,
) -> bool {
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
    let stamps = (stamps.len() == files.len()).then_some(stamps);
    files
        .iter()
        .enumerate()
        .all(|(i, f)| intact(f, &sha256[i], stamps.map(|s| &s[i])))
}
