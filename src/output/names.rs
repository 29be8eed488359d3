//! File names in the output folder: the folder's own files, the folder a
//! manifest gets by default, and the stems a row's images (and their
//! sidecars) are named by.
//!
//! Why this exists apart: a file name is where a paid image lands and where
//! users' scripts look for it, so it must never leave the folder, never be
//! taken by two rows (not even on a disk blind to case), and never change.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::journal::{Replay, State};
use crate::plan::Plan;
use crate::vocab::Key;

pub const IMAGES_DIR: &str = "images";
pub const RESULTS_CSV: &str = "results.csv";
pub const SUMMARY_JSON: &str = "summary.json";
/// The keys of the newest run's plan, one per line in plan order, so that
/// `status` counts the rows `run` counts without the manifest.
pub const PLAN_KEYS: &str = ".plan-keys";

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
