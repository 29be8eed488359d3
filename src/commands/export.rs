//! `batchgen export DIR`: WebDataset shards or JSONL, for training code.

use super::print_stdout;
use crate::cli::ExportArgs;
use crate::exit::{self, Error};
use crate::export;

/// `batchgen export DIR --format F --out PATH`.
pub fn command(args: &ExportArgs) -> Result<u8, Error> {
    let done = export::export(&args.dir, args.format, &args.out, args.shard_size)?;
    print_stdout(&done.to_text(args.format, &args.out));
    Ok(exit::OK)
}
