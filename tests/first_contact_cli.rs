//! First contact: `--quiet`, `run --dry-run`, shell completions, `-v`
//! tracing of HTTP exchanges, TLS trust, and errors about files.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_failures_still_print() {
    let sim = start(batchgen::sim::SimConfig {
        failed_rate: 1.0,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let o = run(&m, &dir.path().join("out"), &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("error: row a_s1: FAILED"), "{err}");
    assert!(
        text(&o.stdout).contains("2 rows: 0 completed, 2 failed"),
        "{}",
        text(&o.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_is_plan_and_sends_nothing() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &["--dry-run"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let plan = batchgen(&["plan", m.to_str().unwrap()], dir.path()).await;
    assert_eq!(text(&o.stdout), text(&plan.stdout));
    assert!(
        text(&o.stdout).contains("requests  3 text_to_image"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(sim.ledger().accepted, 0);
    assert!(!out.exists(), "a dry run makes no folder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_for_every_shell_name_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = batchgen(&["completions", shell], dir.path()).await;
        assert_eq!(o.status.code(), Some(0), "{shell}");
        let script = text(&o.stdout);
        for word in ["report", "export", "dry-run", "shard-size"] {
            assert!(script.contains(word), "{shell}: {word}");
        }
    }
    let o = batchgen(&["completions", "tcsh"], dir.path()).await;
    assert_eq!(o.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_shows_each_http_exchange_and_never_the_key() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let o = run(&m, &dir.path().join("a"), &sim.url(), &["-v"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    let lines = |needle: &str| err.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        lines("POST /glm-image/v1/glm-image-request → 200 in "),
        2,
        "{err}"
    );
    assert!(lines("POST /v2/requests/status/") >= 2, "{err}");
    assert_eq!(lines("GET http://127.0.0.1:"), 2, "one per image: {err}");
    assert!(!err.contains(KEY));

    // RUST_LOG overrides -v; at trace, every crate's events included, the key
    // header shows as redacted.
    let mut cmd = command(&m, &dir.path().join("b"), &sim.url(), &[]);
    cmd.env("RUST_LOG", "trace");
    let o = output(cmd).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("Ocp-Apim-Subscription-Key: <redacted>"),
        "{err}"
    );
    assert!(!err.contains(KEY), "the key leaked into the log");
    assert!(
        !err.contains(&KEY[3..]),
        "part of the key leaked into the log"
    );
}

/// A TLS front for the simulator on loopback, with the certificate in
/// `tests/fixtures/tls` (a test CA's, for 127.0.0.1); counts the
/// connections it accepted.
async fn tls_front(
    to: std::net::SocketAddr,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (url, accepted)
}

fn sim_addr(sim: &batchgen::sim::SimHandle) -> std::net::SocketAddr {
    sim.url().trim_start_matches("http://").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_certificate_from_a_ca_the_system_trusts_works() {
    let sim = start(quick()).await;
    let (url, _) = tls_front(sim_addr(&sim)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let out = dir.path().join("out");
    // The system's store, as OpenSSL-style tools find it: here, SSL_CERT_FILE.
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");
    let mut cmd = command(&m, &out, &url, &[]);
    cmd.env("SSL_CERT_FILE", &ca);
    let o = output(cmd).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().accepted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_stops_the_run_at_once() {
    let sim = start(quick()).await;
    let (url, accepted) = tls_front(sim_addr(&sim)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    // No SSL_CERT_FILE: the test CA is in no store batchgen trusts.
    let o = run(&m, &out, &url, &["--concurrency", "1"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("TLS_UNTRUSTED"), "{err}");
    assert!(err.contains("UnknownIssuer"), "the reason is given: {err}");
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "never retried as a connection failure"
    );
    assert_eq!(sim.ledger().submit_calls, 0);
    let rows = results(&out);
    assert!(rows.iter().all(|r| r["status"] == "not_run"), "{rows:#?}");
    assert!(
        rows.iter().any(|r| r["error_code"] == "TLS_UNTRUSTED"),
        "{rows:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_about_files_name_the_file_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 1);
    std::fs::write(dir.path().join("a-file"), b"x").unwrap();
    // (arguments, exit code, what stderr says)
    let cases: [(&[&str], u8, &str); 5] = [
        (
            &["run", "missing.yaml", "--simulate"],
            2,
            "missing.yaml: no such file",
        ),
        (
            &["run", "m.yaml", "--simulate", "--out", "a-file/out"],
            3,
            "a-file/out/images: a part of the path is a file, not a folder",
        ),
        (
            &["run", "m.yaml", "--simulate", "--cache", "a-file/cache"],
            2,
            "a-file/cache/simulated: a part of the path is a file, not a folder",
        ),
        (
            &["run", "m.yaml", "--api-key-file", "no-key"],
            2,
            "no-key: no such file",
        ),
        (
            &["export", "a-file", "--format", "jsonl", "--out", "x.jsonl"],
            2,
            "a-file/results.csv: ",
        ),
    ];
    assert!(m.is_file());
    for (args, code, says) in cases {
        let o = batchgen(args, dir.path()).await;
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(i32::from(code)), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("os error"), "{args:?}: {err}");
    }
}
