//! The signals that stop a command (Ctrl-C, SIGTERM, SIGHUP): shared by
//! `run` and `sim`, and by `export`, `merge` and `report`
//! ([`interruptible`]), which remove their temporary files before they go.

use std::future::Future;

use crate::run::Signal;

/// Runs the file work of `export`, `merge` or `report` off the async
/// workers. A Ctrl-C, SIGTERM or SIGHUP meanwhile removes every temporary
/// file the command holds ([`crate::temps`]) and exits with the signal's
/// code (130, 143, 129): outputs are renamed into place whole, so what is
/// left is the earlier output or the new one, never part of one. The work
/// itself is not cancelled: the process ends under it.
pub async fn interruptible<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let mut signals = Signals::install();
    let task = tokio::task::spawn_blocking(work);
    tokio::select! {
        done = task => match done {
            Ok(done) => done,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        },
        Some(signal) = signals.next() => {
            // Outputs being put in place are let finish; a second signal
            // does not wait for them (a rename that hangs, on a network disk).
            let held = tokio::task::spawn_blocking(crate::temps::hold_commits);
            tokio::select! {
                _ = held => {}
                Some(second) = signals.next() => {
                    let removed = crate::temps::remove_all_before_exit();
                    crate::say!("batchgen: {}: quitting now; {removed} temporary file(s) removed", second.name());
                    std::process::exit(i32::from(second.exit_code()));
                }
            }
            let removed = crate::temps::remove_all_before_exit();
            crate::say!(
                "batchgen: {}: stopped; {removed} temporary file(s) removed; every output is whole (the earlier one, or the new one if it was being put in place)",
                signal.name()
            );
            std::process::exit(i32::from(signal.exit_code()));
        }
    }
}

/// Resolves on the first Ctrl-C, SIGTERM or SIGHUP; a second one exits at
/// once with that signal's code (the journal is synced line by line, so it
/// is intact). The handlers are installed before this returns.
pub fn signals() -> impl Future<Output = Signal> + Send + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel::<Signal>();
    let mut signals = Signals::install();
    tokio::spawn(async move {
        let Some(first) = signals.next().await else {
            return;
        };
        crate::say!(
            "batchgen: {}: no new requests; finishing those in flight (send it again to quit now)",
            first.name()
        );
        let _ = tx.send(first);
        if let Some(second) = signals.next().await {
            // A thumbnail being made as its image landed.
            crate::temps::remove_all_before_exit();
            crate::say!(
                "batchgen: {}: quitting now; the journal is intact: rerun the same command to resume",
                second.name()
            );
            std::process::exit(i32::from(second.exit_code()));
        }
    });
    async move {
        match rx.await {
            Ok(signal) => signal,
            Err(_) => std::future::pending().await,
        }
    }
}

/// The signals that ask batchgen to stop, heard from the moment of `install`.
pub struct Signals {
    #[cfg(unix)]
    streams: [Option<tokio::signal::unix::Signal>; 3],
}

impl Signals {
    #[cfg(unix)]
    pub fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            streams: [
                SignalKind::interrupt(),
                SignalKind::terminate(),
                SignalKind::hangup(),
            ]
            .map(|kind| signal(kind).ok()),
        }
    }

    #[cfg(not(unix))]
    pub fn install() -> Signals {
        Signals {}
    }

    /// The next signal (`None` if none can be heard).
    #[cfg(unix)]
    pub async fn next(&mut self) -> Option<Signal> {
        async fn recv(
            stream: &mut Option<tokio::signal::unix::Signal>,
            which: Signal,
        ) -> Option<Signal> {
            match stream {
                Some(s) => s.recv().await.map(|()| which),
                None => std::future::pending().await,
            }
        }
        if self.streams.iter().all(Option::is_none) {
            return None;
        }
        let [int, term, hup] = &mut self.streams;
        tokio::select! {
            s = recv(int, Signal::Interrupt) => s,
            s = recv(term, Signal::Terminate) => s,
            s = recv(hup, Signal::Hangup) => s,
        }
    }

    #[cfg(not(unix))]
    pub async fn next(&mut self) -> Option<Signal> {
        tokio::signal::ctrl_c()
            .await
            .ok()
            .map(|()| Signal::Interrupt)
    }
}
