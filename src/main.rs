//! Parses the command line, builds the runtime and hands over to `batchgen::run`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = batchgen::cli::Cli::parse();
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(batchgen::run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(batchgen::exit::INVALID)
        }
    }
}
