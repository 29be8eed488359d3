//! Why a run stops before its end: a [`Signal`], or a [`Stop`] (a signal,
//! the budget, a refusal, the disk, an unreachable gateway, a panic), with
//! the `error_code` it leaves on unrun rows and the words that say it.
//!
//! Why this exists apart: the stop is decided in many places (any row, the
//! watchers, the scheduler) and read by the exit code and the summary; it
//! is plain data. How tasks learn of it is [`super::shutdown`].

use std::time::Duration;

use crate::plan::Usd;
use crate::vocab::Code;

/// The `error_code` of a row whose task panicked, and of rows the panic's
/// stop left unrun.
pub const PANICKED: &str = Code::Panicked.as_str();

/// A signal that asks the run to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (what Kubernetes, systemd and CI send first).
    Terminate,
    /// SIGHUP (the terminal went away).
    Hangup,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "Ctrl-C",
            Signal::Terminate => "SIGTERM",
            Signal::Hangup => "SIGHUP",
        }
    }

    /// The exit code of a run it stopped: 128 + the signal's number.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
            Signal::Hangup => 129,
        }
    }
}

/// Why a run stopped submitting before its end.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    Signal(Signal),
    /// 401, 403, `INSUFFICIENT_FUNDS`, a redirect: no later request can succeed.
    Rejected {
        code: String,
        message: String,
    },
    /// The next submit would have taken this run's spending past the budget.
    Budget {
        limit: Usd,
    },
    /// The journal or the output folder cannot be written: what cannot be,
    /// and why, in words that name no row (every row the stop leaves
    /// repeats them; the row that met the fault says so in its own line).
    Disk(String),
    /// Every connection to the gateway has failed for a while.
    Unreachable {
        url: String,
        after: Duration,
    },
    /// A row's task panicked (a bug in batchgen): `row` is its id.
    Panicked {
        row: String,
        message: String,
    },
}

impl Stop {
    /// The `error_code` of rows this stop left unrun.
    pub fn code(&self) -> &str {
        match self {
            Stop::Signal(Signal::Interrupt) => Code::Interrupted.as_str(),
            Stop::Signal(Signal::Terminate) => Code::Terminated.as_str(),
            Stop::Signal(Signal::Hangup) => Code::Hangup.as_str(),
            Stop::Rejected { code, .. } => code,
            Stop::Budget { .. } => Code::Budget.as_str(),
            Stop::Disk(_) => Code::Disk.as_str(),
            Stop::Unreachable { .. } => Code::GatewayUnreachable.as_str(),
            Stop::Panicked { .. } => PANICKED,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Stop::Signal(s) => format!("interrupted ({})", s.name()),
            Stop::Rejected { code, message } => {
                format!("the gateway refused the run: {code}: {message}")
            }
            Stop::Budget { limit } => {
                format!(
                    "the next request would take this run's spending past the budget of {limit}"
                )
            }
            Stop::Disk(why) => format!("cannot write the output, so nothing more is spent: {why}"),
            Stop::Unreachable { url, after } => format!(
                "gateway unreachable at {url}: every connection failed for {} s",
                after.as_secs()
            ),
            Stop::Panicked { row, message } => {
                format!("row {row} failed inside batchgen (a bug; please report it): {message}")
            }
        }
    }

    /// The exit code of a run it stopped: a signal's own, else aborted.
    pub fn exit_code(&self) -> u8 {
        match self {
            Stop::Signal(s) => s.exit_code(),
            _ => crate::vocab::exit_code::ABORTED,
        }
    }

    /// Nothing more can be collected in this run either.
    pub fn is_hard(&self) -> bool {
        matches!(self, Stop::Disk(_) | Stop::Unreachable { .. })
    }
}
