//! `batchgen run MANIFEST`: validate everything, then run, then write the
//! contact sheet; whatever the end, tell the watchers ([`super::watch`]).

use std::sync::Arc;
use std::time::Duration;

use super::plan::{budget_limit, shard};
use super::signals::signals;
use super::watch::{Ended, Watch};
use super::{load_plan, print_stdout};
use crate::cli::{PlanArgs, RunArgs};
use crate::exit::{self, Error};
use crate::gateway::Gateway;
use crate::store::Location;
use crate::{api, output, progress, report, run, sim};

/// Validates everything (manifest, key, URL, output folder, what this run
/// would newly spend against the budget), then runs; then, however it
/// ended, writes the last metrics, the `end` event and the notification.
pub async fn command(args: RunArgs) -> Result<u8, Error> {
    let (watch, checked) = Watch::new(&args);
    if args.dry_run {
        checked?;
        return run_command(args, &watch).await.map(|e| e.code);
    }
    let manifest = args.manifest.clone();
    let ended = match checked {
        Ok(()) => run_command(args, &watch).await,
        Err(e) => Err(e),
    };
    watch.finish(&manifest, &ended).await;
    ended.map(|e| e.code)
}

async fn run_command(mut args: RunArgs, watch: &Watch) -> Result<Ended, Error> {
    // Where it writes, before anything else: an unknown scheme must never
    // become a local folder named after it.
    let bucket = match args.out.as_deref().map(|p| super::location(p, "--out")) {
        Some(Ok(Location::Bucket(bucket))) => {
            args.out = None;
            Some(bucket)
        }
        Some(Ok(Location::Local(path))) => {
            args.out = Some(path);
            None
        }
        Some(Err(e)) => return Err(e),
        None => None,
    };
    let cache = args
        .cache
        .as_deref()
        .map(|p| super::location(p, "--cache"))
        .transpose()?;
    if args.dry_run {
        let code = super::plan::command(&PlanArgs {
            manifest: args.manifest.clone(),
            json: false,
            max_cost: args.max_cost,
            rows: 10,
            shard: args.shard,
        })?;
        return Ok(Ended { code, report: None });
    }
    let mut plan = load_plan(&args.manifest)?;
    shard(&mut plan, args.shard)?;
    let max_cost = budget_limit(args.max_cost, &plan);
    // The gateway: its base URL, normalised, names the folder's owner and
    // its part of the cache.
    let (key, gateway) = if args.simulate {
        let key = api::ApiKey::new("simulated").expect("a valid key");
        (key, Gateway::simulated())
    } else {
        let key = api::ApiKey::load(args.api_key_file.as_deref())?;
        // Never echoed if it holds the key: the journal, results and
        // messages would carry it.
        if api::holds_key(&key, &args.base_url) {
            return Err(Error::BaseUrlHoldsKey);
        }
        let url = reqwest::Url::parse(&args.base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| Error::BaseUrl(args.base_url.clone()))?;
        // As parsed, too: the parser drops tabs and line breaks inside it.
        if api::holds_key(&key, url.as_str()) {
            return Err(Error::BaseUrlHoldsKey);
        }
        // The endpoints' paths are added to the base URL's: a query or a
        // fragment would swallow them (and a token in it would be logged).
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::BaseUrlQuery);
        }
        (key, Gateway::of_url(&url))
    };
    // A bucket: its lease and journal are taken (nothing is sent to the
    // gateway yet), and the run works in a local working folder; whatever
    // happens next, the lease is released at the end.
    let remote = match &bucket {
        Some(bucket) => {
            let store = bucket
                .open()
                .map_err(|e| Error::Run(run::RunError::Bucket(e)))?;
            let lease_for = Duration::from_secs(args.lease_secs);
            Some(Arc::new(run::Remote::open(store, lease_for).await?))
        }
        None => None,
    };
    let to = Output {
        remote: remote.clone(),
        cache,
    };
    let ran = run_on(args, plan, key, gateway, max_cost, to, watch).await;
    if let Some(remote) = remote {
        remote.close().await;
    }
    ran
}

/// Where a run writes, besides `--out` as a folder: a bucket taken for it,
/// and `--cache` as given.
struct Output {
    remote: Option<Arc<run::Remote>>,
    cache: Option<Location>,
}

/// The run itself, once the output (a folder, or a bucket's `remote`) is known.
async fn run_on(
    args: RunArgs,
    plan: crate::plan::Plan,
    key: api::ApiKey,
    gateway: Gateway,
    max_cost: Option<crate::plan::Usd>,
    Output { remote, cache }: Output,
    watch: &Watch,
) -> Result<Ended, Error> {
    // --progress json: stdout is the events', stderr as with --quiet.
    let quiet = args.quiet || watch.json;
    let out_dir = match &remote {
        Some(remote) => remote.work_dir().to_path_buf(),
        None => args
            .out
            .clone()
            .unwrap_or_else(|| output::default_dir(&plan, args.simulate)),
    };
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(Error::Io(format!(
            "--out {}: is a file, not a folder",
            out_dir.display()
        )));
    }
    let mut settings = run::Settings::new(out_dir.clone());
    settings.place = remote.as_ref().map(|r| r.store().to_string());
    settings.gateway = gateway;
    settings.concurrency = args.concurrency as usize;
    settings.rate_per_sec = args.rate;
    settings.max_cost = max_cost;
    settings.retry_failed = args.retry_failed;
    settings.poll_interval = args.poll_interval_ms.map(Duration::from_millis);
    settings.resubmit_lost = args.resubmit_lost;
    settings.verify = args.verify;
    settings.unreachable_after = Duration::from_secs(args.unreachable_after);
    settings.results_every = Duration::from_secs(args.results_every);
    settings.cache = cache.or_else(|| plan.cache.clone());
    // The sheet's thumbnails are made as images land, when the run's end
    // will write a sheet.
    settings.thumbnails = !args.no_report && plan.totals().images() <= report::AUTO_MAX_IMAGES;
    settings.progress = watch.mode(args.quiet);
    settings.metrics = watch.metrics.clone();
    // Reading the folder (its journal, and the files of completed rows) is
    // blocking work: it runs off the async workers.
    let plan = Arc::new(plan);
    let on_bucket = remote.clone();
    let opened = tokio::task::spawn_blocking(move || run::open_with(plan, settings, on_bucket))
        .await
        .map_err(|e| Error::Io(format!("cannot read the output folder: {e}")))??;
    if let Some(max) = max_cost.filter(|max| opened.to_spend() > *max) {
        return Err(Error::RunOverBudget {
            cost: opened.to_spend(),
            max,
            spent: opened.before().cost_usd,
        });
    }
    if watch.json {
        progress::json::emit("start", &opened.outlook());
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
        if !quiet {
            crate::say!("batchgen: running against the built-in simulator (no key, no money)");
        }
        (handle.url(), Some(handle))
    } else {
        (args.base_url.clone(), None)
    };
    let mut client_cfg = api::ClientConfig::new(&base_url, key);
    client_cfg.submit_timeout = Duration::from_secs(args.submit_timeout);
    let client = api::Client::new(client_cfg).map_err(|e| Error::Io(e.to_string()))?;
    if !quiet {
        crate::say!("{}", opened.describe());
    }
    let report = opened.execute(client, signals()).await?;
    if let Some(sim) = simulator {
        sim.stop().await;
    }
    if let Some(stop) = &report.stop {
        crate::say!("batchgen: stopped early: {}", stop.describe());
    }
    let code = exit::for_run(&report);
    // --quiet: a run that completed every row says nothing; with
    // --progress json the `end` event carries the summary instead.
    if !watch.json && (!args.quiet || code != exit::OK) {
        print_stdout(&report.summary.to_text());
    }
    if !args.no_report {
        contact_sheet(&out_dir, remote.as_deref(), &report.summary, quiet).await;
    }
    Ok(Ended {
        code,
        report: Some(report),
    })
}

/// The contact sheet at a run's end: skipped above [`report::AUTO_MAX_IMAGES`];
/// a failure is a warning (the run's own outputs are written by then).
async fn contact_sheet(
    out_dir: &std::path::Path,
    remote: Option<&run::Remote>,
    summary: &output::RunSummary,
    quiet: bool,
) {
    let images = summary.totals.images;
    if images > report::AUTO_MAX_IMAGES {
        if !quiet {
            crate::say!(
                "batchgen: no contact sheet for {images} images (more than {}); `batchgen report {}` writes one",
                report::AUTO_MAX_IMAGES,
                summary.out_dir
            );
        }
        return;
    }
    // On a bucket: what earlier runs left there (images, thumbnails) comes
    // to the working folder first, and the sheet goes back after.
    if let Some(remote) = remote {
        if let Err(e) = remote.fetch_for_sheet().await {
            crate::say!("warning: no contact sheet: {e}");
            return;
        }
    }
    let dir = out_dir.to_path_buf();
    let made = tokio::task::spawn_blocking(move || report::report(&dir))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match made {
        Ok(done) => {
            tracing::debug!(
                target: "batchgen::report",
                "contact sheet: {} thumbnails made at the end",
                done.thumbnails_made
            );
            crate::console::write(crate::console::Stream::Stderr, done.warnings().as_bytes());
            if let Some(remote) = remote {
                match remote.publish_sheet().await {
                    Ok(url) if !quiet => crate::say!("  contact sheet: {url}"),
                    Ok(_) => {}
                    Err(e) => crate::say!("warning: the contact sheet was not uploaded: {e}"),
                }
            } else if !quiet {
                crate::say!("  contact sheet: {}", done.path.display());
            }
        }
        Err(e) => crate::say!("warning: no contact sheet: {e}"),
    }
}
