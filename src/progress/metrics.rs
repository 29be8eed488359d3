//! `--metrics-file PATH`: the run's counters in the Prometheus text format,
//! for node_exporter's textfile collector (give a PATH ending in `.prom` in
//! its directory). Written atomically (a temporary file beside it, renamed
//! into place: node_exporter never reads half a file, and it skips the
//! temporary's name) at the start, every [`EVERY`], and at the end.
//!
//! Why this exists: a nightly job is watched by the monitoring people
//! already have. Metric names start with `batchgen_`; docs/watching.md
//! lists them. A write that fails is noted and never stops a row.
//!
//! Cancellation: a write runs whole on the blocking pool; nothing here
//! holds a task.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::Counts;
use crate::output::{ResultTotals, RowStatus};

/// How often the file is rewritten while the run works.
pub const EVERY: Duration = Duration::from_secs(15);

/// The one line carried from the file a run finds to the one it writes.
const LAST_SUCCESS: &str = "batchgen_last_success_time_seconds";

/// Where the metrics go, and what they carry besides the counts.
#[derive(Clone, Debug)]
pub struct Metrics {
    path: PathBuf,
    started_ms: u64,
    /// When a run last ended with every row completed, as the file this
    /// run found said (kept until this run succeeds).
    last_success_s: Option<f64>,
}

/// The end of a run, for the last write.
#[derive(Clone, Debug)]
pub struct Ending {
    pub exit_code: u8,
    pub finished_ms: u64,
    /// The plan's rows as results.csv counts them (none if the run ended
    /// before it could count them).
    pub totals: Option<ResultTotals>,
}

impl Metrics {
    /// For a run that started at `started_ms`; reads the last success from
    /// the file `path` holds, if it holds one.
    pub fn new(path: PathBuf, started_ms: u64) -> Metrics {
        // `m.prom` is `./m.prom`: its temporary goes beside it.
        let path = match path.parent() {
            Some(p) if p.as_os_str().is_empty() => PathBuf::from(".").join(path),
            _ => path,
        };
        let last_success_s = crate::disk::read_regular(&path, 1 << 20)
            .ok()
            .and_then(|bytes| {
                String::from_utf8_lossy(&bytes).lines().find_map(|l| {
                    let value = l.strip_prefix(LAST_SUCCESS)?.strip_prefix(' ')?;
                    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
                })
            });
        Metrics {
            path,
            started_ms,
            last_success_s,
        }
    }

    /// The file's text.
    pub fn render(&self, c: &Counts, end: Option<&Ending>) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, values: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in values {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let secs = |ms: u64| ms as f64 / 1000.0;
        metric(
            "batchgen_info",
            "gauge",
            "The batchgen version that writes this file (always 1).",
            &[(
                &format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
                1.0,
            )],
        );
        metric(
            "batchgen_running",
            "gauge",
            "1 while the run works, 0 once it has ended.",
            &[("", if end.is_some() { 0.0 } else { 1.0 })],
        );
        metric(
            "batchgen_start_time_seconds",
            "gauge",
            "When the run started, in seconds since the Unix epoch.",
            &[("", secs(self.started_ms))],
        );
        metric(
            "batchgen_plan_rows",
            "gauge",
            "Rows in the plan (this shard's, with --shard).",
            &[("", c.total as f64)],
        );
        let waiting = c
            .total
            .saturating_sub(c.done() + c.submitting + c.polling + c.downloading);
        let rows: Vec<(String, f64)> = [
            ("finished_before", c.already),
            ("completed", c.completed),
            ("failed", c.failed),
            ("left", c.left),
            ("submitting", c.submitting),
            ("polling", c.polling),
            ("downloading", c.downloading),
            ("waiting", waiting),
        ]
        .iter()
        .map(|(state, n)| (format!("{{state=\"{state}\"}}"), *n as f64))
        .collect();
        let rows: Vec<(&str, f64)> = rows.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        metric(
            "batchgen_rows",
            "gauge",
            "The plan's rows by where they stand in this run.",
            &rows,
        );
        metric(
            "batchgen_images_total",
            "counter",
            "Images this run saved.",
            &[("", c.images as f64)],
        );
        metric(
            "batchgen_spent_usd_total",
            "counter",
            "US dollars this run spent (its completed rows).",
            &[("", c.spent.dollars())],
        );
        metric(
            "batchgen_possibly_charged_usd",
            "gauge",
            "US dollars the rows this run failed or left may have been charged.",
            &[("", c.possibly_charged.dollars())],
        );
        metric(
            "batchgen_requests_in_flight",
            "gauge",
            "Requests at the gateway, as --concurrency counts them.",
            &[("", c.in_flight() as f64)],
        );
        metric(
            "batchgen_throttled_total",
            "counter",
            "Submits the gateway answered 429 or 503, by status.",
            &[
                ("{status=\"429\"}", c.http_429 as f64),
                ("{status=\"503\"}", c.http_503 as f64),
            ],
        );
        metric(
            "batchgen_rate_limited_total",
            "counter",
            "Submits a rate limiter refused (the run slowed down for each).",
            &[("", c.rate_limited as f64)],
        );
        let succeeded = end.filter(|e| e.exit_code == crate::vocab::exit_code::OK);
        let last_success = succeeded
            .map(|e| secs(e.finished_ms))
            .or(self.last_success_s);
        if let Some(at) = last_success {
            metric(
                LAST_SUCCESS,
                "gauge",
                "When a run writing this file last ended with every row completed (exit 0).",
                &[("", at)],
            );
        }
        let Some(end) = end else {
            return out;
        };
        metric(
            "batchgen_end_time_seconds",
            "gauge",
            "When the run ended, in seconds since the Unix epoch.",
            &[("", secs(end.finished_ms))],
        );
        metric(
            "batchgen_exit_code",
            "gauge",
            "The exit code the run ended with.",
            &[("", f64::from(end.exit_code))],
        );
        let Some(t) = &end.totals else {
            return out;
        };
        let by_status: Vec<(String, f64)> = RowStatus::ALL
            .iter()
            .map(|s| (format!("{{status=\"{}\"}}", s.as_str()), t.count(*s) as f64))
            .collect();
        let by_status: Vec<(&str, f64)> = by_status.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        metric(
            "batchgen_result_rows",
            "gauge",
            "The plan's rows by their status in results.csv, at the run's end.",
            &by_status,
        );
        metric(
            "batchgen_result_images",
            "gauge",
            "Images of the plan's completed rows, every run's (summary.json's images).",
            &[("", t.images as f64)],
        );
        metric(
            "batchgen_result_spent_usd",
            "gauge",
            "US dollars the plan's completed rows cost, every run's (summary.json's cost_usd).",
            &[("", t.cost_usd.dollars())],
        );
        metric(
            "batchgen_result_possibly_charged_usd",
            "gauge",
            "US dollars that may have been charged beyond that (summary.json's possibly_charged_usd).",
            &[("", t.possibly_charged_usd.dollars())],
        );
        out
    }

    /// Writes the file atomically; the error names it.
    pub fn write(&self, c: &Counts, end: Option<&Ending>) -> Result<(), String> {
        let text = self.render(c, end);
        crate::disk::write_atomic(&self.path, |w| w.write_all(text.as_bytes())).map_err(|e| {
            format!(
                "cannot write the metrics file {}: {}",
                self.path.display(),
                crate::disk::plain(&e)
            )
        })
    }

    /// [`Self::write`], on the blocking pool.
    pub async fn write_blocking(&self, c: Counts, end: Option<Ending>) -> Result<(), String> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.write(&c, end.as_ref()))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Usd;

    #[test]
    fn the_file_is_prometheus_text_and_keeps_the_last_success() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batchgen.prom");
        let c = Counts {
            total: 3,
            completed: 1,
            polling: 1,
            http_503: 2,
            spent: Usd::from_micros(40_000),
            ..Counts::default()
        };
        let m = Metrics::new(path.clone(), 1_700_000_000_000);
        m.write(&c, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in [
            "# TYPE batchgen_rows gauge",
            "batchgen_rows{state=\"waiting\"} 1",
            "batchgen_running 1",
            "batchgen_start_time_seconds 1700000000",
            "batchgen_spent_usd_total 0.04",
            "batchgen_throttled_total{status=\"503\"} 2",
            "batchgen_requests_in_flight 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains(LAST_SUCCESS) && !text.contains("exit_code"));
        // Every sample line is NAME{LABELS} VALUE, after its HELP and TYPE.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').unwrap();
            assert!(name.starts_with("batchgen_"), "{l}");
            value.parse::<f64>().unwrap();
        }
        let ok = Ending {
            exit_code: 0,
            finished_ms: 1_700_000_060_000,
            totals: Some(ResultTotals::default()),
        };
        m.write(&c, Some(&ok)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("batchgen_running 0\n"));
        assert!(text.contains("batchgen_exit_code 0\n"));
        assert!(text.contains("batchgen_result_rows{status=\"not_run\"} 0\n"));
        assert!(text.contains("batchgen_last_success_time_seconds 1700000060\n"));
        // A later run that fails keeps the last success it found.
        let next = Metrics::new(path.clone(), 1_700_000_100_000);
        let failed = Ending {
            exit_code: 1,
            finished_ms: 1_700_000_200_000,
            totals: None,
        };
        next.write(&c, Some(&failed)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("batchgen_last_success_time_seconds 1700000060\n"));
        assert!(text.contains("batchgen_exit_code 1\n"));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }
}
