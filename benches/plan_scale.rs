//! `cargo bench --bench plan_scale`: time and peak memory to plan 1,000
//! prompts x 1,000 seeds (1,000,000 rows).
//!
//! Set `BATCHGEN_BENCH_PROMPTS` and `BATCHGEN_BENCH_SEEDS` to change the size.
//! Peak memory is the process's high-water mark (`VmHWM`, Linux only).

use std::io::Write;
use std::time::Instant;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let prompts = env_or("BATCHGEN_BENCH_PROMPTS", 1000);
    let seeds = env_or("BATCHGEN_BENCH_SEEDS", 1000);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut csv = std::fs::File::create(dir.path().join("prompts.csv")).unwrap();
    writeln!(csv, "id,prompt,guidance_scale").unwrap();
    for i in 0..prompts {
        writeln!(
            csv,
            "job-{i},\"Prompt number {i}: an elegant watercolor menu card painted on textured cream paper, soft turquoise washes, golden accents, dreamy bokeh background\",{}",
            1.0 + (i % 3) as f64 * 0.5
        )
        .unwrap();
    }
    drop(csv);
    let manifest = dir.path().join("big.yaml");
    std::fs::write(
        &manifest,
        format!(
            "name: big\ndefaults: {{image_size: square_hd, num_inference_steps: 30, output_format: png}}\nseeds: {{from: 0, count: {seeds}}}\njobs_from: prompts.csv\n"
        ),
    )
    .unwrap();

    let before = peak_rss_mib();
    let start = Instant::now();
    let m = batchgen::manifest::load(&manifest).expect("the manifest loads");
    let plan = batchgen::plan::expand(&m).expect("the manifest is valid");
    let expanded = start.elapsed();
    let summary = batchgen::plan::Summary::new(&plan, 10, None);
    let total = start.elapsed();
    assert_eq!(plan.rows.len() as u64, prompts * seeds);
    println!(
        "plan_scale: {} prompts x {} seeds = {} rows, {} estimated",
        prompts,
        seeds,
        plan.rows.len(),
        summary.cost_usd
    );
    println!("  load + expand + key: {:.2} s", expanded.as_secs_f64());
    println!("  with summary:        {:.2} s", total.as_secs_f64());
    match (before, peak_rss_mib()) {
        (Some(b), Some(a)) => println!("  peak RSS: {a:.0} MiB (before planning: {b:.0} MiB)"),
        _ => println!("  peak RSS: unavailable on this platform"),
    }
}
