//! `cargo bench --bench store_speed`: the same run to a local folder and to
//! an S3 bucket (moto's server on loopback, a real S3 implementation),
//! against `batchgen sim` at a fixed latency; then a run to the bucket
//! killed with SIGKILL halfway and resumed by a fresh process with an empty
//! working folder. Issue 25's targets: the bucket run within 10 % of the
//! local one's wall time, peak memory within 20 MB of it, and the resume
//! reaching its first new submit in under 5 s.
//!
//! `BATCHGEN_BENCH_ROWS` (default 1000), `BATCHGEN_BENCH_LATENCY_MS`
//! (default 1000, min = max), `BATCHGEN_BENCH_CONCURRENCY` (default 60),
//! `BATCHGEN_BENCH_SIZE` (default 256: 256x256 PNG). Needs moto
//! (`python3 -m pip install 'moto[server]'`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::group;
use common::{env_or, ledger, measure, start_sim};
#[path = "../tests/support/moto.rs"]
mod moto;

fn count(port: u16, field: &str) -> u64 {
    ledger(port)[field].as_u64().unwrap_or(0)
}

fn main() {
    let bin = env!("CARGO_BIN_EXE_batchgen");
    let rows: u64 = env_or("BATCHGEN_BENCH_ROWS", "1000").parse().unwrap();
    let latency = env_or("BATCHGEN_BENCH_LATENCY_MS", "1000");
    let concurrency = env_or("BATCHGEN_BENCH_CONCURRENCY", "60");
    let size = env_or("BATCHGEN_BENCH_SIZE", "256");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let manifest = dir.path().join("m.yaml");
    std::fs::write(
        &manifest,
        format!(
            "name: store\ndefaults: {{image_size: {{width: {size}, height: {size}}}, output_format: png}}\n\
             seeds: {{from: 0, count: {rows}}}\njobs: [{{id: a, prompt: \"a lighthouse at dusk, watercolor\"}}]\n"
        ),
    )
    .unwrap();

    let moto = moto::Moto::start().expect("moto starts (python3 -m pip install 'moto[server]')");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(moto.create_bucket("bench"));
    let env = moto.env();

    let (mut sim, port) = start_sim(bin, &latency);
    let url = format!("http://127.0.0.1:{port}");
    let run = |out: &str, work: &Path| {
        std::fs::create_dir_all(work).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg(&manifest)
            .args(["--out", out, "--base-url", &url])
            .args(["--concurrency", &concurrency, "--quiet", "--no-report"])
            .args(["--lease-secs", "2"])
            .env("PIXAZO_API_KEY", "bench")
            .env("TMPDIR", work)
            .envs(env.iter().map(|(k, v)| (k, v)));
        cmd
    };

    println!(
        "store_speed: {rows} rows, {size}x{size} PNG, C = {concurrency}, simulator latency {latency} ms; moto on loopback"
    );
    let local_out = dir.path().join("local");
    let local = measure(
        run(&local_out.display().to_string(), &dir.path().join("w1")),
        Some(&dir.path().join("local.log")),
    );
    let bucket = measure(
        run("s3://bench/full", &dir.path().join("w2")),
        Some(&dir.path().join("bucket.log")),
    );
    for (name, m) in [("local folder", &local), ("s3 (moto)", &bucket)] {
        println!(
            "  {name:<13} {:>7.2} s  peak {:>6.1} MiB  CPU {:>5.2} s  (exit ok: {})",
            m.wall, m.peak_mib, m.cpu, m.ok
        );
    }
    println!(
        "  bucket / local: wall {:.3}x, peak {:+.1} MiB",
        bucket.wall / local.wall,
        bucket.peak_mib - local.peak_mib
    );

    // Killed halfway, resumed by a fresh process in an empty working folder.
    for (name, out) in [
        (
            "local folder",
            dir.path().join("killed").display().to_string(),
        ),
        ("s3 (moto)", "s3://bench/killed".to_string()),
    ] {
        let base = count(port, "accepted");
        let mut child = run(&out, &dir.path().join(format!("k1-{}", name.len())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while count(port, "accepted") < base + rows / 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // The killed run's lease (2 s) must run out first; a run refused
        // meanwhile (exit 2) is started again, and the clock starts at the
        // run that is let in.
        let (started, mut child) = loop {
            let sent = count(port, "submit_calls");
            let started = Instant::now();
            let mut child = run(&out, &dir.path().join(format!("k2-{}", name.len())))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            loop {
                if count(port, "submit_calls") > sent {
                    break;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    assert_eq!(status.code(), Some(2), "the resume ended: {status}");
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if child.try_wait().unwrap().is_none() {
                break (started, child);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let first_submit = started.elapsed().as_secs_f64();
        let status = child.wait().unwrap();
        println!(
            "  resume, {name:<13} first new submit after {first_submit:>5.2} s (exit ok: {})",
            status.success()
        );
    }
    let l = ledger(port);
    println!(
        "  simulator: {} accepted for {} rows run four times (a kill can leave a row uncertain, never paid twice)",
        l["accepted"], rows
    );
    let _ = sim.kill();
    let _ = sim.wait();
}
