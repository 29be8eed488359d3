//! A real S3 implementation on loopback for the tests: moto's server (PyPI
//! `moto[server]`), which honours `If-None-Match: *` with 412 and
//! multipart uploads.
//!
//! [`Moto::start_or_skip`] finds a Python that imports moto (`python3`, else
//! the interpreter `moto_server` on PATH names on its `#!` line), reads
//! `moto.__version__` and `sys.executable` from it once, and refuses a moto
//! that does not answer `If-None-Match: *` with 412 (see [`MIN_VERSION`]).
//! It then starts that interpreter's `-m moto.server` on 127.0.0.1 on a
//! free port, in a process group of its own, and waits (at most
//! [`START_TIMEOUT`]) until it answers an HTTP request.
//!
//! The server never outlives the tests:
//! - dropping the [`Moto`] (on a panic too) kills its group and waits for it;
//! - on Linux the server is also given `PR_SET_PDEATHSIG` = SIGKILL, so a
//!   test binary killed outright (SIGKILL, a timeout) takes it along. The
//!   kernel sends it when the *thread* that started the server ends: keep
//!   a [`Moto`] on the thread that started it (as a test's body does).
//!
//! What the server prints (stdout and stderr) goes to a temporary file; a
//! start that fails says why with the tail of it.
//!
//! Without moto the test prints a loud skip line and passes, unless
//! `BATCHGEN_REQUIRE_MOTO` is set (`.ci/run` sets it and installs moto, so
//! CI never skips silently): then a missing, too old or failing moto is a
//! failure. Its process group is `benches/common/group.rs`'s, as nginx's is.

#![allow(dead_code)]

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::group::Group;

/// How long moto may take to answer after it is started (a cold Python
/// import of moto takes a few seconds on a slow machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The first moto whose S3 `PutObject` honours `If-None-Match: *` (answers
/// 412 for an existing key): getmoto/moto#8109, merged 2024-09-09, first
/// released in 5.0.15. Older ones overwrite, and the tests of create-only
/// writes would pass or fail for the wrong reason.
pub const MIN_VERSION: [u32; 3] = [5, 0, 15];

/// Versions known to answer that `If-None-Match: *` with a 500 instead of
/// 412 in server mode (getmoto/moto#10018).
pub const BROKEN_VERSIONS: &[[u32; 3]] = &[[5, 2, 0]];

/// Lines of the server's output a failed start shows.
const TAIL_LINES: usize = 20;

/// A running moto server; dropping it kills it.
pub struct Moto {
    server: Group,
    pub port: u16,
    /// What the server printed (kept while it runs).
    log: tempfile::NamedTempFile,
}

/// A Python with moto, as asked once.
#[derive(Clone, Debug)]
pub struct Python {
    /// `sys.executable`: the interpreter itself, not a shim in front of it.
    pub executable: PathBuf,
    /// `moto.__version__`.
    pub version: String,
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
                     (python3 -m pip install -U 'moto[server]')"
                );
                // Straight to stderr, past the test harness's capture, so the
                // skip shows in a plain `cargo test`.
                let _ = std::io::stderr().write_all(
                    format!(
                        "\n!!!!! SKIPPED {name}: {why} (python3 -m pip install -U 'moto[server]', \
                         or set BATCHGEN_REQUIRE_MOTO=1 to make this a failure) !!!!!\n\n"
                    )
                    .as_bytes(),
                );
                None
            }
        }
    }

    /// [`Moto::start_or_skip`], with `bucket` created on it.
    pub async fn with_bucket(name: &str, bucket: &str) -> Option<Moto> {
        let moto = Moto::start_or_skip(name)?;
        moto.create_bucket(bucket).await;
        Some(moto)
    }

    /// Starts moto on a free loopback port; waits until it answers HTTP.
    pub fn start() -> Result<Moto, String> {
        static FOUND: OnceLock<Result<Python, String>> = OnceLock::new();
        let python = FOUND.get_or_init(find_python).clone()?;
        Moto::start_with(&python)
    }

    /// Starts `python`'s moto (refused if too old; see [`MIN_VERSION`]).
    pub fn start_with(python: &Python) -> Result<Moto, String> {
        usable(&python.version).map_err(|why| {
            format!(
                "moto {} ({}) {why}",
                python.version,
                python.executable.display()
            )
        })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?
            .port();
        let log = tempfile::Builder::new()
            .prefix("moto-server-")
            .suffix(".log")
            .tempfile()
            .map_err(|e| format!("a file for moto's output: {e}"))?;
        let (out, err) = log
            .as_file()
            .try_clone()
            .and_then(|a| Ok((a, log.as_file().try_clone()?)))
            .map_err(|e| format!("a file for moto's output: {e}"))?;
        let mut cmd = Command::new(&python.executable);
        cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        dies_with_this_thread(&mut cmd);
        let program = format!("{} -m moto.server", python.executable.display());
        let server = Group::spawn(&mut cmd).map_err(|e| format!("{program}: {e}"))?;
        let mut moto = Moto { server, port, log };
        let started = Instant::now();
        loop {
            if answers(port) {
                return Ok(moto);
            }
            if let Ok(Some(status)) = moto.server.child.try_wait() {
                return Err(format!("{program} exited ({status}){}", moto.tail()));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "{program} did not answer HTTP in {START_TIMEOUT:?}{}",
                    moto.tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.server.child.id()
    }

    /// Lets the server go without killing it (its output file is removed):
    /// for the test that it dies with the thread that started it. Its id.
    pub fn leak(self) -> u32 {
        let Moto { server, log, .. } = self;
        let pid = server.child.id();
        std::mem::forget(server);
        drop(log);
        pid
    }

    /// The last lines the server printed, as `; its output ends: …`.
    pub fn tail(&self) -> String {
        let mut f = self.log.as_file();
        let mut text = Vec::new();
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(8192)));
        let _ = f.read_to_end(&mut text);
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n  ");
        match tail.trim().is_empty() {
            true => "; it printed nothing".into(),
            false => format!("; its output ends:\n  {tail}"),
        }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The settings a client needs for this server: its endpoint over plain
    /// HTTP, dummy credentials (moto checks none), a region.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_at(&self.url())
    }

    /// [`Moto::env`] with `endpoint` (a proxy in front of this server) as
    /// the endpoint.
    pub fn env_at(&self, endpoint: &str) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", endpoint.to_string()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The store at `url` (`s3://BUCKET/PREFIX`) on this server, opened
    /// with [`Moto::env`] as a run opens one.
    pub fn open(&self, url: &str) -> batchgen::store::Store {
        self.open_with(url, &self.env())
    }

    /// The store at `url`, opened with the settings `env`.
    pub fn open_with(&self, url: &str, env: &[(String, String)]) -> batchgen::store::Store {
        let location = batchgen::store::Location::parse(url).unwrap();
        location
            .bucket()
            .unwrap()
            .open_with(env, batchgen::store::retry())
            .unwrap()
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

/// The first Python that imports moto: `python3`, then the interpreter on
/// the `#!` line of `moto_server` on PATH (a pipx or venv install).
fn find_python() -> Result<Python, String> {
    let mut tried = Vec::new();
    let mut candidates = vec![PathBuf::from("python3")];
    candidates.extend(moto_server_interpreter());
    for python in candidates {
        match ask(&python) {
            Ok(found) => return Ok(found),
            Err(why) => tried.push(format!("{}: {why}", python.display())),
        }
    }
    Err(format!("no Python with moto ({})", tried.join("; ")))
}

/// `moto.__version__` and `sys.executable` from `python`.
pub fn ask(python: &Path) -> Result<Python, String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, moto.server, moto; print(moto.__version__); print(sys.executable)",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    match (out.status.success(), lines.next(), lines.next()) {
        (true, Some(version), Some(executable)) if !executable.trim().is_empty() => Ok(Python {
            version: version.trim().to_string(),
            executable: PathBuf::from(executable.trim()),
        }),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("").trim().to_string();
            Err(format!(
                "cannot import moto ({}{})",
                out.status,
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            ))
        }
    }
}

/// The interpreter `moto_server` on PATH runs, if its `#!` names a Python.
fn moto_server_interpreter() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let script = std::env::split_paths(&path)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())?;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(&script).ok()?.read(&mut head).ok()?;
    let first = String::from_utf8_lossy(&head[..n]);
    let line = first.lines().next()?.strip_prefix("#!")?.trim();
    let interpreter = line.split_whitespace().next()?;
    Path::new(interpreter)
        .file_name()?
        .to_str()?
        .starts_with("python")
        .then(|| PathBuf::from(interpreter))
}

/// The leading numbers of a version (`5.0.15`, `5.1.0.dev3`, `5.2rc1`).
pub fn version_numbers(version: &str) -> Option<[u32; 3]> {
    let mut parts = [0u32; 3];
    let mut seen = 0;
    for (i, part) in version.trim().split('.').take(3).enumerate() {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            break;
        }
        parts[i] = digits.parse().ok()?;
        seen += 1;
        if digits.len() != part.len() {
            break;
        }
    }
    (seen > 0).then_some(parts)
}

/// Whether moto `version` is one the tests can stand on; why not.
pub fn usable(version: &str) -> Result<(), String> {
    let v = version_numbers(version).ok_or("has a version that does not read")?;
    let [a, b, c] = MIN_VERSION;
    if v < MIN_VERSION {
        return Err(format!(
            "is older than {a}.{b}.{c}, the first whose PutObject answers \
             `If-None-Match: *` with 412 (getmoto/moto#8109)"
        ));
    }
    if BROKEN_VERSIONS.contains(&v) {
        return Err("answers `If-None-Match: *` with 500, not 412 (getmoto/moto#10018)".into());
    }
    Ok(())
}

/// Whether something on `port` answers an HTTP request (any status: moto
/// has finished starting once its application answers, not when the
/// socket merely accepts).
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET / HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let head = &head[..got];
    head.starts_with(b"HTTP/1.") && head.len() >= 12 && head[9..12].iter().all(u8::is_ascii_digit)
}

/// Linux: the child gets SIGKILL when the thread that spawns it ends (the
/// test binary killed, say), and ends at once if that happened already.
fn dies_with_this_thread(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec only async-signal-safe calls are
        // made (prctl, getppid, _exit), touching no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}
