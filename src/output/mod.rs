//! Stage 4 of 4: what a run leaves in its output folder.
//!
//! Why this exists: users' scripts read `results.csv` and `summary.json`, and
//! training jobs read `images/`. File names, column names and status words
//! are a contract: they only ever grow. Everything here is written atomically
//! (a temporary file beside the target, renamed into place), so a crash
//! leaves the previous version, never half a file.
//!
//! Results are computed from the journal, not from a run's memory, and one
//! function ([`row_result`]) says what a journal record means, so `run`,
//! `status`, results.csv and summary.json always count the same rows the
//! same way.

/// Where results read the journal's records (the journal defines it).
pub use crate::journal::Records;

mod accounting;
mod names;
mod plan_keys;
mod results;
mod row;
#[cfg(test)]
mod tests;

pub use accounting::{write, Earlier, ResultTotals, RunEnd, RunSummary};
pub use names::{
    default_dir, plain_name, Stems, IMAGES_DIR, MAX_STEM, PLAN_KEYS, RESULTS_CSV, SUMMARY_JSON,
};
pub use plan_keys::{read_plan_keys, write_plan_keys};
pub use results::{read_results, write_results, ResultLine, COLUMNS};
pub use row::{row_result, RowResult, RowStatus, UNCERTAIN_MESSAGE};
