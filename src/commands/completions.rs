//! `batchgen completions SHELL`: a completion script from the clap definition.

use super::print_stdout;
use crate::cli::{Cli, CompletionsArgs};
use crate::exit::{self, Error};

/// Prints the script for `args.shell` on stdout.
pub fn command(args: &CompletionsArgs) -> Result<u8, Error> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "batchgen", &mut out);
    print_stdout(&String::from_utf8_lossy(&out));
    Ok(exit::OK)
}
