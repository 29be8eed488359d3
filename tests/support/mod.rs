//! What the binary's tests share: a simulator in the test process (its
//! ledger is the witness of what was submitted, charged and served), the
//! binary run with a clean environment, readers of its outputs, and a
//! recording server that stands for "somewhere else" on loopback.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batchgen::sim::{self, Ledger, SimConfig, SimHandle};
use sha2::{Digest, Sha256};

pub const KEY: &str = "sk-SECRET-run-test-4711";

pub fn quick() -> SimConfig {
    SimConfig {
        key: Some(KEY.into()),
        min_latency_ms: 20,
        max_latency_ms: 120,
        ..SimConfig::default()
    }
}

/// [`quick`], with requests taking from `min_ms` to `max_ms`.
pub fn latency(min_ms: u64, max_ms: u64) -> SimConfig {
    SimConfig {
        min_latency_ms: min_ms,
        max_latency_ms: max_ms,
        ..quick()
    }
}

pub async fn start(cfg: SimConfig) -> SimHandle {
    sim::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub fn command(manifest: &Path, out: &Path, url: &str, extra: &[&str]) -> Command {
    let mut cmd = loud_command(manifest, out, url, extra);
    cmd.arg("--quiet");
    cmd
}

/// [`command`] without `--quiet`: the run says what it will do and its totals.
pub fn loud_command(manifest: &Path, out: &Path, url: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchgen"));
    cmd.arg("run")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .args(["--base-url", url, "--poll-interval-ms", "40"])
        .args(if extra.contains(&"--rate") {
            &[][..]
        } else {
            &["--rate", "200"][..]
        })
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PIXAZO_API_KEY", KEY);
    cmd
}

/// Runs `cmd` to its end without blocking the runtime that serves the simulator.
pub async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Runs the binary without blocking the runtime that serves the simulator.
pub async fn run(manifest: &Path, out: &Path, url: &str, extra: &[&str]) -> Output {
    output(command(manifest, out, url, extra)).await
}

/// [`run`] without `--quiet`.
pub async fn run_loud(manifest: &Path, out: &Path, url: &str, extra: &[&str]) -> Output {
    output(loud_command(manifest, out, url, extra)).await
}

/// A loopback address that refuses connections. Its port is freed on
/// 127.0.0.2, where no test's server listens: one freed on 127.0.0.1 can be
/// taken at once by a server of a test running alongside, which would then
/// receive the requests meant to be refused.
pub fn refusing_addr() -> std::net::SocketAddr {
    let closed = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    closed.local_addr().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// A manifest of one small prompt (`a`, "cat") over seeds 1..=count.
pub fn seed_sweep(dir: &Path, count: u32) -> PathBuf {
    write(
        dir,
        "m.yaml",
        &format!("defaults: {{image_size: {{width: 32, height: 32}}}}\nseeds: {{from: 1, count: {count}}}\njobs: [{{id: a, prompt: cat}}]\n"),
    )
}

/// results.csv as one map per row.
pub fn results(out: &Path) -> Vec<HashMap<String, String>> {
    let mut r = csv::Reader::from_path(out.join("results.csv")).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .map(String::from)
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect()
}

pub fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

pub fn sha256_file(path: &Path) -> String {
    batchgen::disk::hex(&Sha256::digest(std::fs::read(path).unwrap()))
}

/// Every completed row's files exist, match their recorded SHA-256, and are
/// byte for byte what the simulator served.
pub fn assert_files_are_what_was_served(out: &Path, ledger: &Ledger) {
    for row in results(out) {
        if row["status"] != "completed" {
            continue;
        }
        let files: Vec<&str> = row["files"].split(';').collect();
        let shas: Vec<&str> = row["sha256"].split(';').collect();
        assert_eq!(files.len(), shas.len());
        for (f, sha) in files.iter().zip(shas) {
            let path = out.join(f);
            assert!(
                path.starts_with(out.join("images")),
                "{f} is outside images/"
            );
            assert_eq!(sha256_file(&path), sha, "{f}");
            assert!(
                ledger.files.values().any(|s| s == sha),
                "{f} was never served"
            );
        }
    }
}

pub fn assert_never_paid_twice(ledger: &Ledger) {
    assert!(
        ledger.paid_twice().is_empty(),
        "paid twice: {:?}",
        ledger.paid_twice()
    );
}

pub fn assert_no_secret(out: &Path, o: &Output) {
    assert!(!text(&o.stdout).contains(KEY) && !text(&o.stderr).contains(KEY));
    for entry in walk(out) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "the key is in {}",
            entry.display()
        );
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

/// Starts `cmd`, waits until its journal holds `n` submitted requests, sends
/// it `signals` (each after the one before was heard) and returns what it
/// printed.
pub async fn signal_when_submitted(
    mut cmd: Command,
    out: &Path,
    n: usize,
    signals: &[&'static str],
) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let (out, signals) = (out.to_path_buf(), signals.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        // Its stderr, line by line as it comes, and whole at the end.
        let (lines, said) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut { stdout }, &mut all).unwrap();
            all
        });
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut all = Vec::new();
            let mut stderr = std::io::BufReader::new(stderr);
            let mut line = Vec::new();
            while stderr.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                let _ = lines.send(String::from_utf8_lossy(&line).into_owned());
                all.append(&mut line);
            }
            all
        });
        wait_for_journal(&mut child, &out, "\"e\":\"submitted\"", n);
        let pid = child.id().to_string();
        for (i, &signal) in signals.iter().enumerate() {
            assert!(Command::new("kill")
                .args([signal, pid.as_str()])
                .status()
                .unwrap()
                .success());
            // A second signal is sent once the first was heard: two that
            // arrive before the process takes the first are one.
            if i + 1 < signals.len() {
                let heard = said.iter().any(|line| line.contains(": no new requests"));
                assert!(heard, "the run ended without hearing {signal}");
            }
        }
        Output {
            status: child.wait().unwrap(),
            stdout: stdout.join().unwrap(),
            stderr: reader.join().unwrap(),
        }
    })
    .await
    .unwrap()
}

/// Waits until the journal holds at least `n` lines matching `needle`.
pub fn wait_for_journal(child: &mut std::process::Child, out: &Path, needle: &str, n: usize) {
    for _ in 0..3000 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("batchgen ended early ({status}) before {n} × {needle}");
        }
        let count = std::fs::read_to_string(out.join("journal.jsonl"))
            .map(|t| t.matches(needle).count())
            .unwrap_or(0);
        if count >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the journal never reached {n} × {needle}");
}

/// One request a [`Recorder`] received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a [`Recorder`] answers: status, headers, body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// A plain HTTP/1.1 server on loopback that records every request and
/// answers each with what `answer` says. It stands for "somewhere else":
/// a redirect target, a foreign `status_url`, a hostile gateway.
pub struct Recorder {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    pub async fn start(answer: impl Fn(&Received) -> Answer + Send + Sync + 'static) -> Recorder {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let (log, answer) = (received.clone(), Arc::new(answer));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (log, answer) = (log.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap_or("").split(' ');
                    let method = first.next().unwrap_or("").to_string();
                    let path = first.next().unwrap_or("").to_string();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let req = Received {
                        method,
                        path,
                        headers,
                        body: buf[head_end..].to_vec(),
                    };
                    let (status, extra, body) = answer(&req);
                    log.lock().unwrap().push(req);
                    let mut out = format!(
                        "HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {}\r\n",
                        body.len()
                    );
                    for (n, v) in extra {
                        out.push_str(&format!("{n}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let _ = sock.write_all(out.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Recorder { url, received }
    }

    /// Answers every request `200 ok`.
    pub async fn ok() -> Recorder {
        Recorder::start(|_| (200, vec![], b"ok".to_vec())).await
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Runs `batchgen ARGS` to its end with a clean environment.
pub async fn batchgen(args: &[&str], dir: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchgen"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    output(cmd).await
}

/// Sends `signal` once mid-run: no new submits, every accepted request
/// collected, results written, exit `exit`; rows never reached say `code`,
/// and the same command then finishes the job without paying twice.
pub async fn assert_one_signal_drains(signal: &'static str, exit: i32, code: &str) {
    let sim = start(latency(400, 800)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 30);
    let out = dir.path().join("out");
    let cmd = command(
        &m,
        &out,
        &sim.url(),
        &["--concurrency", "4", "--rate", "10"],
    );
    let o = signal_when_submitted(cmd, &out, 3, &[signal]).await;
    assert_eq!(o.status.code(), Some(exit), "{}", text(&o.stderr));
    let ledger = sim.ledger();
    assert_eq!(ledger.in_flight, 0, "everything accepted was collected");
    let rows = results(&out);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "completed" || r["error_code"] == code),
        "{rows:#?}"
    );
    assert_eq!(
        rows.iter().filter(|r| r["status"] == "completed").count() as u64,
        ledger.accepted
    );
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(sim.ledger().accepted, 30);
    assert_never_paid_twice(&sim.ledger());
}

/// Sends `signal` twice: out at once (exit `exit`) with the journal intact,
/// before slow accepted requests end; a rerun collects them and pays for
/// nothing twice.
pub async fn assert_two_signals_quit(signal: &'static str, exit: i32) {
    let sim = start(latency(3000, 4000)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 8);
    let out = dir.path().join("out");
    let cmd = command(
        &m,
        &out,
        &sim.url(),
        &["--concurrency", "4", "--rate", "50"],
    );
    let o = signal_when_submitted(cmd, &out, 2, &[signal, signal]).await;
    assert_eq!(o.status.code(), Some(exit), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("the journal is intact"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        sim.ledger().in_flight > 0,
        "it left before the accepted requests ended"
    );
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "{}",
        text(&o.stderr)
    );
    let ledger = sim.ledger();
    assert_never_paid_twice(&ledger);
    assert_eq!(ledger.in_flight, 0, "every accepted request was collected");
    for r in results(&out) {
        assert!(
            r["status"] == "completed" || r["error_code"] == "SUBMIT_UNCERTAIN",
            "{r:?}"
        );
    }
}

/// A one-row manifest (`dir/m.yaml`) and an output folder (`dir/out`) whose
/// journal says the row was accepted at `at_ms`, as a run that died right
/// after recording the request id leaves it. The request was really
/// submitted to `sim`; `edit` may change its ticket before it is journaled.
/// Returns the manifest and the folder.
pub async fn accepted_earlier(
    sim: &SimHandle,
    dir: &Path,
    at_ms: u64,
    edit: impl FnOnce(&mut batchgen::api::Ticket),
) -> (PathBuf, PathBuf) {
    use batchgen::api::{ApiKey, Client, ClientConfig};
    use batchgen::journal::{Entry, Journal};
    let m = write(
        dir,
        "m.yaml",
        "defaults: {image_size: {width: 32, height: 32}}\njobs: [{id: a, prompt: cat, seed: 1}]\n",
    );
    let plan = batchgen::plan::expand(&batchgen::manifest::load(&m).unwrap()).unwrap();
    let row = plan.rows[0];
    let client = Client::new(ClientConfig::new(&sim.url(), ApiKey::new(KEY).unwrap())).unwrap();
    let mut ticket = client
        .submit(&plan.request(&row))
        .await
        .unwrap()
        .ticket
        .unwrap();
    edit(&mut ticket);
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let journal = Journal::open(&out).unwrap();
    let key = row.key;
    journal
        .append_blocking(&Entry::Intent {
            key,
            at_ms,
            price_micros: 50_000,
        })
        .unwrap();
    journal
        .append_blocking(&Entry::Submitted {
            key,
            at_ms,
            ticket: Some(ticket),
            images: vec![],
        })
        .unwrap();
    (m, out)
}

/// `batchgen run` with nothing but the folder, the gateway and `--quiet`:
/// the defaults a user gets (no fixed poll interval, no rate ceiling).
pub async fn run_with_defaults(manifest: &Path, out: &Path, url: &str, extra: &[&str]) -> Output {
    output(defaults_command(manifest, out, url, extra)).await
}

/// The command [`run_with_defaults`] runs, for a test that adds to it.
pub fn defaults_command(manifest: &Path, out: &Path, url: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchgen"));
    cmd.arg("run")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .args(["--base-url", url, "--quiet"])
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PIXAZO_API_KEY", KEY);
    cmd
}

/// One loopback host that serves other servers under path prefixes: a
/// request for `URL/a/REST` is forwarded to the server routed at `/a` as
/// `/REST` (the longest prefix wins; `""` takes what no other prefix does).
/// It stands for several gateways behind one host, reached by path.
pub struct PathProxy {
    pub url: String,
}

impl PathProxy {
    /// Serves until the test's runtime ends.
    pub async fn start(routes: Vec<(&'static str, String)>) -> PathProxy {
        use axum::body::Body;
        use axum::extract::Request;
        use axum::http::{header, StatusCode};
        use axum::response::{IntoResponse, Response};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let routes = Arc::new(routes);
        let forward = move |req: Request| {
            let (client, routes) = (client.clone(), routes.clone());
            async move {
                let path = req.uri().path().to_string();
                let query = req
                    .uri()
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                let Some((prefix, to)) = routes
                    .iter()
                    .filter(|(p, _)| path == *p || path.starts_with(&format!("{p}/")))
                    .max_by_key(|(p, _)| p.len())
                else {
                    return StatusCode::NOT_FOUND.into_response();
                };
                let target = format!("{to}{}{query}", &path[prefix.len()..]);
                let (method, headers) = (req.method().clone(), req.headers().clone());
                let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                    .await
                    .unwrap_or_default();
                let mut fwd = client.request(method, target).body(body);
                for (name, value) in &headers {
                    if name != header::HOST && name != header::CONTENT_LENGTH {
                        fwd = fwd.header(name, value);
                    }
                }
                let Ok(answer) = fwd.send().await else {
                    return StatusCode::BAD_GATEWAY.into_response();
                };
                let mut res = Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
                        res = res.header(name, value);
                    }
                }
                let bytes = answer.bytes().await.unwrap_or_default();
                res.body(Body::from(bytes)).unwrap()
            }
        };
        let app = axum::Router::new().fallback(forward);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        PathProxy { url }
    }
}

/// A run of `manifest` into `out` in the test process, against `url`, with
/// the command line's defaults (no rate ceiling, polls learned from the
/// gateway, `--concurrency 8`), no progress display, and `tune` applied.
///
/// Under `#[tokio::test(start_paused = true)]` the run and the simulator
/// keep time on tokio's paused clock: it moves only when every task waits
/// (the journal's writer included), straight to the next timer, so what
/// the run does when is the same on an idle box and on a loaded one.
pub async fn run_in_process(
    manifest: &Path,
    out: &Path,
    url: &str,
    tune: impl FnOnce(&mut batchgen::run::Settings),
) -> batchgen::run::Report {
    use batchgen::api::{ApiKey, Client, ClientConfig};
    let plan = std::sync::Arc::new(
        batchgen::plan::expand(&batchgen::manifest::load(manifest).unwrap()).unwrap(),
    );
    let mut settings = batchgen::run::Settings::new(out.to_path_buf());
    settings.gateway = batchgen::gateway::Gateway::of_url(&reqwest::Url::parse(url).unwrap());
    settings.progress = batchgen::progress::Mode::Quiet;
    settings.paused_clock = true;
    tune(&mut settings);
    let opened = tokio::task::spawn_blocking(move || batchgen::run::open(plan, settings))
        .await
        .unwrap()
        .unwrap();
    let client = Client::new(ClientConfig::new(url, ApiKey::new(KEY).unwrap())).unwrap();
    opened
        .execute(client, std::future::pending())
        .await
        .unwrap()
}

/// A manifest of seven rows in two jobs, for sharded runs.
pub const SHARDED: &str = "defaults: {image_size: {width: 32, height: 32}}\njobs:\n  - {id: a, prompt: cat, seeds: {from: 1, count: 5}}\n  - {id: b, prompt: dog, seeds: [3, 9]}\n";

/// The two shards of [`SHARDED`], run into `DIR/s0` and `DIR/s1`.
pub async fn two_shards(sim: &batchgen::sim::SimHandle, dir: &Path) {
    let m = write(dir, "s.yaml", SHARDED);
    for i in 0..2 {
        let shard = format!("{i}/2");
        let o = run(
            &m,
            &dir.join(format!("s{i}")),
            &sim.url(),
            &["--shard", &shard],
        )
        .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
}
