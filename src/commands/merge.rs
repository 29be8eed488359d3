//! `batchgen merge DIR... --out DIR`: the shards of a run joined.

use super::bucket::{self, Place};
use super::print_stdout;
use super::signals::interruptible;
use crate::cli::MergeArgs;
use crate::exit::{self, Error};
use crate::merge;

/// `batchgen merge DIR... --out DIR [--partial]`: all folders, or all
/// prefixes of one bucket (a folder or prefix holding no journal but
/// `I-of-N` ones stands for them: see `merge::shards_under`, `on_bucket`).
pub async fn command(args: MergeArgs) -> Result<u8, Error> {
    let dirs = args
        .dirs
        .iter()
        .map(|d| bucket::place(d, "merge DIR"))
        .collect::<Result<Vec<_>, _>>()?;
    let out = bucket::place(&args.out, "merge --out")?;
    let partial = args.partial;
    let summary = match (dirs, out) {
        (dirs, Place::Local(out)) if dirs.iter().all(|d| matches!(d, Place::Local(_))) => {
            let dirs: Vec<_> = dirs
                .into_iter()
                .filter_map(|d| match d {
                    Place::Local(d) => Some(d),
                    Place::Bucket(_) => None,
                })
                .flat_map(|d| {
                    let under = merge::shards_under(&d);
                    if under.is_empty() {
                        vec![d]
                    } else {
                        under
                    }
                })
                .collect();
            interruptible(move || merge::merge(&dirs, &out, partial)).await?
        }
        (dirs, Place::Bucket(out)) => {
            let shards: Vec<_> = dirs
                .into_iter()
                .map(|d| match d {
                    Place::Bucket(s)
                        if s.bucket().scheme == out.bucket().scheme
                            && s.bucket().bucket == out.bucket().bucket =>
                    {
                        Ok(s)
                    }
                    Place::Bucket(s) => Err(mixed(&s.to_string(), &out.to_string())),
                    Place::Local(d) => Err(mixed(&d.display().to_string(), &out.to_string())),
                })
                .collect::<Result<_, _>>()?;
            super::on_bucket::merge(shards, out, partial).await?
        }
        (dirs, Place::Local(out)) => {
            let url = dirs.iter().find_map(|d| match d {
                Place::Bucket(s) => Some(s.to_string()),
                Place::Local(_) => None,
            });
            return Err(mixed(&url.unwrap_or_default(), &out.display().to_string()));
        }
    };
    print_stdout(&summary.to_text());
    Ok(if summary.complete() {
        exit::OK
    } else {
        exit::ROWS_FAILED
    })
}

/// Shards and `--out` in different places: the merged results.csv names
/// the shards' files relative to `--out`, which only works within one
/// filesystem or one bucket.
fn mixed(shard: &str, out: &str) -> Error {
    Error::Bucket {
        text: format!("merge {shard} --out {out}: the shards and --out must all be local folders, or all prefixes of one bucket (the merged results.csv names the shards' files relative to --out); nothing was written"),
        code: exit::INVALID,
    }
}
