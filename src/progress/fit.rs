//! The human progress line, made to fit: beside the bar, whole fields only,
//! as many as the terminal's width holds (from 60 columns up); in plain
//! output (cron, CI), rows and dollars both counted for this run, and said so.
//!
//! Why this exists apart from the collector: the collector counts, this only
//! formats, and a terminal of any width must never see a field cut in half
//! (a dollar amount cut to `$12` misleads). Nothing here is async.

use std::time::Duration;

use super::{short_duration, Counts, BAR_WIDTH};

/// The narrowest terminal the bar's line is made for.
pub(super) const MIN_COLUMNS: usize = 60;
/// Below this width the bar is left out, so that rows, spend and ETA fit.
pub(super) const BAR_FROM_COLUMNS: usize = 80;

/// The terminal's width (stderr's), or 80 when it cannot be told.
pub(super) fn columns() -> usize {
    #[cfg(unix)]
    {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
        // points at one; a descriptor that is not a terminal makes it fail.
        let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
        if ok && size.ws_col > 0 {
            return usize::from(size.ws_col);
        }
    }
    BAR_FROM_COLUMNS
}

/// The bar's template for a terminal `columns` wide: no bar below 80.
pub(super) fn template(columns: usize) -> String {
    if columns >= BAR_FROM_COLUMNS {
        format!("{{bar:{BAR_WIDTH}}} {{wide_msg}}")
    } else {
        "{wide_msg}".into()
    }
}

/// The message beside the bar on a terminal `columns` wide: the fields of
/// `line` (joined by ` · `) that fit, whole, the first field (rows), the
/// spend and the ETA before the others, each shown in its place.
pub(super) fn beside_bar(line: &str, columns: usize) -> String {
    let room = match columns {
        c if c >= BAR_FROM_COLUMNS => c - BAR_WIDTH - 1,
        c => c.max(MIN_COLUMNS),
    }
    // indicatif leaves the last column empty.
    .saturating_sub(1);
    let fields: Vec<&str> = line.split(" · ").collect();
    let first = |f: &&str| f.starts_with('$') || f.starts_with("ETA ");
    let mut order: Vec<usize> = (0..fields.len()).collect();
    order.sort_by_key(|&i| (i != 0 && !first(&fields[i]), i));
    let mut kept = vec![false; fields.len()];
    let mut width = 0;
    for i in order {
        let w = fields[i].chars().count() + if width == 0 { 0 } else { 3 };
        if width + w <= room {
            kept[i] = true;
            width += w;
        }
    }
    let shown: Vec<&str> = fields
        .iter()
        .zip(kept)
        .filter_map(|(f, k)| k.then_some(*f))
        .collect();
    shown.join(" · ")
}

/// The line printed every few seconds when stderr is not a terminal: rows
/// and spend both this run's, said so, then the stages and rows left.
pub(super) fn plain(c: &Counts, elapsed: Duration) -> String {
    let finished = c.completed + c.failed + c.left;
    let to_do = c.total.saturating_sub(c.already);
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = finished as f64 / secs;
    let eta = match to_do.saturating_sub(finished) {
        0 => "0s".to_string(),
        _ if rate == 0.0 => "?".to_string(),
        left => short_duration(left as f64 / rate),
    };
    let mut line = format!("this run: {finished}/{to_do} rows");
    if c.already > 0 {
        line.push_str(&format!(" ({} finished earlier)", c.already));
    }
    line.push_str(&format!(
        " · {} spent · {} in flight · ETA {eta} · {} failed · {} images · {rate:.2} rows/s · {} submitting, {} polling, {} downloading",
        c.spent,
        c.submitting + c.polling,
        c.failed,
        c.images,
        c.submitting,
        c.polling,
        c.downloading
    ));
    if c.left > 0 {
        line.push_str(&format!(" · {} left to collect", c.left));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Usd;

    fn busy() -> Counts {
        Counts {
            total: 1_000_000,
            already: 250_000,
            completed: 4_000,
            failed: 12,
            submitting: 24,
            polling: 1000,
            downloading: 7,
            images: 8_000,
            spent: Usd::from_micros(12_345_670_000),
            ..Counts::default()
        }
    }

    #[test]
    fn the_line_beside_the_bar_fits_every_width_from_60_with_whole_fields() {
        let line = "254012/1000000 rows · 1024 in flight · $12345.67 · ETA 5h10m · 12 failed · 8000 images · 40.12 rows/s";
        for columns in 60..=200 {
            let msg = beside_bar(line, columns);
            let bar = if columns >= BAR_FROM_COLUMNS {
                BAR_WIDTH + 1
            } else {
                0
            };
            assert!(bar + msg.chars().count() < columns, "{columns}: {msg}");
            for field in msg.split(" · ") {
                assert!(
                    line.split(" · ").any(|f| f == field),
                    "{columns}: {field} cut"
                );
            }
            assert!(msg.starts_with("254012/1000000 rows"), "{columns}: {msg}");
            assert!(
                msg.contains("$12345.67") && msg.contains("ETA 5h10m"),
                "{columns}: {msg}"
            );
        }
        assert_eq!(
            beside_bar(line, 60),
            "254012/1000000 rows · $12345.67 · ETA 5h10m · 12 failed"
        );
        assert_eq!(beside_bar(line, 200), line);
        assert_eq!(template(79), "{wide_msg}");
        assert_eq!(template(80), format!("{{bar:{BAR_WIDTH}}} {{wide_msg}}"));
    }

    #[test]
    fn plain_lines_count_rows_and_dollars_for_this_run_and_say_so() {
        let line = plain(&busy(), Duration::from_secs(100));
        assert!(
            line.starts_with(
                "this run: 4012/750000 rows (250000 finished earlier) · $12345.67 spent · 1024 in flight · ETA "
            ),
            "{line}"
        );
        assert!(
            line.ends_with("24 submitting, 1000 polling, 7 downloading"),
            "{line}"
        );
        let fresh = Counts {
            total: 3,
            completed: 3,
            ..Counts::default()
        };
        assert!(plain(&fresh, Duration::from_secs(1))
            .starts_with("this run: 3/3 rows · $0.00 spent · 0 in flight · ETA 0s"));
    }
}
