//! Exit codes, and the one rule that gives a run's.
//!
//! Why this exists on the ground floor: the exit code is decided once
//! (`exit::for_run`), and summary.json, written inside the run before the
//! process ends, records the same code; both call [`of_run`], so they can
//! never disagree.

/// Every row completed.
pub const OK: u8 = 0;
/// The run ended with rows not completed.
pub const ROWS_FAILED: u8 = 1;
/// Invalid input or usage: nothing was sent.
pub const INVALID: u8 = 2;
/// Stopped early: key rejected, no funds, budget, gateway unreachable, disk.
pub const ABORTED: u8 = 3;
/// Ctrl-C.
pub const INTERRUPTED: u8 = 130;

/// The exit code of a run that ended: the stop's code if it stopped early
/// (a signal's, or [`ABORTED`]), else [`ROWS_FAILED`] when fewer than
/// `rows` rows completed, else [`OK`].
pub fn of_run(stopped_with: Option<u8>, rows: u64, completed: u64) -> u8 {
    match stopped_with {
        Some(code) => code,
        None if completed < rows => ROWS_FAILED,
        None => OK,
    }
}
