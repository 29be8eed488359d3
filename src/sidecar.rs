//! Provenance beside every image: `images/ID_N.json` next to
//! `images/ID_N.png`, so an image copied out of the folder still says what
//! made it (the request as sent, its request id, when, at what cost).
//!
//! A sidecar is derived data, like results.csv: it is written from the
//! journal's `done` record (and the row's current id and request, from the
//! plan) after that line is durable. A run that finds a completed row whose
//! sidecar is not exactly what the journal says (missing after a crash
//! between the two, empty, edited, or naming the job's old id after a
//! rename) writes it again, without sending anything ([`restore`]).
//! `batchgen export` reads them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::disk;
use crate::journal::{Record, State};
use crate::plan::Request;
use crate::vocab::{rfc3339, Key, Usd};

/// One image's provenance. Add fields, never rename them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// The row's id (as in results.csv) and key.
    pub id: String,
    pub key: String,
    /// The image, relative to the output folder.
    pub file: String,
    /// Which image of the request (0 for the first).
    pub index: u32,
    /// `text_to_image` or `image_to_image`, and the path it was submitted to.
    pub kind: String,
    pub endpoint: String,
    /// The request id the gateway gave (the original one's for a cached image).
    pub request_id: Option<String>,
    pub prompt: String,
    /// The seed sent for this image's request.
    pub seed: Option<u64>,
    /// Every other parameter as sent (local condition images as written).
    pub params: serde_json::Map<String, serde_json::Value>,
    pub sha256: String,
    pub submitted_at: Option<String>,
    pub finished_at: Option<String>,
    /// This image's share of what its request cost (0 when taken from the cache).
    pub cost_usd: f64,
    /// Taken from the cache (`--cache`), not paid for by this folder.
    pub cached: bool,
}

/// The sidecar's path for an image: the same stem, `.json`.
pub fn path_for(image: &Path) -> PathBuf {
    image.with_extension("json")
}

/// The sidecars of a completed row, one per image (none unless `rec` is done).
pub fn for_row(id: &str, key: Key, req: &Request, rec: &Record) -> Vec<Sidecar> {
    let State::Done {
        files,
        sha256,
        cost_micros,
        cached,
        ..
    } = &rec.state
    else {
        return Vec::new();
    };
    let mut params = match serde_json::to_value(req) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    params.remove("prompt");
    params.remove("seed");
    let kind = req.kind();
    let share = Usd::from_micros(cost_micros / (files.len().max(1) as u64));
    files
        .iter()
        .zip(sha256)
        .enumerate()
        .map(|(n, (file, sha))| Sidecar {
            id: id.to_string(),
            key: key.to_string(),
            file: file.clone(),
            index: n as u32,
            kind: kind.as_str().to_string(),
            endpoint: crate::api::submit_path(kind).to_string(),
            request_id: rec.request_id().map(str::to_string),
            prompt: req.prompt.to_string(),
            seed: req.seed,
            params: params.clone(),
            sha256: sha.clone(),
            submitted_at: rec.submitted_at_ms.map(rfc3339),
            finished_at: rec.finished_at_ms.map(rfc3339),
            cost_usd: share.dollars(),
            cached: *cached,
        })
        .collect()
}

/// A sidecar's bytes, as its file holds them.
fn to_bytes(s: &Sidecar) -> Vec<u8> {
    let mut json = serde_json::to_vec_pretty(s).expect("a sidecar serialises");
    json.push(b'\n');
    json
}

/// Names what a stamp digests besides the row. Change it when what a
/// sidecar holds, or how it is written, changes: older sidecars are then
/// compared and rewritten once.
const FORMAT: &str = "batchgen sidecar 1";

/// The stamp of each of a completed row's sidecars: the sub-second part of
/// the modification time it is written with, a digest of everything it
/// holds. The request it describes is the row's key's (a key is the digest
/// of the request), so the stamp is made of the row's current id, its key
/// and its `done` record, without building the sidecar.
fn stamps(id: &str, key: Key, rec: &Record) -> Vec<u32> {
    let State::Done {
        files,
        sha256,
        cost_micros,
        cached,
        ..
    } = &rec.state
    else {
        return Vec::new();
    };
    let mut h = Sha256::new();
    let mut put = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    put(FORMAT.as_bytes());
    put(id.as_bytes());
    put(&key.0.to_le_bytes());
    put(rec.request_id().unwrap_or_default().as_bytes());
    put(&[u8::from(rec.request_id().is_some()), u8::from(*cached)]);
    for at in [rec.submitted_at_ms, rec.finished_at_ms, Some(*cost_micros)] {
        put(&at.map_or([0xff; 9], |t| {
            let mut b = [0; 9];
            b[1..].copy_from_slice(&t.to_le_bytes());
            b
        }));
    }
    for (file, sha) in files.iter().zip(sha256) {
        put(file.as_bytes());
        put(sha.as_bytes());
    }
    (0..files.len())
        .map(|n| {
            let mut one = h.clone();
            one.update((n as u64).to_le_bytes());
            let d = one.finalize();
            (u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) % 1_000_000_000) as u32
        })
        .collect()
}

/// Whether `meta` is of a sidecar written with `stamp`.
fn stamped(meta: &std::fs::Metadata, stamp: u32) -> bool {
    meta.is_file() && meta.len() > 0 && disk::mtime_ns(meta) % 1_000_000_000 == u64::from(stamp)
}

/// Now, to the second, with `stamp` as its nanoseconds.
fn dated(stamp: u32) -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::new(secs, stamp)
}

/// Writes the sidecars of a completed row beside its images (row `id`,
/// `key`, sending `req`, with its `done` record `rec`); returns their paths.
pub fn write(
    out_dir: &Path,
    id: &str,
    key: Key,
    req: &Request,
    rec: &Record,
) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (s, stamp) in for_row(id, key, req, rec).iter().zip(stamps(id, key, rec)) {
        let path = path_for(&out_dir.join(&s.file));
        disk::write_replace(&path, &to_bytes(s), dated(stamp))?;
        written.push(path);
    }
    Ok(written)
}

/// Writes the sidecars of a completed row that `stored` says are not in
/// the run's bucket (by name, `images/ID_N.json`), into the working folder
/// `out_dir`, and adds their names to `written`: a run on a bucket restores
/// what the prefix lacks, without reading what it holds.
pub fn write_missing(
    out_dir: &Path,
    id: &str,
    key: Key,
    req: &Request,
    rec: &Record,
    stored: impl Fn(&str) -> bool,
    written: &mut Vec<String>,
) -> std::io::Result<()> {
    for (s, stamp) in for_row(id, key, req, rec).iter().zip(stamps(id, key, rec)) {
        let name = path_for(Path::new(&s.file)).to_string_lossy().into_owned();
        if stored(&name) {
            continue;
        }
        let path = out_dir.join(&name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        disk::write_replace(&path, &to_bytes(s), dated(stamp))?;
        written.push(name);
    }
    Ok(())
}

/// Makes a completed row's sidecars what its journal record says (as
/// [`write()`] takes it), sending nothing; returns how many it wrote.
///
/// A sidecar is checked as an image is: one `stat`, by the stamp it was
/// written with, which changes with anything it holds (the row's id
/// included, so a renamed job's sidecars are rewritten). Only one whose
/// stamp differs (missing, empty, edited, copied without its times, of an
/// older id or version), or every one with `verify`, is read and compared;
/// one that differs is written again, one that holds the same bytes keeps
/// them and takes its stamp.
pub fn restore(
    out_dir: &Path,
    id: &str,
    key: Key,
    req: &Request,
    rec: &Record,
    verify: bool,
) -> std::io::Result<usize> {
    let State::Done { files, .. } = &rec.state else {
        return Ok(0);
    };
    let stamps = stamps(id, key, rec);
    let paths: Vec<PathBuf> = files.iter().map(|f| path_for(&out_dir.join(f))).collect();
    let fresh = |(path, stamp): (&PathBuf, &u32)| {
        std::fs::metadata(path).is_ok_and(|m| stamped(&m, *stamp))
    };
    if !verify && paths.iter().zip(&stamps).all(fresh) {
        return Ok(0);
    }
    let mut written = 0;
    for ((s, path), stamp) in for_row(id, key, req, rec).iter().zip(&paths).zip(stamps) {
        let want = to_bytes(s);
        match holding(path, &want) {
            Some((file, meta)) => {
                if !stamped(&meta, stamp) {
                    // Best effort: without it, the next run compares again.
                    let _ = file.set_modified(dated(stamp));
                }
            }
            None => {
                disk::write_replace(path, &want, dated(stamp))?;
                written += 1;
            }
        }
    }
    Ok(written)
}

/// The regular file at `path`, open, if it holds exactly `want`.
fn holding(path: &Path, want: &[u8]) -> Option<(std::fs::File, std::fs::Metadata)> {
    let mut file = std::fs::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() != want.len() as u64 {
        return None;
    }
    let mut got = vec![0; want.len()];
    file.read_exact(&mut got).ok()?;
    (got == want).then_some((file, meta))
}

/// Reads the sidecar of `image` (a path relative to `out_dir`).
pub fn read(out_dir: &Path, image: &str) -> Result<Sidecar, String> {
    let path = path_for(&out_dir.join(image));
    let bytes = disk::read_regular(&path, 1 << 20).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{}: not a sidecar ({e}); a rerun of `batchgen run` on its manifest writes it again from the journal",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_image_with_the_request_as_sent() {
        let mut req = Request::new("a red fox");
        req.seed = Some(7);
        req.guidance_scale = Some(4.5);
        req.num_images = Some(2);
        let rec = Record {
            state: State::Done {
                files: vec!["images/fox_0.png".into(), "images/fox_1.png".into()],
                sha256: vec!["aa".into(), "bb".into()],
                stamps: vec![],
                cost_micros: 30_000,
                cached: false,
            },
            submitted_at_ms: Some(1_700_000_000_000),
            finished_at_ms: Some(1_700_000_003_000),
            ..Record::default()
        };
        let s = for_row("fox", Key(1), &req, &rec);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].index, 1);
        assert_eq!(s[1].sha256, "bb");
        assert_eq!(s[0].seed, Some(7));
        assert_eq!(s[0].params["guidance_scale"], 4.5);
        assert_eq!(s[0].params["num_images"], 2);
        assert!(!s[0].params.contains_key("prompt") && !s[0].params.contains_key("seed"));
        assert!((s[0].cost_usd - 0.015).abs() < 1e-9);
        assert_eq!(s[0].endpoint, crate::api::wire::TEXT_TO_IMAGE_SUBMIT);
        assert_eq!(
            path_for(Path::new("images/fox_0.png")),
            Path::new("images/fox_0.json")
        );
        assert!(for_row("fox", Key(1), &req, &Record::default()).is_empty());
    }

    fn done(sha: &str) -> Record {
        Record {
            state: State::Done {
                files: vec!["images/fox_0.png".into(), "images/fox_1.png".into()],
                sha256: vec![sha.into(), "bb".into()],
                stamps: vec![],
                cost_micros: 30_000,
                cached: false,
            },
            finished_at_ms: Some(1_700_000_003_000),
            ..Record::default()
        }
    }

    #[test]
    fn stamps_change_with_what_a_sidecar_holds() {
        let base = stamps("fox", Key(1), &done("aa"));
        assert_eq!(base.len(), 2);
        assert_ne!(base[0], base[1], "each image has its own");
        assert!(base.iter().all(|s| *s < 1_000_000_000));
        assert_eq!(base, stamps("fox", Key(1), &done("aa")), "stable");
        assert_ne!(base, stamps("wolf", Key(1), &done("aa")), "the id");
        assert_ne!(base, stamps("fox", Key(2), &done("aa")), "the request");
        assert_ne!(base, stamps("fox", Key(1), &done("ab")), "the record");
        assert!(stamps("fox", Key(1), &Record::default()).is_empty());
    }

    #[test]
    fn restore_writes_what_differs_and_verify_compares_every_one() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::create_dir(out.join("images")).unwrap();
        let (req, rec) = (Request::new("a red fox"), done("aa"));
        let restore = |verify| restore(out, "fox", Key(1), &req, &rec, verify).unwrap();
        let side = out.join("images/fox_1.json");
        assert_eq!(restore(false), 2, "missing");
        let good = std::fs::read(&side).unwrap();
        assert_eq!(restore(false), 0, "as written");
        assert_eq!(restore(true), 0, "the same bytes");

        // An edit that keeps the time it was written with is seen only by --verify.
        let when = std::fs::metadata(&side).unwrap().modified().unwrap();
        let edited = String::from_utf8(good.clone())
            .unwrap()
            .replace("fox", "cat");
        std::fs::write(&side, edited).unwrap();
        let file = std::fs::File::options().write(true).open(&side).unwrap();
        file.set_modified(when).unwrap();
        assert_eq!(restore(false), 0);
        assert_eq!(restore(true), 1);
        assert_eq!(std::fs::read(&side).unwrap(), good);

        // A plain edit, or a copy without its times, is seen by the time.
        std::fs::write(&side, b"{}").unwrap();
        assert_eq!(restore(false), 1);
        assert_eq!(std::fs::read(&side).unwrap(), good);
        let file = std::fs::File::options().write(true).open(&side).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_millis(1234))
            .unwrap();
        assert_eq!(restore(false), 0, "same bytes: stamped, not written");
        let meta = std::fs::metadata(&side).unwrap();
        assert!(stamped(&meta, stamps("fox", Key(1), &rec)[1]));
    }
}
