//! A whole run in the test process, against the simulator, for what the
//! command line cannot reach: a row task that panics.

use std::path::Path;
use std::sync::Arc;

use super::{open, Settings, Stop, PANICKED};
use crate::api::{ApiKey, Client, ClientConfig};
use crate::output::RowStatus;
use crate::sim::{self, SimConfig};

const KEY: &str = "sk-run-tests-key-0001";

fn plan(dir: &Path) -> Arc<crate::plan::Plan> {
    let path = dir.join("m.yaml");
    std::fs::write(
        &path,
        "defaults: {image_size: {width: 32, height: 32}}\nseeds: [1, 2, 3, 4]\njobs: [{id: p, prompt: a row that panics}]\n",
    )
    .unwrap();
    let manifest = crate::manifest::load(&path).unwrap();
    Arc::new(crate::plan::expand(&manifest).unwrap())
}

fn client(url: &str) -> Client {
    Client::new(ClientConfig::new(url, ApiKey::new(KEY).unwrap())).unwrap()
}

fn settings(out: &Path) -> Settings {
    let mut s = Settings::new(out.to_path_buf());
    s.gateway = crate::gateway::Gateway::simulated();
    s.concurrency = 1;
    s.poll_interval = Some(std::time::Duration::from_millis(20));
    s.progress = crate::progress::Mode::Quiet;
    s
}

#[tokio::test]
async fn a_panicking_row_stops_new_submits_stays_collectable_and_exits_3() {
    let sim = sim::start(
        SimConfig {
            key: Some(KEY.into()),
            min_latency_ms: 10,
            max_latency_ms: 30,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let plan = plan(dir.path());
    let second = plan.rows[1];

    let mut with_bug = settings(&out);
    with_bug.panic_on = Some(second.key);
    let opened = open(plan.clone(), with_bug).unwrap();
    let report = opened
        .execute(client(&sim.url()), std::future::pending())
        .await
        .unwrap();
    let Some(Stop::Panicked { row, message }) = &report.stop else {
        panic!("the run did not stop for the panic: {:?}", report.stop);
    };
    assert_eq!(row, &plan.row_id(&second));
    assert!(message.contains("injected by a test"), "{message}");
    assert_eq!(crate::exit::for_run(&report), crate::exit::ABORTED);
    // Rows 1 and 2 were sent; nothing after the panic.
    assert_eq!(sim.ledger().accepted, 2);
    let t = &report.summary.totals;
    assert_eq!(t.count(RowStatus::Completed), 1);
    assert_eq!(
        t.count(RowStatus::Accepted),
        1,
        "the panicked row is collectable"
    );
    assert_eq!(t.count(RowStatus::NotRun), 2);
    assert_eq!(t.accepted_by_code.get(PANICKED), Some(&1));
    assert!(report.summary.stopped.as_deref().unwrap().contains(row));

    // A plain rerun collects the panicked row's request and submits the rest,
    // each once.
    let report = open(plan.clone(), settings(&out))
        .unwrap()
        .execute(client(&sim.url()), std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.stop, None);
    assert_eq!(report.summary.totals.count(RowStatus::Completed), 4);
    let ledger = sim.ledger();
    assert_eq!(ledger.accepted, 4);
    assert!(ledger.paid_twice().is_empty(), "{:?}", ledger.paid_twice());
}
