//! The names of the journal's objects under a prefix.
//!
//! Why this exists apart: replay, compaction and the writer must agree on
//! them to the byte, and they are part of what a bucket holds for users
//! (a contract: add, never rename). Numbers are zero-padded to 8 digits so
//! that the objects list in order; past 99,999,999 they simply grow wider
//! (the parser reads any width, and order is numeric, not by name).

use object_store::path::Path;

pub(super) const JOURNAL_DIR: &str = "journal";
pub(super) const LEASE: &str = "lease.json";
const SEGMENT: &str = "seg-";
const CHECKPOINT: &str = "checkpoint-";
const EXT: &str = ".jsonl";

/// What an object under `journal/` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Segment(u64),
    Checkpoint(u64),
}

pub(super) fn dir(prefix: &Path) -> Path {
    prefix.clone().join(JOURNAL_DIR)
}

pub(super) fn segment(dir: &Path, n: u64) -> Path {
    dir.clone().join(format!("{SEGMENT}{n:08}{EXT}"))
}

pub(super) fn checkpoint(dir: &Path, n: u64) -> Path {
    dir.clone().join(format!("{CHECKPOINT}{n:08}{EXT}"))
}

/// What a file name under `journal/` names (`None`: not one of ours).
pub(super) fn kind(name: &str) -> Option<Kind> {
    let number = |rest: &str| {
        let digits = rest.strip_suffix(EXT)?;
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    };
    if let Some(rest) = name.strip_prefix(SEGMENT) {
        number(rest).map(Kind::Segment)
    } else if let Some(rest) = name.strip_prefix(CHECKPOINT) {
        number(rest).map(Kind::Checkpoint)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_padded_and_read_back() {
        let d = dir(&Path::from("nightly"));
        assert_eq!(
            segment(&d, 7).as_ref(),
            "nightly/journal/seg-00000007.jsonl"
        );
        assert_eq!(
            checkpoint(&d, 12).as_ref(),
            "nightly/journal/checkpoint-00000012.jsonl"
        );
        assert_eq!(kind("seg-00000007.jsonl"), Some(Kind::Segment(7)));
        assert_eq!(
            kind("seg-123456789.jsonl"),
            Some(Kind::Segment(123_456_789))
        );
        assert_eq!(
            kind("checkpoint-00000012.jsonl"),
            Some(Kind::Checkpoint(12))
        );
        for other in [
            "seg-.jsonl",
            "seg-1x.jsonl",
            "seg-1.json",
            "notes.txt",
            "seg-+1.jsonl",
        ] {
            assert_eq!(kind(other), None, "{other}");
        }
    }
}
