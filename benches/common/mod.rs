//! What the benchmarks share: their settings from the environment, the
//! simulator's ledger, the wall time, CPU and peak memory of the processes
//! they run, and real nginx in front (`nginx`).

#![allow(dead_code)]

pub mod group;
pub mod nginx;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The setting `name` from the environment, or `default`.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// What one command took, run to its end.
pub struct Measured {
    pub wall: f64,
    pub peak_mib: f64,
    pub cpu: f64,
    pub ok: bool,
}

/// Runs `cmd` to its end, sampling its peak memory; its CPU is what the
/// kernel counts for it once it is waited for. What it prints to stderr
/// goes to `log`, shown if it failed (dropped, with no `log`).
pub fn measure(mut cmd: Command, log: Option<&Path>) -> Measured {
    let err = match log {
        Some(log) => Stdio::from(std::fs::File::create(log).unwrap()),
        None => Stdio::null(),
    };
    cmd.stdout(Stdio::null()).stderr(err);
    let cpu_before = children_cpu();
    let start = Instant::now();
    let mut child = cmd.spawn().expect("batchgen starts");
    let (status, peak) = wait_sampling_peak(&mut child);
    if let Some(log) = log.filter(|_| !status.success()) {
        eprintln!(
            "{status}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    Measured {
        wall: start.elapsed().as_secs_f64(),
        peak_mib: peak as f64 / 1024.0,
        cpu: children_cpu() - cpu_before,
        ok: status.success(),
    }
}

/// `batchgen sim` (the binary `bin`, key `bench`) on a free loopback port,
/// every request taking `latency_ms`, once it listens: it and its port.
pub fn start_sim(bin: &str, latency_ms: &str) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let sim = Command::new(bin)
        .args(["sim", "--port", &port.to_string()])
        .args([
            "--min-latency-ms",
            latency_ms,
            "--max-latency-ms",
            latency_ms,
        ])
        .args(["--key", "bench"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the simulator starts");
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (sim, port)
}

/// The simulator's ledger, by a plain HTTP GET.
pub fn ledger(port: u16) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the simulator answers");
    write!(
        s,
        "GET /admin/ledger HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .expect("a request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("a reply");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// CPU seconds of this process's waited-for children (cutime + cstime).
pub fn children_cpu() -> f64 {
    stat_seconds("self", &[16, 17])
}

/// User-space CPU seconds of this process's waited-for children (cutime):
/// the part that is the client's own code, without the kernel's work for it
/// (on some file systems creating files costs more kernel time after many
/// were deleted, which makes the total noisy from run to run).
pub fn children_user_cpu() -> f64 {
    stat_seconds("self", &[16])
}

/// CPU seconds a process has used so far (utime + stime).
pub fn cpu_of(pid: u32) -> f64 {
    stat_seconds(&pid.to_string(), &[14, 15])
}

/// User-space CPU seconds a process has used so far (utime).
pub fn user_cpu_of(pid: u32) -> f64 {
    stat_seconds(&pid.to_string(), &[14])
}

/// The sum of clock-tick fields of `/proc/WHO/stat` (numbered as in
/// proc(5)), in seconds.
fn stat_seconds(who: &str, which: &[usize]) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{who}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3.
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    which.iter().map(|&i| ticks(i)).sum::<f64>() / 100.0
}

/// A process's peak resident memory so far, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Waits for `child`, sampling its peak resident memory every 20 ms; returns
/// how it ended and the peak, in KiB.
pub fn wait_sampling_peak(child: &mut std::process::Child) -> (std::process::ExitStatus, u64) {
    let mut peak_kib = 0;
    loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().expect("the child is waited for") {
            return (status, peak_kib);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
