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
//!   │  output::write    images/, results.csv, summary.json
//!   ▼
//! DIR/
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
//! - [`run`]: concurrency, rate, polling, retries, budget, cancellation.
//! - [`journal`]: the append-only state file and its replay on resume.
//! - [`output`]: file names, atomic writes, results.csv, summary.json.
//! - [`progress`]: the progress display; reads state only.

pub mod api;
pub mod cli;
pub mod exit;
pub mod journal;
pub mod manifest;
pub mod output;
pub mod plan;
pub mod progress;
pub mod run;
pub mod sim;

use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use cli::{Cli, Command, PlanArgs, RunArgs, SimArgs, StatusArgs};
use exit::Error;

/// Runs one command line; the exit code is decided in [`exit`].
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Plan(args) => plan_command(&args),
        Command::Run(args) => run_command(args).await,
        Command::Status(args) => status_command(&args),
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

/// The budget in force (the lower of `--max-cost` and the manifest's
/// `budget_usd`); a plan estimated above it is refused before anything is sent.
fn budget(flag: Option<plan::Usd>, plan: &plan::Plan) -> Result<Option<plan::Usd>, Error> {
    let max = match (flag, plan.budget_usd) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let cost = plan.totals().cost();
    match max {
        Some(max) if cost > max => Err(Error::OverBudget { cost, max }),
        _ => Ok(max),
    }
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
    let max = budget(args.max_cost, &plan)?;
    let summary = plan::Summary::new(&plan, args.rows, max);
    if args.json {
        let json = serde_json::to_string_pretty(&summary).expect("a summary always serialises");
        print_stdout(&format!("{json}\n"));
    } else {
        print_stdout(&summary.to_text());
    }
    Ok(exit::OK)
}

/// Validates everything (manifest, budget, key, URL, output folder), then runs.
async fn run_command(args: RunArgs) -> Result<u8, Error> {
    let plan = load_plan(&args.manifest)?;
    let max_cost = budget(args.max_cost, &plan)?;
    let (base_url, key, simulator) = if args.simulate {
        let cfg = sim::SimConfig {
            min_latency_ms: 500,
            max_latency_ms: 2500,
            ..sim::SimConfig::default()
        };
        let handle = sim::start(cfg, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| Error::Io(format!("cannot start the simulator: {e}")))?;
        let key = api::ApiKey::new("simulated").expect("a valid key");
        (handle.url(), key, Some(handle))
    } else {
        let url = reqwest::Url::parse(&args.base_url)
            .map_err(|_| Error::BaseUrl(args.base_url.clone()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::BaseUrl(args.base_url.clone()));
        }
        (
            args.base_url.clone(),
            api::ApiKey::load(args.api_key_file.as_deref())?,
            None,
        )
    };
    let client = api::Client::new(api::ClientConfig::new(&base_url, key))
        .map_err(|e| Error::Io(e.to_string()))?;
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| output::default_dir(&plan));
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(Error::Io(format!(
            "--out {} is a file, not a folder",
            out_dir.display()
        )));
    }
    let mut settings = run::Settings::new(out_dir);
    settings.concurrency = args.concurrency as usize;
    settings.rate_per_sec = args.rate;
    settings.max_cost = max_cost;
    settings.retry_failed = args.retry_failed;
    settings.poll_interval = Duration::from_millis(args.poll_interval_ms);
    settings.progress = if args.quiet {
        progress::Mode::Quiet
    } else {
        progress::Mode::Auto
    };
    if simulator.is_some() {
        eprintln!("batchgen: running against the built-in simulator (no key, no money)");
    }
    let t = plan.totals();
    eprintln!(
        "batchgen: {} rows, {} images, {} estimated → {}",
        t.requests(),
        t.images(),
        t.cost(),
        settings.out_dir.display()
    );
    let report = run::execute(Arc::new(plan), client, settings, interrupts()).await?;
    if let Some(sim) = simulator {
        sim.stop().await;
    }
    if let Some(stop) = &report.stop {
        eprintln!("batchgen: stopped early: {}", stop.describe());
    }
    print_stdout(&report.summary.to_text());
    Ok(exit::for_run(&report))
}

/// Resolves on the first Ctrl-C; a second one exits at once (the journal is
/// synced line by line, so it is intact).
fn interrupts() -> impl std::future::Future<Output = ()> + Send + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("batchgen: interrupted: no new requests; finishing those in flight (Ctrl-C again to quit now)");
        let _ = tx.send(());
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "batchgen: quitting now; the journal is intact: rerun the same command to resume"
            );
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    });
    async move {
        let _ = rx.await;
    }
}

/// `batchgen status DIR`: what the journal knows, without the manifest.
fn status_command(args: &StatusArgs) -> Result<u8, Error> {
    if !args.dir.join(journal::FILE_NAME).is_file() {
        return Err(Error::NoRun(args.dir.display().to_string()));
    }
    let replay = journal::replay(&args.dir).map_err(run::RunError::from)?;
    let t = replay.tally();
    let total = replay.last_run_rows.unwrap_or(replay.records.len() as u64);
    let known = t.pending + t.uncertain + t.in_flight + t.completed + t.failed;
    let not_started = total.saturating_sub(known) + t.pending;
    let spent = plan::Usd::from_micros(t.cost_micros);
    let possibly = plan::Usd::from_micros(t.possibly_charged_micros);
    if args.json {
        let json = serde_json::json!({
            "manifest": replay.last_run_manifest,
            "rows": total,
            "completed": t.completed,
            "failed": t.failed,
            "in_flight": t.in_flight,
            "uncertain": t.uncertain,
            "not_started": not_started,
            "cost_usd": spent,
            "possibly_charged_usd": possibly,
            "failures_by_code": t.failures_by_code,
        });
        print_stdout(&format!("{json:#}\n"));
    } else {
        let mut text = format!(
            "{}: {} rows from {}\n  {} completed, {} failed, {} in flight (accepted, not yet collected), {} uncertain, {} not started\n  {} spent",
            args.dir.display(),
            total,
            replay.last_run_manifest.as_deref().unwrap_or("?"),
            t.completed,
            t.failed,
            t.in_flight,
            t.uncertain,
            not_started,
            spent,
        );
        if possibly > plan::Usd::default() {
            text.push_str(&format!(", {possibly} possibly charged for failed rows"));
        }
        text.push('\n');
        for (code, n) in &t.failures_by_code {
            text.push_str(&format!("  failed: {n} × {code}\n"));
        }
        print_stdout(&text);
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
