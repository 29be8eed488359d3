//! The client's origin checks, request-id paths and reply reading.

use super::*;

fn client(base: &str) -> Client {
    Client::new(ClientConfig::new(base, ApiKey::new("k").unwrap())).unwrap()
}

#[test]
fn the_key_only_goes_to_the_gateways_own_origin() {
    let client = client("http://127.0.0.1:9000/");
    assert_eq!(client.base_url(), "http://127.0.0.1:9000");
    let same = "http://127.0.0.1:9000/v2/requests/status/x";
    assert_eq!(client.same_origin(Some(same)), Some(same.to_string()));
    // The origin is compared as the URL standard has it: scheme and host
    // normalised, a default port the same as none.
    let named = "https://gw.example/api";
    for (base, url, kept) in [
        ("http://127.0.0.1:9000/", "http://evil.example/steal", false),
        ("http://127.0.0.1:9000/", "https://127.0.0.1:9000/x", false),
        ("http://127.0.0.1:9000/", "http://127.0.0.1:9001/x", false),
        ("http://127.0.0.1:9000/", "not a url", false),
        (named, "HTTPS://GW.example:443/s/1", true),
        (named, "https://gw.example/s/2", true),
        (named, "http://gw.example/s", false),
        (named, "https://gw.example:8443/s", false),
        (named, "https://gw.example.evil/s", false),
        (named, "data:,x", false),
    ] {
        let gateway = self::client(base);
        assert_eq!(
            gateway.same_origin(Some(url)).is_some(),
            kept,
            "{url} for {base}"
        );
    }
}

#[test]
fn a_request_id_is_one_escaped_path_segment() {
    let client = client("http://127.0.0.1:9000/prefix");
    let ticket = |id: &str| Ticket {
        kind: Kind::TextToImage,
        request_id: id.into(),
        status_url: None,
        response_url: None,
        sync_images: 0,
    };
    let url = |id: &str| {
        client
            .status_endpoint(&ticket(id), id)
            .map(|u| u.to_string())
    };
    assert_eq!(
        url("glm-image_1").unwrap(),
        "http://127.0.0.1:9000/prefix/v2/requests/status/glm-image_1"
    );
    assert_eq!(
        url("../../admin/ledger?x=1#f").unwrap(),
        "http://127.0.0.1:9000/prefix/v2/requests/status/..%2F..%2Fadmin%2Fledger%3Fx=1%23f"
    );
    for bad in ["", ".", "..", "a\nb"] {
        assert_eq!(url(bad).unwrap_err().code, "BAD_REQUEST_ID", "{bad:?}");
    }
    assert!(url(&"x".repeat(MAX_REQUEST_ID + 1)).is_err());
}

#[test]
fn only_http_base_urls_with_a_host() {
    for bad in ["ftp://x", "not a url", "http://", "file:///etc"] {
        let cfg = ClientConfig::new(bad, ApiKey::new("k").unwrap());
        assert!(Client::new(cfg).is_err(), "{bad}");
    }
}

#[test]
fn terminal_statuses_from_either_shape() {
    let r: Reply = serde_json::from_str(r#"{"images":[{"url":"u"}]}"#).unwrap();
    assert_eq!(
        terminal_status(&r),
        Some(Status::Completed(vec!["u".into()]))
    );
    let r: Reply = serde_json::from_str(r#"{"status":"failed","error":"nsfw"}"#).unwrap();
    assert_eq!(terminal_status(&r), Some(Status::Failed("nsfw".into())));
    let r: Reply = serde_json::from_str(r#"{"status":"Processing"}"#).unwrap();
    assert_eq!(terminal_status(&r), None);
}

#[test]
fn inline_images_widen_the_reply_cap() {
    let c = client("http://127.0.0.1:9000");
    assert_eq!(c.reply_cap(0), 4 << 20);
    assert!(c.reply_cap(2) > 2 * (64 << 20));
}
