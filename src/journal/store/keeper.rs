//! Keeping the lease while a run goes on: [`Keeper`].
//!
//! Why this exists: a lease is only worth something while it is renewed,
//! and a run that can no longer renew it must stop spending before another
//! run takes the prefix over. The keeper's task sleeps (on tokio's clock)
//! until a third of the lease's time is gone, renews it, and sleeps again.
//! A renewal that fails in a way that may pass (the store did not answer)
//! is tried again every tenth of the lease's time while more than a sixth
//! of it is left. A lease lost for sure (another run holds it, it was
//! deleted, it kept changing under us), or one about to run out unrenewed,
//! stops the writer through its [`Stopper`] (every later append fails,
//! see `segments.rs`) and is recorded: [`Keeper::lost`] says why.
//!
//! The fence, not the lease, is what keeps an old writer's segments out
//! (`segments.rs`); stopping early keeps an old run from spending on rows
//! whose lines it could not write anyway.
//!
//! Cancellation: the task ends when [`Keeper::release`] asks it to (after
//! a renewal in flight, so the lease is never released while being
//! written), or is aborted when the `Keeper` is dropped (a renewal put in
//! flight lands whole or not at all; the lease then runs out on its own).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::error::JournalStoreError;
use super::lease::Lease;
use super::segments::Stopper;

/// Renews a [`Lease`] in the background; stops the writer when it cannot.
#[derive(Debug)]
pub struct Keeper {
    task: Option<tokio::task::JoinHandle<Lease>>,
    cancel: Option<oneshot::Sender<()>>,
    lost: Arc<Mutex<Option<String>>>,
}

impl Keeper {
    /// Starts renewing `lease`; if it is lost, `stopper` stops the writer.
    /// Call it from within a tokio runtime.
    pub fn start(lease: Lease, stopper: Stopper) -> Keeper {
        let lost = Arc::new(Mutex::new(None));
        let (cancel, cancelled) = oneshot::channel();
        let task = tokio::spawn(keep(lease, stopper, lost.clone(), cancelled));
        Keeper {
            task: Some(task),
            cancel: Some(cancel),
            lost,
        }
    }

    /// Why the lease was lost (and the writer stopped), if it was.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops renewing and releases the lease if it is still this run's.
    pub async fn release(mut self) -> Result<(), JournalStoreError> {
        drop(self.cancel.take());
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(lease) => lease.release().await,
            // The task panicked: the lease runs out on its own.
            Err(_) => Ok(()),
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The task: renew when due until cancelled or lost; gives the lease back.
async fn keep(
    mut lease: Lease,
    stopper: Stopper,
    lost: Arc<Mutex<Option<String>>>,
    mut cancelled: oneshot::Receiver<()>,
) -> Lease {
    let retry = Duration::from_millis((lease.ttl_ms() / 10).max(100));
    let mut failing = false;
    loop {
        let wait = if failing {
            retry
        } else {
            let left = lease.renew_at_ms().saturating_sub(lease.now_ms());
            Duration::from_millis(left.max(1))
        };
        tokio::select! {
            biased;
            _ = &mut cancelled => return lease,
            _ = tokio::time::sleep(wait) => {}
        }
        if !failing && !lease.renew_due() {
            continue;
        }
        let e = match lease.renew().await {
            Ok(()) => {
                failing = false;
                continue;
            }
            Err(e) => e,
        };
        let for_good = matches!(
            e,
            JournalStoreError::LeaseLost { .. }
                | JournalStoreError::Held { .. }
                | JournalStoreError::Contended { .. }
        );
        let left = lease.expires_at_ms().saturating_sub(lease.now_ms());
        if !for_good && left > lease.ttl_ms() / 6 {
            tracing::warn!("could not renew the lease ({e}); trying again");
            failing = true;
            continue;
        }
        let reason = if for_good {
            e.to_string()
        } else {
            format!("the lease could not be renewed before it ran out: {e}")
        };
        tracing::error!("{reason}");
        stopper.stop(reason.clone());
        *lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        return lease;
    }
}
