//! `.plan-keys`: the keys of the newest run's plan, so that `status` counts
//! the rows `run` counts without reading the manifest.

use std::io::Write;
use std::path::Path;

use super::PLAN_KEYS;
use crate::disk::write_atomic;
use crate::plan::Plan;
use crate::vocab::Key;

/// Records which keys the current plan holds, for `status`.
pub fn write_plan_keys(plan: &Plan, out_dir: &Path) -> std::io::Result<()> {
    write_atomic(&out_dir.join(PLAN_KEYS), |w| {
        for row in &plan.rows {
            writeln!(w, "{}", row.key)?;
        }
        Ok(())
    })
}

/// The keys of the newest run's plan, if the folder records them.
pub fn read_plan_keys(out_dir: &Path) -> std::io::Result<Option<Vec<Key>>> {
    match std::fs::read_to_string(out_dir.join(PLAN_KEYS)) {
        Ok(text) => text
            .lines()
            .enumerate()
            .map(|(n, line)| {
                Key::parse(line).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("line {} is not a row key", n + 1),
                    )
                })
            })
            .collect::<std::io::Result<Vec<Key>>>()
            .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
