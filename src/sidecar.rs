//! Provenance beside every image: `images/ID_N.json` next to
//! `images/ID_N.png`, so an image copied out of the folder still says what
//! made it (the request as sent, its request id, when, at what cost).
//!
//! A sidecar is derived data, like results.csv: it is written from the
//! journal's `done` record after that line is durable, and a run that finds
//! a completed row without its sidecars (a crash between the two, a folder
//! from an older version) writes them again without sending anything.
//! `batchgen export` reads them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::disk::write_replace;
use crate::journal::{Record, State};
use crate::output::rfc3339;
use crate::plan::{Key, Request, Usd};

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

/// Writes each sidecar atomically beside its image. Not synced: a sidecar
/// is rebuilt from the journal, and a crash leaves one missing or empty,
/// which the next run finds ([`present`]) and writes again.
pub fn write(out_dir: &Path, sidecars: &[Sidecar]) -> std::io::Result<()> {
    for s in sidecars {
        let mut json = serde_json::to_vec_pretty(s).expect("a sidecar serialises");
        json.push(b'\n');
        write_replace(&path_for(&out_dir.join(&s.file)), &json)?;
    }
    Ok(())
}

/// Whether every image of a completed row has a sidecar that is not empty
/// (a crash right after a rename can leave an empty one).
pub fn present(out_dir: &Path, files: &[String]) -> bool {
    files.iter().all(|f| {
        std::fs::metadata(path_for(&out_dir.join(f))).is_ok_and(|m| m.is_file() && m.len() > 0)
    })
}

/// Reads the sidecar of `image` (a path relative to `out_dir`).
pub fn read(out_dir: &Path, image: &str) -> Result<Sidecar, String> {
    let path = path_for(&out_dir.join(image));
    let bytes = crate::disk::read_regular(&path, 1 << 20).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{}: not a sidecar ({e}); remove it, and a rerun of `batchgen run` writes it again",
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
}
