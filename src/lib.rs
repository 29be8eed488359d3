//! batchgen turns a manifest of prompts and seeds into a finished image data
//! set through the GLM Image gateway.
//!
//! # Layout
//!
//! Data flows one way, and each stage lives in the module named after it:
//!
//! ```text
//! manifest.yaml / .csv
//!   │  manifest::load   parse; keep the file and line/row of every value
//!   ▼
//! Manifest              raw, as written
//!   │  plan::expand     defaults → sweep → job values → seeds; validate all; key and price rows
//!   ▼
//! Plan                  rows, each with a stable key, a readable id and a request
//!   │  run::execute     scheduler + per-row lifecycle, journal first
//!   ▼
//! journal.jsonl         every row's request id and outcome, synced as it happens
//!   │  output::write    images/ (with sidecars), results.csv, summary.json
//!   ▼
//! DIR/
//!   │  report / export  index.html and thumbs/; WebDataset shards, JSONL
//!   ▼
//! what people look at, and what training reads
//! ```
//!
//! The house, floor by floor; a module imports only from floors below it
//! (`tests/layout.rs` checks that no two modules import each other):
//!
//! ```text
//! commands, cli, exit           the edge: arguments → settings → work → one exit code
//! run, progress, cache          open/resume, scheduler, row/ by stage, limiter, poll, Shutdown
//! report, export, merge         what people and training read; confine, temps guard their writes
//! output, sidecar               results.csv, summary.json, provenance, read through journal::Records
//! journal │ api, sim, gateway   format, replay, writer │ the gateway client and its simulator
//! plan, manifest                what will be sent: expanded, validated, keyed, priced
//! disk, console, store          durable files, bounded reads; every printed line; output URLs
//! vocab                         Key, Shard, Usd, Kind, Ticket, Code: imports nothing
//! ```
//!
//! - [`vocab`]: the ground floor, importing nothing from the crate: row
//!   keys, shards, money, kinds, tickets, and results.csv's codes.
//! - [`cli`]: the command line, parsed into settings before work starts.
//! - [`commands`]: one module per subcommand; this file only dispatches.
//! - [`exit`]: the one place where outcomes become exit codes.
//! - [`manifest`]: YAML/CSV reading with source locations.
//! - [`plan`]: expansion, validation, row keys and ids, cost estimate.
//! - [`api`]: the gateway client: wire format, submit, status, download,
//!   error classification, backoff. [`api::wire`] is shared with `sim`.
//! - [`sim`]: the built-in gateway simulator (`batchgen sim`, and in-process
//!   for tests and `run --simulate`).
//! - [`gateway`]: which gateway a run talks to, by its normalised base URL.
//! - [`run`](mod@run): concurrency, rate, polling, retries, budget, cancellation
//!   (every row task holds a `Shutdown`).
//! - [`journal`]: the append-only state file: its format (the compatibility
//!   contract), its replay on resume, and the group-commit writer.
//! - [`output`]: file names, results.csv, summary.json, and what a journal
//!   record means for them (shared with `status`).
//! - [`sidecar`]: each image's provenance, `images/ID_N.json`.
//! - [`report`]: the contact sheet, `index.html`, from results.csv.
//! - [`export`]: WebDataset shards and JSONL for training code.
//! - [`confine`]: where `export`, `merge` and `report` may write (never on a
//!   run's own files) and which files they may read (only the folder's).
//! - [`temps`]: their temporary files, removed on a signal, swept when stale.
//! - [`disk`]: durable renames, atomic writes, bounded reads of user files,
//!   plain words for I/O errors.
//! - [`progress`]: the progress display, `--progress json`'s events and
//!   `--metrics-file`; reads state only.
//! - [`console`]: every line printed to stdout and stderr; a write that
//!   fails (a closed pipe) is dropped and noted, never a panic.
//! - [`store`]: output locations as URLs (a local path, or `s3://`, `gs://`,
//!   `az://` and a prefix), and object_store's client for a bucket.

// Printing goes through `console`: `println!`/`eprintln!` panic on a closed pipe.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod api;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod confine;
pub mod console;
pub mod disk;
pub mod exit;
pub mod export;
pub mod gateway;
pub mod journal;
pub mod manifest;
pub mod merge;
pub mod output;
pub mod plan;
pub mod progress;
pub mod report;
pub mod run;
pub mod sidecar;
pub mod sim;
pub mod store;
pub mod temps;
pub mod vocab;

use std::process::ExitCode;

use cli::{Cli, Command};
pub use commands::load_plan;

/// Runs one command line; the exit code is decided in [`exit`].
pub async fn run(cli: Cli) -> ExitCode {
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Plan(args) => commands::plan::command(&args),
        Command::Run(args) => commands::run::command(args).await,
        Command::Status(args) => commands::status::command(&args).await,
        Command::Sim(args) => commands::sim::command(args).await,
        Command::Merge(args) => commands::merge::command(args).await,
        Command::Export(args) => commands::export::command(args).await,
        Command::Report(args) => commands::report::command(args).await,
        Command::Completions(args) => commands::completions::command(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => exit::report(&err),
    }
}

/// Logs to stderr through `tracing`: what RUST_LOG asks for if it is set,
/// else batchgen's own debug (`-v`) or trace (`-vv`) events, else nothing.
fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ => match verbose {
            0 => return,
            1 => EnvFilter::new("batchgen=debug"),
            _ => EnvFilter::new("batchgen=trace"),
        },
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| progress::LogWriter)
        // A line that cannot be written is dropped by LogWriter; tracing's
        // own report of it would be an `eprintln!`, which panics.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
