//! The one place where outcomes become exit codes, and errors become text.
//!
//! Contract with users' scripts: 0 all completed · 1 finished with failed rows
//! · 2 invalid input or usage, nothing sent · 3 aborted (key rejected, no
//! funds, budget) · 130 interrupted.

use std::process::ExitCode;

use crate::api::KeyError;
use crate::manifest::LoadError;
use crate::plan::{Invalid, Usd};
use crate::run::{Report, RunError, Stop};

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
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("invalid --base-url `{0}`: give an http(s) URL")]
    BaseUrl(String),
    #[error("cannot summarise {0}: there is no batchgen journal in it")]
    NoRun(String),
    #[error(transparent)]
    Run(#[from] RunError),
}

impl Error {
    pub fn code(&self) -> u8 {
        match self {
            Error::Load(_)
            | Error::Invalid(_)
            | Error::OverBudget { .. }
            | Error::Io(_)
            | Error::Key(_)
            | Error::BaseUrl(_)
            | Error::NoRun(_) => INVALID,
            // The run could not keep its journal or outputs: stopped, as when aborted.
            Error::Run(RunError::Locked(_)) => INVALID,
            Error::Run(_) => ABORTED,
        }
    }
}

/// The exit code of a run that ended: interrupted beats aborted beats failed rows.
pub fn for_run(report: &Report) -> u8 {
    let by = |s: &str| report.summary.rows_by_status.get(s).copied().unwrap_or(0);
    match &report.stop {
        Some(Stop::Interrupted) => INTERRUPTED,
        Some(_) => ABORTED,
        None if by("failed") > 0 || by("not_run") > 0 => ROWS_FAILED,
        None => OK,
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

    fn report(stop: Option<Stop>, failed: u64) -> Report {
        let mut summary = crate::output::Summary::default();
        summary.rows_by_status.insert("failed", failed);
        Report { summary, stop }
    }

    #[test]
    fn run_outcomes_map_to_the_documented_codes() {
        assert_eq!(for_run(&report(None, 0)), OK);
        assert_eq!(for_run(&report(None, 2)), ROWS_FAILED);
        assert_eq!(for_run(&report(Some(Stop::Interrupted), 2)), INTERRUPTED);
        let rejected = Stop::Rejected {
            code: "UNAUTHORIZED".into(),
            message: String::new(),
        };
        assert_eq!(for_run(&report(Some(rejected), 2)), ABORTED);
        assert_eq!(
            for_run(&report(
                Some(Stop::Budget {
                    limit: Usd::default()
                }),
                0
            )),
            ABORTED
        );
    }

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
