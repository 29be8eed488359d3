//! The one place where outcomes become exit codes, and errors become text.
//!
//! Contract with users' scripts: 0 all completed · 1 finished with rows not
//! completed (for `status --check`: not complete yet, a run still going
//! included; for `export`: no image exported) · 2 invalid input or usage, nothing sent · 3 aborted (key
//! rejected, no funds, budget, gateway unreachable, local disk failure) ·
//! 130 interrupted (Ctrl-C) · 143 terminated (SIGTERM) · 129 hung up (SIGHUP).

use std::process::ExitCode;

use crate::api::KeyError;
use crate::journal::store::JournalStoreError;
use crate::journal::JournalError;
use crate::manifest::LoadError;
use crate::output::RowStatus;
use crate::plan::{Invalid, Usd};
use crate::run::{Report, RunError, Stop};
use crate::store::StoreError;

pub use crate::vocab::exit_code::{ABORTED, INTERRUPTED, INVALID, OK, ROWS_FAILED};

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{} error(s) in the manifest; nothing was sent", .0.errors())]
    Invalid(#[from] Invalid),
    #[error("the estimated cost {cost} exceeds the budget of {max}; nothing was sent")]
    OverBudget { cost: Usd, max: Usd },
    #[error("this run would newly spend up to {cost}, above the budget of {max}; nothing was sent{}",
        if *spent > Usd::default() { format!(" (the {spent} earlier runs spent in this folder do not count)") } else { String::new() })]
    RunOverBudget { cost: Usd, max: Usd, spent: Usd },
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("invalid --base-url `{0}`: give an http(s) URL")]
    BaseUrl(String),
    #[error("--base-url holds the API key (or a part of it); give the gateway's URL without it (the key goes in PIXAZO_API_KEY or --api-key-file)")]
    BaseUrlHoldsKey,
    #[error("--base-url has a query (`?…`) or a fragment (`#…`): give the gateway's scheme, host, port and path only")]
    BaseUrlQuery,
    #[error("invalid --notify URL: give an http:// or https:// URL with a host (the URL is not shown: it may hold a token)")]
    NotifyUrl,
    #[error("--notify holds the API key (or a part of it); batchgen never sends the key: give a URL without it")]
    NotifyHoldsKey,
    #[error("cannot summarise {0}: there is no batchgen journal in it")]
    NoRun(String),
    #[error("{0}")]
    Shard(String),
    #[error("{what}: {source}")]
    Location {
        what: &'static str,
        #[source]
        source: crate::store::LocationError,
    },
    /// A command on a bucket prefix (`status`, `report`, `export`, `merge`
    /// on a URL): what went wrong, every path of its working copy shown as
    /// the URL it stands for, with the exit code the error has.
    #[error("{text}")]
    Bucket { text: String, code: u8 },
    #[error(transparent)]
    Merge(#[from] crate::merge::MergeError),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error(transparent)]
    Run(#[from] RunError),
}

impl Error {
    pub fn code(&self) -> u8 {
        match self {
            Error::Load(_)
            | Error::Invalid(_)
            | Error::OverBudget { .. }
            | Error::RunOverBudget { .. }
            | Error::Io(_)
            | Error::Key(_)
            | Error::BaseUrl(_)
            | Error::BaseUrlHoldsKey
            | Error::BaseUrlQuery
            | Error::NotifyUrl
            | Error::NotifyHoldsKey
            | Error::NoRun(_)
            | Error::Shard(_)
            | Error::Location { .. } => INVALID,
            Error::Bucket { code, .. } => *code,
            Error::Merge(crate::merge::MergeError::Write { .. }) => ABORTED,
            Error::Merge(_) => INVALID,
            Error::Export(crate::export::ExportError::Write { .. }) => ABORTED,
            Error::Export(_) => INVALID,
            Error::Report(crate::report::ReportError::Write { .. }) => ABORTED,
            Error::Report(_) => INVALID,
            // Refused before anything was sent.
            Error::Run(
                RunError::Locked(_)
                | RunError::ImagesLink(_)
                | RunError::OtherGateway { .. }
                | RunError::Cache(_),
            ) => INVALID,
            // A bucket another run holds, one that cannot keep a journal
            // safely, or one that cannot even be opened (its settings):
            // refused before anything was sent.
            Error::Run(RunError::Journal(JournalError::Store(e)))
                if matches!(
                    **e,
                    JournalStoreError::Held { .. } | JournalStoreError::NoCreateOnly { .. }
                ) =>
            {
                INVALID
            }
            Error::Run(RunError::Bucket(
                StoreError::Open { .. } | StoreError::Name { .. } | StoreError::Local(_),
            )) => INVALID,
            // The run could not keep its journal or outputs: stopped, as when aborted.
            Error::Run(_) => ABORTED,
        }
    }
}

/// The exit code of a run that ended: a signal beats an abort beats rows
/// not completed. summary.json's `exit_code` comes from the same rule
/// ([`crate::vocab::exit_code::of_run`]).
pub fn for_run(report: &Report) -> u8 {
    let t = &report.summary.totals;
    let stopped_with = report.stop.as_ref().map(Stop::exit_code);
    crate::vocab::exit_code::of_run(stopped_with, t.rows, t.count(RowStatus::Completed))
}

/// Prints `err` (diagnostics first, then the one-line reason) and gives its code.
pub fn report(err: &Error) -> ExitCode {
    match err {
        Error::Invalid(invalid) => {
            for d in &invalid.diagnostics {
                crate::say!("{d}");
            }
            crate::say!("error: {err}");
        }
        // A located diagnostic already says `error: FILE:LINE: …`.
        Error::Load(LoadError::Invalid(d)) => crate::say!("{d}"),
        _ => crate::say!("error: {err}"),
    }
    ExitCode::from(err.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{RowResult, RunSummary};
    use crate::run::Signal;

    fn report(stop: Option<Stop>, statuses: &[RowStatus]) -> Report {
        let mut summary = RunSummary::default();
        for status in statuses {
            summary.totals.add(&RowResult {
                status: *status,
                ..crate::output::row_result(None, Usd::default(), None)
            });
        }
        Report {
            summary,
            stop,
            counts: Default::default(),
        }
    }

    #[test]
    fn run_outcomes_map_to_the_documented_codes() {
        use RowStatus::*;
        assert_eq!(for_run(&report(None, &[Completed])), OK);
        for other in [Failed, NotRun, Accepted] {
            assert_eq!(for_run(&report(None, &[Completed, other])), ROWS_FAILED);
        }
        let signal = |s| Some(Stop::Signal(s));
        assert_eq!(
            for_run(&report(signal(Signal::Interrupt), &[Failed])),
            INTERRUPTED
        );
        assert_eq!(for_run(&report(signal(Signal::Terminate), &[])), 143);
        assert_eq!(for_run(&report(signal(Signal::Hangup), &[])), 129);
        let rejected = Stop::Rejected {
            code: "UNAUTHORIZED".into(),
            message: String::new(),
        };
        assert_eq!(for_run(&report(Some(rejected), &[Failed])), ABORTED);
        for stop in [
            Stop::Budget {
                limit: Usd::default(),
            },
            Stop::Disk("gone".into()),
            Stop::Unreachable {
                url: "http://x".into(),
                after: std::time::Duration::from_secs(30),
            },
        ] {
            assert_eq!(for_run(&report(Some(stop), &[Completed])), ABORTED);
        }
    }

    #[test]
    fn invalid_input_is_exit_2() {
        let e = Error::OverBudget {
            cost: Usd::from_micros(2),
            max: Usd::from_micros(1),
        };
        assert_eq!(e.code(), INVALID);
        let e = Error::Run(RunError::OtherGateway {
            dir: "out".into(),
            made_by: "a".into(),
            this: "b".into(),
            hint: String::new(),
        });
        assert_eq!(e.code(), INVALID);
    }
}
