//! The contact sheet's thumbnails are made while the run works, each as its
//! image lands, so the sheet at the end makes none; an image no thumbnail
//! can be made of is the sheet's warning, never a row's failure. What the
//! run did is read from its debug log (`RUST_LOG=batchgen::report=debug`),
//! never from the clock.

mod support;

use support::*;

fn logged(cmd: &mut std::process::Command) {
    cmd.env("RUST_LOG", "batchgen::report=debug");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_thumbnail_is_made_as_its_image_lands_and_the_sheet_at_the_end_makes_none() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "m.yaml",
        "defaults: {image_size: {width: 320, height: 240}}\nseeds: [1, 2, 3]\njobs:\n  - {id: fox, prompt: a fox}\n  - {id: owl, prompt: an owl, output_format: png}\n",
    );
    let out = dir.path().join("out");
    let mut cmd = command(&m, &out, &sim.url(), &["--concurrency", "3"]);
    logged(&mut cmd);
    let o = output(cmd).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "6 thumbnails made as images landed, 0 kept, 0 could not be made, 0 left to the sheet"
        ),
        "{err}"
    );
    assert!(
        err.contains("contact sheet: 0 thumbnails made at the end"),
        "{err}"
    );
    let rows = results(&out);
    assert_eq!(rows.len(), 6);
    for r in &rows {
        assert_eq!(r["status"], "completed");
        let thumb = out.join("thumbs").join(&r["files"]).with_extension("jpg");
        let t = image::open(&thumb).unwrap();
        assert_eq!((t.width(), t.height()), (256, 192), "{}", thumb.display());
    }
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_eq!(html.matches("<img class=\"thumb\"").count(), 6);
    // Nothing but the thumbnails: no temporary file is left.
    let stray: Vec<_> = walk(&out)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(".tmp-") || name.starts_with(".part-")
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // A rerun keeps them all.
    let mut cmd = command(&m, &out, &sim.url(), &[]);
    logged(&mut cmd);
    let o = output(cmd).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("contact sheet: 0 thumbnails made at the end"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_no_thumbnail_can_be_made_of_never_fails_its_row() {
    // A gateway whose image is a JPEG in name and frame (its header and
    // end marker are whole, so the download takes it) with nothing to
    // decode between: the row completes; the sheet says why it has no
    // thumbnail.
    let whole = batchgen::sim::render::image("p", 1, 64, 48, batchgen::api::ImageFormat::Jpeg);
    let sof = whole
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline JPEG");
    let len = u16::from_be_bytes([whole[sof + 2], whole[sof + 3]]) as usize;
    let mut broken = whole[..sof + 2 + len].to_vec();
    broken.extend_from_slice(&[0xFF, 0xD9]);
    assert!(batchgen::api::image::inspect(&broken).is_ok());
    let gw = Recorder::start(move |r| {
        let json = |body: &str| {
            let head = vec![("content-type".to_string(), "application/json".to_string())];
            (200, head, body.as_bytes().to_vec())
        };
        if r.path.ends_with("/glm-image-request") {
            json(r#"{"request_id":"r-1","status":"QUEUED"}"#)
        } else if r.path.contains("/status/") {
            let host = r.header("host").unwrap_or_default();
            json(&format!(
                r#"{{"status":"COMPLETED","output":{{"media_url":["http://{host}/i.jpg"]}}}}"#
            ))
        } else {
            (200, vec![], broken.clone())
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 1);
    let out = dir.path().join("out");
    let mut cmd = command(&m, &out, &gw.url, &[]);
    logged(&mut cmd);
    let o = output(cmd).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let rows = results(&out);
    assert_eq!(rows[0]["status"], "completed", "{err}");
    assert!(
        err.contains("0 thumbnails made as images landed, 0 kept, 1 could not be made"),
        "{err}"
    );
    assert!(
        err.contains(&format!("warning: {}: no thumbnail", rows[0]["files"])),
        "{err}"
    );
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("no thumbnail: open the image"));
}
