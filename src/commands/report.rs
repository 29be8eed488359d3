//! `batchgen report DIR`: the contact sheet.

use super::print_stdout;
use super::signals::interruptible;
use crate::cli::ReportArgs;
use crate::exit::{self, Error};
use crate::report;

/// `batchgen report DIR`.
pub async fn command(args: ReportArgs) -> Result<u8, Error> {
    let dir = super::local(&args.dir, "report DIR")?;
    let done = interruptible(move || report::report(&dir)).await?;
    print_stdout(&done.to_text());
    Ok(exit::OK)
}
