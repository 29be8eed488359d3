//! The command line, parsed by clap and turned into validated settings before
//! any work starts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::Usd;

#[derive(Debug, Parser)]
#[command(
    name = "batchgen",
    version,
    about = "Turn a manifest of prompts and seeds into a finished image data set through the GLM Image gateway.",
    after_help = "Exit codes: 0 all completed · 1 finished with failed rows · 2 invalid input or usage, nothing sent · 3 aborted · 130 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Expand and validate a manifest, and show what a run would send and cost. Sends nothing.
    Plan(PlanArgs),
    /// Serve the built-in gateway simulator on loopback until Ctrl-C (no key, no money, real files).
    Sim(SimArgs),
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    #[command(flatten)]
    pub config: crate::sim::SimConfig,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The manifest: a .yaml/.yml or .csv file.
    pub manifest: PathBuf,
    /// Print the plan as JSON (on stdout), for scripts.
    #[arg(long)]
    pub json: bool,
    /// Refuse (exit 2) a plan whose estimated cost exceeds this many US dollars.
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    pub max_cost: Option<Usd>,
    /// How many rows to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub rows: usize,
}

fn parse_usd(s: &str) -> Result<Usd, String> {
    s.trim()
        .trim_start_matches('$')
        .parse::<f64>()
        .ok()
        .and_then(Usd::from_dollars)
        .ok_or_else(|| format!("`{s}` is not an amount of dollars (for example 12.50)"))
}
