//! `batchgen report DIR`: the contact sheet.

use super::bucket::{self, Place};
use super::print_stdout;
use super::signals::interruptible;
use crate::cli::ReportArgs;
use crate::exit::{self, Error};
use crate::report;

/// `batchgen report DIR` (or a bucket URL: see `on_bucket`).
pub async fn command(args: ReportArgs) -> Result<u8, Error> {
    let done = match bucket::place(&args.dir, "report DIR")? {
        Place::Local(dir) => interruptible(move || report::report(&dir)).await?,
        Place::Bucket(store) => super::on_bucket::report(store).await?,
    };
    print_stdout(&done.to_text());
    Ok(exit::OK)
}
