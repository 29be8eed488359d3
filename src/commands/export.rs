//! `batchgen export DIR`: WebDataset shards or JSONL, for training code.
//!
//! It warns when a run holds DIR (its lock, or a bucket's live lease): the
//! rows that run has not finished are not in the export. An export of no
//! image at all writes its (empty) output, warns and exits 1: in a nightly
//! pipeline, nothing to export means something upstream did not work.

use super::bucket::{self, Place};
use super::print_stdout;
use super::signals::interruptible;
use crate::cli::ExportArgs;
use crate::exit::{self, Error};
use crate::export;

/// `batchgen export DIR --format F --out PATH` (either may be a bucket
/// URL: see `on_bucket`).
pub async fn command(args: ExportArgs) -> Result<u8, Error> {
    let ExportArgs {
        dir,
        format,
        out,
        shard_size,
    } = args;
    let src = bucket::place(&dir, "export DIR")?;
    let dst = bucket::place(&out, "export --out")?;
    let live = match &src {
        Place::Local(dir) => crate::run::holder(dir),
        Place::Bucket(store) => super::on_bucket::live_lease(store).await?,
    };
    if let Some(live) = &live {
        crate::say!(
            "warning: a run holds {} now ({}): rows it has not finished are not in this export; export again when it ends",
            dir.display(),
            live.describe()
        );
    }
    let (done, shown) = match (src, dst) {
        (Place::Local(dir), Place::Local(out)) => {
            let shown = out.clone();
            let done =
                interruptible(move || export::export(&dir, format, &out, shard_size)).await?;
            (done, shown)
        }
        (src, dst) => super::on_bucket::export(src, dst, format, shard_size).await?,
    };
    crate::console::write(crate::console::Stream::Stderr, done.warnings().as_bytes());
    print_stdout(&done.to_text(format, &shown));
    if done.images == 0 {
        crate::say!(
            "warning: {} holds no completed image to export (its rows failed, or were not run yet): exit 1",
            dir.display()
        );
        return Ok(exit::ROWS_FAILED);
    }
    Ok(exit::OK)
}
