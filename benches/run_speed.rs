//! `cargo bench --bench run_speed`: batchgen against `batchgen sim` running
//! as a separate process, workload by workload, beside the same run on a
//! fixed 2 s polling schedule and (when Python's aiohttp is installed) the
//! peer script a user would write, `../shared/bench/peer_aiohttp.py`. On
//! the 1,000-row workload it also runs batchgen with its default contact
//! sheet (every other run passes `--no-report`), a lean client (the peer's
//! logic in Rust, nothing durable: see `lean_client`) and then the file
//! work of a durable run alone (`file_work`), the two floors to read
//! batchgen's CPU against.
//!
//! For each it prints: wall time, its ratio to the bound (a perfect client
//! holding each of C slots for exactly the simulator's latency of each
//! request, list-scheduled), status calls per row, 429s (and their share of
//! submits), CPU seconds per 1,000 rows, peak RSS, and the most requests
//! the simulator had running at once (by its own clock: a client that hands
//! a slot on before it has seen its request finish must still keep this
//! within C). A fresh simulator and a fresh output folder serve every run,
//! so each one has to learn the latency from scratch. The folders are
//! deleted only when the bench ends, so that no run pays the kernel's cost
//! of creating files just after thousands were deleted.
//!
//! Every workload runs against two gateway simulators in turn: `batchgen
//! sim`, and `benches/independent_sim.py`, written from the vendor's
//! documentation alone (Python's standard library; skipped without
//! `python3`), so that a client tuned to its own simulator's quirks shows.
//!
//! # The limiter table
//!
//! Workloads 3 and 5 to 9 put a limiter in front of the gateway (latency
//! 1 s, C = 60, 300 rows; 600 for the 60 s window), the shapes of
//! `batchgen sim --limit-shape` and `independent_sim.py` (one design, two
//! implementations), and real nginx:
//!
//! - (a) 3: sliding window, 10 submits in any 1 s, 429 with Retry-After;
//! - (b) 5: token bucket, 10/s, burst 5, 429, no Retry-After;
//! - (c) 6: nginx-like leaky bucket, 10/s, burst 5 nodelay, 429, nginx's
//!   HTML page, no Retry-After;
//! - (d) 7: the same answering 503 (nginx's default `limit_req_status`);
//! - (e) 8: sliding window of 300 submits per 60 s, 429 with Retry-After to
//!   the window's edge (Azure API Management's `rate-limit` policy);
//! - (f) 9: real nginx (`limit_req_zone … rate=10r/s; limit_req … burst=5
//!   nodelay;`, default status 503 and its HTML page) on loopback in front
//!   of each simulator, submits only (see `common/nginx.rs`); skipped when
//!   `nginx` is not installed.
//!
//! Its columns: wall time; the ratio of the bound to it; the share of
//! submits the limiter refused (by the simulator's ledger, or nginx's
//! access log); rows failed (rows with no image in the output folder;
//! a client that did not exit 0 says its exit code after the line);
//! status calls per row; CPU seconds per 1,000 rows; peak RSS.
//!
//! The bound is when a perfect client, submitting each row the moment the
//! limiter would accept it, holds its last image: the R-th acceptance plus
//! the latency L (or the list-schedule bound above, if that is later). With
//! R rows:
//!
//! - window of N per W s (accepts N at once, then N more each time the
//!   window slides): floor((R − 1) / N) · W + L;
//! - token bucket of r/s with burst b, starting full (b at once, then one
//!   every 1/r s): max(R − b, 0) / r + L;
//! - nginx's leaky bucket of r/s with burst b nodelay (the first request,
//!   then b more at once, then one every 1/r s): max(R − b − 1, 0) / r + L.
//!
//! For 300 rows at 10/s and L = 1 s that is 30 s, 30.5 s and 30.4 s; for
//! 600 rows under 300 per 60 s, 61 s.
//!
//! Only the flags that differ from the shared design's defaults reach the
//! simulator, so (a) (`--rate-limit 10`) runs on a `batchgen sim` that
//! predates `--limit-shape`; on such a sim the other rows print "skipped:
//! this batchgen sim lacks --limit-shape".
//!
//! # Choosing what runs
//!
//! - `BATCHGEN_BENCH_ONLY=1,3` runs only those workloads (numbered as printed).
//! - `BATCHGEN_BENCH_LIMITERS=all` (or letters: `b,d,f`) runs the limiter
//!   table's rows (with any `BATCHGEN_BENCH_ONLY` workloads besides).
//! - `BATCHGEN_BENCH_SIM=batchgen` (or `independent`) runs against one
//!   simulator only.
//! - `BATCHGEN_BENCH_PEER=PATH` names the peer script (`none` skips it).
//!
//! Linux only (it reads `/proc`). It takes about three quarters of an hour
//! (the limiter table alone about a quarter; each half with one simulator).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::nginx::{self, Nginx};
use common::{children_cpu, children_user_cpu, cpu_of, ledger, user_cpu_of, wait_sampling_peak};

struct Workload {
    number: usize,
    name: &'static str,
    rows: usize,
    concurrency: usize,
    min_ms: u64,
    max_ms: u64,
    /// The limiter in front of the gateway, if any.
    limiter: Option<Limiter>,
}

/// How a limiter decides (see `--limit-shape`).
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Window,
    Bucket,
    Leaky,
}

/// A row of the limiter table.
#[derive(Clone, Copy)]
struct Limiter {
    letter: char,
    shape: Shape,
    /// Submits per window (`Window`) or per second.
    rate: u32,
    /// The window's length (`Window` only).
    window_secs: u32,
    /// The burst (`Bucket`, `Leaky`).
    burst: u32,
    status: u16,
    retry_after: bool,
    html: bool,
    /// Real nginx in front of an unlimited simulator (a `Leaky` shape).
    nginx: bool,
}

impl Limiter {
    const fn new(letter: char, shape: Shape, rate: u32, burst: u32) -> Limiter {
        Limiter {
            letter,
            shape,
            rate,
            window_secs: 1,
            burst,
            status: 429,
            retry_after: !matches!(shape, Shape::Leaky),
            html: false,
            nginx: false,
        }
    }

    /// The simulator's flags: those that differ from the shared design's
    /// defaults (none for real nginx, which does the limiting).
    fn sim_args(&self) -> Vec<String> {
        if self.nginx {
            return Vec::new();
        }
        let mut a = vec!["--rate-limit".to_string(), self.rate.to_string()];
        let mut flag = |name: &str, value: String| {
            a.push(name.to_string());
            a.push(value);
        };
        match self.shape {
            Shape::Window => {}
            Shape::Bucket => flag("--limit-shape", "bucket".into()),
            Shape::Leaky => flag("--limit-shape", "leaky".into()),
        }
        if self.shape == Shape::Window && self.window_secs != 1 {
            flag("--limit-window-secs", self.window_secs.to_string());
        }
        if self.shape != Shape::Window && self.burst != 1 {
            flag("--limit-burst", self.burst.to_string());
        }
        if self.status != 429 {
            flag("--limit-status", self.status.to_string());
        }
        if self.retry_after != (self.shape != Shape::Leaky) {
            let on = if self.retry_after { "on" } else { "off" };
            flag("--limit-retry-after", on.into());
        }
        if self.html {
            flag("--limit-body", "html".into());
        }
        a
    }

    /// Whether the simulator needs more than `--rate-limit` (flags a
    /// `batchgen sim` from before `--limit-shape` lacks).
    fn needs_shapes(&self) -> bool {
        self.sim_args().len() > 2
    }

    /// When a perfect client holds its last image (see the module's doc):
    /// the R-th acceptance plus the latency `latency`.
    fn bound(&self, rows: usize, latency: f64) -> f64 {
        let (r, n, b) = (rows as f64, f64::from(self.rate), f64::from(self.burst));
        let last = match self.shape {
            Shape::Window => {
                ((rows.max(1) - 1) / self.rate as usize) as f64 * f64::from(self.window_secs)
            }
            Shape::Bucket => (r - b).max(0.0) / n,
            Shape::Leaky => (r - b - 1.0).max(0.0) / n,
        };
        last + latency
    }
}

const fn limited(number: usize, name: &'static str, rows: usize, limiter: Limiter) -> Workload {
    Workload {
        number,
        name,
        rows,
        concurrency: 60,
        min_ms: 1000,
        max_ms: 1000,
        limiter: Some(limiter),
    }
}

const LEAKY_HTML: Limiter = Limiter {
    html: true,
    ..Limiter::new('c', Shape::Leaky, 10, 5)
};

const WORKLOADS: &[Workload] = &[
    Workload {
        number: 1,
        name: "fixed latency 3 s, 600 rows, C = 60",
        rows: 600,
        concurrency: 60,
        min_ms: 3000,
        max_ms: 3000,
        limiter: None,
    },
    Workload {
        number: 2,
        name: "latency 5-15 s, 300 rows, C = 30",
        rows: 300,
        concurrency: 30,
        min_ms: 5000,
        max_ms: 15000,
        limiter: None,
    },
    Workload {
        number: 4,
        name: "CPU and memory: latency 1-2 s, 1,000 rows, C = 60",
        rows: 1000,
        concurrency: 60,
        min_ms: 1000,
        max_ms: 2000,
        limiter: None,
    },
    limited(
        3,
        "(a) window: 10 submits in any 1 s, 429, Retry-After; 300 rows",
        300,
        Limiter::new('a', Shape::Window, 10, 1),
    ),
    limited(
        5,
        "(b) token bucket 10/s, burst 5, 429, no Retry-After; 300 rows",
        300,
        Limiter {
            retry_after: false,
            ..Limiter::new('b', Shape::Bucket, 10, 5)
        },
    ),
    limited(
        6,
        "(c) leaky (nginx-like) 10/s, burst 5 nodelay, 429, HTML; 300 rows",
        300,
        LEAKY_HTML,
    ),
    limited(
        7,
        "(d) leaky (nginx-like) 10/s, burst 5 nodelay, 503, HTML; 300 rows",
        300,
        Limiter {
            letter: 'd',
            status: 503,
            ..LEAKY_HTML
        },
    ),
    limited(
        8,
        "(e) window: 300 submits per 60 s, 429, Retry-After to its edge; 600 rows",
        600,
        Limiter {
            window_secs: 60,
            ..Limiter::new('e', Shape::Window, 300, 1)
        },
    ),
    limited(
        9,
        "(f) real nginx limit_req 10r/s burst=5 nodelay, 503; 300 rows",
        300,
        Limiter {
            letter: 'f',
            status: 503,
            nginx: true,
            ..LEAKY_HTML
        },
    ),
];

/// What one client run cost and reached.
struct Measure {
    wall: f64,
    cpu: f64,
    /// The user-space part of `cpu`.
    user_cpu: f64,
    peak_kib: u64,
    status_calls: u64,
    submit_calls: u64,
    /// Submits the limiter refused (429, 503 or quota's 403).
    rate_limited: u64,
    completed: u64,
    /// Rows with no image in the output folder.
    failed: u64,
    /// The client's exit code (None if a signal ended it).
    exit: Option<i32>,
    bound: f64,
    /// The most requests running at the gateway at once (by its own clock).
    running: u64,
}

/// Which workloads the environment asks for (see the module's doc).
struct Selection {
    only: Option<Vec<usize>>,
    limiters: Option<String>,
}

impl Selection {
    fn from_env() -> Selection {
        Selection {
            only: std::env::var("BATCHGEN_BENCH_ONLY")
                .ok()
                .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect()),
            limiters: std::env::var("BATCHGEN_BENCH_LIMITERS")
                .ok()
                .map(|v| v.trim().to_ascii_lowercase()),
        }
    }

    fn wants(&self, w: &Workload) -> bool {
        let by_number = self.only.as_ref().map(|o| o.contains(&w.number));
        let by_letter = self.limiters.as_ref().map(|l| {
            w.limiter.is_some_and(|lim| {
                l == "all" || l.split(',').any(|x| x.trim().starts_with(lim.letter))
            })
        });
        match (by_number, by_letter) {
            (None, None) => true,
            (a, b) => a.unwrap_or(false) || b.unwrap_or(false),
        }
    }
}

fn main() {
    // The bench runs itself as the lean client (see `lean_client`).
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(LEAN) {
        lean_client(&args[2..]);
        return;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_batchgen"));
    let selection = Selection::from_env();
    let peer = peer_script();
    match &peer {
        Some(p) => println!("peer: {}", p.display()),
        None => println!("peer: not run (needs python3 with aiohttp, and the script)"),
    }
    let sims = simulators();
    let own_has_shapes = own_sim_has_shapes(&bin);
    let nginx_bin = nginx::find();
    // Every run's folder is kept until the bench ends. On a file system
    // that skips recently deleted inodes when it creates a file (ext4
    // without a journal does, for a minute or more), deleting one run's
    // thousands of files would make whichever client runs next pay kernel
    // CPU for them.
    let root = tempfile::tempdir().expect("a temporary folder");
    let mut header_for = None;
    for w in WORKLOADS.iter().filter(|w| selection.wants(w)) {
        let n = w.number;
        if header_for != Some(w.limiter.is_some()) {
            header_for = Some(w.limiter.is_some());
            if w.limiter.is_some() {
                println!("\nthe limiter table (latency 1 s, C = 60; bound: see the bench's doc)");
                println!(
                    "{:<28} {:>8} {:>7} {:>15} {:>11} {:>11} {:>13} {:>9}",
                    "client",
                    "wall s",
                    "ratio",
                    "refused (share)",
                    "rows failed",
                    "status/row",
                    "CPU s/1k rows",
                    "peak MiB"
                );
            } else {
                println!(
                    "{:<28} {:>8} {:>7} {:>11} {:>14} {:>13} {:>8} {:>9} {:>8}",
                    "client",
                    "wall s",
                    "ratio",
                    "status/row",
                    "429s (share)",
                    "CPU s/1k rows",
                    "of it user",
                    "peak MiB",
                    "at once"
                );
            }
        }
        for sim in &sims {
            println!("{n}. {} (on {})", w.name, sim.label());
            if let Some(lim) = w.limiter {
                if matches!(sim, Sim::Own) && lim.needs_shapes() && !own_has_shapes {
                    println!("   skipped: this batchgen sim lacks --limit-shape");
                    continue;
                }
                if lim.nginx && nginx_bin.is_none() {
                    println!("   skipped: nginx is not on PATH (apt-get install nginx)");
                    continue;
                }
            }
            let dir = root
                .path()
                .join(format!("{n}-{}", sim.label().replace(' ', "-")));
            std::fs::create_dir(&dir).expect("a folder for the workload");
            let manifest = dir.join("m.yaml");
            write_manifest(&manifest, w.rows);
            let mut runs: Vec<(&str, Vec<String>)> = vec![("batchgen (defaults)", vec![])];
            if w.limiter.is_none() {
                runs.push((
                    "batchgen, fixed 2 s polls",
                    vec!["--poll-interval-ms".into(), "2000".into()],
                ));
            }
            if w.name.starts_with("CPU") {
                runs.insert(1, ("batchgen (default sheet)", vec![REPORT.into()]));
            }
            let mut no_report_cpu = None;
            for (label, extra) in runs {
                let out = dir.join(label.replace([' ', ',', '(', ')'], "_"));
                let no_report = !extra.iter().any(|e| e == REPORT);
                let extra: Vec<String> = extra.into_iter().filter(|e| e != REPORT).collect();
                let m = measure(&bin, sim, w, nginx_bin.as_deref(), &out, |url| {
                    let mut cmd = Command::new(&bin);
                    cmd.arg("run")
                        .arg(&manifest)
                        .arg("--out")
                        .arg(&out)
                        .args(["--base-url", url, "--quiet", "--concurrency"])
                        .arg(w.concurrency.to_string())
                        .args(no_report.then_some("--no-report"))
                        .args(&extra)
                        .env("PIXAZO_API_KEY", "bench-key");
                    cmd
                });
                let Some(m) = m else { continue };
                report(label, w, &m);
                if label == "batchgen (defaults)" {
                    no_report_cpu = Some(m.cpu);
                } else if label == "batchgen (default sheet)" {
                    if let Some(base) = no_report_cpu.filter(|c| *c > 0.0) {
                        println!(
                            "   the sheet's run used {:.2}× the CPU of the --no-report run",
                            m.cpu / base
                        );
                    }
                }
            }
            if let Some(script) = &peer {
                let out = dir.join("peer");
                let m = measure(&bin, sim, w, nginx_bin.as_deref(), &out, |url| {
                    let mut cmd = Command::new("python3");
                    cmd.arg(script);
                    peer_args(cmd, w, url, &out)
                });
                if let Some(m) = m {
                    report("peer (aiohttp, 2 s polls)", w, &m);
                }
            }
            if w.name.starts_with("CPU") {
                let out = dir.join("lean");
                let m = measure(&bin, sim, w, None, &out, |url| {
                    let mut cmd = Command::new(std::env::current_exe().expect("the bench's path"));
                    cmd.arg(LEAN);
                    peer_args(cmd, w, url, &out)
                });
                if let Some(m) = m {
                    report("lean (Rust, no journal)", w, &m);
                }
            }
        }
        if w.name.starts_with("CPU") {
            let floor = root.path().join(format!("{n}-file-work"));
            let (cpu, user) = file_work(&floor, w.rows);
            println!(
                "{n}. the file work alone, with no network (see `file_work`): {:.2} s CPU per 1,000 rows, {:.2} of it user",
                cpu / w.rows as f64 * 1000.0,
                user / w.rows as f64 * 1000.0,
            );
        }
    }
}

/// A marker in a run's extra arguments: this run keeps the contact sheet
/// (every other passes `--no-report`).
const REPORT: &str = "<default report>";

/// Whether `batchgen sim` takes `--limit-shape` (a build from before it
/// does not; the limiter rows that need it are then skipped).
fn own_sim_has_shapes(bin: &Path) -> bool {
    Command::new(bin)
        .args(["sim", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--limit-shape"))
}

/// The CPU (in all, and in user space) of doing, one row after another,
/// the file work a durable run must do for `rows` rows of the sims'
/// 30 KiB images, and nothing else: per row, an image written to a new
/// temporary file, synced and renamed into place, a sidecar written to a
/// new temporary file and renamed, and three journal lines (intent,
/// request id, done) with one sync of the journal and one of the folder
/// (a run shares syncs between rows when they coincide, and syncs at most
/// three times per row). A floor under any client that keeps batchgen's
/// durability, to read its CPU against.
fn file_work(dir: &Path, rows: usize) -> (f64, f64) {
    use std::io::Write;
    let images = dir.join("images");
    std::fs::create_dir_all(&images).expect("a folder for the file work");
    let image = vec![0x5a_u8; 30 * 1024];
    let sidecar = vec![b' '; 560];
    let line = "{\"e\":\"intent\",\"key\":\"69a37c3f39a966ef\",\"at_ms\":1795848246972}\n";
    let me = std::process::id();
    let (cpu, user) = (cpu_of(me), user_cpu_of(me));
    let mut journal = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("journal.jsonl"))
        .expect("the journal opens");
    let write = |name: String, bytes: &[u8], sync: bool| {
        let tmp = images.join(format!(".tmp-{name}"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .expect("a temporary file");
        f.write_all(bytes).expect("written");
        if sync {
            f.sync_all().expect("synced");
        }
        std::fs::rename(&tmp, images.join(name)).expect("renamed");
    };
    for i in 0..rows {
        journal.write_all(line.as_bytes()).expect("appended");
        journal.write_all(line.as_bytes()).expect("appended");
        write(format!("t{i}.png"), &image, true);
        write(format!("t{i}.json"), &sidecar, false);
        std::fs::File::open(&images)
            .and_then(|d| d.sync_all())
            .expect("the folder synced");
        journal.write_all(line.as_bytes()).expect("appended");
        journal.sync_data().expect("the journal synced");
    }
    (cpu_of(me) - cpu, user_cpu_of(me) - user)
}

/// Which gateway simulator serves a run.
enum Sim {
    /// `batchgen sim`.
    Own,
    /// `benches/independent_sim.py`, written from the vendor's documentation.
    Independent(PathBuf),
}

impl Sim {
    fn label(&self) -> &'static str {
        match self {
            Sim::Own => "batchgen sim",
            Sim::Independent(_) => "the independent simulator",
        }
    }

    /// The simulator's command; both take the same flags.
    fn command(&self, bin: &Path) -> Command {
        match self {
            Sim::Own => {
                let mut c = Command::new(bin);
                c.arg("sim");
                c
            }
            Sim::Independent(script) => {
                let mut c = Command::new("python3");
                c.arg(script);
                c
            }
        }
    }
}

/// The simulators `BATCHGEN_BENCH_SIM` asks for (both by default; the
/// independent one only where `python3` runs).
fn simulators() -> Vec<Sim> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/independent_sim.py");
    let has_python = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let independent = || {
        if !has_python {
            println!("independent simulator: not run (needs python3)");
        }
        has_python.then(|| Sim::Independent(script.clone()))
    };
    match std::env::var("BATCHGEN_BENCH_SIM").as_deref() {
        Ok("batchgen") => vec![Sim::Own],
        Ok("independent") => independent().into_iter().collect(),
        _ => std::iter::once(Sim::Own).chain(independent()).collect(),
    }
}

fn report(label: &str, w: &Workload, m: &Measure) {
    let share = if m.submit_calls > 0 {
        100.0 * m.rate_limited as f64 / m.submit_calls as f64
    } else {
        0.0
    };
    if w.limiter.is_some() {
        let exit = match m.exit {
            Some(0) => String::new(),
            Some(code) => format!("  (exit {code})"),
            None => "  (killed by a signal)".into(),
        };
        println!(
            "   {:<25} {:>8.1} {:>7.2} {:>7} ({:>3.0}%) {:>11} {:>11.2} {:>13.2} {:>9.1}{exit}",
            label,
            m.wall,
            m.bound / m.wall,
            m.rate_limited,
            share,
            m.failed,
            m.status_calls as f64 / w.rows as f64,
            m.cpu / w.rows as f64 * 1000.0,
            m.peak_kib as f64 / 1024.0,
        );
        return;
    }
    let incomplete = if m.completed < w.rows as u64 {
        format!("  ({} of {} rows completed)", m.completed, w.rows)
    } else {
        String::new()
    };
    println!(
        "   {:<25} {:>8.1} {:>7.2} {:>11.2} {:>8} ({:>2.0}%) {:>13.2} {:>8.2} {:>9.1} {:>8}{incomplete}",
        label,
        m.wall,
        m.bound / m.wall,
        m.status_calls as f64 / w.rows as f64,
        m.rate_limited,
        share,
        m.cpu / w.rows as f64 * 1000.0,
        m.user_cpu / w.rows as f64 * 1000.0,
        m.peak_kib as f64 / 1024.0,
        m.running,
    );
}

/// The peer script, if it and Python's aiohttp are there.
fn peer_script() -> Option<PathBuf> {
    let path = match std::env::var("BATCHGEN_BENCH_PEER") {
        Ok(p) if p == "none" => return None,
        Ok(p) => PathBuf::from(p),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/peer_aiohttp.py"),
    };
    let has_aiohttp = Command::new("python3")
        .args(["-c", "import aiohttp"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (path.is_file() && has_aiohttp).then_some(path)
}

/// The rows the peer script sends, as a manifest.
fn write_manifest(path: &Path, rows: usize) {
    let mut text = String::from("defaults: {output_format: png, image_size: square}\njobs:\n");
    for i in 0..rows {
        text.push_str(&format!(
            "  - {{id: t{i}, prompt: \"Throughput {i}\", seed: {i}}}\n"
        ));
    }
    std::fs::write(path, text).expect("the manifest is written");
}

/// Image files a client left in `out` or `out/images` (batchgen's place;
/// the peer and the lean client write to `out`).
fn images_in(out: &Path) -> u64 {
    [out.to_path_buf(), out.join("images")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_ascii_lowercase();
            !name.starts_with('.')
                && [".png", ".jpg", ".jpeg", ".webp"]
                    .iter()
                    .any(|x| name.ends_with(x))
        })
        .count() as u64
}

/// Starts a fresh simulator for `w` (and, for real nginx's row, nginx in
/// front of it), runs the client `client(url)` makes, which writes to
/// `out`, and measures it. None (with a line saying why) if the
/// simulator or nginx would not start.
fn measure(
    bin: &Path,
    which: &Sim,
    w: &Workload,
    nginx_bin: Option<&Path>,
    out: &Path,
    client: impl FnOnce(&str) -> Command,
) -> Option<Measure> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let sim_log = out.with_extension("sim.log");
    let mut sim = which.command(bin);
    sim.args(["--port", &port.to_string()])
        .args(["--min-latency-ms", &w.min_ms.to_string()])
        .args(["--max-latency-ms", &w.max_ms.to_string()])
        .args(w.limiter.map(|l| l.sim_args()).unwrap_or_default())
        .env_remove("PIXAZO_API_KEY")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&sim_log).map_or(Stdio::null(), Stdio::from));
    let mut sim = sim.spawn().expect("the simulator starts");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = sim.try_wait().ok().flatten();
        if exited.is_some() || started.elapsed() > Duration::from_secs(10) {
            let _ = sim.kill();
            let _ = sim.wait();
            let said = std::fs::read_to_string(&sim_log).unwrap_or_default();
            let said = said.lines().next().unwrap_or("it never listened");
            println!("   skipped: the simulator did not start: {said}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let limiter = w.limiter;
    let front = match (limiter.filter(|l| l.nginx), nginx_bin) {
        (Some(l), Some(binary)) => {
            let limit = nginx::LimitReq {
                rate: l.rate,
                burst: l.burst,
                status: (l.status != 503).then_some(l.status),
            };
            match Nginx::start(binary, port, limit) {
                Ok(n) => Some(n),
                Err(e) => {
                    println!("   skipped: {e}");
                    let _ = sim.kill();
                    let _ = sim.wait();
                    return None;
                }
            }
        }
        _ => None,
    };
    let url = front
        .as_ref()
        .map_or(format!("http://127.0.0.1:{port}"), Nginx::url);
    let mut cmd = client(&url);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let (cpu_before, user_before) = (children_cpu(), children_user_cpu());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("the client starts");
    let (ended, peak_kib) = wait_sampling_peak(&mut child);
    let wall = start.elapsed().as_secs_f64();
    let cpu = children_cpu() - cpu_before;
    let user_cpu = children_user_cpu() - user_before;
    let ledger = ledger(port);
    let _ = sim.kill();
    let _ = sim.wait();
    let latencies: Vec<f64> = ledger["latencies_ms"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_f64())
                .map(|ms| ms / 1000.0)
                .collect()
        })
        .unwrap_or_default();
    let mut bound = list_schedule(&latencies, w.concurrency);
    if let Some(l) = limiter {
        bound = bound.max(l.bound(w.rows, w.max_ms as f64 / 1000.0));
    }
    let count = |k: &str| ledger[k].as_u64().unwrap_or(0);
    let refused = |k: &str| ledger["rejected"][k].as_u64().unwrap_or(0);
    let (submit_calls, rate_limited) = match (&front, limiter) {
        (Some(n), Some(l)) => n.submits(l.status),
        _ => (
            count("submit_calls"),
            refused("RATE_LIMIT_EXCEEDED") + refused("QUOTA_EXCEEDED"),
        ),
    };
    drop(front);
    let done = images_in(out);
    Some(Measure {
        wall,
        cpu,
        user_cpu,
        peak_kib,
        status_calls: count("status_calls"),
        submit_calls,
        rate_limited,
        completed: count("completed"),
        failed: (w.rows as u64).saturating_sub(done),
        exit: ended.code(),
        bound,
        running: count("max_running"),
    })
}

/// A perfect client: each request takes the earliest free of `slots` slots
/// for exactly its latency.
fn list_schedule(latencies: &[f64], slots: usize) -> f64 {
    let mut free = vec![0.0f64; slots.max(1)];
    for l in latencies {
        let (i, t) = free
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, t)| (i, *t))
            .expect("at least one slot");
        free[i] = t + l;
    }
    free.into_iter().fold(0.0, f64::max)
}

/// `cmd` with the arguments the peer script and the lean client both
/// take: ROWS CONCURRENCY BASE_URL OUT_DIR.
fn peer_args(mut cmd: Command, w: &Workload, url: &str, out: &Path) -> Command {
    cmd.arg(w.rows.to_string())
        .arg(w.concurrency.to_string())
        .arg(url)
        .arg(out);
    cmd
}

/// The argument that makes the bench run as the lean client.
const LEAN: &str = "lean-client";

/// The peer script's logic in Rust (reqwest on one thread): submit, poll
/// every 2 s, download, write the file; no journal, no sync, no checks,
/// nothing recorded. Its CPU is about the least the network side of a run
/// can cost in Rust, to read batchgen's CPU against (with `file_work` for
/// the disk side). Arguments: ROWS CONCURRENCY BASE_URL OUT_DIR. A row
/// that fails is left out (the bench reports completed rows).
fn lean_client(args: &[String]) {
    let [rows, concurrency, base, out] = args else {
        eprintln!("usage: run_speed lean-client ROWS CONCURRENCY BASE_URL OUT_DIR");
        std::process::exit(2);
    };
    let (rows, concurrency): (usize, usize) = (
        rows.parse().expect("rows"),
        concurrency.parse().expect("concurrency"),
    );
    std::fs::create_dir_all(out).expect("the output folder");
    let client = reqwest::Client::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let row = |i: usize| {
        let (client, slots) = (client.clone(), slots.clone());
        let (base, out) = (base.clone(), out.clone());
        async move {
            let _slot = slots.acquire_owned().await.ok()?;
            let ask = |url: String, body: serde_json::Value| {
                let client = client.clone();
                async move {
                    let reply = client
                        .post(url)
                        .header("Ocp-Apim-Subscription-Key", "bench-key")
                        .json(&body)
                        .send()
                        .await
                        .ok()?;
                    reply.json::<serde_json::Value>().await.ok()
                }
            };
            let body = serde_json::json!({
                "prompt": format!("Throughput {i}"),
                "seed": i,
                "output_format": "png",
                "image_size": "square",
            });
            let mut reply = ask(format!("{base}/glm-image/v1/glm-image-request"), body).await?;
            let id = reply["request_id"].as_str()?.to_string();
            while reply.get("images").is_none()
                && !reply["status"]
                    .as_str()
                    .unwrap_or("")
                    .eq_ignore_ascii_case("COMPLETED")
            {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let status = format!("{base}/v2/requests/status/{id}");
                reply = ask(status, serde_json::json!({ "request_id": id })).await?;
                let word = reply["status"].as_str().unwrap_or("");
                if word.eq_ignore_ascii_case("FAILED") || word.eq_ignore_ascii_case("ERROR") {
                    return None;
                }
            }
            let url = match reply.get("images") {
                Some(images) => images[0]["url"].as_str()?,
                None => reply["output"]["media_url"][0].as_str()?,
            };
            let bytes = client.get(url).send().await.ok()?.bytes().await.ok()?;
            std::fs::write(Path::new(&out).join(format!("{i}.png")), &bytes).ok()
        }
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            let mut all: tokio::task::JoinSet<_> = (0..rows).map(row).collect();
            while all.join_next().await.is_some() {}
        });
}
