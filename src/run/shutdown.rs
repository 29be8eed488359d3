//! How a task learns that the run stopped: [`Shutdown`], one per task, in
//! the shape of mini-redis's: a small wrapper over a receiver of the run's
//! stop, asked with [`Shutdown::is_shutdown`] between steps and awaited
//! with [`Shutdown::recv`] in a `select!` beside the step's own wait.
//!
//! Why this exists: a soft stop (a signal, the budget, a refusal) ends only
//! what has not been sent; a hard stop (the disk, an unreachable gateway)
//! also ends waiting on what was. Every task honours both the same way,
//! through these four calls, instead of each subscribing on its own.
//!
//! Cancellation: `recv` and `recv_hard` are cancel-safe (dropping them
//! loses nothing: the stop stays set, and is seen by the next call).

use tokio::sync::watch;

use super::Stop;

/// A task's view of the run's stop (set once, by [`super::Ctx::stop`]).
pub(super) struct Shutdown {
    stop: watch::Receiver<Option<Stop>>,
}

impl Shutdown {
    pub(super) fn new(stop: watch::Receiver<Option<Stop>>) -> Shutdown {
        Shutdown { stop }
    }

    /// Whether the run has stopped, softly or hard: nothing new is sent.
    pub(super) fn is_shutdown(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// The stop, if it is one after which nothing can be collected.
    pub(super) fn hard(&self) -> Option<Stop> {
        self.stop.borrow().clone().filter(Stop::is_hard)
    }

    /// Resolves when the run stops (at once if it has).
    pub(super) async fn recv(&mut self) {
        let _ = self.stop.wait_for(Option::is_some).await;
    }

    /// Resolves when the run stops hard, with the stop (at once if it has).
    pub(super) async fn recv_hard(&mut self) -> Stop {
        let stop = match self
            .stop
            .wait_for(|s| s.as_ref().is_some_and(Stop::is_hard))
            .await
        {
            Ok(s) => s.clone(),
            Err(_) => None,
        };
        match stop {
            Some(stop) => stop,
            None => std::future::pending().await,
        }
    }
}
