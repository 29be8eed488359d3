//! Stage 2 of 4: expand a manifest into validated, priced rows.
//!
//! Why this exists: nothing may be sent, and no cent spent, until every row of
//! the run is known to be valid. This stage applies defaults, per-job values,
//! sweeps and seed lists; checks every value against the API's documented
//! rules; gives each row a stable `key` (for machines: journal, resume) and a
//! readable `id` (for people: file names, reports; unique even ignoring case,
//! see `ids.rs`); and prices the run.
//!
//! Precedence, lowest first: `defaults`, then `sweep` (and top-level `seeds`),
//! then the job's own values and own `sweep` (see `job.rs`). A job that sets a
//! swept parameter itself is not swept on it.
//!
//! Rows are small (24 bytes): a row names its job and its position in the
//! job's sweep, and [`Plan::request`] rebuilds the full request on demand, so a
//! million-row seed sweep stays light.

mod expand;
mod ids;
mod job;
mod keys;
mod model;
mod params;
mod price;
mod report;

#[cfg(test)]
use expand::expand_checking;
pub use expand::{expand, Invalid, MAX_ROWS, MAX_SEED_COUNT};
pub use ids::sanitize;
pub use model::{
    Axis, JobPlan, Plan, Pricing, Row, Totals, ASSUMED_IMAGE_TO_IMAGE_PRICE,
    DEFAULT_TEXT_TO_IMAGE_PRICE,
};
pub use params::{
    image_mime, ImageInput, ImageSize, Kind, OutputFormat, ParamValue, Request,
    MAX_LOCAL_IMAGE_BYTES, MAX_NUM_IMAGES, SIZE_PRESETS,
};
pub use report::{Summary, SummaryRow};

pub use crate::vocab::{Key, Shard, Usd};

#[cfg(test)]
mod tests;
