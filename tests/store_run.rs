//! `run --out s3://…` against a real S3 implementation, moto's server on
//! loopback (`tests/support/moto.rs`), with the simulator as the gateway:
//! its ledger is the witness of what was submitted and charged, and the
//! bucket, read back, of what landed.
//!
//! What is checked: a run lands every object byte-equal to what the
//! gateway served; SIGKILLs at several moments, each followed by a rerun
//! in a fresh working folder with an empty disk, never pay twice and
//! collect every row; a second run on a live prefix is refused (exit 2);
//! a store answering 503 to a share of calls does not stop the run; a
//! store that goes away stops spending (exit 3), and the rerun completes.
//! Nothing here depends on timing: the kills happen at ledger counts, and
//! the rerun after a kill waits for the killed run's short lease to run
//! out by asking again, never by a fixed sleep.

#[path = "../benches/common/group.rs"]
mod group;
#[path = "support/moto.rs"]
mod moto;
#[path = "support/s3_faults.rs"]
mod s3_faults;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use batchgen::sim::{SimConfig, SimHandle};
use batchgen::store::Store;
use support::*;

/// What each test here starts from: moto with a bucket `data`, the
/// simulator, a temporary root holding a manifest `m` of some rows, and the
/// settings a run needs for moto (`env`).
struct Setup {
    moto: moto::Moto,
    sim: SimHandle,
    root: tempfile::TempDir,
    m: PathBuf,
    env: Vec<(String, String)>,
}

impl Setup {
    /// The setup of test `name`, the simulator as `sim` says and `rows`
    /// rows; `None` when moto is skipped (see `Moto::start_or_skip`).
    async fn new(name: &str, sim: SimConfig, rows: u32) -> Option<Setup> {
        let moto = moto::Moto::with_bucket(name, "data").await?;
        let sim = start(sim).await;
        let root = tempfile::tempdir().unwrap();
        let m = seed_sweep(root.path(), rows);
        let env = moto.env();
        Some(Setup {
            moto,
            sim,
            root,
            m,
            env,
        })
    }

    /// A fresh folder `name` of the root.
    fn dir(&self, name: &str) -> PathBuf {
        fresh_dir(self.root.path(), name)
    }

    /// `batchgen run` of the manifest to `url` (`s3://…`), in `cwd`, with
    /// the store's settings and its own temporary folder (as a fresh pod
    /// has).
    fn bucket_cmd(&self, url: &str, cwd: &Path, extra: &[&str]) -> Command {
        let cmd = command(&self.m, Path::new(url), &self.sim.url(), extra);
        self.in_pod(cmd, cwd)
    }

    /// [`Setup::bucket_cmd`] without `--quiet`.
    fn loud(&self, url: &str, cwd: &Path) -> Command {
        let cmd = loud_command(&self.m, Path::new(url), &self.sim.url(), &[]);
        self.in_pod(cmd, cwd)
    }

    /// `cmd` in `cwd`, with the store's settings and a temporary folder of
    /// its own there.
    fn in_pod(&self, mut cmd: Command, cwd: &Path) -> Command {
        let tmp = cwd.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        cmd.current_dir(cwd)
            .env("TMPDIR", &tmp)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// The objects of the run at `url` (read straight from moto),
    /// downloaded into a fresh folder `got` of the root: it, and every name
    /// listed.
    async fn downloaded(&self, url: &str) -> (PathBuf, Vec<String>) {
        let got = fresh_dir(self.root.path(), "got");
        let names = download(&self.moto.open(url), &got).await;
        (got, names)
    }
}

/// `cmd` started, its output piped, once the gateway has accepted `n`
/// requests in all; it must not end before (`early` says so).
async fn spawn_until_accepted(mut cmd: Command, sim: &SimHandle, n: u64, early: &str) -> Child {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    while sim.ledger().accepted < n {
        assert!(child.try_wait().unwrap().is_none(), "{early}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child
}

/// Every object under the store's prefix but the journal and lease,
/// downloaded into `dir`, as a local run folder would hold them.
async fn download(store: &Store, dir: &Path) -> Vec<String> {
    let listed = store.list(None).await.unwrap();
    let names = listed.iter().map(|l| l.name.clone()).collect();
    store
        .fetch(
            &listed,
            dir,
            |n| !n.starts_with("journal/") && n != "lease.json",
            1 << 30,
            8,
        )
        .await
        .unwrap();
    names
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Nothing but the manifest and the run's own temporary folder in `cwd`:
/// no `s3:` folder, no outputs written locally.
fn assert_nothing_local(cwd: &Path) {
    let names: Vec<String> = std::fs::read_dir(cwd)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "tmp")
        .collect();
    assert!(names.is_empty(), "written locally: {names:?}");
    let tmp: Vec<_> = std::fs::read_dir(cwd.join("tmp"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "the working folder was left: {tmp:?}");
}

async fn wait_output(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_to_s3_lands_every_object_byte_equal_to_what_was_served() {
    let Some(setup) = Setup::new(
        "a_run_to_s3_lands_every_object_byte_equal_to_what_was_served",
        quick(),
        12,
    )
    .await
    else {
        return;
    };
    let sim = &setup.sim;
    let cwd = setup.dir("pod");
    let url = "s3://data/nightly/run1";
    let o = output(setup.bucket_cmd(url, &cwd, &[])).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_nothing_local(&cwd);
    let (got, names) = setup.downloaded(url).await;
    for want in [
        "results.csv",
        "summary.json",
        ".plan-keys",
        "index.html",
        "images/a_s1_0.jpg",
        "images/a_s1_0.json",
        "thumbs/images/a_s1_0.jpg",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert!(
        !names.iter().any(|n| n == "lease.json"),
        "the lease was released"
    );
    assert!(names.iter().any(|n| n.starts_with("journal/seg-")));
    assert_eq!(results(&got).len(), 12);
    assert!(results(&got).iter().all(|r| r["status"] == "completed"));
    let ledger = sim.ledger();
    assert_never_paid_twice(&ledger);
    assert_eq!(ledger.accepted, 12);
    assert_files_are_what_was_served(&got, &ledger);
    assert_eq!(summary(&got)["out_dir"], url);
    assert_no_secret(&got, &o);
    // A rerun from another empty disk finds every row done in the bucket.
    let cwd = setup.dir("pod2");
    let o = output(setup.loud(url, &cwd)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let said = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(said.contains("12 finished earlier"), "{said}");
    assert!(said.contains("0 to submit"), "{said}");
    assert_eq!(sim.ledger().submit_calls, 12, "and sends nothing");
    assert_nothing_local(&cwd);
}

/// The last run's results (downloaded into `got`): every one of `rows`
/// rows collected, but for at most `most_uncertain` whose submit may have
/// been accepted with no request id recorded (a kill, or the store going
/// away, between the gateway's answer and the journal's `submitted` line:
/// the journal write is the one thing that may fail there). Those are
/// reported `SUBMIT_UNCERTAIN`, never sent again without `--retry-failed`,
/// and the ledger's accepted requests are the completed rows plus at most
/// them; every file is what the gateway served.
fn assert_collected(
    o: &Output,
    got: &Path,
    rows: usize,
    most_uncertain: usize,
    ledger: &batchgen::sim::Ledger,
) {
    let results = results(got);
    assert_eq!(results.len(), rows);
    let completed = results
        .iter()
        .filter(|r| r["status"] == "completed")
        .count();
    let uncertain: Vec<_> = results
        .iter()
        .filter(|r| r["status"] != "completed")
        .collect();
    assert!(
        uncertain
            .iter()
            .all(|r| r["error_code"] == "SUBMIT_UNCERTAIN"),
        "{uncertain:#?}"
    );
    assert!(uncertain.len() <= most_uncertain, "{uncertain:#?}");
    eprintln!(
        "{completed} of {rows} rows collected, {} uncertain",
        uncertain.len()
    );
    let want = if uncertain.is_empty() { 0 } else { 1 };
    assert_eq!(
        o.status.code(),
        Some(want),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let accepted = ledger.accepted as usize;
    assert!(
        (completed..=completed + uncertain.len()).contains(&accepted),
        "{accepted} accepted, {completed} completed, {} uncertain",
        uncertain.len()
    );
    assert_files_are_what_was_served(got, ledger);
}

/// Runs to `url` until it completes, killing it with SIGKILL once the
/// ledger has accepted each of `kill_at` requests, every run in a fresh
/// working folder; a rerun refused while the killed run's lease is live
/// (exit 2, "in use") asks again 200 ms later. The lease is 5 s: short, so
/// the test waits little, and renewed every 1.7 s, so a loaded machine
/// (3 s of margin) does not let a live run's lease lapse. Runs that are not refused are exactly
/// one per kill and the last; refusals are bounded only as a guard against
/// a lease that never expires (a fast machine is refused many times while
/// it waits out each killed run's lease).
async fn kill_and_rerun(setup: &Setup, url: &str, root: &Path, kill_at: &[u64]) -> Output {
    let refused = |code: Option<i32>, o: &Output| {
        code == Some(2) && text(&o.stderr).contains("in use by run")
    };
    let mut pods = 0;
    let mut refusals = 0;
    let mut kills = kill_at.iter().copied().peekable();
    loop {
        pods += 1;
        let cwd = fresh_dir(root, &format!("pod{pods}"));
        let mut cmd = setup.bucket_cmd(url, &cwd, &["--lease-secs", "5"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let Some(&at) = kills.peek() else {
            let o = wait_output(child).await;
            if !refused(o.status.code(), &o) {
                eprintln!("{pods} runs, {refusals} of them refused");
                return o;
            }
            refusals += 1;
            assert!(refusals < 3000, "the killed runs' leases never expired");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        // Killed once the gateway accepted `at` requests in all.
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let o = wait_output(child).await;
                assert!(
                    refused(status.code(), &o),
                    "the run ended ({status}) before {at} were accepted: {}",
                    text(&o.stderr)
                );
                refusals += 1;
                assert!(refusals < 3000, "the killed runs' leases never expired");
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
            if setup.sim.ledger().accepted >= at {
                child.kill().unwrap();
                child.wait().unwrap();
                kills.next();
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_several_moments_then_reruns_from_empty_disks_never_pay_twice() {
    let Some(setup) = Setup::new(
        "sigkill_at_several_moments_then_reruns_from_empty_disks_never_pay_twice",
        latency(100, 400),
        40,
    )
    .await
    else {
        return;
    };
    let sim = &setup.sim;
    let url = "s3://data/killed";
    let kills = [3, 11, 24, 33];
    let o = kill_and_rerun(&setup, url, setup.root.path(), &kills).await;
    let ledger = sim.ledger();
    assert_never_paid_twice(&ledger);
    let (got, _) = setup.downloaded(url).await;
    assert_collected(&o, &got, 40, kills.len() * 8, &ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_a_live_prefix_is_refused_before_sending() {
    let Some(setup) = Setup::new(
        "a_second_run_on_a_live_prefix_is_refused_before_sending",
        // Long enough that the second run, started after the first's last
        // submit, finds it live even on a loaded machine.
        latency(8000, 9000),
        4,
    )
    .await
    else {
        return;
    };
    let sim = &setup.sim;
    let url = "s3://data/shared";
    let first_dir = setup.dir("first");
    let first = setup.bucket_cmd(url, &first_dir, &[]);
    let first = spawn_until_accepted(first, sim, 4, "the first run ended early").await;
    let second_dir = setup.dir("second");
    let o = output(setup.bucket_cmd(url, &second_dir, &["--retry-failed"])).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("in use by run"), "{err}");
    assert!(
        err.contains("in s3://data"),
        "the store named by its URL: {err}"
    );
    assert!(
        !err.contains("testing"),
        "no credentials in messages: {err}"
    );
    let first = wait_output(first).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let ledger = sim.ledger();
    assert_eq!(ledger.submit_calls, 4, "the second run sent nothing");
    assert_never_paid_twice(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_answering_503_to_a_share_of_calls_still_completes() {
    let Some(mut setup) = Setup::new(
        "a_store_answering_503_to_a_share_of_calls_still_completes",
        quick(),
        16,
    )
    .await
    else {
        return;
    };
    let proxy = s3_faults::start(&setup.moto.url()).await;
    proxy
        .faults
        .every
        .store(4, std::sync::atomic::Ordering::SeqCst);
    setup.env = setup.moto.env_at(&proxy.url);
    let sim = &setup.sim;
    let url = "s3://data/slowdown";
    let cwd = setup.dir("pod");
    let o = output(setup.bucket_cmd(url, &cwd, &[])).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let refused = proxy
        .faults
        .refused
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(refused >= 10, "only {refused} calls were answered 503");
    let ledger = sim.ledger();
    assert_never_paid_twice(&ledger);
    assert_eq!(ledger.accepted, 16);
    let (got, _) = setup.downloaded(url).await;
    assert!(results(&got).iter().all(|r| r["status"] == "completed"));
    assert_files_are_what_was_served(&got, &ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_goes_away_stops_spending_and_the_rerun_completes() {
    let Some(mut setup) = Setup::new(
        "a_store_that_goes_away_stops_spending_and_the_rerun_completes",
        latency(300, 600),
        30,
    )
    .await
    else {
        return;
    };
    let proxy = s3_faults::start(&setup.moto.url()).await;
    setup.env = setup.moto.env_at(&proxy.url);
    let sim = &setup.sim;
    let url = "s3://data/gone";
    let cwd = setup.dir("pod1");
    let extra = ["--concurrency", "4", "--lease-secs", "3"];
    let mut cmd = setup.bucket_cmd(url, &cwd, &extra);
    cmd.env("BATCHGEN_STORE_RETRY_SECS", "2");
    let child = spawn_until_accepted(cmd, sim, 2, "the run ended early").await;
    proxy
        .faults
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let o = wait_output(child).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let accepted = sim.ledger().accepted;
    assert!(accepted < 30, "spending stopped: {accepted} of 30 paid for");
    // The store comes back; a plain rerun, in a fresh pod, collects it all.
    proxy
        .faults
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let o = kill_and_rerun(&setup, url, &setup.root.path().join("after"), &[]).await;
    let ledger = sim.ledger();
    assert_never_paid_twice(&ledger);
    let (got, _) = setup.downloaded(url).await;
    assert_collected(&o, &got, 30, 4, &ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_on_a_bucket_serves_the_next_run_without_sending() {
    let Some(setup) = Setup::new(
        "a_cache_on_a_bucket_serves_the_next_run_without_sending",
        quick(),
        6,
    )
    .await
    else {
        return;
    };
    let sim = &setup.sim;
    let cache = ["--cache", "s3://data/cache"];
    // The first run writes to a local folder and stores in the bucket cache.
    let first = setup.root.path().join("first");
    let mut cmd = command(&setup.m, &first, &sim.url(), &cache);
    cmd.envs(setup.env.iter().map(|(k, v)| (k, v)));
    let o = output(cmd).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().submit_calls, 6);
    // The next writes to a bucket prefix, from a fresh disk, and takes them all.
    let cwd = setup.dir("pod");
    let url = "s3://data/second";
    let o = output(setup.bucket_cmd(url, &cwd, &cache)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let ledger = sim.ledger();
    assert_eq!(ledger.submit_calls, 6, "the second run sent nothing");
    let (got, _) = setup.downloaded(url).await;
    let rows = results(&got);
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r["status"] == "completed"), "{rows:#?}");
    assert_eq!(summary(&got)["cached"], 6, "{}", summary(&got));
    assert_files_are_what_was_served(&got, &ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_loses_its_lease_stops_spending() {
    // Requests that take ten minutes: only losing the lease can end the run.
    let Some(setup) = Setup::new(
        "a_run_that_loses_its_lease_stops_spending",
        latency(600_000, 600_000),
        20,
    )
    .await
    else {
        return;
    };
    let sim = &setup.sim;
    let url = "s3://data/taken";
    let cwd = setup.dir("pod");
    // Renewed every second: a deletion is noticed within about a second, and
    // a loaded machine has 2 s of margin before the run's own lease lapses.
    let extra = ["--concurrency", "2", "--lease-secs", "3"];
    let cmd = setup.bucket_cmd(url, &cwd, &extra);
    let child = spawn_until_accepted(cmd, sim, 2, "the run ended early").await;
    // Someone deletes the lease (an operator, or a run that took it over).
    let store = setup.moto.open(url);
    let lease = store.path("lease.json").unwrap();
    object_store::ObjectStoreExt::delete(&**store.inner(), &lease)
        .await
        .unwrap();
    let o = wait_output(child).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("lease") && err.contains("deleted"), "{err}");
    assert_eq!(sim.ledger().submit_calls, 2, "nothing more was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_a_bucket_that_cannot_be_read_stops_and_keeps_rows_done() {
    let Some(mut setup) = Setup::new(
        "verify_on_a_bucket_that_cannot_be_read_stops_and_keeps_rows_done",
        quick(),
        6,
    )
    .await
    else {
        return;
    };
    let url = "s3://data/verified";
    let o = output(setup.bucket_cmd(url, &setup.dir("pod1"), &[])).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // The images cannot be read: `--verify` cannot check them, which is
    // not the same as finding them damaged.
    let proxy = s3_faults::start(&setup.moto.url()).await;
    *proxy.faults.gets_of.lock().unwrap() = "/images/".into();
    setup.env = setup.moto.env_at(&proxy.url);
    let polls = setup.sim.ledger().status_calls;
    let mut cmd = setup.bucket_cmd(url, &setup.dir("pod2"), &["--verify"]);
    cmd.env("BATCHGEN_STORE_RETRY_SECS", "1");
    let o = output(cmd).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("images/"), "names the object: {err}");
    assert_eq!(setup.sim.ledger().submit_calls, 6, "nothing sent");
    assert_eq!(
        setup.sim.ledger().status_calls,
        polls,
        "no row sent back to its request"
    );
    // Readable again: every row is verified done, nothing is sent.
    *proxy.faults.gets_of.lock().unwrap() = String::new();
    let o = output(setup.bucket_cmd(url, &setup.dir("pod3"), &["--verify"])).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(setup.sim.ledger().submit_calls, 6);
    let (got, _) = setup.downloaded(url).await;
    assert!(results(&got).iter().all(|r| r["status"] == "completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_or_an_unreadable_name_is_said_plainly_and_takes_nothing() {
    let Some(setup) = Setup::new(
        "a_missing_bucket_or_an_unreadable_name_is_said_plainly_and_takes_nothing",
        quick(),
        2,
    )
    .await
    else {
        return;
    };
    let o = output(setup.bucket_cmd("s3://nobucket/x", &setup.dir("pod1"), &[])).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("nobucket"), "{err}");
    assert!(
        !err.contains("another run"),
        "no phantom second writer: {err}"
    );
    // An object whose name object_store cannot read (`//`), put by another tool.
    let odd = format!("{}/data/odd/images//double.png", setup.moto.url());
    let put = reqwest::Client::new()
        .put(&odd)
        .body("x")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let o = output(setup.bucket_cmd("s3://data/odd", &setup.dir("pod2"), &[])).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("rename or delete"), "{err}");
    // Listed raw: object_store cannot list this prefix either.
    let list = format!("{}/data?list-type=2&prefix=odd/", setup.moto.url());
    let names = reqwest::get(&list).await.unwrap().text().await.unwrap();
    assert!(
        !names.contains("lease.json") && !names.contains("journal/"),
        "refused before taking the lease or the fence: {names}"
    );
    assert_eq!(setup.sim.ledger().submit_calls, 0);
}
