//! One row's life: submit → record the request id → poll → download → done.
//!
//! Every step that costs money or produces files is journaled first (see
//! [`crate::journal`]). Errors follow the client's classification: a row
//! failure is written down and counted, never `?`-ed out of the run. A row
//! ends one of three ways: a verdict (`done`, or `failed` when the answer is
//! final or the submit's fate unknown), or *left* (`unfinished`): it gave up
//! submitting without being accepted, or it holds a request id this run
//! could not collect. A plain rerun takes a left row up where it stands.
//!
//! Cancellation: a row waiting to submit gives up when the run stops; once a
//! submit may have been sent, the row is carried to its end (polls and
//! downloads ignore a soft stop), so that what was paid for is collected. A
//! hard stop (disk, unreachable gateway) leaves it at its next step. The
//! row holds its own [`Shutdown`] and asks it, the same way, at each stage.
//!
//! Layout: this file drives the stages; each has its own file, named after
//! the progress line's stages: [`submitting`], [`polling`],
//! [`downloading`], and [`cached`] (a row taken from the cache), and
//! [`finish`] writes how a row ends.

mod cached;
mod downloading;
mod finish;
mod polling;
mod submitting;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::shutdown::Shutdown;
use super::{Ctx, Start};
use crate::api::{backoff::unit_random, Backoff};
use crate::plan::{Key, Request, Usd};
use crate::progress::Event;

struct RowRun {
    ctx: Arc<Ctx>,
    key: Key,
    id: String,
    req: Request,
    price: Usd,
    /// Whether `price` is counted in this run's committed spending.
    reserved: bool,
    /// Failed submits this run (429s and refused connections excepted).
    failures: u32,
    /// Submits in a row whose connection never opened (they wait for the gateway).
    refused: u32,
    /// When its request was last seen pending and first seen done, in
    /// seconds since its submit (journaled with its files, to seed later runs).
    seen: Option<(f64, f64)>,
    /// Whether the run has stopped, and how (see [`Shutdown`]).
    shutdown: Shutdown,
}

/// Drives row `index` from `start` to its end. `permit` (of
/// `--concurrency`) is held while the row has a request at the gateway, or
/// is about to: from before its submit until the gateway says it finished.
/// Its images are then fetched under a download permit instead (as many as
/// `--concurrency` again), so the slot goes to the next row at once.
/// `shutdown` tells the row of the run's stop.
pub(super) async fn drive(
    ctx: Arc<Ctx>,
    index: usize,
    start: Start,
    permit: OwnedSemaphorePermit,
    shutdown: Shutdown,
) {
    let row = ctx.plan.rows[index];
    let mut run = RowRun {
        key: row.key,
        id: ctx.plan.row_id(&row),
        req: ctx.plan.request(&row),
        price: ctx.plan.row_price(&row),
        reserved: false,
        failures: 0,
        refused: 0,
        seen: None,
        shutdown,
        ctx,
    };
    let mut next = start;
    let mut request = Some(permit);
    let mut download: Option<OwnedSemaphorePermit> = None;
    loop {
        // Never waits for a request slot while holding a download slot, so
        // the two bounds cannot deadlock.
        match &next {
            Start::Download { .. } if download.is_none() => {
                download = Some(acquire(&run.ctx.downloads).await);
                request = None;
            }
            Start::Submit | Start::Poll { .. } if request.is_none() => {
                download = None;
                request = Some(acquire(&run.ctx.requests).await);
            }
            _ => {}
        }
        #[cfg(test)]
        if matches!(next, Start::Poll { .. }) && run.ctx.settings.panic_on == Some(run.key) {
            panic!("injected by a test after the request was accepted");
        }
        next = match next {
            Start::Submit => run.submit().await,
            Start::Poll { ticket, since_ms } => run.poll(ticket, since_ms).await,
            Start::Download { images, ticket } => run.download(images, ticket).await,
            Start::Cached { hit, or_submit } => run.take_cached(hit, or_submit).await,
            Start::End => return,
        };
    }
}

/// A permit of `slots` (never closed).
pub(super) async fn acquire(slots: &Arc<tokio::sync::Semaphore>) -> OwnedSemaphorePermit {
    slots
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed")
}

impl RowRun {
    fn release(&mut self) {
        if self.reserved {
            self.ctx.budget().release(self.price);
            self.reserved = false;
        }
    }

    fn say(&self, text: String) {
        self.ctx.event(Event::Say(text));
    }
}

/// How long to wait after the `refused`th connection in a row that never
/// opened: the backoff's first few steps (at most 8 × its base, 4 s by
/// default), so that a gateway that comes back is noticed soon, and the
/// run's unreachable limit, not the row, decides when to give up.
fn refused_delay(backoff: &Backoff, refused: u32) -> Duration {
    backoff.delay(refused.saturating_sub(1).min(3), None)
}

/// `d` ± 20%.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * unit_random())
}
