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
//! ```
//!
//! - [`cli`]: the command line, parsed into settings before work starts.
//! - [`exit`]: the one place where outcomes become exit codes.
//! - [`manifest`]: YAML/CSV reading with source locations.
//! - [`plan`]: expansion, validation, row keys and ids, cost estimate.
//! - [`api`]: the gateway client: wire format, submit, status, download,
//!   error classification, backoff. [`api::wire`] is shared with `sim`.
//! - [`sim`]: the built-in gateway simulator (`batchgen sim`, and in-process
//!   for tests and `run --simulate`).

pub mod api;
pub mod cli;
pub mod exit;
pub mod manifest;
pub mod plan;
pub mod sim;

use std::process::ExitCode;

use cli::{Cli, Command, PlanArgs, SimArgs};
use exit::Error;

/// Runs one command line; the exit code is decided in [`exit`].
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Plan(args) => plan_command(&args),
        Command::Sim(args) => sim_command(args).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => exit::report(&err),
    }
}

/// Loads and expands a manifest; prints warnings to stderr.
pub fn load_plan(path: &std::path::Path) -> Result<plan::Plan, Error> {
    let manifest = manifest::load(path)?;
    let plan = plan::expand(&manifest)?;
    for w in &plan.warnings {
        eprintln!("{w}");
    }
    Ok(plan)
}

fn plan_command(args: &PlanArgs) -> Result<u8, Error> {
    let plan = match load_plan(&args.manifest) {
        Err(Error::Invalid(invalid)) if args.json => {
            let json = serde_json::json!({ "errors": invalid.diagnostics });
            print_stdout(&format!("{json:#}\n"));
            return Err(Error::Invalid(invalid));
        }
        other => other?,
    };
    let max = match (args.max_cost, plan.budget_usd) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let summary = plan::Summary::new(&plan, args.rows, max);
    if let Some(max) = max {
        if summary.cost_usd > max {
            return Err(Error::OverBudget {
                cost: summary.cost_usd,
                max,
            });
        }
    }
    if args.json {
        let json = serde_json::to_string_pretty(&summary).expect("a summary always serialises");
        print_stdout(&format!("{json}\n"));
    } else {
        print_stdout(&summary.to_text());
    }
    Ok(exit::OK)
}

/// Serves the simulator on loopback until Ctrl-C, then prints its ledger.
async fn sim_command(args: SimArgs) -> Result<u8, Error> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    let handle = sim::start(args.config, addr)
        .await
        .map_err(|e| Error::Io(format!("cannot listen on {addr}: {e}")))?;
    print_stdout(&format!(
        "batchgen sim: listening on {} (Ctrl-C to stop)\n",
        handle.url()
    ));
    let _ = tokio::signal::ctrl_c().await;
    let ledger = handle.ledger();
    handle.stop().await;
    let summary = serde_json::json!({
        "accepted": ledger.accepted,
        "charged_usd": ledger.charged_usd_micros as f64 / 1e6,
        "charged_images": ledger.charged_images,
        "completed": ledger.completed,
        "failed": ledger.failed,
        "errored": ledger.errored,
        "rejected": ledger.rejected,
        "faults": ledger.faults,
        "bytes_served": ledger.bytes_served,
    });
    print_stdout(&format!("batchgen sim: stopped; ledger {summary}\n"));
    Ok(exit::OK)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
