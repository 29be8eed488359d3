//! Parses the command line, builds the runtime and hands over to `batchgen::run`.
//!
//! One thread runs every row: the work is waiting on the network, and a
//! single-threaded runtime spends less CPU waking threads than a pool does.
//! Disk work goes to tokio's blocking pool and the journal's own writer.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = batchgen::cli::Cli::parse();
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(batchgen::run(cli)),
        Err(e) => {
            batchgen::say!("error: cannot start the async runtime: {e}");
            ExitCode::from(batchgen::exit::INVALID)
        }
    }
}
