//! Real nginx in front of a gateway simulator, for the benchmark's limiter
//! table and `tests/nginx_cli.rs`: the limiter users meet most often,
//! `limit_req` (ngx_http_limit_req_module), as nginx itself runs it rather
//! than as a simulator imitates it.
//!
//! Everything nginx touches lives in a fresh temporary folder: the generated
//! config, its pid file, its temporary paths, its error and access logs
//! (`-p` prefix, `-c` config, `-e` error log, `daemon off;`), so it never
//! reads or writes /etc or /var. nginx runs in a process group of its own;
//! when the [`Nginx`] is dropped (on a panic too) the whole group, master
//! and worker, is killed and the master waited for. Killing only the master
//! would leave its worker running, orphaned.
//!
//! Only submits go through `limit_req` (the limiter the bench measures is
//! the one on submits); status calls and downloads are proxied unlimited.
//! Each submit nginx saw is one line of `submits.log`: its status, so
//! refusals can be counted without trusting the client's own tally.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::group::Group;
use std::time::{Duration, Instant};

/// `limit_req_zone … rate=RATEr/s; limit_req zone=… burst=BURST nodelay;`
/// answering `status` (None: nginx's default `limit_req_status`, 503).
#[derive(Clone, Copy, Debug)]
pub struct LimitReq {
    pub rate: u32,
    pub burst: u32,
    pub status: Option<u16>,
}

/// The nginx binary: on PATH, else Debian's /usr/sbin/nginx (not on a
/// non-root user's PATH there).
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// A running nginx; dropping it kills it.
pub struct Nginx {
    server: Group,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Nginx {
    /// Starts `binary` on a free loopback port, proxying to the simulator on
    /// `upstream` (a loopback port) with `limit` on submits. Waits (up to
    /// 10 s) until it listens; an error carries nginx's error log.
    pub fn start(binary: &Path, upstream: u16, limit: LimitReq) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
        // nginx started as root runs its workers as another user, which must
        // be able to enter the folder (a temporary folder is 0700).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?
            .port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), port, upstream, limit))
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        let error_log = dir.path().join("error.log");
        let server = Group::spawn(
            Command::new(binary)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(&error_log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .map_err(|e| format!("{}: {e}", binary.display()))?;
        let mut nginx = Nginx { server, dir, port };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = nginx.server.child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "nginx did not start ({}): {}",
                    exited.map_or("never listened".into(), |s| s.to_string()),
                    nginx.error_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    /// `http://127.0.0.1:PORT`, the base URL to give the client.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Submits nginx saw, and how many of them it answered `status`.
    pub fn submits(&self, status: u16) -> (u64, u64) {
        let log = std::fs::read_to_string(self.dir.path().join("submits.log")).unwrap_or_default();
        let status = status.to_string();
        let total = log.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        let refused = log.lines().filter(|l| l.trim() == status).count() as u64;
        (total, refused)
    }

    /// nginx's error log (where `limit_req` also notes each refusal).
    pub fn error_log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("error.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }
}

/// The generated nginx.conf: one worker, every path inside `dir`.
fn config(dir: &Path, port: u16, upstream: u16, limit: LimitReq) -> String {
    let d = dir.display();
    let status = limit
        .status
        .map_or(String::new(), |s| format!("limit_req_status {s};"));
    let LimitReq { rate, burst, .. } = limit;
    format!(
        r#"daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    log_format status_only '$status';
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_body_buffer_size 1m;
    client_max_body_size 64m;
    proxy_max_temp_file_size 0;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_read_timeout 600s;
    limit_req_zone $binary_remote_addr zone=gateway:1m rate={rate}r/s;
    upstream sim {{
        server 127.0.0.1:{upstream};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/(glm-image/v1/glm-image-request|glm-image-image-to-image/v1/glm-image-image-to-image-request)$ {{
            limit_req zone=gateway burst={burst} nodelay;
            {status}
            access_log {d}/submits.log status_only;
            proxy_pass http://sim;
        }}
        location / {{
            proxy_pass http://sim;
        }}
    }}
}}
"#
    )
}
