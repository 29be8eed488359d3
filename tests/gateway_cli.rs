//! One folder, one gateway, named by its whole base URL: two gateways
//! behind one host, reached by path, never share a folder or a merge; a
//! folder written by a version that recorded origins only still resumes.

mod support;

use support::*;

const M: &str = "defaults: {image_size: {width: 32, height: 32}}\nseeds: [1, 2, 3, 4]\njobs: [{id: cat, prompt: a cat}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_from_before_base_urls_resumes_on_its_origin_then_keeps_its_path() {
    let (a, b) = (start(quick()).await, start(quick()).await);
    let host = PathProxy::start(vec![("/a", a.url()), ("/b", b.url())]).await;
    let dir = tempfile::tempdir().unwrap();
    let one = write(
        dir.path(),
        "one.yaml",
        "defaults: {image_size: {width: 32, height: 32}}\njobs: [{id: cat, prompt: a cat, seed: 1}]\n",
    );
    let out = dir.path().join("out");
    let url_a = format!("{}/a", host.url);
    let o = run(&one, &out, &url_a, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // As a version that recorded origins only wrote it.
    let journal = out.join("journal.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(run) = v.as_object_mut().filter(|o| o["e"] == "run") {
                assert_eq!(run.remove("base_url"), Some(url_a.clone().into()));
                assert_eq!(run["gateway"], host.url.as_str());
            }
            v.to_string()
        })
        .collect();
    std::fs::write(&journal, lines.join("\n") + "\n").unwrap();

    // Its base URL resumes it, paying only for the new rows.
    let all = write(dir.path(), "m.yaml", M);
    let o = run(&all, &out, &url_a, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(a.ledger().accepted, 4);
    // From then on it is that gateway's folder.
    let o = run(&all, &out, &format!("{}/b", host.url), &["--retry-failed"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(&url_a), "{}", text(&o.stderr));
    assert_eq!(b.ledger().submit_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_run_against_two_gateways_on_one_host_are_not_merged() {
    let (a, b) = (start(quick()).await, start(quick()).await);
    let host = PathProxy::start(vec![("/a", a.url()), ("/b", b.url())]).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", M);
    let mut folders = Vec::new();
    for (i, path) in ["/a", "/b"].iter().enumerate() {
        let out = dir.path().join(format!("shards/{i}-of-2"));
        let shard = format!("{i}/2");
        let url = format!("{}{path}", host.url);
        let o = run(&m, &out, &url, &["--shard", &shard]).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        folders.push(out.display().to_string());
    }
    let merged = dir.path().join("merged").display().to_string();
    let args = ["merge", &folders[0], &folders[1], "--out", &merged];
    let o = batchgen(&args, dir.path()).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("{}/a", host.url)) && err.contains(&format!("{}/b", host.url)),
        "{err}"
    );
}
