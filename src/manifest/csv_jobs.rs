//! CSV manifests and `jobs_from:` files: a header of parameter names, a job per row.
//!
//! Cells are kept byte for byte as text (standard CSV quoting is undone by the
//! `csv` crate, nothing else is); an empty cell means "not set here", so
//! defaults still apply. `width` + `height` are folded into `image_size`.

use std::path::Path;
use std::sync::Arc;

use super::{unknown, Diagnostic, Field, Job, LoadError, Loc, Node, Pos, Value};
use super::{CSV_EXTRA_COLUMNS, PARAMS};

pub(super) fn load(
    file: &Arc<Path>,
    problems: &mut Vec<Diagnostic>,
) -> Result<Vec<Job>, LoadError> {
    let source = crate::disk::open_regular(file, super::MAX_CSV_BYTES)?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(source);
    let header_loc = Loc {
        file: file.clone(),
        pos: Pos::Row { row: 0, line: 1 },
    };
    let headers = reader
        .headers()
        .map_err(|e| {
            LoadError::Invalid(Diagnostic::error(
                &header_loc,
                format!("unreadable CSV header: {e}"),
            ))
        })?
        .clone();
    let allowed: Vec<&str> = PARAMS.iter().chain(CSV_EXTRA_COLUMNS).copied().collect();
    // Column index -> name, for the columns we understand.
    let mut columns: Vec<Option<String>> = Vec::with_capacity(headers.len());
    for (i, raw) in headers.iter().enumerate() {
        let name = raw.trim();
        if !allowed.contains(&name) {
            problems.push(unknown(&header_loc, "CSV column", name, &allowed));
            columns.push(None);
        } else if headers.iter().take(i).any(|h| h.trim() == name) {
            problems.push(Diagnostic::error(
                &header_loc,
                format!("column `{name}` appears twice"),
            ));
            columns.push(None);
        } else {
            columns.push(Some(name.to_string()));
        }
    }
    let has = |c: &str| columns.iter().flatten().any(|n| n == c);
    if has("width") != has("height") {
        problems.push(Diagnostic::error(
            &header_loc,
            "columns `width` and `height` go together: give both or neither",
        ));
    }
    if has("seed") && has("seeds") {
        problems.push(Diagnostic::error(
            &header_loc,
            "columns `seed` and `seeds` both given: use one",
        ));
    }

    let mut jobs = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let row = index + 1;
        let record = match record {
            Ok(r) => r,
            Err(e) if e.is_io_error() => {
                return Err(LoadError::Read(crate::disk::ReadError {
                    path: file.to_path_buf(),
                    why: crate::disk::Why::Other(into_io(e)),
                }));
            }
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                let loc = Loc {
                    file: file.clone(),
                    pos: Pos::Row { row, line },
                };
                problems.push(Diagnostic::error(&loc, format!("unreadable CSV row: {e}")));
                continue;
            }
        };
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        let loc = Loc {
            file: file.clone(),
            pos: Pos::Row { row, line },
        };
        if record.iter().all(|c| c.trim().is_empty()) {
            continue; // a blank line is not a job
        }
        if record.len() != headers.len() {
            problems.push(Diagnostic::error(
                &loc,
                format!(
                    "row has {} cells, the header has {}",
                    record.len(),
                    headers.len()
                ),
            ));
            continue;
        }
        let cell = |text: &str| Node {
            value: Value::Str(text.to_string()),
            loc: loc.clone(),
        };
        let mut fields = Vec::new();
        let (mut width, mut height) = (None, None);
        for (name, text) in columns.iter().zip(record.iter()) {
            let Some(name) = name else { continue };
            if text.trim().is_empty() {
                continue;
            }
            match name.as_str() {
                "width" => width = Some(cell(text)),
                "height" => height = Some(cell(text)),
                _ => fields.push(Field {
                    name: name.clone(),
                    value: cell(text),
                }),
            }
        }
        let id = fields
            .iter()
            .find(|f| f.name == "id")
            .and_then(|f| f.value.as_str().map(str::to_string));
        match (width, height) {
            (Some(w), Some(h)) => {
                if fields.iter().any(|f| f.name == "image_size") {
                    problems.push(
                        Diagnostic::error(
                            &loc,
                            "both `image_size` and `width`/`height` are set: use one",
                        )
                        .job(id.as_deref())
                        .field("image_size"),
                    );
                } else {
                    let key = |k: &str| cell(k);
                    fields.push(Field {
                        name: "image_size".into(),
                        value: Node {
                            value: Value::Map(vec![(key("width"), w), (key("height"), h)]),
                            loc: loc.clone(),
                        },
                    });
                }
            }
            (None, None) => {}
            _ => problems.push(
                Diagnostic::error(
                    &loc,
                    "`width` and `height` go together: give both or neither",
                )
                .job(id.as_deref())
                .field("image_size"),
            ),
        }
        jobs.push(Job {
            loc,
            fields,
            sweep: Vec::new(),
        });
    }
    Ok(jobs)
}

fn into_io(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_text(text: &str) -> (Vec<Job>, Vec<Diagnostic>) {
        let mut f = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let mut problems = Vec::new();
        let jobs = load(&Arc::from(f.path()), &mut problems).unwrap();
        (jobs, problems)
    }

    #[test]
    fn quoting_survives_byte_for_byte() {
        let (jobs, problems) =
            load_text("id,prompt\na,\"He said \"\"hi\"\", then left,\nslowly\"\nb,  spaced  \n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            jobs[0].get("prompt").unwrap().as_str(),
            Some("He said \"hi\", then left,\nslowly")
        );
        assert_eq!(jobs[1].get("prompt").unwrap().as_str(), Some("  spaced  "));
        assert_eq!(jobs[1].loc.pos, Pos::Row { row: 2, line: 4 });
    }

    #[test]
    fn empty_cells_are_unset_and_width_height_fold_into_image_size() {
        let (jobs, problems) = load_text("prompt,seed,width,height\ncat,,640,480\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(jobs[0].get("seed").is_none());
        assert!(matches!(
            jobs[0].get("image_size").unwrap().value,
            Value::Map(_)
        ));
    }

    #[test]
    fn unknown_and_lonely_columns_are_reported_at_the_header() {
        let (_, problems) = load_text("prompt,guidence_scale,width\ncat,1,2\n");
        let text: Vec<String> = problems.iter().map(|d| d.to_string()).collect();
        assert!(
            text[0].contains("did you mean `guidance_scale`?"),
            "{text:?}"
        );
        assert!(text[0].contains("(header)"), "{text:?}");
        assert!(text
            .iter()
            .any(|t| t.contains("`width` and `height` go together")));
    }

    #[test]
    fn ragged_rows_are_reported_with_their_row() {
        let (jobs, problems) = load_text("prompt,seed\ncat,1\ndog\n");
        assert_eq!(jobs.len(), 1);
        assert!(problems[0].to_string().contains("(row 2)"), "{problems:?}");
    }
}
