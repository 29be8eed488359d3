//! `batchgen report DIR`: the contact sheet.

use super::print_stdout;
use crate::cli::ReportArgs;
use crate::exit::{self, Error};
use crate::report;

/// `batchgen report DIR`.
pub fn command(args: &ReportArgs) -> Result<u8, Error> {
    let done = report::report(&args.dir)?;
    print_stdout(&done.to_text());
    Ok(exit::OK)
}
