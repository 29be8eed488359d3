//! The one place where outcomes become exit codes, and errors become text.
//!
//! Contract with users' scripts: 0 all completed · 1 finished with failed rows
//! · 2 invalid input or usage, nothing sent · 3 aborted (key rejected, no
//! funds, budget) · 130 interrupted.

use std::process::ExitCode;

use crate::manifest::LoadError;
use crate::plan::{Invalid, Usd};

pub const OK: u8 = 0;
pub const ROWS_FAILED: u8 = 1;
pub const INVALID: u8 = 2;
pub const ABORTED: u8 = 3;
pub const INTERRUPTED: u8 = 130;

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{} error(s) in the manifest; nothing was sent", .0.errors())]
    Invalid(#[from] Invalid),
    #[error("the estimated cost {cost} exceeds the budget of {max}; nothing was sent")]
    OverBudget { cost: Usd, max: Usd },
    #[error("{0}")]
    Io(String),
}

impl Error {
    pub fn code(&self) -> u8 {
        match self {
            Error::Load(_) | Error::Invalid(_) | Error::OverBudget { .. } | Error::Io(_) => INVALID,
        }
    }
}

/// Prints `err` (diagnostics first, then the one-line reason) and gives its code.
pub fn report(err: &Error) -> ExitCode {
    if let Error::Invalid(invalid) = err {
        for d in &invalid.diagnostics {
            eprintln!("{d}");
        }
    }
    eprintln!("error: {err}");
    ExitCode::from(err.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_input_is_exit_2() {
        let e = Error::OverBudget {
            cost: Usd::from_micros(2),
            max: Usd::from_micros(1),
        };
        assert_eq!(e.code(), INVALID);
        let _ = (OK, ROWS_FAILED, ABORTED, INTERRUPTED);
    }
}
