//! What the benchmarks share: the simulator's ledger, and the CPU and peak
//! memory of the processes they run.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;

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

/// CPU seconds of this process's waited-for children (`/proc/self/stat`).
pub fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3; cutime and cstime are 16 and 17.
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(16) + ticks(17)) / 100.0
}

/// A process's peak resident memory so far, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
