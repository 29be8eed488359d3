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
//! - [`output`]: file names, results.csv, summary.json, and what a journal
//!   record means for them (shared with `status`).
//! - [`disk`]: durable renames, atomic writes, bounded reads of user files.
//! - [`progress`]: the progress display; reads state only.

pub mod api;
pub mod cache;
pub mod cli;
pub mod disk;
pub mod exit;
pub mod export;
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

use std::collections::HashSet;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cli::{
    Cli, Command, ExportArgs, MergeArgs, PlanArgs, ReportArgs, RunArgs, SimArgs, StatusArgs,
};
use exit::Error;
use run::Signal;

/// Runs one command line; the exit code is decided in [`exit`].
pub async fn run(cli: Cli) -> ExitCode {
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Plan(args) => plan_command(&args),
        Command::Run(args) => run_command(args).await,
        Command::Status(args) => status_command(&args),
        Command::Sim(args) => sim_command(args).await,
        Command::Merge(args) => merge_command(&args),
        Command::Export(args) => export_command(&args),
        Command::Report(args) => report_command(&args),
        Command::Completions(args) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut cmd, "batchgen", &mut out);
            print_stdout(&String::from_utf8_lossy(&out));
            Ok(exit::OK)
        }
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
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
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

/// The budget in force: the lower of `--max-cost` and the manifest's `budget_usd`.
fn budget_limit(flag: Option<plan::Usd>, plan: &plan::Plan) -> Option<plan::Usd> {
    match (flag, plan.budget_usd) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Keeps only the shard's rows, if one is asked for.
fn shard(plan: &mut plan::Plan, spec: Option<cli::ShardSpec>) -> Result<(), Error> {
    if let Some(spec) = spec {
        plan.keep_shard(spec.resolve().map_err(Error::Shard)?);
    }
    Ok(())
}

fn plan_command(args: &PlanArgs) -> Result<u8, Error> {
    let mut plan = match load_plan(&args.manifest) {
        Err(Error::Invalid(invalid)) if args.json => {
            let json = serde_json::json!({ "errors": invalid.diagnostics });
            print_stdout(&format!("{json:#}\n"));
            return Err(Error::Invalid(invalid));
        }
        other => other?,
    };
    shard(&mut plan, args.shard)?;
    let max = budget_limit(args.max_cost, &plan);
    let cost = plan.totals().cost();
    if let Some(max) = max.filter(|max| cost > *max) {
        return Err(Error::OverBudget { cost, max });
    }
    let summary = plan::Summary::new(&plan, args.rows, max);
    if args.json {
        let json = serde_json::to_string_pretty(&summary).expect("a summary always serialises");
        print_stdout(&format!("{json}\n"));
    } else {
        print_stdout(&summary.to_text());
    }
    Ok(exit::OK)
}

/// Validates everything (manifest, key, URL, output folder, what this run
/// would newly spend against the budget), then runs.
async fn run_command(args: RunArgs) -> Result<u8, Error> {
    if args.dry_run {
        return plan_command(&PlanArgs {
            manifest: args.manifest.clone(),
            json: false,
            max_cost: args.max_cost,
            rows: 10,
            shard: args.shard,
        });
    }
    let mut plan = load_plan(&args.manifest)?;
    shard(&mut plan, args.shard)?;
    let max_cost = budget_limit(args.max_cost, &plan);
    // The gateway: its origin (where the key may go) names the folder's owner.
    let (key, gateway) = if args.simulate {
        let key = api::ApiKey::new("simulated").expect("a valid key");
        (key, run::SIMULATED.to_string())
    } else {
        let url = reqwest::Url::parse(&args.base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| Error::BaseUrl(args.base_url.clone()))?;
        let key = api::ApiKey::load(args.api_key_file.as_deref())?;
        (key, url.origin().ascii_serialization())
    };
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| output::default_dir(&plan, args.simulate));
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(Error::Io(format!(
            "--out {}: is a file, not a folder",
            out_dir.display()
        )));
    }
    let mut settings = run::Settings::new(out_dir.clone());
    settings.gateway = gateway;
    settings.concurrency = args.concurrency as usize;
    settings.rate_per_sec = args.rate;
    settings.max_cost = max_cost;
    settings.retry_failed = args.retry_failed;
    settings.poll_interval = args.poll_interval_ms.map(Duration::from_millis);
    settings.resubmit_lost = args.resubmit_lost;
    settings.verify = args.verify;
    settings.cache = args.cache.clone().or_else(|| plan.cache.clone());
    settings.progress = if args.quiet {
        progress::Mode::Quiet
    } else {
        progress::Mode::Auto
    };
    // Reading the folder (its journal, and the files of completed rows) is
    // blocking work: it runs off the async workers.
    let plan = Arc::new(plan);
    let opened = tokio::task::spawn_blocking(move || run::open(plan, settings))
        .await
        .map_err(|e| Error::Io(format!("cannot read the output folder: {e}")))??;
    if let Some(max) = max_cost.filter(|max| opened.to_spend() > *max) {
        return Err(Error::RunOverBudget {
            cost: opened.to_spend(),
            max,
            spent: opened.before().cost_usd,
        });
    }
    let (base_url, simulator) = if args.simulate {
        let cfg = sim::SimConfig {
            min_latency_ms: 500,
            max_latency_ms: 2500,
            ..sim::SimConfig::default()
        };
        let handle = sim::start(cfg, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| Error::Io(format!("cannot start the simulator: {e}")))?;
        if !args.quiet {
            eprintln!("batchgen: running against the built-in simulator (no key, no money)");
        }
        (handle.url(), Some(handle))
    } else {
        (args.base_url.clone(), None)
    };
    let mut client_cfg = api::ClientConfig::new(&base_url, key);
    client_cfg.submit_timeout = Duration::from_secs(args.submit_timeout);
    let client = api::Client::new(client_cfg).map_err(|e| Error::Io(e.to_string()))?;
    if !args.quiet {
        eprintln!("{}", opened.describe());
    }
    let report = opened.execute(client, signals()).await?;
    if let Some(sim) = simulator {
        sim.stop().await;
    }
    if let Some(stop) = &report.stop {
        eprintln!("batchgen: stopped early: {}", stop.describe());
    }
    let code = exit::for_run(&report);
    // --quiet: a run that completed every row says nothing.
    if !args.quiet || code != exit::OK {
        print_stdout(&report.summary.to_text());
    }
    if !args.no_report {
        contact_sheet(&out_dir, &report.summary, args.quiet).await;
    }
    Ok(code)
}

/// The contact sheet at a run's end: skipped above [`report::AUTO_MAX_IMAGES`];
/// a failure is a warning (the run's own outputs are written by then).
async fn contact_sheet(out_dir: &std::path::Path, summary: &output::Summary, quiet: bool) {
    let images = summary.totals.images;
    if images > report::AUTO_MAX_IMAGES {
        if !quiet {
            eprintln!(
                "batchgen: no contact sheet for {images} images (more than {}); `batchgen report {}` writes one",
                report::AUTO_MAX_IMAGES,
                out_dir.display()
            );
        }
        return;
    }
    let dir = out_dir.to_path_buf();
    match tokio::task::spawn_blocking(move || report::report(&dir)).await {
        Ok(Ok(done)) => {
            for (file, why) in &done.unreadable {
                eprintln!("warning: {file}: no thumbnail: {why}");
            }
            if !quiet {
                eprintln!("  contact sheet: {}", done.path.display());
            }
        }
        Ok(Err(e)) => eprintln!("warning: no contact sheet: {e}"),
        Err(e) => eprintln!("warning: no contact sheet: {e}"),
    }
}

/// Resolves on the first Ctrl-C, SIGTERM or SIGHUP; a second one exits at
/// once with that signal's code (the journal is synced line by line, so it
/// is intact). The handlers are installed before this returns.
fn signals() -> impl Future<Output = Signal> + Send + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel::<Signal>();
    let mut signals = Signals::install();
    tokio::spawn(async move {
        let Some(first) = signals.next().await else {
            return;
        };
        eprintln!(
            "batchgen: {}: no new requests; finishing those in flight (send it again to quit now)",
            first.name()
        );
        let _ = tx.send(first);
        if let Some(second) = signals.next().await {
            eprintln!(
                "batchgen: {}: quitting now; the journal is intact: rerun the same command to resume",
                second.name()
            );
            std::process::exit(i32::from(second.exit_code()));
        }
    });
    async move {
        match rx.await {
            Ok(signal) => signal,
            Err(_) => std::future::pending().await,
        }
    }
}

/// The signals that ask batchgen to stop, heard from the moment of `install`.
struct Signals {
    #[cfg(unix)]
    streams: [Option<tokio::signal::unix::Signal>; 3],
}

impl Signals {
    #[cfg(unix)]
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            streams: [
                SignalKind::interrupt(),
                SignalKind::terminate(),
                SignalKind::hangup(),
            ]
            .map(|kind| signal(kind).ok()),
        }
    }

    #[cfg(not(unix))]
    fn install() -> Signals {
        Signals {}
    }

    /// The next signal (`None` if none can be heard).
    #[cfg(unix)]
    async fn next(&mut self) -> Option<Signal> {
        async fn recv(
            stream: &mut Option<tokio::signal::unix::Signal>,
            which: Signal,
        ) -> Option<Signal> {
            match stream {
                Some(s) => s.recv().await.map(|()| which),
                None => std::future::pending().await,
            }
        }
        if self.streams.iter().all(Option::is_none) {
            return None;
        }
        let [int, term, hup] = &mut self.streams;
        tokio::select! {
            s = recv(int, Signal::Interrupt) => s,
            s = recv(term, Signal::Terminate) => s,
            s = recv(hup, Signal::Hangup) => s,
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> Option<Signal> {
        tokio::signal::ctrl_c()
            .await
            .ok()
            .map(|()| Signal::Interrupt)
    }
}

/// `batchgen status DIR`: what the journal knows, counted as `run` counts
/// it (the rows of the newest run's plan), without the manifest.
fn status_command(args: &StatusArgs) -> Result<u8, Error> {
    if !args.dir.join(journal::FILE_NAME).is_file() {
        return Err(Error::NoRun(args.dir.display().to_string()));
    }
    let replay = journal::read(&args.dir).map_err(run::RunError::from)?;
    let keys = output::read_plan_keys(&args.dir).map_err(|e| {
        Error::Io(format!(
            "{}: {}",
            args.dir.join(output::PLAN_KEYS).display(),
            disk::plain(&e)
        ))
    })?;
    let mut totals = output::Totals::default();
    let mut add = |rec: Option<&journal::Record>| {
        totals.add(&output::row_result(rec, plan::Usd::default(), None));
    };
    let earlier = match &keys {
        Some(keys) => {
            for key in keys {
                add(replay.records.get(key).map(|r| &**r));
            }
            let set: HashSet<plan::Key> = keys.iter().copied().collect();
            output::Earlier::of(&replay, |k| set.contains(&k))
        }
        // A folder from before plans recorded their keys: every row it knows.
        None => {
            let rows = replay.last_run_rows.unwrap_or(0);
            for rec in replay.records.values() {
                add(Some(rec));
            }
            for _ in (replay.records.len() as u64)..rows {
                add(None);
            }
            output::Earlier::default()
        }
    };
    let by = |s: output::Status| totals.count(s);
    if args.json {
        let json = serde_json::json!({
            "manifest": replay.last_run_manifest,
            "gateway": replay.gateway,
            "rows": totals.rows,
            "rows_by_status": totals.rows_by_status,
            "completed": by(output::Status::Completed),
            "failed": by(output::Status::Failed),
            "not_run": by(output::Status::NotRun),
            "accepted": by(output::Status::Accepted),
            // The names of older versions, kept for scripts.
            "in_flight": by(output::Status::Accepted),
            "not_started": by(output::Status::NotRun),
            "uncertain": totals.uncertain,
            "images": totals.images,
            "cost_usd": totals.cost_usd,
            "possibly_charged_usd": totals.possibly_charged_usd,
            "failures_by_code": totals.failures_by_code,
            "accepted_by_code": totals.accepted_by_code,
            "cached": totals.cached,
            "not_in_manifest": earlier,
        });
        print_stdout(&format!("{json:#}\n"));
    } else {
        let mut text = format!(
            "{}: from {} (gateway: {})\n  {}\n  {} images · {} spent",
            args.dir.display(),
            replay.last_run_manifest.as_deref().unwrap_or("?"),
            replay.gateway.as_deref().unwrap_or("?"),
            totals.rows_line(),
            totals.images,
            totals.cost_usd,
        );
        if totals.possibly_charged_usd > plan::Usd::default() {
            text.push_str(&format!(
                " · {} possibly charged for rows not completed",
                totals.possibly_charged_usd
            ));
        }
        text.push('\n');
        text.push_str(&totals.detail_lines());
        if let Some(line) = earlier.line() {
            text.push_str(&line);
        }
        print_stdout(&text);
    }
    Ok(exit::OK)
}

/// `batchgen merge DIR... --out DIR`.
fn merge_command(args: &MergeArgs) -> Result<u8, Error> {
    let summary = merge::merge(&args.dirs, &args.out)?;
    print_stdout(&summary.to_text());
    Ok(if summary.complete() {
        exit::OK
    } else {
        exit::ROWS_FAILED
    })
}

/// `batchgen export DIR --format F --out PATH`.
fn export_command(args: &ExportArgs) -> Result<u8, Error> {
    let done = export::export(&args.dir, args.format, &args.out, args.shard_size)?;
    print_stdout(&done.to_text(args.format));
    Ok(exit::OK)
}

/// `batchgen report DIR`.
fn report_command(args: &ReportArgs) -> Result<u8, Error> {
    let done = report::report(&args.dir)?;
    print_stdout(&done.to_text());
    Ok(exit::OK)
}

/// Serves the simulator on loopback until Ctrl-C or SIGTERM, then prints its ledger.
async fn sim_command(args: SimArgs) -> Result<u8, Error> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    let mut signals = Signals::install();
    let handle = sim::start(args.config, addr)
        .await
        .map_err(|e| Error::Io(format!("cannot listen on {addr}: {e}")))?;
    print_stdout(&format!(
        "batchgen sim: listening on {} (Ctrl-C to stop)\n",
        handle.url()
    ));
    let _ = signals.next().await;
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
