//! `cargo bench --bench run_scale`: a big run against `batchgen sim` with no
//! latency, then the same run again (it must send nothing), `status` and
//! `plan` on it: wall time and peak memory of each, and how busy batchgen
//! and the simulator were (the run should be limited by the simulator).
//!
//! `BATCHGEN_BENCH_ROWS` (default 100000) is 1,000 prompts times
//! ROWS/1,000 seeds; `BATCHGEN_BENCH_SIZE` (default `square_hd`, 1024x1024
//! PNG) the image size, e.g. `64` for 64x64 images when disk or time is
//! short; `BATCHGEN_BENCH_CONCURRENCY` (default 256); `BATCHGEN_BENCH_POLL_MS`
//! a fixed poll interval (default: learned).

use std::path::Path;
use std::process::Command;

mod common;
use common::{cpu_of, env_or, ledger, measure, start_sim};

fn main() {
    let bin = env!("CARGO_BIN_EXE_batchgen");
    let rows: usize = env_or("BATCHGEN_BENCH_ROWS", "100000")
        .parse()
        .expect("BATCHGEN_BENCH_ROWS is a number");
    let size = env_or("BATCHGEN_BENCH_SIZE", "square_hd");
    let concurrency = env_or("BATCHGEN_BENCH_CONCURRENCY", "256");
    let seeds = rows.div_ceil(1000);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut csv = String::from("id,prompt\n");
    for i in 0..1000 {
        csv.push_str(&format!(
            "job-{i},\"Prompt number {i}: an elegant watercolor menu card, soft turquoise washes, golden accents\"\n"
        ));
    }
    std::fs::write(dir.path().join("prompts.csv"), csv).unwrap();
    let size_yaml = match size.parse::<u32>() {
        Ok(px) => format!("{{width: {px}, height: {px}}}"),
        Err(_) => size.clone(),
    };
    let manifest = dir.path().join("big.yaml");
    std::fs::write(
        &manifest,
        format!("name: big\ndefaults: {{image_size: {size_yaml}, output_format: png}}\nseeds: {{from: 0, count: {seeds}}}\njobs_from: prompts.csv\n"),
    )
    .unwrap();
    let out = dir.path().join("out");

    let (mut sim, port) = start_sim(bin, "0");
    let url = format!("http://127.0.0.1:{port}");
    let run = || {
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg(&manifest)
            .arg("--out")
            .arg(&out)
            .args([
                "--base-url",
                &url,
                "--concurrency",
                &concurrency,
                "--quiet",
                "--no-report",
            ])
            .env("PIXAZO_API_KEY", "bench");
        if let Ok(ms) = std::env::var("BATCHGEN_BENCH_POLL_MS") {
            cmd.args(["--poll-interval-ms", &ms]);
        }
        cmd
    };
    let path = |p: &Path| p.display().to_string();

    println!(
        "run_scale: {} rows (1,000 prompts x {seeds} seeds), {size} PNG, C = {concurrency}, simulator latency 0",
        seeds * 1000
    );
    let sim_cpu = cpu_of(sim.id());
    let first = measure(run(), None);
    let sim_cpu = cpu_of(sim.id()) - sim_cpu;
    let l = ledger(port);
    let accepted = l["accepted"].as_u64().unwrap_or(0);
    println!(
        "  run:    {:>8.1} s  peak {:>6.0} MiB  {:.0} rows/s  CPU batchgen {:.0} s, simulator {:.0} s  (exit ok: {})",
        first.wall,
        first.peak_mib,
        accepted as f64 / first.wall,
        first.cpu,
        sim_cpu,
        first.ok
    );
    for note in ["(compacts the journal)", ""] {
        let before = ledger(port)["submit_calls"].as_u64().unwrap_or(0);
        let m = measure(run(), None);
        let sent = ledger(port)["submit_calls"].as_u64().unwrap_or(0) - before;
        println!(
            "  rerun:  {:>8.2} s  peak {:>6.0} MiB  submits sent: {sent} {note}",
            m.wall, m.peak_mib
        );
    }
    let mut status = Command::new(bin);
    status.args(["status", &path(&out)]);
    let m = measure(status, None);
    println!("  status: {:>8.2} s  peak {:>6.0} MiB", m.wall, m.peak_mib);
    let mut plan = Command::new(bin);
    plan.args(["plan", &path(&manifest)]);
    let m = measure(plan, None);
    println!("  plan:   {:>8.2} s  peak {:>6.0} MiB", m.wall, m.peak_mib);
    let _ = sim.kill();
    let _ = sim.wait();
}
