//! A real S3 implementation on loopback for the tests: moto's server (PyPI
//! `moto[server]`), which honours `If-None-Match: *` with 412 and
//! multipart uploads.
//!
//! [`Moto::start_or_skip`] finds `moto_server` on PATH (or runs `python3 -m
//! moto.server`), starts it on 127.0.0.1 on a free port in a process group
//! of its own, and waits until it answers; dropping the [`Moto`] (on a
//! panic too) kills the group and waits for it. Without moto the test
//! prints a loud skip line and passes, unless `BATCHGEN_REQUIRE_MOTO` is set
//! (`.ci/run` sets it and installs moto, so CI never skips silently).
//! Its process group is `benches/common/group.rs`'s, as nginx's is.

#![allow(dead_code)]

use std::net::TcpStream;
use std::process::{Command, Stdio};

use super::group::Group;
use std::time::{Duration, Instant};

/// How long moto may take to answer after it is started (a cold Python
/// import of moto takes a few seconds on a slow machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto server; dropping it kills it.
pub struct Moto {
    server: Group,
    pub port: u16,
}

/// The ways moto may be started, in order of preference.
fn candidates() -> Vec<Command> {
    let mut on_path = Command::new("moto_server");
    on_path.args(["-H", "127.0.0.1", "-p"]);
    let mut module = Command::new("python3");
    module.args(["-m", "moto.server", "-H", "127.0.0.1", "-p"]);
    vec![on_path, module]
}

impl Moto {
    /// A started moto, or `None` after printing why the test `name` is
    /// skipped; panics instead if `BATCHGEN_REQUIRE_MOTO` is set.
    pub fn start_or_skip(name: &str) -> Option<Moto> {
        match Moto::start() {
            Ok(moto) => Some(moto),
            Err(why) => {
                assert!(
                    std::env::var_os("BATCHGEN_REQUIRE_MOTO").is_none(),
                    "BATCHGEN_REQUIRE_MOTO is set but moto did not start: {why} \
                     (python3 -m pip install 'moto[server]')"
                );
                // Straight to stderr, past the test harness's capture, so the
                // skip shows in a plain `cargo test`.
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!(
                        "\n!!!!! SKIPPED {name}: {why} (python3 -m pip install 'moto[server]', \
                         or set BATCHGEN_REQUIRE_MOTO=1 to make this a failure) !!!!!\n\n"
                    )
                    .as_bytes(),
                );
                None
            }
        }
    }

    /// Starts moto on a free loopback port; waits until it listens.
    pub fn start() -> Result<Moto, String> {
        let mut why = Vec::new();
        for mut cmd in candidates() {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("a free port: {e}"))?
                .port();
            let program = format!("{:?}", cmd.get_program());
            cmd.arg(port.to_string());
            let server = Group::spawn(
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            let server = match server {
                Ok(c) => c,
                Err(e) => {
                    why.push(format!("{program}: {e}"));
                    continue;
                }
            };
            let mut moto = Moto { server, port };
            let started = Instant::now();
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(moto);
                }
                if let Ok(Some(status)) = moto.server.child.try_wait() {
                    why.push(format!("{program} exited: {status}"));
                    break;
                }
                if started.elapsed() > START_TIMEOUT {
                    why.push(format!("{program} did not listen in {START_TIMEOUT:?}"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(why.join("; "))
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The settings a client needs for this server: its endpoint over plain
    /// HTTP, dummy credentials (moto checks none), a region.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Creates `bucket` (object_store cannot): a plain `PUT /BUCKET`, which
    /// moto accepts without a signature.
    pub async fn create_bucket(&self, bucket: &str) {
        let url = format!("{}/{bucket}", self.url());
        let reply = reqwest::Client::new().put(&url).send().await;
        match reply {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => panic!("PUT {url}: {}", r.status()),
            Err(e) => panic!("PUT {url}: {e}"),
        }
    }
}
