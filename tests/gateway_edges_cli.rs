//! Issue 22, item 5: a gateway that echoes the key gets it written nowhere
//! (journal, results, sidecars, sheet, exports, logs), yet every request it
//! accepted is still collected; a base URL whose port refuses connections is
//! an unreachable gateway (exit 3, rows left to a rerun), not a pile of
//! failed rows, and a gateway that refuses only some connections is waited
//! for; a submit answered 404 names the URL it was sent to.
//!
//! Nothing here waits for a clock to run out: the unreachable limit is a
//! knob, and the flaky gateway goes up and down when the journal shows the
//! run has met it, not after a delay.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use batchgen::api::{ApiKey, Backoff, Client, ClientConfig};
use batchgen::journal::{Entry, Journal};
use batchgen::run::{Report, Settings, Stop};
use batchgen::sim::{EchoKey, SimConfig, SimHandle};
use support::*;

/// Eight text-to-image rows, one image-to-image row, and one the gateway
/// refuses (a 400 whose message echoes the key too).
const MANIFEST: &str = "defaults: {image_size: {width: 32, height: 32}}\njobs:\n  - {id: a, prompt: cat, seeds: [1, 2, 3, 4, 5, 6, 7, 8]}\n  - {id: i, prompt: dog, seed: 1, image_urls: [\"https://example.com/catwalk.png\"]}\n  - {id: big, prompt: owl, seed: 1, num_inference_steps: 5000}\n";

/// Every 8-character window of the key.
fn key_windows() -> HashSet<&'static [u8]> {
    KEY.as_bytes().windows(8).collect()
}

/// Panics if `bytes` hold any 8 consecutive characters of the key.
fn assert_no_key_in(what: &str, bytes: &[u8]) {
    let windows = key_windows();
    if let Some(w) = bytes.windows(8).find(|w| windows.contains(w)) {
        panic!(
            "{what} holds {:?}, part of the key:\n{}",
            String::from_utf8_lossy(w),
            String::from_utf8_lossy(bytes)
                .lines()
                .filter(|l| l.contains(&*String::from_utf8_lossy(w)))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn assert_no_key_printed(what: &str, o: &std::process::Output) {
    assert_no_key_in(&format!("{what}'s stdout"), &o.stdout);
    assert_no_key_in(&format!("{what}'s stderr"), &o.stderr);
}

/// Submits the manifest's first row to `sim` with the library's client and
/// journals it as accepted, as a run killed right after recording its
/// request id leaves the folder. Returns the ticket journaled.
async fn accepted_by_an_earlier_run(
    sim: &SimHandle,
    m: &Path,
    out: &Path,
) -> batchgen::api::Ticket {
    let plan = batchgen::plan::expand(&batchgen::manifest::load(m).unwrap()).unwrap();
    let row = plan.rows[0];
    let client = Client::new(ClientConfig::new(&sim.url(), ApiKey::new(KEY).unwrap())).unwrap();
    let ticket = loop {
        match client.submit(&plan.request(&row)).await {
            Ok(sub) => break sub.ticket.expect("a queued request has a ticket"),
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("{e}"),
        }
    };
    std::fs::create_dir_all(out).unwrap();
    let journal = Journal::open(out).unwrap();
    let at_ms = batchgen::journal::now_ms();
    journal
        .append_blocking(&Entry::Intent {
            key: row.key,
            at_ms,
            price_micros: 50_000,
        })
        .unwrap();
    journal
        .append_blocking(&Entry::Submitted {
            key: row.key,
            at_ms,
            ticket: Some(ticket.clone()),
            images: vec![],
        })
        .unwrap();
    ticket
}

/// A gateway that echoes the key (`echo`) in request ids, status URLs, image
/// URLs and every error message, and fails a share of everything: no 8
/// characters of the key reach any file of the folder, an export, or what
/// any command prints (`-v` logs every exchange); a request accepted by an
/// earlier run is still polled and collected from its journaled id.
async fn assert_an_echoed_key_is_written_nowhere(echo: EchoKey) {
    let sim = start(SimConfig {
        echo_key: Some(echo),
        failed_rate: 0.2,
        error_rate: 0.15,
        submit_5xx_rate: 0.2,
        status_5xx_rate: 0.1,
        download_5xx_rate: 0.1,
        fault_seed: 22,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", MANIFEST);
    let out = dir.path().join("out");
    let ticket = accepted_by_an_earlier_run(&sim, &m, &out).await;
    assert!(
        ticket.request_id.contains("{key"),
        "the gateway echoed the key into the request id: {ticket:?}"
    );
    assert_no_key_in("the ticket", format!("{ticket:?}").as_bytes());
    assert_no_key_in(
        "the journal",
        &std::fs::read(out.join("journal.jsonl")).unwrap(),
    );

    let o = run(&m, &out, &sim.url(), &["-v"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert_no_key_printed("run -v", &o);
    assert!(
        text(&o.stderr).contains("{key"),
        "-v logs the exchanges, redacted: {}",
        text(&o.stderr)
    );
    let ledger = sim.ledger();
    assert_eq!(
        ledger.in_flight, 0,
        "every accepted request was collected, the earlier run's too"
    );
    assert_never_paid_twice(&ledger);
    assert_files_are_what_was_served(&out, &ledger);
    let rows = results(&out);
    assert!(rows[0]["request_id"].contains("{key"), "{:?}", rows[0]);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "completed" || r["status"] == "failed"),
        "{rows:#?}"
    );
    assert!(rows.iter().any(|r| r["status"] == "completed"), "{rows:#?}");
    let big = rows.iter().find(|r| r["id"] == "big_s1").unwrap();
    assert!(
        big["error_message"].contains("(key <redacted>)"),
        "the gateway's message is kept, the key replaced: {big:?}"
    );

    // Everything else that reads the folder.
    let jsonl = dir.path().join("export.jsonl");
    let shards = dir.path().join("shards");
    let d = out.to_str().unwrap();
    for args in [
        vec![
            "export",
            d,
            "--format",
            "jsonl",
            "--out",
            jsonl.to_str().unwrap(),
        ],
        vec![
            "export",
            d,
            "--format",
            "webdataset",
            "--out",
            shards.to_str().unwrap(),
        ],
        vec!["report", d],
        vec!["status", d],
        vec!["status", d, "--json"],
    ] {
        let o = batchgen(&args, dir.path()).await;
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{args:?}: {}",
            text(&o.stderr)
        );
        assert_no_key_printed(&args.join(" "), &o);
    }
    assert!(jsonl.exists() && shards.exists() && out.join("index.html").exists());
    for file in walk(dir.path()) {
        assert_no_key_in(&file.display().to_string(), &std::fs::read(&file).unwrap());
    }

    // A rerun asked to try the failed rows again still finds nothing to leak.
    sim.set_config(SimConfig {
        echo_key: Some(echo),
        ..quick()
    });
    let o = run(&m, &out, &sim.url(), &["--retry-failed", "-v"]).await;
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "{}",
        text(&o.stderr)
    );
    assert_no_key_printed("the rerun", &o);
    assert_eq!(sim.ledger().in_flight, 0);
    for file in walk(&out) {
        assert_no_key_in(&file.display().to_string(), &std::fs::read(&file).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_echoed_whole_is_written_nowhere() {
    assert_an_echoed_key_is_written_nowhere(EchoKey::Whole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_fragment_of_8_characters_is_written_nowhere() {
    assert_an_echoed_key_is_written_nowhere(EchoKey::Fragment).await;
}

#[tokio::test]
async fn errors_that_name_a_url_holding_the_key_hide_it() {
    let url = format!("http://{}", refusing_addr());
    let client = Client::new(ClientConfig::new(&url, ApiKey::new(KEY).unwrap())).unwrap();
    // A ticket an older batchgen journaled as the gateway sent it, with a
    // piece of the key in its id: the error names the URL polled.
    let ticket = batchgen::api::Ticket {
        kind: batchgen::plan::Kind::TextToImage,
        request_id: "glm-image_ET-run-t_1".into(),
        status_url: None,
        response_url: None,
        sync_images: 0,
    };
    let e = client.status(&ticket).await.unwrap_err();
    assert_eq!(e.code, "CONNECTION_FAILED", "{e}");
    assert_no_key_in("the status call's error", e.to_string().as_bytes());
    // An image URL that held the key, as the client hands it on (hidden):
    // it is fetched with the key put back, and its error hides it again.
    let dir = tempfile::tempdir().unwrap();
    let image = format!("{url}/files/glm-image_{{key}}/0.png");
    let e = client.download(&image, dir.path(), "x").await.unwrap_err();
    assert_no_key_in("the download's error", e.to_string().as_bytes());
    assert!(e.message.contains("glm-image_<redacted>/0.png"), "{e}");
}

/// A run of `m` into `out` in this process, against `url`, on the real
/// clock ([`run_in_process`] with its paused-clock hold off), with retries
/// that back off by milliseconds (so a row that counted refused
/// connections would give up long before any limit), 40 ms polls, two
/// slots and `tune` applied.
async fn run_here(m: &Path, out: &Path, url: &str, tune: impl FnOnce(&mut Settings)) -> Report {
    run_in_process(m, out, url, |s| {
        s.paused_clock = false;
        s.poll_interval = Some(Duration::from_millis(40));
        s.concurrency = 2;
        s.backoff = Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(4),
        };
        tune(s);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_use_up_no_attempts_and_the_run_stops_unreachable() {
    let addr = refusing_addr();
    let url = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 4);
    let out = dir.path().join("out");
    // Eight attempts a row, milliseconds apart: a refused connection that
    // counted as one would fail every row long before the limit.
    let report = run_here(&m, &out, &url, |s| {
        s.unreachable_after = Duration::from_secs(2);
    })
    .await;
    assert!(
        matches!(report.stop, Some(Stop::Unreachable { .. })),
        "{:?}",
        report.stop
    );
    assert_eq!(batchgen::exit::for_run(&report), 3);
    let rows = results(&out);
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert_eq!(
            (r["status"].as_str(), r["error_code"].as_str()),
            ("not_run", "GATEWAY_UNREACHABLE"),
            "{r:?}"
        );
        assert!(
            r["error_message"].contains(&format!("gateway unreachable at {url}")),
            "{r:?}"
        );
    }
    // The gateway comes back: a plain rerun submits every row.
    let sim = batchgen::sim::start(quick(), addr).await.unwrap();
    let o = run(&m, &out, &url, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().accepted, 4);
    assert_never_paid_twice(&sim.ledger());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_refuses_connections_is_an_unreachable_gateway() {
    let addr = refusing_addr();
    let url = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    let o = run(&m, &out, &url, &["--unreachable-after", "1"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!("gateway unreachable at {url}")),
        "{}",
        text(&o.stderr)
    );
    let s = summary(&out);
    assert_eq!(s["rows_by_status"]["not_run"], 3, "{s:#}");
    assert_eq!(s["rows_by_status"]["failed"], 0, "{s:#}");
    for r in results(&out) {
        assert_eq!(
            (r["status"].as_str(), r["error_code"].as_str()),
            ("not_run", "GATEWAY_UNREACHABLE"),
            "{r:?}"
        );
    }
    // Nothing reached a gateway: one started there now has an empty ledger,
    // and a plain rerun submits every row once.
    let sim = batchgen::sim::start(quick(), addr).await.unwrap();
    assert_eq!(sim.ledger().submit_calls, 0);
    let o = run(&m, &out, &url, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().accepted, 3);
}

/// A gateway address whose listener the test opens and closes: while it is
/// down, new connections are refused; connections made while it was up
/// stay open (a pool keeps using them), as with a flaky load balancer.
/// Connections are passed through to `target`.
struct Flaky {
    up: tokio::sync::watch::Sender<bool>,
}

impl Flaky {
    fn start(addr: SocketAddr, target: SocketAddr) -> Flaky {
        let (up, mut rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                if rx.wait_for(|up| *up).await.is_err() {
                    return;
                }
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                loop {
                    let down = tokio::select! {
                        accepted = listener.accept() => {
                            if let Ok((inbound, _)) = accepted {
                                pass_through(inbound, target);
                            }
                            None
                        }
                        down = rx.wait_for(|up| !*up) => Some(down.is_err()),
                    };
                    match down {
                        None => continue,
                        Some(true) => return,
                        Some(false) => {}
                    }
                    // Serve what the kernel already queued (asked of the
                    // kernel itself, not of the runtime's last readiness),
                    // then close at once: closing on queued connections
                    // would reset them after the client sent its request,
                    // which is not a refusal but a submit of unknown fate.
                    let listener = listener.into_std().unwrap();
                    while let Ok((inbound, _)) = listener.accept() {
                        inbound.set_nonblocking(true).unwrap();
                        pass_through(tokio::net::TcpStream::from_std(inbound).unwrap(), target);
                    }
                    drop(listener);
                    break;
                }
            }
        });
        Flaky { up }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// Passes one accepted connection through to `target`.
fn pass_through(mut inbound: tokio::net::TcpStream, target: SocketAddr) {
    tokio::spawn(async move {
        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        }
    });
}

/// Waits until the journal holds `n` lines with `needle`, or `run` has
/// ended. Returns the count. A backstop of 20 s keeps a phase that cannot
/// show in the journal (polls refused) from waiting forever: when it ends
/// matters to how much the test exercises, never to what it asserts.
async fn journal_count_or_end(
    out: &Path,
    needle: &str,
    n: usize,
    run: &tokio::task::JoinHandle<Report>,
) -> usize {
    let backstop = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let count = std::fs::read_to_string(out.join("journal.jsonl"))
            .map(|t| t.matches(needle).count())
            .unwrap_or(0);
        if count >= n || run.is_finished() || tokio::time::Instant::now() >= backstop {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_refuses_some_connections_is_waited_for() {
    let sim = start(latency(20, 60)).await;
    // 127.0.0.3: no other test's server or refused address lives there.
    let probe = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let flaky = Flaky::start(addr, sim.addr);
    let url = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 6);
    let out = dir.path().join("out");
    let (m2, out2, url2) = (m.clone(), out.clone(), url.clone());
    // No limit is ever reached: the rows themselves must wait.
    let run = tokio::spawn(async move {
        run_here(&m2, &out2, &url2, |s| {
            s.unreachable_after = Duration::from_secs(3600);
        })
        .await
    });
    // Down first: both slots' rows are refused more often than a row may
    // fail (8 attempts).
    let refused = "\"code\":\"CONNECTION_FAILED\"";
    let n = journal_count_or_end(&out, refused, 2 * 9, &run).await;
    flaky.set(true);
    // Up until something is accepted, then down again, then up for good.
    journal_count_or_end(&out, "\"e\":\"submitted\"", 1, &run).await;
    flaky.set(false);
    journal_count_or_end(&out, refused, n + 2 * 9, &run).await;
    flaky.set(true);
    let report = run.await.unwrap();
    assert_eq!(report.stop, None);
    let rows = results(&out);
    assert!(rows.iter().all(|r| r["status"] == "completed"), "{rows:#?}");
    let ledger = sim.ledger();
    assert_eq!(ledger.accepted, 6);
    assert_never_paid_twice(&ledger);
    assert_files_are_what_was_served(&out, &ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_answered_404_names_the_url_it_was_sent_to() {
    let gateway = Recorder::start(|_| {
        (
            404,
            vec![("content-type".into(), "text/plain".into())],
            b"Not Found".to_vec(),
        )
    })
    .await;
    // A base URL with a wrong path, and credentials that must not be shown.
    let base = format!(
        "{}/wrong",
        gateway.url.replace("http://", "http://user:hunter2-pw@")
    );
    let sent_to = format!("{}/wrong/glm-image/v1/glm-image-request", gateway.url);
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    let o = run(&m, &out, &base, &["--concurrency", "1"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let stderr = text(&o.stderr);
    assert!(stderr.contains(&sent_to), "{stderr}");
    assert_eq!(gateway.requests().len(), 1, "nothing is sent after a 404");
    for r in results(&out) {
        assert_eq!(r["error_code"], "HTTP_404", "{r:?}");
        assert!(r["error_message"].contains(&sent_to), "{r:?}");
    }
    assert!(!stderr.contains("hunter2"), "{stderr}");
    for file in walk(&out) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("hunter2"),
            "{}",
            file.display()
        );
    }
}

/// A request whose id holds the key it was submitted with, after the key
/// was changed: the run cannot rebuild the id, so it does not ask the
/// gateway for an id it never issued (and take the 404 for a lost, paid
/// result); the row stays accepted, `KEY_CHANGED`, and a rerun with the
/// key it was submitted with collects it, paying nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_leaves_a_request_whose_id_held_the_old_one_collectable() {
    // The whole key in the id; then a fragment of it, and a new key too
    // short for the fragment's place in the old one.
    changed_key(EchoKey::Whole, "sk-ROTATED-new-key-0042").await;
    changed_key(EchoKey::Fragment, "sk-new-0042").await;
}

async fn changed_key(echo: EchoKey, new_key: &str) {
    let sim = start(SimConfig {
        key: None, // the old key and the new one both work
        echo_key: Some(echo),
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 1);
    let out = dir.path().join("out");
    let ticket = accepted_by_an_earlier_run(&sim, &m, &out).await;
    assert!(ticket.request_id.contains("{key"), "{ticket:?}");

    let mut cmd = command(&m, &out, &sim.url(), &[]);
    cmd.env("PIXAZO_API_KEY", new_key);
    let o = output(cmd).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let row = &results(&out)[0];
    assert_eq!(
        (row["status"].as_str(), row["error_code"].as_str()),
        ("accepted", "KEY_CHANGED"),
        "{row:?}"
    );
    assert!(
        row["error_message"].contains("rerun with that key"),
        "{row:?}"
    );

    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(results(&out)[0]["status"], "completed");
    let ledger = sim.ledger();
    assert_eq!(ledger.accepted, 1);
    assert_never_paid_twice(&ledger);
}

/// After a soft stop (SIGTERM here) the run drains its accepted rows; a
/// gateway that then goes away leaves them `GATEWAY_UNREACHABLE` once the
/// run's limit passes, instead of polling a dead gateway until each row's
/// deadline (`POLL_TIMEOUT`). The deadline is far beyond the limit, so the
/// code, not a duration, tells the two apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_after_a_signal_ends_when_the_gateway_goes_away() {
    let sim = start(latency(60_000, 60_000)).await;
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 6);
    let out = dir.path().join("out");
    let plan = Arc::new(batchgen::plan::expand(&batchgen::manifest::load(&m).unwrap()).unwrap());
    let mut s = Settings::new(out.clone());
    s.gateway = batchgen::gateway::Gateway::of_url(&reqwest::Url::parse(&url).unwrap());
    s.progress = batchgen::progress::Mode::Quiet;
    s.poll_interval = Some(Duration::from_millis(100));
    s.concurrency = 2;
    s.unreachable_after = Duration::from_secs(1);
    s.row_deadline = Duration::from_secs(120);
    s.backoff = Backoff {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(200),
    };
    let opened = tokio::task::spawn_blocking(move || batchgen::run::open(plan, s))
        .await
        .unwrap()
        .unwrap();
    let client = Client::new(ClientConfig::new(&url, ApiKey::new(KEY).unwrap())).unwrap();
    let (term, termed) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        let shutdown = async move {
            let _ = termed.await;
            batchgen::run::Signal::Terminate
        };
        opened.execute(client, shutdown).await.unwrap()
    });
    // Two rows accepted: SIGTERM (they are drained), then the gateway goes.
    journal_count_or_end(&out, "\"e\":\"submitted\"", 2, &run).await;
    let _ = term.send(());
    sim.stop().await;
    let report = run.await.unwrap();
    // The signal is the stop, unless a box too loaded to hear it within the
    // limit let the unreachable stop come first; the rows end alike.
    assert!(
        matches!(
            report.stop,
            Some(Stop::Signal(batchgen::run::Signal::Terminate) | Stop::Unreachable { .. })
        ),
        "{:?}",
        report.stop
    );
    let rows = results(&out);
    let accepted: Vec<_> = rows.iter().filter(|r| r["status"] == "accepted").collect();
    assert_eq!(accepted.len(), 2, "{rows:?}");
    for r in accepted {
        assert_eq!(r["error_code"], "GATEWAY_UNREACHABLE", "{r:?}");
    }
}

#[tokio::test]
async fn a_base_url_that_holds_the_key_or_a_query_is_refused_unechoed() {
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 1);
    let out = dir.path().join("out");
    for (url, says) in [
        (format!("http://127.0.0.1:9/v1/{KEY}"), "holds the API key"),
        (
            format!("http://127.0.0.1:9/v1/x{}", &KEY[3..14]),
            "holds the API key",
        ),
        (
            "http://127.0.0.1:9/v1?token=t0k3n-s3cr3t".to_string(),
            "has a query",
        ),
        ("http://127.0.0.1:9/v1#frag".to_string(), "has a query"),
        // Tabs, which the URL parser drops, cut it into runs of 4.
        (
            format!(
                "http://127.0.0.1:9/{}",
                KEY.as_bytes()
                    .chunks(4)
                    .map(|c| std::str::from_utf8(c).unwrap())
                    .collect::<Vec<_>>()
                    .join("\t")
            ),
            "holds the API key",
        ),
    ] {
        let o = run(&m, &out, &url, &[]).await;
        assert_eq!(o.status.code(), Some(2), "{url}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(err.contains(says), "{url}: {err}");
        assert_no_key_printed(&url, &o);
        assert!(!err.contains("t0k3n"), "{err}");
        assert!(!out.exists(), "{url}: nothing is written");
    }
}
