//! Stage 3 of 4: run a plan against the gateway, never paying twice.
//!
//! Why this exists: this is where money is spent. [`open()`] takes the output
//! folder (one process, one gateway), reads its journal once and decides
//! where every row starts ([`start`]), so the caller can check what this run
//! would newly spend against the budget before anything is sent. Then
//! [`Opened::execute`] bounds the requests in flight (`--concurrency`, a
//! semaphore whose permit each row holds from before its submit until the
//! gateway says the request finished, or the learned latencies make that
//! all but sure; its images are then fetched under a
//! second bound of the same size, so the slot serves the next row at once) and
//! the submit rate (`--rate`, shared, slowed by 429s), keeps new spending
//! under the budget, and stops submitting when told to. [`row`] drives one
//! row through its life.
//!
//! Cancellation: a signal (Ctrl-C, SIGTERM, SIGHUP) and any stop-the-run
//! error set one stop flag. From then on no new submit is sent and rows
//! waiting to submit end as not run. After a *soft* stop (a signal, the
//! budget, a rejected key) rows already accepted are still polled and
//! downloaded, so what was paid for is collected. After a *hard* stop (the
//! local disk failed, the gateway is unreachable) nothing more can be
//! collected now: accepted rows are left as they stand, and a plain rerun
//! collects them. Killing the process outright is safe too: the journal is
//! synced before every step it guards.
//!
//! Layout: `open.rs` takes and resumes the folder, `start.rs` decides where
//! each row starts, `scheduler.rs` runs the rows (`tasks.rs` holds their
//! tasks, `ctx.rs` what they share, `shutdown.rs` how each learns of the
//! stop), `row/` drives one row stage by stage, `limiter/` and `poll/` pace
//! submits and polls; `settings.rs`, `stop.rs` and `error.rs` are the plain
//! types callers see; `live.rs` writes and reads who holds the folder's lock; `remote.rs` makes a bucket prefix the run's place of
//! record (lease, journal segments, uploads) while the run works in a
//! local working folder.

mod ctx;
mod error;
mod limiter;
mod live;
mod open;
mod poll;
mod remote;
mod row;
mod scheduler;
mod settings;
mod shutdown;
mod start;
mod stop;
mod tasks;
#[cfg(test)]
mod tests;

pub use crate::gateway::SIMULATED;
pub use error::RunError;
pub use limiter::RateLimiter;
pub use live::{holder, Live, LOCK_FILE};
pub use open::{open, open_with, Opened, Outlook};
pub use remote::Remote;
pub use scheduler::Report;
pub use settings::Settings;
pub use stop::{Signal, Stop, PANICKED};

use ctx::Ctx;
use scheduler::blocking;
use start::Start;
