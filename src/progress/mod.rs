//! What the user sees while a run works: an indicatif bar on a terminal, a
//! plain line every few seconds otherwise (cron, CI), nothing with `--quiet`,
//! one JSON object a line on stdout with `--progress json` ([`json`]); and
//! what monitoring reads, `--metrics-file` ([`metrics`]).
//!
//! Why this exists apart from `run`: it only reads state. Row tasks send
//! [`Event`]s over one channel; this collector owns the counters and the
//! display. It ends when every sender is gone (nothing of it is aborted; a
//! metrics write it waits for is a small file on the blocking pool).

pub mod json;
pub mod metrics;

pub use metrics::Metrics;

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::console::{self, Stream};
use crate::plan::Usd;

/// The bar on screen, if one is: log lines (`-v`) are printed above it.
static BAR: std::sync::Mutex<Option<ProgressBar>> = std::sync::Mutex::new(None);

/// Where `tracing` writes: stderr, above the progress bar while one is drawn,
/// so that `-v` on a terminal does not cut through the bar.
pub struct LogWriter;

impl std::io::Write for LogWriter {
    /// Always succeeds: a log line that cannot be written (a closed pipe, a
    /// full disk under a redirected stderr) is dropped and remembered in
    /// [`console::lost`], never handed back to the code that logged it.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| console::write(Stream::Stderr, buf)),
            None => console::write(Stream::Stderr, buf),
        };
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn show_logs_above(bar: Option<&ProgressBar>) {
    if let Ok(mut b) = BAR.lock() {
        *b = bar.cloned();
    }
}

/// How often a plain progress line is printed when stderr is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    Quiet,
    /// `--progress json`: events on stdout, stderr as with `--quiet`.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Submitting,
    Polling,
    Downloading,
}

#[derive(Clone, Debug)]
pub enum Event {
    Enter(Stage),
    Leave(Stage),
    Completed {
        images: u64,
        cost: Usd,
    },
    /// A row failed; `possibly` is what it may have been charged.
    Failed {
        possibly: Usd,
    },
    /// A row left for a rerun to collect; `possibly` is what it may have
    /// been charged (an accepted request's price).
    Left {
        possibly: Usd,
    },
    /// A submit was answered 429 or 503 (`status`), or refused by a
    /// limiter in other words (`rate_limited`: the run slowed down).
    Busy {
        status: Option<u16>,
        rate_limited: bool,
    },
    /// A warning or error about one row, already naming it.
    Say(String),
}

/// The counters the display shows.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub total: u64,
    /// Rows finished before this run started (resumed).
    pub already: u64,
    pub completed: u64,
    pub failed: u64,
    /// Accepted rows this run left for a rerun to collect.
    pub left: u64,
    pub submitting: u64,
    pub polling: u64,
    pub downloading: u64,
    pub images: u64,
    pub spent: Usd,
    /// What rows this run failed or left may have been charged.
    pub possibly_charged: Usd,
    /// Submits a limiter refused (the run slowed down for them).
    pub rate_limited: u64,
    /// Submits answered 429, and 503.
    pub http_429: u64,
    pub http_503: u64,
}

impl Counts {
    pub fn done(&self) -> u64 {
        self.already + self.completed + self.failed + self.left
    }

    /// Requests at the gateway, as `--concurrency` counts them (a finished
    /// request's download no longer holds a slot).
    pub fn in_flight(&self) -> u64 {
        self.submitting + self.polling
    }

    /// The line beside the bar: rows done, in flight, spend and ETA first,
    /// so that they fit an 80-column terminal with the bar; then the rest.
    fn line(&self, elapsed: Duration) -> String {
        let (rate, eta) = self.pace(elapsed);
        let eta = match eta {
            Some(secs) => short_duration(secs),
            None => "?".into(),
        };
        format!(
            "{}/{} rows · {} in flight · {} · ETA {eta} · {} failed · {} images · {rate:.2} rows/s",
            self.done(),
            self.total,
            self.in_flight(),
            self.spent,
            self.failed,
            self.images,
        )
    }

    /// The line printed every few seconds when stderr is not a terminal:
    /// rows and dollars this run's, with the stages and rows left ([`fit`]).
    fn plain(&self, elapsed: Duration) -> String {
        fit::plain(self, elapsed)
    }

    /// Rows finished per second by this run, and the seconds left at that
    /// pace (`None`: no row has finished yet to tell).
    pub fn pace(&self, elapsed: Duration) -> (f64, Option<f64>) {
        let secs = elapsed.as_secs_f64().max(0.001);
        let rate = (self.completed + self.failed + self.left) as f64 / secs;
        let left = self.total.saturating_sub(self.done());
        let eta = if left == 0 {
            Some(0.0)
        } else if rate > 0.0 {
            Some(left as f64 / rate)
        } else {
            None
        };
        (rate, eta)
    }

    /// Counts one event.
    fn count(&mut self, event: &Event) {
        match event {
            Event::Enter(s) => *slot(self, *s) += 1,
            Event::Leave(s) => *slot(self, *s) -= 1,
            Event::Completed { images, cost } => {
                self.completed += 1;
                self.images += images;
                self.spent = self.spent + *cost;
            }
            Event::Failed { possibly } => {
                self.failed += 1;
                self.possibly_charged = self.possibly_charged + *possibly;
            }
            Event::Left { possibly } => {
                self.left += 1;
                self.possibly_charged = self.possibly_charged + *possibly;
            }
            Event::Busy {
                status,
                rate_limited,
            } => {
                self.rate_limited += u64::from(*rate_limited);
                match status {
                    Some(429) => self.http_429 += 1,
                    Some(503) => self.http_503 += 1,
                    _ => {}
                }
            }
            Event::Say(_) => {}
        }
    }
}

/// `42s`, `3m05s`, `1h02m`, `3d04h`.
fn short_duration(secs: f64) -> String {
    let s = secs.round().min(1e9) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The bar's width: with a space and the first four fields of [`Counts::line`]
/// at their widest common size, it fits 80 columns.
const BAR_WIDTH: usize = 16;

/// How often `--progress json` prints a progress event, at most.
pub const JSON_EVERY: Duration = Duration::from_secs(1);

/// Collects events until every sender is dropped; returns the final counts.
/// Writes `metrics`, if given, at once and every [`metrics::EVERY`] (the
/// caller writes the last one, once the run's end is known).
pub async fn collect(
    mode: Mode,
    metrics: Option<Metrics>,
    mut counts: Counts,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Counts {
    let start = Instant::now();
    let json = mode == Mode::Json;
    let mut every_second = tokio::time::interval_at(start + JSON_EVERY, JSON_EVERY);
    // A stall never makes a burst: at most one event a second.
    every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics_tick = tokio::time::interval(metrics::EVERY);
    metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics_noted = false;
    let bar = (mode == Mode::Auto && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::with_draw_target(Some(counts.total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(&fit::template(fit::columns())).expect("a valid template"),
        );
        bar.set_position(counts.already);
        bar.enable_steady_tick(Duration::from_millis(200));
        show_logs_above(Some(&bar));
        bar
    });
    let plain = mode == Mode::Auto && bar.is_none();
    let mut tick = tokio::time::interval_at(start + PLAIN_EVERY, PLAIN_EVERY);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                counts.count(&event);
                // Warnings and errors are shown even with --quiet (and,
                // with --progress json, told on stdout too).
                if let Event::Say(text) = &event {
                    if json {
                        json::warning(text);
                    }
                    match &bar {
                        Some(bar) => bar.println(text),
                        None => console::err_line(text),
                    }
                }
                if let Some(bar) = &bar {
                    bar.set_position(counts.done());
                    bar.set_message(fit::beside_bar(&counts.line(start.elapsed()), fit::columns()));
                }
            }
            _ = tick.tick(), if plain => crate::say!("progress: {}", counts.plain(start.elapsed())),
            _ = every_second.tick(), if json => json::progress(&counts, start.elapsed()),
            _ = metrics_tick.tick(), if metrics.is_some() => {
                if let Some(m) = &metrics {
                    let written = m.write_blocking(counts.clone(), None).await;
                    if let Err(why) = written {
                        if !std::mem::replace(&mut metrics_noted, true) {
                            crate::say!("warning: {why}; the run goes on, and tries again every {} s", metrics::EVERY.as_secs());
                        }
                    }
                }
            }
        }
    }
    if let Some(bar) = bar {
        show_logs_above(None);
        bar.finish_and_clear();
    }
    counts
}

fn slot(c: &mut Counts, s: Stage) -> &mut u64 {
    match s {
        Stage::Submitting => &mut c.submitting,
        Stage::Polling => &mut c.polling,
        Stage::Downloading => &mut c.downloading,
    }
}

mod fit;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_follow_the_events() {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(collect(
            Mode::Quiet,
            None,
            Counts {
                total: 3,
                already: 1,
                ..Counts::default()
            },
            rx,
        ));
        for e in [
            Event::Enter(Stage::Submitting),
            Event::Leave(Stage::Submitting),
            Event::Enter(Stage::Polling),
            Event::Leave(Stage::Polling),
            Event::Completed {
                images: 2,
                cost: Usd::from_micros(100_000),
            },
            Event::Failed {
                possibly: Usd::from_micros(5),
            },
            Event::Busy {
                status: Some(429),
                rate_limited: true,
            },
        ] {
            tx.send(e).unwrap();
        }
        drop(tx);
        let c = task.await.unwrap();
        assert_eq!((c.completed, c.failed, c.images, c.polling), (1, 1, 2, 0));
        assert_eq!(c.done(), 3);
        assert_eq!(
            (c.possibly_charged.micros(), c.http_429, c.rate_limited),
            (5, 1, 1)
        );
        assert!(c
            .line(Duration::from_secs(1))
            .starts_with("3/3 rows · 0 in flight · $0.10 · ETA 0s · 1 failed · 2 images"));
    }

    #[tokio::test]
    async fn the_metrics_file_is_written_as_soon_as_the_run_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.prom");
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = Metrics::new(path.clone(), 0);
        let task = tokio::spawn(collect(Mode::Quiet, Some(metrics), Counts::default(), rx));
        tx.send(Event::Enter(Stage::Polling)).unwrap();
        let mut waited = 0;
        while !path.exists() && waited < 500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        drop(tx);
        task.await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("batchgen_running 1\n"), "{text}");
    }

    #[test]
    fn log_lines_are_written_whole_with_or_without_a_bar() {
        use std::io::Write;
        let line = b"a log line\n";
        assert_eq!(LogWriter.write(line).unwrap(), line.len());
        let bar = ProgressBar::hidden();
        show_logs_above(Some(&bar));
        assert_eq!(LogWriter.write(line).unwrap(), line.len());
        show_logs_above(None);
        assert!(BAR.lock().unwrap().is_none());
    }

    #[test]
    fn rows_in_flight_spend_and_eta_fit_80_columns_beside_the_bar() {
        let c = Counts {
            total: 1_000_000,
            already: 250_000,
            completed: 4_000,
            submitting: 24,
            polling: 1000,
            // Downloads hold no slot: not in flight.
            downloading: 7,
            spent: Usd::from_micros(12_345_670_000),
            ..Counts::default()
        };
        let line = c.line(Duration::from_secs(100));
        let head: String = line.chars().take(80 - BAR_WIDTH - 1).collect();
        assert_eq!(
            head,
            "254000/1000000 rows · 1024 in flight · $12345.67 · ETA 5h10m · "
        );
        assert_eq!(short_duration(42.4), "42s");
        assert_eq!(short_duration(185.0), "3m05s");
        assert_eq!(short_duration(3.0 * 86_400.0 + 4.0 * 3600.0), "3d04h");
    }
}
