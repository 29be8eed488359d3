//! `--progress json`: the run told as NDJSON on stdout, one object a line,
//! each with `event` (`start`, `progress`, `warning`, `end`) and `at` (RFC
//! 3339, UTC) first. docs/watching.md lists the fields; they are a
//! contract: added to, never renamed.
//!
//! Why stdout: it is what `| jq` reads. The human summary that a run
//! prints on stdout is then left out (the `end` event carries it), and
//! stderr is as with `--quiet`: warnings and errors only. Every line goes
//! through [`crate::console`]: a closed pipe drops it, never a row.
//! Nothing here is async.

use std::time::Duration;

use serde::Serialize;

use super::Counts;
use crate::console::{self, Stream};
use crate::plan::Usd;

/// One line: `{"event":EVENT,"at":…,` then `body`'s fields.
pub fn line(event: &str, body: &impl Serialize) -> String {
    let at = crate::vocab::rfc3339(crate::journal::now_ms());
    let event = serde_json::to_string(event).expect("a name serialises");
    let head = format!("{{\"event\":{event},\"at\":\"{at}\"}}");
    let body = serde_json::to_string(body).expect("an event serialises");
    let mut out = head;
    if body.len() > 2 && body.starts_with('{') {
        out.pop(); // the closing brace
        out.push(',');
        out.push_str(&body[1..]);
    }
    out.push('\n');
    out
}

/// Prints one event on stdout.
pub fn emit(event: &str, body: &impl Serialize) {
    console::write(Stream::Stdout, line(event, body).as_bytes());
}

/// The `progress` event's fields.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub elapsed_s: f64,
    /// The plan's rows (this shard's, with `--shard`).
    pub rows: u64,
    /// Rows with a verdict: finished before this run, or by it.
    pub rows_done: u64,
    pub rows_finished_before: u64,
    /// This run's rows, by where they stand.
    pub rows_completed: u64,
    pub rows_failed: u64,
    pub rows_left: u64,
    pub rows_submitting: u64,
    pub rows_polling: u64,
    pub rows_downloading: u64,
    /// Requests at the gateway, as `--concurrency` counts them.
    pub in_flight: u64,
    pub images: u64,
    pub spent_usd: Usd,
    pub possibly_charged_usd: Usd,
    pub rate_limited: u64,
    pub http_429: u64,
    pub http_503: u64,
    pub rows_per_s: f64,
    /// Seconds left at this run's pace; null until a row has finished.
    pub eta_s: Option<f64>,
}

impl Snapshot {
    pub fn of(c: &Counts, elapsed: Duration) -> Snapshot {
        let (rate, eta) = c.pace(elapsed);
        Snapshot {
            elapsed_s: round(elapsed.as_secs_f64()),
            rows: c.total,
            rows_done: c.done(),
            rows_finished_before: c.already,
            rows_completed: c.completed,
            rows_failed: c.failed,
            rows_left: c.left,
            rows_submitting: c.submitting,
            rows_polling: c.polling,
            rows_downloading: c.downloading,
            in_flight: c.in_flight(),
            images: c.images,
            spent_usd: c.spent,
            possibly_charged_usd: c.possibly_charged,
            rate_limited: c.rate_limited,
            http_429: c.http_429,
            http_503: c.http_503,
            rows_per_s: (rate * 1000.0).round() / 1000.0,
            eta_s: eta.map(round),
        }
    }
}

/// To the tenth of a second.
fn round(secs: f64) -> f64 {
    (secs * 10.0).round() / 10.0
}

pub(super) fn progress(c: &Counts, elapsed: Duration) {
    emit("progress", &Snapshot::of(c, elapsed));
}

/// The `warning` event's fields: a warning or an error about one row (or
/// the run), as stderr says it.
#[derive(Debug, Serialize)]
pub struct Warning<'a> {
    /// `warning` or `error`.
    pub level: &'a str,
    pub message: &'a str,
}

impl<'a> Warning<'a> {
    pub fn of(text: &'a str) -> Warning<'a> {
        let text = text.trim_end();
        match text.split_once(": ") {
            Some((level @ ("warning" | "error"), message)) => Warning { level, message },
            _ => Warning {
                level: "warning",
                message: text,
            },
        }
    }
}

pub(super) fn warning(text: &str) {
    emit("warning", &Warning::of(text));
}

/// The `end` event's fields: the exit code, and the summary (summary.json's
/// fields) when the run got as far as writing one, else the error.
#[derive(Debug, Serialize)]
pub struct End<'a, S: Serialize> {
    pub exit_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<&'a S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_one_object_with_its_name_and_time_first() {
        let c = Counts {
            total: 4,
            already: 1,
            completed: 1,
            polling: 2,
            spent: Usd::from_micros(50_000),
            ..Counts::default()
        };
        let text = line("progress", &Snapshot::of(&c, Duration::from_secs(2)));
        assert!(
            text.starts_with("{\"event\":\"progress\",\"at\":\"20"),
            "{text}"
        );
        assert!(text.ends_with("}\n") && text.lines().count() == 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["rows"], 4);
        assert_eq!(v["rows_done"], 2);
        assert_eq!(v["in_flight"], 2);
        assert_eq!(v["spent_usd"], 0.05);
        assert_eq!(v["eta_s"], 4.0, "2 rows left at 0.5 rows/s");
        let w: serde_json::Value =
            serde_json::from_str(&line("warning", &Warning::of("error: row a: X: why\n"))).unwrap();
        assert_eq!(
            (w["level"].as_str(), w["message"].as_str()),
            (Some("error"), Some("row a: X: why"))
        );
        let end = End::<u8> {
            exit_code: 2,
            summary: None,
            error: Some("bad"),
        };
        assert!(line("end", &end).contains("\"exit_code\":2,\"error\":\"bad\"}"));
    }
}
