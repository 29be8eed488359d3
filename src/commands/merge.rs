//! `batchgen merge DIR... --out DIR`: the shards of a run joined.

use super::print_stdout;
use super::signals::interruptible;
use crate::cli::MergeArgs;
use crate::exit::{self, Error};
use crate::merge;

/// `batchgen merge DIR... --out DIR`.
pub async fn command(args: MergeArgs) -> Result<u8, Error> {
    let dirs = args
        .dirs
        .iter()
        .map(|d| super::local(d, "merge DIR"))
        .collect::<Result<Vec<_>, _>>()?;
    let out = super::local(&args.out, "merge --out")?;
    let summary = interruptible(move || merge::merge(&dirs, &out)).await?;
    print_stdout(&summary.to_text());
    Ok(if summary.complete() {
        exit::OK
    } else {
        exit::ROWS_FAILED
    })
}
