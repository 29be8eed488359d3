//! `status`, `report`, `export` and `merge` given bucket URLs: each fetches
//! what its local code reads into a working copy ([`super::bucket::Copy`]),
//! runs that code unchanged, and uploads what it wrote.
//!
//! Why this exists apart from the command files: the plumbing is the same
//! four times (fetch, run, show paths as URLs, publish), and keeping it here
//! leaves each command's own file as it was for folders.
//!
//! What each fetches:
//! - `status`: the journal (replayed from its segments) and `.plan-keys`
//!   (or, for a merged prefix, its summary.json), and `lease.json` to tell
//!   whether a run holds the prefix now;
//! - `report`: results.csv, summary.json, and for every completed row's
//!   image its thumbnail under `thumbs/` if one is there (then only the
//!   image's first bytes, which the sheet checks), else the image; it
//!   uploads index.html and the thumbnails it made;
//! - `export`: results.csv, summary.json, the images and their sidecars;
//! - `merge`: each shard's journal and results.csv; it uploads results.csv
//!   and summary.json.
//!
//! For a merged prefix, the shard prefixes its summary.json records (in
//! the same bucket) are read too, with their journals, as for a merged
//! folder; nothing else outside the prefix given.
//!
//! Cancellation: as [`super::bucket`]; the local work runs through
//! [`super::signals::interruptible`].

use std::collections::BTreeSet;

use futures_util::{StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};

use super::bucket::{self, Copy, Place, MAX_IMAGE, MAX_PLAN_KEYS, MAX_RESULTS, MAX_SMALL};
use super::signals::interruptible;
use crate::confine::Writes;
use crate::exit::{self, Error};
use crate::export::{self, ExportError, Exported, Format};
use crate::journal::store::{LeaseBody, LEASE_NAME};
use crate::merge::{self, MergeError, MergeSummary};
use crate::output::{read_results, RowStatus, PLAN_KEYS, RESULTS_CSV, SUMMARY_JSON};
use crate::report::{self, ReportError, Reported, INDEX_HTML, THUMBS_DIR};
use crate::run::Live;
use crate::store::{files_under, Store};
use crate::{disk, sidecar};

/// `store`'s prefix as a folder holding its journal and `.plan-keys`, for
/// `status`; for a merged prefix (no journal), its summary.json instead.
/// The folder holds neither if the prefix holds no run.
pub async fn status_copy(store: &Store) -> Result<(Copy, PathBuf), Error> {
    let copy = Copy::new(store)?;
    let dir = copy.dir_of(store);
    if copy.journal(store).await? {
        copy.fetch(vec![key(store, PLAN_KEYS)], MAX_PLAN_KEYS)
            .await?;
    } else {
        copy.fetch(vec![key(store, SUMMARY_JSON)], MAX_SMALL)
            .await?;
    }
    Ok((copy, dir))
}

/// The run holding `store`'s prefix now: the one whose `lease.json` has not
/// run out (by this machine's clock). An unreadable lease is none.
pub async fn live_lease(store: &Store) -> Result<Option<Live>, Error> {
    let bytes = store
        .read_bytes(LEASE_NAME, MAX_SMALL)
        .await
        .map_err(bucket::store_error)?;
    let body = bytes.and_then(|b| serde_json::from_slice::<LeaseBody>(&b).ok());
    Ok(body.and_then(|b| Live::of_lease(b, crate::journal::now_ms())))
}

/// `name` under `store`'s prefix, relative to the bucket.
fn key(store: &Store, name: &str) -> String {
    bucket::join_key(&store.bucket().prefix, name).unwrap_or_default()
}

/// What `report` and `export` read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Report,
    Export,
}

/// Fetches what `report` or `export` reads of `store`'s prefix (see the
/// module's text) into its folder in the copy; returns, for `report`, the
/// thumbnails that were there.
async fn readable(copy: &Copy, store: &Store, need: Need) -> Result<BTreeSet<String>, Error> {
    let prefix = store.bucket().prefix.clone();
    let dir = copy.dir_of(store);
    copy.fetch(vec![key(store, RESULTS_CSV)], MAX_RESULTS)
        .await?;
    copy.fetch(vec![key(store, SUMMARY_JSON)], MAX_SMALL)
        .await?;
    // The prefixes its files may be in: its own, and the shard prefixes a
    // merge recorded, each holding a journal (as `confine::Sources` has it).
    let mut roots = vec![prefix.clone()];
    let summary = disk::read_regular(&dir.join(SUMMARY_JSON), MAX_SMALL)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let shard_dirs: Vec<String> = summary
        .as_ref()
        .and_then(|s| s["shard_dirs"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .filter_map(|s| bucket::join_key(&prefix, s))
        .collect();
    for shard in shard_dirs {
        if roots.contains(&shard) {
            continue;
        }
        if copy.journal(&copy.at(&shard)?).await? {
            roots.push(shard);
        }
    }
    // The files of completed rows; an unreadable results.csv is left to the
    // local code to report.
    let read = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || -> Vec<String> {
            let Ok(lines) = read_results(&dir) else {
                return Vec::new();
            };
            lines
                .map_while(Result::ok)
                .filter(|l| RowStatus::parse(&l.status) == Some(RowStatus::Completed))
                .flat_map(|l| {
                    l.files()
                        .into_iter()
                        .map(|(f, _)| f.to_string())
                        .collect::<Vec<_>>()
                })
                .collect()
        })
    };
    let files = read.await.map_err(|e| Error::Io(e.to_string()))?;
    let inside = |rel: &str| {
        bucket::join_key(&prefix, rel).filter(|k| roots.iter().any(|r| bucket::under(k, r)))
    };
    let thumbs: BTreeSet<String> = match need {
        Need::Report => store
            .list(Some(THUMBS_DIR))
            .await
            .map_err(bucket::store_error)?
            .into_iter()
            .filter(|l| l.size > 0)
            .map(|l| l.name)
            .collect(),
        Need::Export => BTreeSet::new(),
    };
    let (mut images, mut small) = (Vec::new(), Vec::new());
    let (mut heads, mut outside) = (Vec::new(), Vec::new());
    let mut place = |rel: &str| {
        let found = inside(rel);
        if found.is_none() {
            outside.extend(bucket::join_key(&prefix, rel));
        }
        found
    };
    for file in &files {
        if need == Need::Export {
            let side = sidecar::path_for(Path::new(file));
            if let Some(side) = place(&side.to_string_lossy()) {
                small.push(side);
            }
        }
        let Some(image) = place(file) else { continue };
        let seen = bucket::relative_key(&prefix, &image);
        let thumb = report::thumb_path(Path::new(&seen));
        let thumb = thumb.to_string_lossy().replace('\\', "/");
        if thumbs.contains(&thumb) {
            heads.push(image);
            small.push(key(store, &thumb));
        } else {
            images.push(image);
        }
    }
    // A file outside them is never read: an empty stand-in in the copy
    // lets the local code find it outside and say so, as for a folder.
    for key in outside {
        copy.stand_in(&key)?;
    }
    copy.fetch(images, MAX_IMAGE).await?;
    // An image's first bytes before its thumbnail: the thumbnail is then
    // the newer file, which the sheet keeps.
    futures_util::stream::iter(heads)
        .map(|image| async move { copy.head_only(&image).await })
        .buffer_unordered(bucket::AT_ONCE)
        .try_collect::<Vec<bool>>()
        .await?;
    copy.fetch(small, MAX_SMALL).await?;
    Ok(thumbs)
}

/// `report URL`: the sheet made on a copy, index.html and the new
/// thumbnails uploaded under the prefix.
pub async fn report(store: Store) -> Result<Reported, Error> {
    let index = key(&store, INDEX_HTML);
    bucket::check_output(&bucket::root_of(&store)?, "", &index, &[], Writes::File)
        .await?
        .map_err(|e| Error::Report(ReportError::Refused(e)))?;
    let copy = Copy::new(&store)?;
    let had = readable(&copy, &store, Need::Report).await?;
    let dir = copy.dir_of(&store);
    let local = dir.clone();
    let mut done = interruptible(move || report::report(&local))
        .await
        .map_err(|e| copy.error(e.into()))?;
    // The page names nothing of the copy, unless its title fell back on
    // the folder's path.
    let page = dir.join(INDEX_HTML);
    let html = std::fs::read_to_string(&page).map_err(|e| Error::Io(disk::plain(&e)))?;
    std::fs::write(&page, copy.show(&html)).map_err(|e| Error::Io(disk::plain(&e)))?;
    let names: Vec<String> = files_under(&dir.join(THUMBS_DIR))
        .map_err(|e| Error::Io(disk::plain(&e)))?
        .into_iter()
        .map(|n| format!("{THUMBS_DIR}/{n}"))
        .filter(|n| !had.contains(n))
        .collect();
    // The thumbnails first: the page never names one not yet there.
    copy.publish(&store, &names).await?;
    copy.publish(&store, &[INDEX_HTML.to_string()]).await?;
    done.path = PathBuf::from(format!("{store}/{INDEX_HTML}"));
    done.unreadable = done
        .unreadable
        .into_iter()
        .map(|(f, why)| (f, copy.show(&why)))
        .collect();
    Ok(done)
}

/// `export SRC --out DST` with either side a URL. Returns what was
/// exported and how to show where it went.
pub async fn export(
    src: Place,
    dst: Place,
    format: Format,
    shard_size: u64,
) -> Result<(Exported, PathBuf), Error> {
    let mut copies: Vec<Copy> = Vec::new();
    let src_dir = match &src {
        Place::Local(p) => p.clone(),
        Place::Bucket(s) => {
            let copy = Copy::new(s)?;
            readable(&copy, s, Need::Export).await?;
            let dir = copy.dir_of(s);
            copies.push(copy);
            dir
        }
    };
    let (out, shown, upload) = match &dst {
        Place::Local(p) => (p.clone(), p.clone(), None),
        Place::Bucket(d) => {
            let inputs: Vec<&str> = match &src {
                Place::Bucket(s)
                    if s.bucket().bucket == d.bucket().bucket
                        && s.bucket().scheme == d.bucket().scheme =>
                {
                    vec![s.bucket().prefix.as_str()]
                }
                _ => Vec::new(),
            };
            let writes = match format {
                Format::Jsonl => Writes::File,
                Format::Webdataset => Writes::Folder,
            };
            let root = bucket::root_of(d)?;
            bucket::check_output(&root, "--out", &d.bucket().prefix, &inputs, writes)
                .await?
                .map_err(|e| Error::Export(ExportError::Refused(e)))?;
            if format == Format::Jsonl && d.bucket().prefix.is_empty() {
                return Err(Error::Bucket {
                    text: format!("--out {d}: jsonl writes one object: give its name, for example {d}/export.jsonl"),
                    code: exit::INVALID,
                });
            }
            // As a local folder is refused as a file: an object beside a
            // prefix of the same name is a "file" and a "folder" at once.
            if format == Format::Jsonl
                && !d.list(None).await.map_err(bucket::store_error)?.is_empty()
            {
                return Err(Error::Bucket {
                    text: format!("--out {d}: objects are stored under it, as in a folder: give the name of a file under it, for example {d}/export.jsonl"),
                    code: exit::INVALID,
                });
            }
            let copy = Copy::new(d)?;
            let out = copy.scratch("export");
            copies.push(copy);
            (out, PathBuf::from(d.to_string()), Some(d.clone()))
        }
    };
    let (dir, at) = (src_dir.clone(), out.clone());
    // The scratch output first (it is in a copy too), then the copies.
    let shown_err = |e: Error| {
        let text = e
            .to_string()
            .replace(&out.display().to_string(), &shown.display().to_string());
        let text = copies.iter().fold(text, |t, c| c.show(&t));
        Error::Bucket {
            text,
            code: e.code(),
        }
    };
    let mut done = interruptible(move || export::export(&dir, format, &at, shard_size))
        .await
        .map_err(|e| shown_err(e.into()))?;
    if let Some(d) = upload {
        match format {
            Format::Jsonl => {
                let (parent, name) = d
                    .bucket()
                    .prefix
                    .rsplit_once('/')
                    .unwrap_or(("", &d.bucket().prefix));
                let up = copies.last().expect("a copy of --out").at(parent)?;
                up.upload(&out, name).await.map_err(bucket::store_error)?;
                done.files = vec![shown.clone()];
            }
            Format::Webdataset => {
                let names = files_under(&out).map_err(|e| Error::Io(disk::plain(&e)))?;
                d.publish(&out, &names, bucket::AT_ONCE)
                    .await
                    .map_err(bucket::store_error)?;
                // The shards of an earlier, longer export there go.
                for old in d.list(None).await.map_err(bucket::store_error)? {
                    let stale = !old.name.contains('/')
                        && old.name.starts_with(export::SHARD_PREFIX)
                        && old.name.ends_with(".tar")
                        && !names.contains(&old.name);
                    if stale {
                        let path = d.path(&old.name).map_err(bucket::store_error)?;
                        object_store::ObjectStoreExt::delete(&**d.inner(), &path)
                            .await
                            .map_err(|e| Error::Bucket {
                                text: format!("cannot delete {d}/{}: {e}", old.name),
                                code: exit::ABORTED,
                            })?;
                    }
                }
                done.files = names
                    .iter()
                    .map(|n| PathBuf::from(format!("{d}/{n}")))
                    .collect();
            }
        }
    }
    done.skipped = done
        .skipped
        .into_iter()
        .map(|w| copies.iter().fold(w, |t, c| c.show(&t)))
        .collect();
    Ok((done, shown))
}

/// `merge URL... --out URL`: the shards' journals and results.csv copied,
/// merged as folders are, results.csv and summary.json uploaded. A prefix
/// given that holds no journal but `I-of-N` prefixes stands for them; one
/// of those without a journal is a shard that never ran (refused without
/// `partial`, as a missing one is).
pub async fn merge(shards: Vec<Store>, out: Store, partial: bool) -> Result<MergeSummary, Error> {
    let copy = Copy::new(&out)?;
    let mut found = Vec::new();
    for shard in shards {
        if bucket::has_journal(copy.bucket(), &shard.bucket().prefix).await? {
            found.push(shard);
            continue;
        }
        let under = bucket::shards_under(&shard).await?;
        if under.is_empty() {
            found.push(shard);
        }
        for prefix in under {
            found.push(copy.at(&prefix)?);
        }
    }
    let out_key = out.bucket().prefix.clone();
    if bucket::has_journal(copy.bucket(), &out_key).await? {
        return Err(Error::Merge(MergeError::OutIsRun(PathBuf::from(
            out.to_string(),
        ))));
    }
    let inputs: Vec<&str> = found.iter().map(|s| s.bucket().prefix.as_str()).collect();
    bucket::check_output(copy.bucket(), "--out", &out_key, &inputs, Writes::Merged)
        .await?
        .map_err(|e| Error::Merge(MergeError::Refused(e)))?;
    let mut dirs = Vec::new();
    for shard in &found {
        if copy.journal(shard).await? {
            copy.fetch(vec![key(shard, RESULTS_CSV)], MAX_RESULTS)
                .await?;
        }
        dirs.push(copy.dir_of(shard));
    }
    let out_dir = copy.dir_of(&out);
    let at = out_dir.clone();
    let mut summary = interruptible(move || merge::merge(&dirs, &at, partial))
        .await
        .map_err(|e| copy.error(e.into()))?;
    // summary.json names the shards as given: URLs, not the copy's paths.
    let path = out_dir.join(SUMMARY_JSON);
    let json = std::fs::read_to_string(&path).map_err(|e| Error::Io(disk::plain(&e)))?;
    std::fs::write(&path, copy.show(&json)).map_err(|e| Error::Io(disk::plain(&e)))?;
    // results.csv first: a summary.json is never newer than the rows it adds up.
    for name in [RESULTS_CSV, SUMMARY_JSON] {
        copy.publish(&out, &[name.to_string()]).await?;
    }
    summary.out_dir = out.to_string();
    summary.shards = summary.shards.iter().map(|s| copy.show(s)).collect();
    Ok(summary)
}
