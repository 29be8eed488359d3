//! The sheet's layout: which rows share a grid, and what its columns and
//! rows are.
//!
//! Why this exists apart from `report.rs`: the layout is the sheet's one
//! piece of logic worth testing without a browser. Rows of one prompt make
//! a line; lines over the same swept values share a grid; a grid wider than
//! [`MAX_COLUMNS`] over several parameters wraps, keeping the innermost
//! parameter along the columns and giving each combination of the others a
//! row of its own, headed by its values. Nothing here is async.

use std::collections::{BTreeMap, BTreeSet};

use crate::output::ResultLine;

/// The parameters a cell's column can differ by, as results.csv names them.
pub(super) const AXES: &[&str] = &[
    "image_size",
    "num_inference_steps",
    "guidance_scale",
    "num_images",
    "enable_safety_checker",
    "output_format",
    "sync_mode",
    "enable_prompt_expansion",
    "seed",
];

pub(super) fn axis(line: &ResultLine, name: &str) -> String {
    match name {
        "image_size" => line.image_size.clone(),
        "num_inference_steps" => line.num_inference_steps.clone(),
        "guidance_scale" => line.guidance_scale.clone(),
        "num_images" => line.num_images.clone(),
        "enable_safety_checker" => line.enable_safety_checker.clone(),
        "output_format" => line.output_format.clone(),
        "sync_mode" => line.sync_mode.clone(),
        "enable_prompt_expansion" => line.enable_prompt_expansion.clone(),
        "seed" => line.seed.clone(),
        _ => String::new(),
    }
}

/// Short names for column headings.
pub(super) fn short(name: &str) -> &str {
    match name {
        "num_inference_steps" => "steps",
        "guidance_scale" => "guidance",
        "image_size" => "size",
        "num_images" => "images",
        "output_format" => "format",
        "enable_safety_checker" => "safety",
        "enable_prompt_expansion" => "expansion",
        other => other,
    }
}

/// Sorts values as numbers where they are numbers.
fn value_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y),
        _ => a.cmp(b),
    }
}

/// One grid: lines (a prompt each) over the same columns.
pub(super) struct Grid {
    /// The parameters that vary along the columns.
    pub axes: Vec<&'static str>,
    pub columns: Vec<Vec<String>>,
    /// The parameters that vary down a line's rows (empty: one row a line).
    pub outer: Vec<&'static str>,
    pub lines: Vec<Line>,
}

/// A grid row's cells by column: the result rows (their indices) there.
pub(super) type Cells = BTreeMap<usize, Vec<usize>>;

/// A prompt's rows in a grid.
pub(super) struct Line {
    pub prompt: String,
    /// (the values of the grid's `outer` parameters, cells by column: the
    /// result rows there).
    pub rows: Vec<(Vec<String>, Cells)>,
}

/// Rows of the same prompt (and condition images) make a line; lines whose
/// columns are the same values of the same parameters make a grid.
pub(super) fn grids(rows: &[ResultLine]) -> Vec<Grid> {
    let mut lines: Vec<(String, Vec<usize>)> = Vec::new();
    let mut at: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        let k = (r.prompt.clone(), r.image_urls.clone());
        let n = *at.entry(k).or_insert_with(|| {
            lines.push((r.prompt.clone(), Vec::new()));
            lines.len() - 1
        });
        lines[n].1.push(i);
    }
    let mut grids: Vec<Grid> = Vec::new();
    for (prompt, members) in lines {
        let axes: Vec<&'static str> = AXES
            .iter()
            .copied()
            .filter(|a| {
                let first = axis(&rows[members[0]], a);
                members.iter().any(|&m| axis(&rows[m], a) != first)
            })
            .collect();
        let mut columns: Vec<Vec<String>> = members
            .iter()
            .map(|&m| axes.iter().map(|a| axis(&rows[m], a)).collect())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        columns.sort_by(|a, b| {
            a.iter()
                .zip(b)
                .map(|(x, y)| value_order(x, y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let grid = match grids
            .iter_mut()
            .find(|g| g.axes == axes && g.columns == columns)
        {
            Some(g) => g,
            None => {
                grids.push(Grid {
                    axes: axes.clone(),
                    columns: columns.clone(),
                    outer: Vec::new(),
                    lines: Vec::new(),
                });
                grids.last_mut().expect("just pushed")
            }
        };
        let mut cells = Cells::new();
        for &m in &members {
            let values: Vec<String> = axes.iter().map(|a| axis(&rows[m], a)).collect();
            let col = columns.iter().position(|c| *c == values).expect("a column");
            cells.entry(col).or_default().push(m);
        }
        grid.lines.push(Line {
            prompt,
            rows: vec![(Vec::new(), cells)],
        });
    }
    grids.into_iter().map(wrap).collect()
}

/// A grid of more columns than this, over two or more parameters, wraps.
pub(super) const MAX_COLUMNS: usize = 8;

/// A grid too wide to read (a 2 × 2 × 6 sweep is 24 columns) keeps only its
/// innermost parameter (the seed, when seeds vary) along the columns; each
/// prompt takes one row per combination of the others, headed by them.
fn wrap(grid: Grid) -> Grid {
    if grid.axes.len() < 2 || grid.columns.len() <= MAX_COLUMNS {
        return grid;
    }
    let inner = grid.axes.len() - 1;
    let mut outer_values: Vec<Vec<String>> = Vec::new();
    let mut inner_values: Vec<String> = Vec::new();
    for col in &grid.columns {
        if !outer_values.iter().any(|o| o[..] == col[..inner]) {
            outer_values.push(col[..inner].to_vec());
        }
        if !inner_values.contains(&col[inner]) {
            inner_values.push(col[inner].clone());
        }
    }
    inner_values.sort_by(|a, b| value_order(a, b));
    let lines = grid
        .lines
        .into_iter()
        .map(|line| {
            let (_, cells) = line.rows.into_iter().next().unwrap_or_default();
            let mut rows: Vec<(Vec<String>, Cells)> = outer_values
                .iter()
                .map(|o| (o.clone(), BTreeMap::new()))
                .collect();
            for (c, members) in cells {
                let col = &grid.columns[c];
                let o = outer_values
                    .iter()
                    .position(|o| o[..] == col[..inner])
                    .expect("an outer combination");
                let i = inner_values
                    .iter()
                    .position(|v| *v == col[inner])
                    .expect("an inner value");
                rows[o].1.insert(i, members);
            }
            rows.retain(|(_, cells)| !cells.is_empty());
            Line {
                prompt: line.prompt,
                rows,
            }
        })
        .collect();
    Grid {
        outer: grid.axes[..inner].to_vec(),
        axes: vec![grid.axes[inner]],
        columns: inner_values.into_iter().map(|v| vec![v]).collect(),
        lines,
    }
}

/// `guidance 1.5 · seed 2`: parameters and their values, for headings.
pub(super) fn label(axes: &[&str], values: &[String]) -> String {
    let parts: Vec<String> = axes
        .iter()
        .zip(values)
        .map(|(a, v)| format!("{} {}", short(a), if v.is_empty() { "default" } else { v }))
        .collect();
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(prompt: &str, seed: &str, guidance: &str) -> ResultLine {
        ResultLine {
            prompt: prompt.into(),
            seed: seed.into(),
            guidance_scale: guidance.into(),
            ..ResultLine::default()
        }
    }

    #[test]
    fn sweeps_become_grids_of_prompts_by_swept_values() {
        let rows = vec![
            line("fox", "2", "7.5"),
            line("fox", "10", "7.5"),
            line("fox", "2", "2"),
            line("fox", "10", "2"),
            line("owl", "2", "2"),
            line("owl", "10", "2"),
            line("owl", "2", "7.5"),
            line("owl", "10", "7.5"),
            line("bee", "1", "2"),
        ];
        let g = grids(&rows);
        assert_eq!(g.len(), 2, "fox and owl share a grid; bee has its own");
        assert_eq!(g[0].axes, ["guidance_scale", "seed"]);
        assert!(g[0].outer.is_empty(), "4 columns do not wrap");
        let cols: Vec<Vec<&str>> = g[0]
            .columns
            .iter()
            .map(|c| c.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(cols, [["2", "2"], ["2", "10"], ["7.5", "2"], ["7.5", "10"]]);
        assert_eq!(g[0].lines.len(), 2);
        assert_eq!(
            g[0].lines[0].rows[0].1[&0],
            [2],
            "fox at guidance 2, seed 2"
        );
        assert!(g[1].axes.is_empty());
    }

    #[test]
    fn a_wide_multi_axis_sweep_wraps_into_rows_headed_by_the_outer_values() {
        // 2 sizes × 2 guidance values × 6 seeds: 24 columns unwrapped.
        let mut rows = Vec::new();
        for size in ["square", "portrait_4_3"] {
            for g in ["1.5", "4"] {
                for seed in 1..=6 {
                    rows.push(ResultLine {
                        image_size: size.into(),
                        ..line("fox", &seed.to_string(), g)
                    });
                }
            }
        }
        let g = grids(&rows);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].axes, ["seed"]);
        assert_eq!(g[0].outer, ["image_size", "guidance_scale"]);
        assert_eq!(g[0].columns.len(), 6);
        let line = &g[0].lines[0];
        let heads: Vec<String> = line
            .rows
            .iter()
            .map(|(o, _)| label(&g[0].outer, o))
            .collect();
        assert_eq!(
            heads,
            [
                "size portrait_4_3 · guidance 1.5",
                "size portrait_4_3 · guidance 4",
                "size square · guidance 1.5",
                "size square · guidance 4",
            ]
        );
        // Every row once, in the column of its seed.
        let mut seen: Vec<usize> = Vec::new();
        for (outer, cells) in &line.rows {
            for (c, members) in cells {
                for &m in members {
                    assert_eq!(rows[m].seed, g[0].columns[*c][0]);
                    assert_eq!(rows[m].image_size, outer[0]);
                    assert_eq!(rows[m].guidance_scale, outer[1]);
                    seen.push(m);
                }
            }
        }
        seen.sort();
        assert_eq!(seen, (0..24).collect::<Vec<_>>());
    }
}
