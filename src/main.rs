use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    batchgen::run(batchgen::cli::Cli::parse())
}
