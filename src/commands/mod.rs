//! The command bodies, one module per subcommand; `lib.rs` only dispatches.
//!
//! Why this exists: each command turns its validated arguments into calls of
//! the stages (manifest → plan → run → output) and prints what the user
//! reads; the exit code is decided in [`crate::exit`].

pub mod bucket;
pub mod completions;
pub mod export;
pub mod merge;
pub mod notify;
pub mod on_bucket;
pub mod plan;
pub mod report;
pub mod run;
pub mod signals;
pub mod sim;
pub mod status;
pub mod watch;

use std::path::Path;

use crate::exit::Error;
use crate::store::Location;

/// Loads and expands a manifest; prints warnings to stderr.
pub fn load_plan(path: &std::path::Path) -> Result<crate::plan::Plan, Error> {
    let manifest = crate::manifest::load(path)?;
    let plan = crate::plan::expand(&manifest)?;
    for w in &plan.warnings {
        crate::say!("{w}");
    }
    Ok(plan)
}

/// A folder or a bucket prefix a command takes (`what`: `--out`, …),
/// parsed before anything is sent; an unknown scheme is refused by name.
pub fn location(path: &Path, what: &'static str) -> Result<Location, Error> {
    Location::of_path(path).map_err(|source| Error::Location { what, source })
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
pub fn print_stdout(text: &str) {
    crate::console::out(text);
}
