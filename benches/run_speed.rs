//! `cargo bench --bench run_speed`: batchgen against `batchgen sim` running
//! as a separate process, workload by workload, beside the same run on a
//! fixed 2 s polling schedule and (when Python's aiohttp is installed) the
//! peer script a user would write, `../shared/bench/peer_aiohttp.py`. On
//! the 1,000-row workload it also runs a lean client (the peer's logic in
//! Rust, nothing durable: see `lean_client`) and then the file work of a
//! durable run alone (`file_work`), the two floors to read batchgen's CPU
//! against.
//!
//! For each it prints: wall time, its ratio to the bound (a perfect client
//! holding each of C slots for exactly the simulator's latency of each
//! request, list-scheduled; or the gateway's rate limit), status calls per
//! row, 429s (and their share of submits), CPU seconds per 1,000 rows,
//! peak RSS, and the most requests the simulator had running at once (by
//! its own clock: a client that hands a slot on before it has seen its
//! request finish must still keep this within C). A fresh simulator and a
//! fresh output folder serve every run, so each one has to learn the
//! latency from scratch. The folders are deleted only when the bench ends,
//! so that no run pays the kernel's cost of creating files just after
//! thousands were deleted.
//!
//! Every workload runs against two gateway simulators in turn: `batchgen
//! sim`, and `benches/independent_sim.py`, written from the vendor's
//! documentation alone (Python's standard library; skipped without
//! `python3`), so that a client tuned to its own simulator's quirks shows.
//!
//! - `BATCHGEN_BENCH_ONLY=1,3` runs only those workloads (numbered as printed).
//! - `BATCHGEN_BENCH_SIM=batchgen` (or `independent`) runs against one
//!   simulator only.
//! - `BATCHGEN_BENCH_PEER=PATH` names the peer script (`none` skips it).
//!
//! Linux only (it reads `/proc`). It takes about half an hour (a quarter
//! with one simulator).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{children_cpu, children_user_cpu, cpu_of, ledger, user_cpu_of, wait_sampling_peak};

struct Workload {
    name: &'static str,
    rows: usize,
    concurrency: usize,
    min_ms: u64,
    max_ms: u64,
    /// Submits per second the gateway allows (429 with `Retry-After: 1` past it).
    rate_limit: Option<u32>,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "fixed latency 3 s, 600 rows, C = 60",
        rows: 600,
        concurrency: 60,
        min_ms: 3000,
        max_ms: 3000,
        rate_limit: None,
    },
    Workload {
        name: "latency 5-15 s, 300 rows, C = 30",
        rows: 300,
        concurrency: 30,
        min_ms: 5000,
        max_ms: 15000,
        rate_limit: None,
    },
    Workload {
        name: "10 submits/s allowed, latency 1 s, 300 rows, C = 60",
        rows: 300,
        concurrency: 60,
        min_ms: 1000,
        max_ms: 1000,
        rate_limit: Some(10),
    },
    Workload {
        name: "CPU and memory: latency 1-2 s, 1,000 rows, C = 60",
        rows: 1000,
        concurrency: 60,
        min_ms: 1000,
        max_ms: 2000,
        rate_limit: None,
    },
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
    rate_limited: u64,
    completed: u64,
    bound: f64,
    /// The most requests running at the gateway at once (by its own clock).
    running: u64,
}

fn main() {
    // The bench runs itself as the lean client (see `lean_client`).
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(LEAN) {
        lean_client(&args[2..]);
        return;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_batchgen"));
    let only: Option<Vec<usize>> = std::env::var("BATCHGEN_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let peer = peer_script();
    match &peer {
        Some(p) => println!("peer: {}", p.display()),
        None => println!("peer: not run (needs python3 with aiohttp, and the script)"),
    }
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
    let sims = simulators();
    // Every run's folder is kept until the bench ends. On a file system
    // that skips recently deleted inodes when it creates a file (ext4
    // without a journal does, for a minute or more), deleting one run's
    // thousands of files would make whichever client runs next pay kernel
    // CPU for them.
    let root = tempfile::tempdir().expect("a temporary folder");
    for (i, w) in WORKLOADS.iter().enumerate() {
        let n = i + 1;
        if only.as_ref().is_some_and(|o| !o.contains(&n)) {
            continue;
        }
        for sim in &sims {
            println!("{n}. {} (on {})", w.name, sim.label());
            let dir = root
                .path()
                .join(format!("{n}-{}", sim.label().replace(' ', "-")));
            std::fs::create_dir(&dir).expect("a folder for the workload");
            let manifest = dir.join("m.yaml");
            write_manifest(&manifest, w.rows);
            let runs: [(&str, Vec<String>); 2] = [
                ("batchgen (defaults)", vec![]),
                (
                    "batchgen, fixed 2 s polls",
                    vec!["--poll-interval-ms".into(), "2000".into()],
                ),
            ];
            for (label, extra) in runs {
                let out = dir.join(label.replace([' ', ',', '(', ')'], "_"));
                let m = measure(&bin, sim, w, |url| {
                    let mut cmd = Command::new(&bin);
                    cmd.arg("run")
                        .arg(&manifest)
                        .arg("--out")
                        .arg(&out)
                        .args(["--base-url", url, "--quiet", "--no-report", "--concurrency"])
                        .arg(w.concurrency.to_string())
                        .args(&extra)
                        .env("PIXAZO_API_KEY", "bench-key");
                    cmd
                });
                report(label, w, &m);
            }
            if let Some(script) = &peer {
                let out = dir.join("peer");
                let m = measure(&bin, sim, w, |url| {
                    let mut cmd = Command::new("python3");
                    cmd.arg(script);
                    peer_args(cmd, w, url, &out)
                });
                report("peer (aiohttp, 2 s polls)", w, &m);
            }
            if w.name.starts_with("CPU") {
                let out = dir.join("lean");
                let m = measure(&bin, sim, w, |url| {
                    let mut cmd = Command::new(std::env::current_exe().expect("the bench's path"));
                    cmd.arg(LEAN);
                    peer_args(cmd, w, url, &out)
                });
                report("lean (Rust, no journal)", w, &m);
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

/// Starts a fresh simulator for `w`, runs the client `client(url)` makes,
/// and measures it.
fn measure(bin: &Path, which: &Sim, w: &Workload, client: impl FnOnce(&str) -> Command) -> Measure {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut sim = which.command(bin);
    sim.args(["--port", &port.to_string()])
        .args(["--min-latency-ms", &w.min_ms.to_string()])
        .args(["--max-latency-ms", &w.max_ms.to_string()])
        .env_remove("PIXAZO_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(limit) = w.rate_limit {
        sim.args([
            "--rate-limit",
            &limit.to_string(),
            "--retry-after-secs",
            "1",
        ]);
    }
    let mut sim = sim.spawn().expect("the simulator starts");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the simulator never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = client(&url);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let (cpu_before, user_before) = (children_cpu(), children_user_cpu());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("the client starts");
    let (_, peak_kib) = wait_sampling_peak(&mut child);
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
    if let Some(limit) = w.rate_limit {
        bound = bound.max(w.rows as f64 / f64::from(limit));
    }
    let count = |k: &str| ledger[k].as_u64().unwrap_or(0);
    Measure {
        wall,
        cpu,
        user_cpu,
        peak_kib,
        status_calls: count("status_calls"),
        submit_calls: count("submit_calls"),
        rate_limited: ledger["rejected"]["RATE_LIMIT_EXCEEDED"]
            .as_u64()
            .unwrap_or(0),
        completed: count("completed"),
        bound,
        running: count("max_running"),
    }
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
