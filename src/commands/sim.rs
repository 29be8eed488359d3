//! `batchgen sim`: the simulator on loopback until a signal, then its ledger.

use super::print_stdout;
use super::signals::Signals;
use crate::cli::SimArgs;
use crate::exit::{self, Error};
use crate::sim;

/// Serves the simulator on loopback until Ctrl-C or SIGTERM, then prints its ledger.
pub async fn command(args: SimArgs) -> Result<u8, Error> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    let mut signals = Signals::install();
    let handle = sim::start(args.config, addr)
        .await
        .map_err(|e| Error::Io(format!("cannot listen on {addr}: {e}")))?;
    print_stdout(&format!(
        "batchgen sim: listening on {} (Ctrl-C to stop)\n",
        handle.url()
    ));
    let _ = signals.next().await;
    let ledger = handle.ledger();
    handle.stop().await;
    let summary = serde_json::json!({
        "accepted": ledger.accepted,
        "charged_usd": ledger.charged_usd_micros as f64 / 1e6,
        "charged_images": ledger.charged_images,
        "completed": ledger.completed,
        "failed": ledger.failed,
        "errored": ledger.errored,
        "rejected": ledger.rejected,
        "faults": ledger.faults,
        "bytes_served": ledger.bytes_served,
    });
    print_stdout(&format!("batchgen sim: stopped; ledger {summary}\n"));
    Ok(exit::OK)
}
