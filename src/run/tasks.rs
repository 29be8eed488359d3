//! The row tasks of a run, and what happens when one of them panics.
//!
//! Why this exists apart from the scheduler: a row task that panics (a bug
//! in batchgen) must never pass unseen, since it may hold an accepted
//! request. [`Rows`] knows which row each task drives, so the run can stop
//! submitting, name the row, and leave it for a rerun to collect.
//!
//! Cancellation: the tasks are never aborted; each ends as its row does
//! (see [`super::row`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::{row, Ctx, Start, Stop, PANICKED};
use crate::journal::{self, Entry};
use crate::progress::Event;

/// The row tasks under way, and which row each one drives.
#[derive(Default)]
pub(super) struct Rows {
    pub(super) tasks: tokio::task::JoinSet<()>,
    index: HashMap<tokio::task::Id, usize>,
}

impl Rows {
    pub(super) fn spawn(
        &mut self,
        ctx: &Arc<Ctx>,
        index: usize,
        start: Start,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let task = self.tasks.spawn(row::drive(
            ctx.clone(),
            index,
            start,
            permit,
            ctx.shutdown(),
        ));
        self.index.insert(task.id(), index);
    }

    /// A row task ended. One that panicked (a bug) is never passed over:
    /// the run stops submitting (exit 3, naming the row), and the row is
    /// left as its journal has it, marked [`PANICKED`], so that a plain
    /// rerun collects it if it was accepted, and submits it if it never was.
    pub(super) async fn ended(
        &mut self,
        ctx: &Ctx,
        ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    ) {
        let err = match ended {
            Ok((id, ())) => {
                self.index.remove(&id);
                return;
            }
            Err(err) => err,
        };
        let Some(index) = self.index.remove(&err.id()) else {
            return;
        };
        let Ok(payload) = err.try_into_panic() else {
            return; // cancelled: the tasks are never aborted
        };
        let message = panic_message(payload.as_ref());
        let row = ctx.plan.rows[index];
        let id = ctx.plan.row_id(&row);
        ctx.stop(Stop::Panicked {
            row: id.clone(),
            message: message.clone(),
        });
        let left = format!(
            "batchgen failed on this row (a bug: {message}); rerun the same command: an accepted request is collected, one never accepted is submitted"
        );
        ctx.record(&Entry::Unfinished {
            key: row.key,
            at_ms: journal::now_ms(),
            code: PANICKED.to_string(),
            message: left.clone(),
        })
        .await;
        ctx.event(Event::Left {
            possibly: crate::plan::Usd::default(),
        });
        ctx.event(Event::Say(format!(
            "error: row {id}: {PANICKED}: {left}; no new requests will be sent"
        )));
    }
}

/// The text a panic was raised with.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
