//! The command line, parsed by clap and turned into validated settings before
//! any work starts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::Usd;

/// What `batchgen --version` prints after the name: the crate's version and
/// the commit it was built from (`0.1.0 (abc1234)`; `build.rs` says how).
pub const VERSION: &str = env!("BATCHGEN_VERSION");

#[derive(Debug, Parser)]
#[command(
    name = "batchgen",
    version = VERSION,
    about = "Turn a manifest of prompts and seeds into a finished image data set through the GLM Image gateway.",
    after_help = "Exit codes: 0 all completed · 1 finished with rows not completed · 2 invalid input or usage, nothing sent · 3 aborted (key rejected, no funds, budget, gateway unreachable, local disk failure) · 130 interrupted (Ctrl-C) · 143 terminated (SIGTERM) · 129 hung up (SIGHUP)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Show each HTTP exchange (method, path, status, time; the key never): -v, or -vv for
    /// more. RUST_LOG (for example RUST_LOG=batchgen=debug) overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Expand and validate a manifest, and show what a run would send and cost. Sends nothing.
    Plan(PlanArgs),
    /// Run a manifest: submit every row, follow it to its end, download the images, write results.
    /// Rerunning the same command resumes without paying twice.
    Run(RunArgs),
    /// Summarise a run (finished, going on, or merged) from its output folder; --check exits 1
    /// unless every row is completed.
    Status(StatusArgs),
    /// Serve the built-in gateway simulator on loopback until Ctrl-C (no key, no money, real files).
    Sim(SimArgs),
    /// Join the folders of a sharded run (`run --shard`) into one results.csv (in manifest order)
    /// and one summary.json.
    Merge(MergeArgs),
    /// Write an output folder's images and their metadata for training code: WebDataset tar
    /// shards, or one JSON line per image.
    Export(ExportArgs),
    /// Write the contact sheet of an output folder, DIR/index.html: every image as a thumbnail,
    /// sweeps as grids, failed rows in place (a run writes it at its end too).
    Report(ReportArgs),
    /// Print a shell completion script: `batchgen completions bash > /etc/bash_completion.d/batchgen`.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run's output folder (or a merged one).
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run's output folder (or a merged one).
    pub dir: PathBuf,
    /// What to write.
    #[arg(long, value_enum)]
    pub format: crate::export::Format,
    /// webdataset: the folder the shards go in (shard-000000.tar, …); jsonl: the file.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// webdataset: the most bytes a shard holds (k, M, G decimal; KiB, MiB, GiB binary).
    /// A sample larger than this gets a shard of its own.
    #[arg(long, value_name = "SIZE", default_value = "1GB", value_parser = crate::export::parse_size)]
    pub shard_size: u64,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shard folders, or their parent folder (it stands for every `I-of-N` folder in it);
    /// or bucket prefixes likewise.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where the merged results.csv and summary.json go (file paths in it resolve from there).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Merge the shards that are there even if some of the set are missing or never ran (exit 1);
    /// without it such a merge is refused (exit 2) and nothing is written.
    #[arg(long)]
    pub partial: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The manifest: a .yaml/.yml or .csv file.
    pub manifest: PathBuf,
    /// Output folder (default: out/NAME, or out/NAME-sim with --simulate; NAME from the manifest's `name` or file name),
    /// or a bucket prefix: s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX
    /// (credentials and endpoint from the environment, as each cloud's tools take them).
    #[arg(long, value_name = "DIR|URL")]
    pub out: Option<PathBuf>,
    /// With --out on a bucket: how long the prefix's lease keeps other runs out if this one is
    /// killed (it is renewed every third of it while the run lives).
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub lease_secs: u64,
    /// Most requests in flight (submitted and not yet finished).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Most submissions per second, a ceiling (default: none; the rate is found from the gateway,
    /// slowing down when it answers 429).
    #[arg(long, value_name = "PER_SEC", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Refuse a run that would newly spend more than this many US dollars, and never let this run's spending exceed it.
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    pub max_cost: Option<Usd>,
    /// The gateway's base URL.
    #[arg(long, value_name = "URL", default_value = crate::api::DEFAULT_BASE_URL, conflicts_with = "simulate")]
    pub base_url: String,
    /// Run against the built-in simulator, started in-process: no key, no money, real files.
    #[arg(long)]
    pub simulate: bool,
    /// Also try rows with a final verdict (FAILED, 4xx) and submits that may have been accepted (that may pay twice).
    #[arg(long)]
    pub retry_failed: bool,
    /// Print nothing on success (the totals are in summary.json); warnings, errors and the
    /// totals of a run that did not complete every row still print.
    #[arg(long, short)]
    pub quiet: bool,
    /// How the run shows its progress: auto (a bar on a terminal, a line every few seconds
    /// otherwise) or json (one JSON object a line on stdout: start, progress at most once a
    /// second, warnings, end with the summary; stderr as with --quiet). See docs/watching.md.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub progress: ProgressArg,
    /// Write the run's counters to this file in the Prometheus text format (node_exporter's
    /// textfile collector), atomically, at the start, every 15 s and at the end.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// At the end of the run (success, failure or stop) POST summary.json to this http(s) URL:
    /// 10 s a try, 3 tries, redirects not followed, the API key never sent. A failed notification
    /// is reported and does not change the exit code.
    #[arg(long, value_name = "URL")]
    pub notify: Option<String>,
    /// Do what `batchgen plan` does (expand, validate, price, check the budget) and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Read the API key from this file instead of PIXAZO_API_KEY.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Poll on a fixed schedule: the first poll and every next one this many milliseconds apart.
    /// Default: a schedule learned from the gateway's latencies, polls of a request at least 2 s apart.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub poll_interval_ms: Option<u64>,
    /// Pay again for rows whose result the gateway lost after charging for it (RESULT_LOST).
    #[arg(long)]
    pub resubmit_lost: bool,
    /// Check every completed row's files by their SHA-256 (default: by the size and time they
    /// were written with); a damaged file is fetched again. Every sidecar is compared too.
    #[arg(long)]
    pub verify: bool,
    /// A store of fulfilled requests shared by runs and manifests (default: the manifest's
    /// `cache:`). A row whose exact request (endpoint, every parameter, the seed, local images'
    /// content) was fulfilled before takes its images from it at no cost; every paid row is
    /// stored in it. One folder may serve many runs at once
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Run one slice of the plan: I/N (I from 0 to N-1), or auto/N to take I from
    /// JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs) or SLURM_ARRAY_TASK_ID (Slurm arrays).
    /// Rows are split by key: the same rows land in the same shard however the manifest is
    /// reordered or grown. Default folder: out/NAME/shards/I-of-N; `batchgen merge` joins them.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<ShardSpec>,
    /// The longest a submit may take, reply included; one without an answer by then may have been
    /// accepted and is not sent again. Long by default: a sync_mode submit answers with its images.
    #[arg(long, value_name = "SECS", default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub submit_timeout: u64,
    /// Do not write the contact sheet (index.html) at the end of the run. It is skipped anyway
    /// above 5,000 images; `batchgen report DIR` writes it at any size.
    #[arg(long)]
    pub no_report: bool,
    /// How long every connection to the gateway may fail (refused, unknown host) before the run
    /// stops with GATEWAY_UNREACHABLE. Hidden: a knob for tests and odd networks.
    #[arg(long, value_name = "SECS", default_value_t = 30, hide = true, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub unreachable_after: u64,
    /// How often results.csv is rewritten while the run works, so that a killed run leaves a
    /// recent one. Hidden: a knob for tests.
    #[arg(long, value_name = "SECS", default_value_t = 30, hide = true, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub results_every: u64,
}

/// `run --progress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressArg {
    /// A bar on a terminal, a plain line every few seconds otherwise.
    Auto,
    /// NDJSON events on stdout (docs/watching.md).
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A run's output folder.
    pub dir: PathBuf,
    /// Print the counts as JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 unless every row of the newest plan is completed and no run holds the folder
    /// (plain `status` exits 0): for a scheduler or a script to gate on.
    #[arg(long)]
    pub check: bool,
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
    /// Show one slice of the plan (as `run --shard`).
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<ShardSpec>,
}

/// `--shard`: a slice given, or one to take from the cluster's environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardSpec {
    Given(crate::plan::Shard),
    /// `auto/N`: the index from `JOB_COMPLETION_INDEX` or `SLURM_ARRAY_TASK_ID`.
    Auto(u32),
}

/// The variables `auto/N` reads the shard index from, in order.
pub const SHARD_INDEX_VARS: &[&str] = &["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"];

impl ShardSpec {
    /// The slice to run, reading the environment for `auto/N`.
    pub fn resolve(self) -> Result<crate::plan::Shard, String> {
        let count = match self {
            ShardSpec::Given(s) => return Ok(s),
            ShardSpec::Auto(n) => n,
        };
        let Some((var, value)) = SHARD_INDEX_VARS
            .iter()
            .find_map(|v| std::env::var(v).ok().map(|x| (*v, x)))
        else {
            return Err(format!(
                "--shard auto/{count} takes its index from {}; neither is set",
                SHARD_INDEX_VARS.join(" or ")
            ));
        };
        match value.trim().parse::<u32>() {
            Ok(index) if index < count => Ok(crate::plan::Shard { index, count }),
            _ => Err(format!(
                "{var} is {value:?}; --shard auto/{count} takes an index from 0 to {}",
                count - 1
            )),
        }
    }
}

fn parse_shard(s: &str) -> Result<ShardSpec, String> {
    let bad = || format!("`{s}` is not a shard: give I/N (I from 0 to N-1) or auto/N");
    let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = n.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(bad)?;
    if i.trim() == "auto" {
        return Ok(ShardSpec::Auto(count));
    }
    let index: u32 = i
        .trim()
        .parse()
        .ok()
        .filter(|i| *i < count)
        .ok_or_else(bad)?;
    Ok(ShardSpec::Given(crate::plan::Shard { index, count }))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1000.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate: give submissions per second, above 0 and at most 1000"
        )),
    }
}

fn parse_usd(s: &str) -> Result<Usd, String> {
    s.trim()
        .trim_start_matches('$')
        .parse::<f64>()
        .ok()
        .and_then(Usd::from_dollars)
        .ok_or_else(|| format!("`{s}` is not an amount of dollars (for example 12.50)"))
}
