//! The gateway client against the built-in simulator, over real HTTP on an
//! ephemeral loopback port: every response shape, every error class, retries,
//! downloads, and the key kept secret.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use batchgen::api::{self, ApiError, ApiKey, Backoff, Class, Client, ClientConfig, Status, Ticket};
use batchgen::plan::{ImageInput, ImageSize, Kind, OutputFormat, Request};
use batchgen::sim::{self, Ledger, SimConfig, SimHandle, StatusShape, SubmitShape};

const KEY: &str = "sk-test-secret-42";

fn quick() -> SimConfig {
    SimConfig {
        key: Some(KEY.into()),
        min_latency_ms: 0,
        max_latency_ms: 30,
        ..SimConfig::default()
    }
}

async fn start(cfg: SimConfig) -> SimHandle {
    sim::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn client_for(url: &str, key: &str) -> Client {
    let mut cfg = ClientConfig::new(url, ApiKey::new(key).unwrap());
    cfg.request_timeout = Duration::from_secs(20);
    Client::new(cfg).unwrap()
}

fn small(prompt: &str, seed: u64) -> Request {
    Request {
        seed: Some(seed),
        image_size: Some(ImageSize::Custom {
            width: 64,
            height: 48,
        }),
        output_format: Some(OutputFormat::Png),
        ..Request::new(prompt)
    }
}

/// Polls until the request ends (bounded, generous: no test fails on a slow machine).
async fn finish(client: &Client, ticket: &Ticket) -> Status {
    for _ in 0..2000 {
        match client.status(ticket).await {
            Ok(Status::Pending(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Ok(done) => return done,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("status failed: {e}"),
        }
    }
    panic!("the request never finished")
}

/// Submits, polls to the end, and returns the image references.
async fn generate(client: &Client, req: &Request) -> Vec<String> {
    let sub = client.submit(req).await.expect("submit accepted");
    let status = match (sub.status, sub.ticket) {
        (Some(s), _) => s,
        (None, Some(t)) => finish(client, &t).await,
        (None, None) => unreachable!(),
    };
    match status {
        Status::Completed(images) => images,
        other => panic!("expected images, got {other:?}"),
    }
}

fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    batchgen::disk::hex(&Sha256::digest(std::fs::read(path).unwrap()))
}

/// Every file on disk is byte for byte one the simulator served.
fn assert_served(ledger: &Ledger, path: &Path) {
    let sha = sha256_file(path);
    assert!(
        ledger.files.values().any(|s| *s == sha),
        "{} was never served",
        path.display()
    );
}

#[tokio::test]
async fn text_to_image_in_every_completed_shape() {
    for shape in [
        StatusShape::Workflow,
        StatusShape::Images,
        StatusShape::Mixed,
    ] {
        let sim = start(SimConfig {
            status_shape: shape,
            ..quick()
        })
        .await;
        let client = client_for(&sim.url(), KEY);
        let dir = tempfile::tempdir().unwrap();
        for seed in 0..4 {
            let images = generate(&client, &small("a lighthouse", seed)).await;
            assert_eq!(images.len(), 1);
            let got = client
                .download(&images[0], dir.path(), &format!("img-{seed}"))
                .await
                .unwrap();
            assert_eq!(got.path, dir.path().join(format!("img-{seed}.png")));
            assert_eq!((got.info.width, got.info.height), (64, 48));
            assert_eq!(got.sha256, sha256_file(&got.path));
            assert_served(&sim.ledger(), &got.path);
        }
        let ledger = sim.ledger();
        assert_eq!(ledger.accepted, 4, "{shape:?}");
        assert_eq!(ledger.charged_usd_micros, 4 * 50_000);
        assert!(ledger.paid_twice().is_empty());
        assert_eq!(ledger.in_flight, 0, "every request was taken to its end");
    }
}

#[tokio::test]
async fn a_submit_that_answers_with_images_needs_no_polling() {
    let sim = start(SimConfig {
        submit_shape: SubmitShape::Images,
        status_shape: StatusShape::Images,
        ..quick()
    })
    .await;
    let client = client_for(&sim.url(), KEY);
    let sub = client.submit(&small("instant", 1)).await.unwrap();
    assert!(
        sub.ticket.is_none(),
        "the sample-output shape carries no request_id"
    );
    let Some(Status::Completed(images)) = sub.status else {
        panic!("{sub:?}")
    };
    let dir = tempfile::tempdir().unwrap();
    let got = client.download(&images[0], dir.path(), "x").await.unwrap();
    assert_served(&sim.ledger(), &got.path);
    assert_eq!(sim.ledger().status_calls, 0);
}

#[tokio::test]
async fn jpeg_is_named_from_what_arrived() {
    let sim = start(SimConfig {
        status_shape: StatusShape::Images,
        ..quick()
    })
    .await;
    let client = client_for(&sim.url(), KEY);
    let mut req = small("jpeg please", 3);
    req.output_format = None; // the API default is jpeg
    let images = generate(&client, &req).await;
    let dir = tempfile::tempdir().unwrap();
    let got = client.download(&images[0], dir.path(), "x").await.unwrap();
    assert_eq!(
        got.path.extension().unwrap(),
        "jpg",
        "the reply says image/png; the bytes say JPEG"
    );
    assert_eq!(got.info.format, api::ImageFormat::Jpeg);
}

#[tokio::test]
async fn sync_mode_data_uris_are_decoded() {
    let sim = start(quick()).await;
    let client = client_for(&sim.url(), KEY);
    let mut req = small("inline", 9);
    req.sync_mode = Some(true);
    req.num_images = Some(2);
    let images = generate(&client, &req).await;
    assert_eq!(images.len(), 2);
    assert!(images
        .iter()
        .all(|i| i.starts_with("data:image/png;base64,")));
    let dir = tempfile::tempdir().unwrap();
    for (n, image) in images.iter().enumerate() {
        let got = client
            .download(image, dir.path(), &format!("inline-{n}"))
            .await
            .unwrap();
        assert_served(&sim.ledger(), &got.path);
    }
    assert_eq!(
        sim.ledger().download_calls,
        0,
        "nothing was fetched over HTTP"
    );
    assert_eq!(sim.ledger().charged_images, 2);
}

#[tokio::test]
async fn image_to_image_sends_local_files_as_data_uris() {
    let sim = start(quick()).await;
    let client = client_for(&sim.url(), KEY);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    std::fs::write(
        &input,
        batchgen::sim::render::image("src", 1, 20, 20, api::ImageFormat::Png),
    )
    .unwrap();
    let mut req = small("make it red", 4);
    req.image_urls = Some(Arc::from(vec![
        ImageInput::File {
            written: "in.png".into(),
            path: input.clone(),
        },
        ImageInput::Url("https://example.com/catwalk.png".into()),
    ]));
    let body = api::submit_body(&req).unwrap();
    assert!(body["image_urls"][0]
        .as_str()
        .unwrap()
        .starts_with("data:image/png;base64,"));
    assert_eq!(body["image_urls"][1], "https://example.com/catwalk.png");
    let sub = client.submit(&req).await.unwrap();
    let ticket = sub.ticket.unwrap();
    assert_eq!(ticket.kind, Kind::ImageToImage);
    assert!(ticket.request_id.starts_with("glm-image-image-to-image_"));
    let Status::Completed(images) = finish(&client, &ticket).await else {
        panic!()
    };
    let got = client
        .download(&images[0], dir.path(), "out")
        .await
        .unwrap();
    assert_served(&sim.ledger(), &got.path);
}

#[tokio::test]
async fn a_resumed_client_polls_with_the_documented_endpoints() {
    // A ticket kept in a journal has no status_url: the documented paths serve.
    let sim = start(quick()).await;
    let client = client_for(&sim.url(), KEY);
    for kind in [Kind::TextToImage, Kind::ImageToImage] {
        let mut req = small("resume me", 5);
        if kind == Kind::ImageToImage {
            req.image_urls = Some(Arc::from(vec![ImageInput::Url("https://e.x/a.png".into())]));
        }
        let mut ticket = client.submit(&req).await.unwrap().ticket.unwrap();
        ticket.status_url = None;
        ticket.response_url = None;
        let reloaded: Ticket =
            serde_json::from_str(&serde_json::to_string(&ticket).unwrap()).unwrap();
        assert!(
            matches!(finish(&client, &reloaded).await, Status::Completed(_)),
            "{kind:?}"
        );
    }
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, ApiError>) -> ApiError {
    r.expect_err("expected an error")
}

#[tokio::test]
async fn validation_errors_fail_the_row_in_both_shapes() {
    let sim = start(quick()).await;
    let client = client_for(&sim.url(), KEY);
    let mut req = small("too big", 1);
    req.image_size = Some(ImageSize::Custom {
        width: 9000,
        height: 10,
    });
    let e = expect_err(client.submit(&req).await);
    assert_eq!(
        (e.class, e.code.as_str(), e.http_status),
        (Class::FailRow, "INVALID_PARAMETER", Some(400))
    );
    assert!(e.message.contains("Invalid image_size value"), "{e}");

    let mut req = small("edit", 1);
    req.image_urls = Some(Arc::from(vec![ImageInput::Url("https://e.x/a.png".into())]));
    req.num_images = Some(99);
    let e = expect_err(client.submit(&req).await);
    assert_eq!(
        (e.class, e.code.as_str()),
        (Class::FailRow, "VALIDATION_ERROR")
    );
    assert_eq!(sim.ledger().accepted, 0);
}

#[tokio::test]
async fn a_wrong_key_stops_the_run_and_is_never_echoed() {
    let sim = start(quick()).await;
    let client = client_for(&sim.url(), "sk-wrong-key-77");
    let e = expect_err(client.submit(&small("cat", 1)).await);
    assert_eq!(
        (e.class, e.code.as_str(), e.http_status),
        (Class::StopRun, "UNAUTHORIZED", Some(401))
    );
    assert!(e.stops_run());
    let shown = format!("{e} {e:?} {client:?}");
    assert!(!shown.contains("sk-wrong-key-77"), "{shown}");
    assert!(!format!(
        "{:?}",
        ClientConfig::new("http://x", ApiKey::new(KEY).unwrap())
    )
    .contains(KEY));
}

#[tokio::test]
async fn an_empty_wallet_stops_the_run() {
    let sim = start(SimConfig {
        wallet_usd: Some(0.07),
        ..quick()
    })
    .await;
    let client = client_for(&sim.url(), KEY);
    assert!(client.submit(&small("first", 1)).await.is_ok());
    let e = expect_err(client.submit(&small("second", 2)).await);
    assert_eq!(
        (e.class, e.code.as_str()),
        (Class::StopRun, "INSUFFICIENT_FUNDS")
    );
    assert_eq!(sim.ledger().charged_usd_micros, 50_000);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let sim = start(SimConfig {
        rate_limit: Some(1),
        retry_after_secs: 7,
        ..quick()
    })
    .await;
    let client = client_for(&sim.url(), KEY);
    client.submit(&small("one", 1)).await.unwrap();
    let e = expect_err(client.submit(&small("two", 2)).await);
    assert_eq!(
        (e.class, e.code.as_str(), e.http_status),
        (Class::Retry, "RATE_LIMIT_EXCEEDED", Some(429))
    );
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(sim.ledger().accepted, 1, "a 429 is not accepted");
}

#[tokio::test]
async fn server_errors_and_refused_connections_are_retryable() {
    let sim = start(SimConfig {
        submit_5xx_rate: 1.0,
        ..quick()
    })
    .await;
    let client = client_for(&sim.url(), KEY);
    let e = expect_err(client.submit(&small("cat", 1)).await);
    assert_eq!(
        (e.class, e.code.as_str(), e.http_status),
        (Class::Retry, "INTERNAL_ERROR", Some(500))
    );
    assert_eq!(sim.ledger().accepted, 0);
    assert_eq!(sim.ledger().charged_usd_micros, 0);

    let url = format!("http://{}", support::refusing_addr());
    let e = expect_err(client_for(&url, KEY).submit(&small("cat", 1)).await);
    assert_eq!(
        (e.class, e.code.as_str()),
        (Class::Retry, "CONNECTION_FAILED")
    );
    assert!(!e.may_have_been_accepted(), "nothing reached a server");
}

#[tokio::test]
async fn a_submit_that_times_out_after_sending_may_have_been_accepted() {
    // A server that reads the request and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            held.push(sock);
        }
    });
    let mut cfg = ClientConfig::new(&url, ApiKey::new(KEY).unwrap());
    cfg.submit_timeout = Duration::from_millis(300);
    cfg.request_timeout = Duration::from_millis(300);
    let client = Client::new(cfg).unwrap();
    let e = expect_err(client.submit(&small("cat", 1)).await);
    assert_eq!((e.class, e.code.as_str()), (Class::Unsure, "TIMEOUT"));
    assert!(e.may_have_been_accepted());
    // The same silence on a status call is only a reason to ask again.
    let ticket = Ticket {
        kind: Kind::TextToImage,
        request_id: "x".into(),
        status_url: None,
        response_url: None,
        sync_images: 0,
    };
    assert_eq!(expect_err(client.status(&ticket).await).class, Class::Retry);
}

#[tokio::test]
async fn failed_and_error_statuses_are_reported() {
    let sim = start(SimConfig {
        failed_rate: 1.0,
        ..quick()
    })
    .await;
    let client = client_for(&sim.url(), KEY);
    let t = client
        .submit(&small("cat", 1))
        .await
        .unwrap()
        .ticket
        .unwrap();
    assert!(matches!(finish(&client, &t).await, Status::Failed(m) if m.contains("safety")));
    assert_eq!(sim.ledger().charged_images, 1, "FAILED is taken as charged");

    let sim = start(SimConfig {
        error_rate: 1.0,
        ..quick()
    })
    .await;
    let client = client_for(&sim.url(), KEY);
    let t = client
        .submit(&small("cat", 1))
        .await
        .unwrap()
        .ticket
        .unwrap();
    assert!(matches!(finish(&client, &t).await, Status::Error(_)));
    assert_eq!(sim.ledger().charged_usd_micros, 0, "ERROR is not charged");
}

#[tokio::test]
async fn unknown_request_ids_are_not_found() {
    let sim = start(quick()).await;
    let client = client_for(&sim.url(), KEY);
    for kind in [Kind::TextToImage, Kind::ImageToImage] {
        let t = Ticket {
            kind,
            request_id: "glm-image_nope".into(),
            status_url: None,
            response_url: None,
            sync_images: 0,
        };
        let e = expect_err(client.status(&t).await);
        assert_eq!(
            (e.class, e.code.as_str()),
            (Class::NotFound, "NOT_FOUND"),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn status_5xx_is_retryable() {
    let sim = start(SimConfig {
        status_5xx_rate: 1.0,
        ..quick()
    })
    .await;
    let client = client_for(&sim.url(), KEY);
    let t = client
        .submit(&small("cat", 1))
        .await
        .unwrap()
        .ticket
        .unwrap();
    let e = expect_err(client.status(&t).await);
    assert_eq!((e.class, e.http_status), (Class::Retry, Some(500)));
}

#[tokio::test]
async fn truncated_downloads_are_refused_and_leave_nothing() {
    let sim = start(SimConfig {
        truncate_rate: 1.0,
        ..quick()
    })
    .await;
    let client = client_for(&sim.url(), KEY);
    let images = generate(&client, &small("cut", 1)).await;
    let dir = tempfile::tempdir().unwrap();
    let e = expect_err(client.download(&images[0], dir.path(), "cut").await);
    assert_eq!(
        (e.class, e.code.as_str()),
        (Class::Retry, "CORRUPT_DOWNLOAD")
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no partial file is left"
    );
}

#[tokio::test]
async fn truncated_and_failed_downloads_are_retried_until_whole() {
    let sim = start(SimConfig {
        truncate_rate: 0.5,
        download_5xx_rate: 0.3,
        fault_seed: 7,
        ..quick()
    })
    .await;
    let client = client_for(&sim.url(), KEY);
    let mut req = small("flaky", 1);
    req.num_images = Some(8);
    let images = generate(&client, &req).await;
    let dir = tempfile::tempdir().unwrap();
    let backoff = Backoff {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
    };
    for (n, image) in images.iter().enumerate() {
        let stem = format!("f{n}");
        let got = api::retry(&backoff, 30, |_| client.download(image, dir.path(), &stem))
            .await
            .unwrap();
        assert_served(&sim.ledger(), &got.path);
    }
    let ledger = sim.ledger();
    assert!(
        ledger.faults.get("truncated").copied().unwrap_or(0) > 0,
        "{:?}",
        ledger.faults
    );
    assert!(
        ledger.faults.get("download_5xx").copied().unwrap_or(0) > 0,
        "{:?}",
        ledger.faults
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        8,
        "only whole files are there"
    );
    assert_eq!(ledger.in_flight, 0);
}

/// A seed gives the same download faults whatever order submits arrive in:
/// they are drawn on the request and its attempt, not on its id (which a
/// submit accepted before it changes).
#[tokio::test]
async fn download_faults_follow_the_request_not_the_order_it_was_accepted_in() {
    let mut outcomes = Vec::new();
    for others_first in [0, 3] {
        let sim = start(SimConfig {
            truncate_rate: 0.5,
            fault_seed: 7,
            ..quick()
        })
        .await;
        let client = client_for(&sim.url(), KEY);
        for n in 0..others_first {
            generate(&client, &small("another", n)).await;
        }
        let mut req = small("flaky", 1);
        req.num_images = Some(8);
        let images = generate(&client, &req).await;
        let dir = tempfile::tempdir().unwrap();
        let mut whole = Vec::new();
        for (n, image) in images.iter().enumerate() {
            let got = client.download(image, dir.path(), &format!("f{n}")).await;
            whole.push(got.is_ok());
        }
        outcomes.push(whole);
    }
    assert!(outcomes[0].contains(&true) && outcomes[0].contains(&false));
    assert_eq!(outcomes[0], outcomes[1]);
}

#[tokio::test]
async fn a_download_that_is_not_an_image_is_refused() {
    // The simulator's 404 page for a file that does not exist.
    let sim = start(quick()).await;
    let client = client_for(&sim.url(), KEY);
    let dir = tempfile::tempdir().unwrap();
    let e = expect_err(
        client
            .download(&format!("{}/files/none/0.png", sim.url()), dir.path(), "x")
            .await,
    );
    assert_eq!(e.class, Class::NotFound);
    let e = expect_err(
        client
            .download("data:image/png;base64,aGVsbG8=", dir.path(), "x")
            .await,
    );
    assert_eq!(
        (e.class, e.code.as_str()),
        (Class::Retry, "CORRUPT_DOWNLOAD")
    );
}

#[tokio::test(start_paused = true)]
async fn retry_honours_the_servers_delay() {
    let start = tokio::time::Instant::now();
    let backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
    };
    let mut calls = 0;
    let result = api::retry(&backoff, 5, |_| {
        calls += 1;
        let n = calls;
        async move {
            if n < 3 {
                Err(ApiError {
                    class: Class::Retry,
                    code: "RATE_LIMIT_EXCEEDED".into(),
                    message: "Retry after 60 seconds.".into(),
                    http_status: Some(429),
                    retry_after: Some(Duration::from_secs(60)),
                })
            } else {
                Ok(n)
            }
        }
    })
    .await;
    assert_eq!(result.unwrap(), 3);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(120) && waited <= Duration::from_secs(121),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_gives_up_and_never_retries_what_it_must_not() {
    let backoff = Backoff::default();
    let err = |class| ApiError {
        class,
        code: "X".into(),
        message: String::new(),
        http_status: None,
        retry_after: None,
    };
    let mut calls = 0;
    let r: Result<(), _> = api::retry(&backoff, 4, |_| {
        calls += 1;
        std::future::ready(Err(err(Class::Retry)))
    })
    .await;
    assert!(r.is_err());
    assert_eq!(calls, 4);
    for class in [
        Class::Unsure,
        Class::FailRow,
        Class::StopRun,
        Class::NotFound,
    ] {
        let mut calls = 0;
        let _: Result<(), _> = api::retry(&backoff, 4, |_| {
            calls += 1;
            std::future::ready(Err(err(class)))
        })
        .await;
        assert_eq!(calls, 1, "{class:?} is not retried");
    }
}

/// A gateway on loopback that answers every call with `reply` (status, body)
/// and records what it was sent.
async fn fake_gateway(status: u16, reply: &'static str) -> support::Recorder {
    support::Recorder::start(move |_| {
        (
            status,
            vec![("content-type".into(), "application/json".into())],
            reply.as_bytes().to_vec(),
        )
    })
    .await
}

#[tokio::test]
async fn a_request_id_travels_as_one_escaped_path_segment() {
    let gw = fake_gateway(
        200,
        r#"{"request_id":"../../admin/ledger?x=1#f","status":"QUEUED"}"#,
    )
    .await;
    let client = client_for(&gw.url, KEY);
    let ticket = client
        .submit(&small("cat", 1))
        .await
        .unwrap()
        .ticket
        .unwrap();
    assert_eq!(ticket.request_id, "../../admin/ledger?x=1#f");
    let _ = client.status(&ticket).await;
    let paths: Vec<String> = gw.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/glm-image/v1/glm-image-request",
            "/v2/requests/status/..%2F..%2Fadmin%2Fledger%3Fx=1%23f"
        ]
    );
}

#[tokio::test]
async fn an_unusable_request_id_makes_a_submit_uncertain() {
    let gw = fake_gateway(200, r#"{"request_id":"..","status":"QUEUED"}"#).await;
    let e = expect_err(client_for(&gw.url, KEY).submit(&small("cat", 1)).await);
    assert_eq!((e.class, e.code.as_str()), (Class::Unsure, "BAD_RESPONSE"));
}

#[tokio::test]
async fn oversized_replies_are_refused_unread() {
    let gw = support::Recorder::start(|_| (200, vec![], vec![b' '; 5 << 20])).await;
    let client = client_for(&gw.url, KEY);
    let e = expect_err(client.submit(&small("cat", 1)).await);
    assert_eq!(
        (e.class, e.code.as_str()),
        (Class::Unsure, "REPLY_TOO_LARGE"),
        "{e}"
    );
    let e = expect_err(
        client
            .status(&Ticket {
                kind: Kind::TextToImage,
                request_id: "r".into(),
                status_url: None,
                response_url: None,
                sync_images: 0,
            })
            .await,
    );
    assert_eq!(
        (e.class, e.code.as_str()),
        (Class::Retry, "REPLY_TOO_LARGE")
    );
}

#[tokio::test]
async fn a_key_the_gateway_echoes_is_redacted() {
    let gw = fake_gateway(
        401,
        r#"{"error":{"code":"UNAUTHORIZED","message":"key sk-test-secret-42 is not valid"}}"#,
    )
    .await;
    let e = expect_err(client_for(&gw.url, KEY).submit(&small("cat", 1)).await);
    assert_eq!(e.class, Class::StopRun);
    assert_eq!(e.message, "key <redacted> is not valid");
}

#[tokio::test]
async fn a_redirect_is_an_error_and_never_followed() {
    let elsewhere = support::Recorder::ok().await;
    let location = format!("{}/steal", elsewhere.url);
    let gw = support::Recorder::start(move |_| {
        (307, vec![("location".into(), location.clone())], vec![])
    })
    .await;
    let e = expect_err(client_for(&gw.url, KEY).submit(&small("cat", 1)).await);
    assert_eq!(
        (e.class, e.code.as_str(), e.http_status),
        (Class::StopRun, "REDIRECTED", Some(307))
    );
    assert!(
        e.message.contains(&elsewhere.url),
        "names where it pointed: {e}"
    );
    assert!(elsewhere.requests().is_empty());
}

#[tokio::test]
async fn a_download_has_an_overall_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A file server that promises 100 kB and drips a byte every 20 ms.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow.png", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    if sock.write_all(b"x").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    });
    let mut cfg = ClientConfig::new("http://127.0.0.1:9", ApiKey::new(KEY).unwrap());
    cfg.download_timeout = Duration::from_millis(500);
    let client = Client::new(cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = expect_err(client.download(&url, dir.path(), "x").await);
    assert_eq!((e.class, e.code.as_str()), (Class::Retry, "TIMEOUT"), "{e}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing is left behind"
    );
}
