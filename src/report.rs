//! `batchgen report DIR`: the contact sheet, `DIR/index.html`.
//!
//! Why this exists: a seed sweep is something people look at, not read.
//! The page is one self-contained file that opens from disk (no server, no
//! network): rows of the same prompt side by side, one column per seed or
//! swept value, each cell a small thumbnail (made here, into `DIR/thumbs/`,
//! so the page stays light with thousands of images) linking the full
//! image, with what made it on hover and on click. Failed and not-run rows
//! sit in their place with their error. Everything is read from results.csv
//! (and summary.json for the header), so a merged folder has a sheet too.
//!
//! Thumbnails are made once: one newer than its image is kept. A run makes
//! them as its images land (module `landed`), so the sheet at its end only
//! writes the page; each is decoded at reduced size (module `small`). Paths come
//! from results.csv, which a user may have edited: a file is read only when
//! it resolves inside DIR (or a shard folder its merge recorded) and its
//! bytes are the format its name says; anything else is shown as text, never
//! linked (module `thumbs`). The sheet is written only into DIR, never when DIR
//! lies inside a run's own files, and its thumbnails only into DIR/thumbs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use crate::confine::{self, Sources, Writes};
use crate::output::{plain_name, read_results, ResultLine, RowStatus};
use crate::temps::{self, Owner};

mod grid;
mod landed;
mod small;
mod thumbs;

use grid::{axis, grids, label, short, AXES};

pub use landed::{Landed, Thumbnailer};

pub use thumbs::thumb_path;
use thumbs::Shown;

pub const INDEX_HTML: &str = "index.html";
/// Where the sheet's thumbnails live (named in [`crate::confine`], which keeps
/// other commands off a run's own folders).
pub use crate::confine::THUMBS_DIR;
/// The largest summary.json read for the header.
const MAX_SUMMARY_BYTES: u64 = 16 << 20;
/// The most images a run's end makes a sheet for; `batchgen report` has no limit.
pub const AUTO_MAX_IMAGES: u64 = 5_000;

/// What a report wrote.
#[derive(Debug, Default)]
pub struct Reported {
    pub path: PathBuf,
    pub rows: u64,
    pub images: u64,
    /// Thumbnails made by this report (others were kept).
    pub thumbnails_made: u64,
    /// Images no thumbnail could be made of: (file, why).
    pub unreadable: Vec<(String, String)>,
}

impl Reported {
    /// What `batchgen report` prints: the sheet, then its [`Reported::warnings`].
    pub fn to_text(&self) -> String {
        format!(
            "batchgen: contact sheet of {} rows, {} images ({} thumbnails made) → {}\n{}",
            self.rows,
            self.images,
            self.thumbnails_made,
            self.path.display(),
            self.warnings()
        )
    }

    /// One line per image no thumbnail could be made of.
    pub fn warnings(&self) -> String {
        let mut text = String::new();
        for (file, why) in &self.unreadable {
            let _ = writeln!(text, "warning: {file}: no thumbnail: {why}");
        }
        text
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Input(String),
    /// The sheet or its thumbnails would land outside the folder's own
    /// `index.html` and `thumbs/`, or on a run's own files.
    #[error(transparent)]
    Refused(#[from] confine::Refused),
    #[error("cannot write {path}: {}", crate::disk::plain(source))]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start a thread for thumbnails: {0}")]
    Thread(std::io::Error),
}

/// `file` (from results.csv) as a path inside the folder, if it is a plain one.
fn inside(file: &str) -> Option<PathBuf> {
    let path = Path::new(file);
    let plain = path.components().all(|c| match c {
        Component::Normal(part) => part.to_str().is_some_and(plain_name),
        _ => false,
    });
    (plain && path.components().count() > 0).then(|| path.to_path_buf())
}

/// A relative path as a URL path: every byte but the unreserved ones escaped.
fn href(path: &Path) -> String {
    let mut out = String::new();
    for (i, part) in path.components().enumerate() {
        if i > 0 {
            out.push('/');
        }
        for b in part.as_os_str().to_string_lossy().bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --ok: #2f855a; --bad: #c53030; --idle: #718096; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; }
header { margin-bottom: 1.5rem; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
.totals span { display: inline-block; margin-right: 1.2rem; }
.totals b { font-variant-numeric: tabular-nums; }
.completed { color: var(--ok); } .failed { color: var(--bad); } .not_run, .accepted { color: var(--idle); }
table { border-collapse: collapse; margin-bottom: 2rem; }
th, td { border: 1px solid #8884; padding: 4px; vertical-align: top; }
th { font-weight: 600; font-size: 12px; }
th.prompt { text-align: left; max-width: 16rem; font-weight: 400; }
th.outer { text-align: left; white-space: nowrap; }
.cell { width: 128px; font-size: 11px; }
.cell img { width: 128px; height: 128px; object-fit: contain; display: block; background: #8882; }
.cell .msg { height: 128px; overflow: hidden; overflow-wrap: anywhere; display: flex; flex-direction: column; justify-content: center; text-align: center; padding: 0 4px; }
.cell.failed .msg { background: #c5303018; } .cell.not_run .msg, .cell.accepted .msg { background: #71809618; }
details summary { cursor: pointer; color: var(--idle); }
dl { margin: 4px 0 0; display: grid; grid-template-columns: auto 1fr; gap: 0 6px; }
dt { color: var(--idle); } dd { margin: 0; word-break: break-all; }
"#;

/// Tells the console (and so whoever looks) about a thumbnail that did not load.
const SCRIPT: &str = r#"
function thumbFailed(img) { console.error("batchgen: thumbnail did not load: " + img.getAttribute("src")); }
"#;

/// One row's cell: its thumbnails, or its status and error; details on hover and click.
fn cell(out: &mut String, r: &ResultLine, shown: &BTreeMap<String, Shown>) {
    let status = RowStatus::parse(&r.status);
    let class = status.map_or("not_run", RowStatus::as_str);
    let mut details: Vec<(&str, String)> = vec![("id", r.id.clone()), ("prompt", r.prompt.clone())];
    for a in AXES {
        let v = axis(r, a);
        if !v.is_empty() {
            details.push((short(a), v));
        }
    }
    for (name, value) in [
        ("status", &r.status),
        ("request_id", &r.request_id),
        ("latency_s", &r.latency_s),
        ("cost_usd", &r.cost_usd),
        ("cached", &r.cached),
        ("error", &r.error_code),
        ("message", &r.error_message),
    ] {
        let idle = value.is_empty() || (name == "cached" && value == "false");
        if !idle {
            details.push((name, value.clone()));
        }
    }
    let title: Vec<String> = details.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = write!(
        out,
        "<div class=\"cell {class}\" title=\"{}\">",
        esc(&title.join("\n"))
    );
    if status == Some(RowStatus::Completed) {
        for (file, _) in r.files() {
            match shown.get(file) {
                Some(Shown::Thumb { image, thumb }) => {
                    let _ = write!(
                        out,
                        "<a href=\"{}\"><img class=\"thumb\" src=\"{}\" loading=\"lazy\" alt=\"{}\" onerror=\"thumbFailed(this)\"></a>",
                        href(image),
                        href(thumb),
                        esc(file)
                    );
                }
                Some(Shown::Link { image }) => {
                    let _ = write!(
                        out,
                        "<a class=\"msg\" href=\"{}\">no thumbnail: open the image</a>",
                        href(image)
                    );
                }
                Some(Shown::Text(what)) => {
                    let _ = write!(out, "<div class=\"msg\">{what}: {}</div>", esc(file));
                }
                None => {
                    let _ = write!(out, "<div class=\"msg\">{}</div>", esc(file));
                }
            }
        }
    } else {
        let what = match status {
            Some(RowStatus::Failed) => format!("failed<br><b>{}</b>", esc(&r.error_code)),
            Some(RowStatus::Accepted) => "accepted, not yet collected".to_string(),
            _ if r.error_code.is_empty() => "not run".to_string(),
            _ => format!("not run<br><b>{}</b>", esc(&r.error_code)),
        };
        let _ = write!(out, "<div class=\"msg\">{what}</div>");
    }
    out.push_str("<details><summary>details</summary><dl>");
    for (k, v) in &details {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    }
    out.push_str("</dl></details></div>");
}

/// What a sheet of `dir` may read, once it is sure to write only into
/// `dir`'s own index.html and thumbs/, never into a run's own files; the
/// temporaries a killed sheet left there are swept. Shared by [`report`]
/// and the thumbnails a run makes as its images land ([`Thumbnailer`]).
fn prepare(dir: &Path) -> Result<Sources, ReportError> {
    confine::check_output("", &dir.join(INDEX_HTML), &[], Writes::File)?;
    thumbs::check_root(dir).map_err(ReportError::Input)?;
    temps::sweep(dir, Owner::Report, false);
    temps::sweep_tree(&dir.join(THUMBS_DIR), Owner::Report, true);
    Sources::of(dir).map_err(ReportError::Input)
}

/// The sheet's heading: the run's name (summary.json's `name`, else the
/// `name:` of the manifest summary.json names, else that manifest's file
/// stem, as `plan` names a run), or the folder when there is no summary.
fn sheet_name(dir: &Path, summary: Option<&serde_json::Value>) -> String {
    let summary = summary.filter(|s| s.is_object());
    if let Some(name) = summary.and_then(|s| s["name"].as_str()) {
        return name.to_string();
    }
    match summary.and_then(|s| s["manifest"].as_str()) {
        Some(m) => crate::manifest::written_name(Path::new(m)).unwrap_or_else(|| {
            Path::new(m)
                .file_stem()
                .map_or(m.to_string(), |f| f.to_string_lossy().into_owned())
        }),
        None => dir.display().to_string(),
    }
}

/// Makes the thumbnails (on every core; those made as a run's images landed
/// are kept) and writes `DIR/index.html`.
pub fn report(dir: &Path) -> Result<Reported, ReportError> {
    let rows: Vec<ResultLine> = read_results(dir)
        .map_err(ReportError::Input)?
        .collect::<Result<_, _>>()
        .map_err(ReportError::Input)?;
    let summary: Option<serde_json::Value> =
        crate::disk::read_regular(&dir.join(crate::output::SUMMARY_JSON), MAX_SUMMARY_BYTES)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    let path = dir.join(INDEX_HTML);
    let sources = prepare(dir)?;

    // Thumbnails, for every image of a completed row that may be read.
    let images: Vec<String> = rows
        .iter()
        .filter(|r| RowStatus::parse(&r.status) == Some(RowStatus::Completed))
        .flat_map(|r| r.files().into_iter().map(|(f, _)| f.to_string()))
        .collect();
    let thumbs = thumbs::make_all(dir, &sources, &images);

    // Totals, from the rows themselves.
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    let mut cost = 0.0;
    for r in &rows {
        let s = RowStatus::parse(&r.status).map_or("not_run", RowStatus::as_str);
        *by_status.entry(s).or_default() += 1;
        cost += r.cost_usd.parse::<f64>().unwrap_or(0.0);
    }
    let name = sheet_name(dir, summary.as_ref());
    let mut html = String::with_capacity(4096 + rows.len() * 1024);
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{} · batchgen</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>\n<header><h1>{}</h1><div class=\"totals\">",
        esc(&name),
        esc(&name)
    );
    let _ = write!(html, "<span>rows <b>{}</b></span>", rows.len());
    for s in RowStatus::ALL {
        let n = by_status.get(s.as_str()).copied().unwrap_or(0);
        let _ = write!(
            html,
            "<span class=\"{0}\">{1} <b>{n}</b></span>",
            s.as_str(),
            s.as_str().replace('_', " ")
        );
    }
    let _ = write!(html, "<span>images <b>{}</b></span>", images.len());
    let _ = write!(html, "<span>cost <b>${cost:.2}</b></span>");
    if let Some(wall) = summary.as_ref().and_then(|s| s["wall_time_s"].as_f64()) {
        let _ = write!(
            html,
            "<span>latest run's wall time <b>{wall:.1} s</b></span>"
        );
    }
    if let Some(g) = summary.as_ref().and_then(|s| s["gateway"].as_str()) {
        let _ = write!(html, "<span>gateway <b>{}</b></span>", esc(g));
    }
    html.push_str("</div></header>\n");

    for grid in grids(&rows) {
        let wrapped = !grid.outer.is_empty();
        html.push_str("<table><thead><tr><th></th>");
        if wrapped {
            html.push_str("<th></th>");
        }
        for col in &grid.columns {
            let _ = write!(html, "<th>{}</th>", esc(&label(&grid.axes, col)));
        }
        html.push_str("</tr></thead><tbody>\n");
        for line in &grid.lines {
            for (n, (outer, cells)) in line.rows.iter().enumerate() {
                html.push_str("<tr>");
                if n == 0 {
                    let _ = write!(
                        html,
                        "<th class=\"prompt\" rowspan=\"{}\">{}</th>",
                        line.rows.len(),
                        esc(&line.prompt)
                    );
                }
                if wrapped {
                    let _ = write!(
                        html,
                        "<th class=\"outer\">{}</th>",
                        esc(&label(&grid.outer, outer))
                    );
                }
                for c in 0..grid.columns.len() {
                    html.push_str("<td>");
                    for &i in cells.get(&c).map(Vec::as_slice).unwrap_or(&[]) {
                        cell(&mut html, &rows[i], &thumbs.shown);
                    }
                    html.push_str("</td>");
                }
                html.push_str("</tr>\n");
            }
        }
        html.push_str("</tbody></table>\n");
    }
    html.push_str("</body></html>\n");

    temps::write_atomic(Owner::Report, &path, |w| {
        std::io::Write::write_all(w, html.as_bytes())
    })
    .map_err(|source| ReportError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(Reported {
        path,
        rows: rows.len() as u64,
        images: images.len() as u64,
        thumbnails_made: thumbs.made,
        unreadable: thumbs.unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_inside_the_folder_are_used() {
        assert!(inside("images/a_0.png").is_some());
        assert!(inside("shards/0-of-2/images/a_0.png").is_some());
        for bad in [
            "../x.png",
            "/etc/passwd",
            "images/../../x",
            "",
            "images/.hidden",
            "a b.png",
        ] {
            assert!(inside(bad).is_none(), "{bad}");
        }
        assert_eq!(href(Path::new("images/a-b_0.png")), "images/a-b_0.png");
        assert_eq!(
            esc("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
