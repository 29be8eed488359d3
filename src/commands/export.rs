//! `batchgen export DIR`: WebDataset shards or JSONL, for training code.

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
    let (done, shown) = match (
        bucket::place(&dir, "export DIR")?,
        bucket::place(&out, "export --out")?,
    ) {
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
    Ok(exit::OK)
}
