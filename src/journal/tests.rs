//! The journal's tests: the fold, repair of a cut line, compaction, held
//! tickets, older lines, room kept past the end, and the paused clock.

use std::fs::{File, OpenOptions};
use std::io::Write;

use super::*;
use crate::vocab::{Kind, Ticket};

fn ticket(id: &str) -> Ticket {
    Ticket {
        kind: Kind::TextToImage,
        request_id: id.into(),
        status_url: None,
        response_url: None,
        sync_images: 0,
    }
}

const A: Key = Key(0xa);
const B: Key = Key(0xb);
const C: Key = Key(0xc);

fn intent(key: Key, at_ms: u64) -> Entry {
    Entry::Intent {
        key,
        at_ms,
        price_micros: 50_000,
    }
}

#[test]
fn replay_folds_the_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    let k = |s: &str| s.to_string();
    for e in [
        intent(A, 1),
        Entry::NotAccepted {
            key: A,
            code: k("HTTP_500"),
            message: String::new(),
        },
        intent(A, 2),
        Entry::Submitted {
            key: A,
            at_ms: 3,
            ticket: Some(ticket("r1")),
            images: vec![],
        },
        Entry::Done {
            key: A,
            at_ms: 9,
            files: vec![k("images/a_0.png")],
            sha256: vec![k("ff")],
            stamps: vec![[10, 20]],
            cost_micros: 50_000,
            seen_ms: Some([2_000, 3_000]),
            cached: false,
        },
        intent(B, 4),
        intent(C, 5),
        Entry::Submitted {
            key: C,
            at_ms: 6,
            ticket: Some(ticket("r2")),
            images: vec![],
        },
        Entry::Unfinished {
            key: C,
            at_ms: 7,
            code: k("POLL_TIMEOUT"),
            message: k("slow"),
        },
    ] {
        j.append_blocking(&e).unwrap();
    }
    let r = read(dir.path()).unwrap();
    assert_eq!(r.lines, 9);
    let a = &r.records[&A];
    assert_eq!(a.attempts, 2);
    assert!(matches!(
        &a.state,
        State::Done {
            cost_micros: 50_000,
            ..
        }
    ));
    assert_eq!((a.submitted_at_ms, a.finished_at_ms), (Some(3), Some(9)));
    assert_eq!(
        r.records[&B].state,
        State::Uncertain,
        "an intent alone may have been accepted"
    );
    let c = &r.records[&C];
    assert_eq!(
        c.state,
        State::Submitted,
        "unfinished leaves the state alone"
    );
    assert_eq!(c.request_id(), Some("r2"));
    assert_eq!(c.left.as_ref().unwrap().code, "POLL_TIMEOUT");
    assert_eq!(c.price_micros, 50_000);
    // The in-memory fold is the file's.
    assert_eq!(j.with_replay(|r| r.records.clone()), r.records);
}

#[test]
fn an_intent_forgets_an_earlier_request_id() {
    let mut r = Replay::default();
    r.apply(intent(A, 1));
    r.apply(Entry::Submitted {
        key: A,
        at_ms: 2,
        ticket: Some(ticket("old")),
        images: vec!["http://x/1.png".into()],
    });
    r.apply(intent(A, 3));
    let a = &r.records[&A];
    assert_eq!(a.state, State::Uncertain);
    assert_eq!((a.ticket(), a.images.len()), (None, 0));
    assert_eq!(a.earlier_micros, 0, "an accepted submit is not lost money");
}

#[test]
fn what_earlier_attempts_may_have_cost_is_kept() {
    let mut r = Replay::default();
    r.apply(intent(A, 1));
    r.apply(Entry::Failed {
        key: A,
        at_ms: 2,
        code: "FAILED".into(),
        message: String::new(),
        charged: Charged::Possibly,
        cost_micros: 50_000,
    });
    r.apply(intent(A, 3));
    r.apply(intent(A, 4));
    assert_eq!(r.records[&A].earlier_micros, 100_000);
}

#[test]
fn a_line_cut_by_a_crash_is_ignored_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.append_blocking(&intent(A, 1)).unwrap();
    drop(j);
    let path = dir.path().join(FILE_NAME);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"e":"submitted","key":"000000000000000a","at_ms":2,"tic"#)
        .unwrap();
    drop(f);
    assert_eq!(
        read(dir.path()).unwrap().records[&A].state,
        State::Uncertain
    );
    let j = Journal::open(dir.path()).unwrap();
    j.append_blocking(&Entry::NotAccepted {
        key: A,
        code: "X".into(),
        message: String::new(),
    })
    .unwrap();
    let r = read(dir.path()).unwrap();
    assert_eq!(r.records[&A].state, State::Pending);
    assert_eq!(r.lines, 2);
}

#[test]
fn a_line_cut_inside_a_character_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.append_blocking(&intent(A, 1)).unwrap();
    drop(j);
    let path = dir.path().join(FILE_NAME);
    let whole = std::fs::read(&path).unwrap();
    let failed = Entry::Failed {
        key: A,
        at_ms: 2,
        code: "FAILED".into(),
        message: "l’image a échoué".into(),
        charged: Charged::Possibly,
        cost_micros: 0,
    };
    let line = serde_json::to_vec(&failed).unwrap();
    let cut = line.iter().position(|b| *b >= 0x80).unwrap() + 1;
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&line[..cut]).unwrap();
    drop(f);
    assert!(read(dir.path()).is_ok(), "a reader ignores the cut line");
    let j = Journal::open(dir.path()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), whole, "the cut line is gone");
    j.append_blocking(&failed).unwrap();
    let r = read(dir.path()).unwrap();
    assert!(matches!(r.records[&A].state, State::Failed { .. }));
}

#[test]
fn damage_before_the_last_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(FILE_NAME),
        "garbage\n{\"e\":\"intent\",\"key\":\"000000000000000a\",\"at_ms\":1}\n",
    )
    .unwrap();
    let err = read(dir.path()).unwrap_err();
    assert!(err.to_string().contains("damaged at line 1"), "{err}");
    assert!(Journal::open(dir.path()).is_err());
}

#[test]
fn a_missing_journal_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read(dir.path()).unwrap().records.is_empty());
}

#[test]
fn history_is_compacted_into_one_line_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    let run = |gateway: Option<&str>| Entry::Run {
        at_ms: 1,
        manifest: "m.yaml".into(),
        rows: 100,
        version: "0".into(),
        gateway: gateway.map(str::to_string),
        base_url: None,
        plan: None,
        shard: None,
        wall_before_ms: None,
    };
    j.append_blocking(&run(Some("simulated"))).unwrap();
    for k in 0..100u64 {
        let key = Key(k);
        j.append_blocking(&intent(key, 2)).unwrap();
        j.append_blocking(&Entry::Submitted {
            key,
            at_ms: 3,
            ticket: Some(ticket(&format!("r{k}"))),
            images: vec![],
        })
        .unwrap();
        let last = match k % 3 {
            0 => Entry::Done {
                key,
                at_ms: 9,
                files: vec![format!("images/{k}_0.png")],
                sha256: vec!["ff".into()],
                stamps: vec![[10, 20]],
                cost_micros: 50_000,
                seen_ms: Some([0, 2_000]),
                cached: false,
            },
            1 => Entry::Failed {
                key,
                at_ms: 9,
                code: "FAILED".into(),
                message: "no".into(),
                charged: Charged::Possibly,
                cost_micros: 50_000,
            },
            _ => Entry::Unfinished {
                key,
                at_ms: 9,
                code: "POLL_TIMEOUT".into(),
                message: "slow".into(),
            },
        };
        j.append_blocking(&last).unwrap();
    }
    j.append_blocking(&intent(Key(0), 10)).unwrap();
    j.append_blocking(&run(Some("simulated"))).unwrap();
    drop(j);
    let before = read(dir.path()).unwrap();
    assert_eq!(before.lines, 303);

    let j = Journal::open(dir.path()).unwrap();
    let path = dir.path().join(FILE_NAME);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 101, "one run line and one per row");
    let after = read(dir.path()).unwrap();
    assert_eq!(after.records, before.records);
    assert_eq!(after.records[&Key(0)].earlier_micros, 50_000);
    assert_eq!(after.records[&Key(0)].attempts, 2);
    assert_eq!(
        (after.gateway, after.last_run_rows, after.last_run_manifest),
        (
            before.gateway,
            before.last_run_rows,
            before.last_run_manifest
        )
    );
    assert_eq!(j.with_replay(|r| r.records.clone()), before.records);
    // It goes on from there, and is not compacted again.
    j.append_blocking(&intent(Key(500), 11)).unwrap();
    drop(j);
    drop(Journal::open(dir.path()).unwrap());
    let again = read(dir.path()).unwrap();
    assert_eq!(again.lines, 102);
    assert_eq!(again.records[&Key(500)].state, State::Uncertain);
}

#[test]
fn the_base_url_a_folder_was_first_run_against_outlives_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    let run = |base_url: Option<&str>| Entry::Run {
        at_ms: 1,
        manifest: "m.yaml".into(),
        rows: 1,
        version: "0".into(),
        gateway: Some("https://h".into()),
        base_url: base_url.map(str::to_string),
        plan: None,
        shard: None,
        wall_before_ms: None,
    };
    // A version that recorded origins only, this one, then that one again.
    j.append_blocking(&run(None)).unwrap();
    j.append_blocking(&run(Some("https://h/a"))).unwrap();
    for at_ms in 0..20 {
        j.append_blocking(&intent(Key(1), at_ms)).unwrap();
    }
    j.append_blocking(&run(Some("https://h/a"))).unwrap();
    j.append_blocking(&run(None)).unwrap();
    drop(j);
    assert_eq!(
        read(dir.path()).unwrap().base_url.as_deref(),
        Some("https://h/a")
    );
    drop(Journal::open(dir.path()).unwrap());
    let after = read(dir.path()).unwrap();
    assert_eq!(after.lines, 3, "compacted");
    assert_eq!(
        (after.gateway.as_deref(), after.base_url.as_deref()),
        (Some("https://h"), Some("https://h/a"))
    );
}

#[test]
fn tickets_are_held_whole() {
    for (status, response) in [
        (
            Some("http://g/v2/requests/status/r-1"),
            Some("http://g/v2/requests/status/r-1"),
        ),
        (Some("http://g/status/r-1"), Some("http://elsewhere/x")),
        (None, Some("http://g/result?id=r-1")),
        (None, None),
    ] {
        let t = Ticket {
            status_url: status.map(str::to_string),
            response_url: response.map(str::to_string),
            sync_images: 2,
            ..ticket("r-1")
        };
        let held = Held::from(t.clone());
        assert_eq!(Ticket::from(held.clone()), t);
        let line = serde_json::to_string(&held).unwrap();
        assert_eq!(serde_json::from_str::<Ticket>(&line).unwrap(), t, "{line}");
    }
}

#[test]
fn older_lines_still_read() {
    let mut r = Replay::default();
    let old = r#"{"e":"run","at_ms":1,"manifest":"m.yaml","rows":2,"version":"0.1.0"}
{"e":"intent","key":"000000000000000a","at_ms":2}
{"e":"not_accepted","key":"000000000000000a","code":"HTTP_500"}
"#;
    for line in old.lines() {
        r.apply(serde_json::from_str(line).unwrap());
    }
    assert_eq!(r.gateway, None);
    assert_eq!(r.records[&A].state, State::Pending);
    assert_eq!(r.records[&A].price_micros, 0);
}

#[cfg(target_os = "linux")]
#[test]
fn a_run_keeps_room_past_the_end_and_gives_it_back() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let probe = File::create(dir.path().join("probe")).unwrap();
    if crate::disk::reserve(&probe, 0, 4096).is_err() {
        return; // this filesystem cannot allocate ahead
    }
    let path = dir.path().join(FILE_NAME);
    let held = || std::fs::metadata(&path).unwrap().blocks() * 512;
    let j = Journal::open(dir.path()).unwrap();
    j.keep_room(1 << 20);
    j.append_blocking(&intent(A, 1)).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 200, "the size is the lines'");
    assert!(held() >= 1 << 20, "{} bytes held", held());
    assert_eq!(j.out_of_room(), None);
    drop(j);
    assert!(held() < 64 << 10, "given back: {} bytes held", held());
    assert_eq!(
        read(dir.path()).unwrap().records[&A].state,
        State::Uncertain
    );
}

/// On a paused clock, an async append held still: the clock does not
/// run ahead to the next timer (a second away here) while the writer
/// syncs. Without the hold it does, by as much as the disk is slow.
#[tokio::test(start_paused = true)]
async fn a_held_journal_keeps_a_paused_clock_still_while_it_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    j.hold_paused_clock();
    let timer = tokio::spawn(tokio::time::sleep(std::time::Duration::from_secs(1)));
    let start = tokio::time::Instant::now();
    for n in 0..20 {
        j.append(&intent(A, n)).await.unwrap();
    }
    assert_eq!(tokio::time::Instant::now(), start);
    timer.abort();
}

#[test]
fn the_wall_time_of_runs_adds_up_and_outlives_compaction() {
    let run = |at_ms, wall_before_ms| Entry::Run {
        at_ms,
        manifest: "m.yaml".into(),
        rows: 2,
        version: "0".into(),
        gateway: None,
        base_url: None,
        plan: None,
        shard: None,
        wall_before_ms,
    };
    let done = |key, at_ms| Entry::Done {
        key: Key(key),
        at_ms,
        files: vec![],
        sha256: vec![],
        stamps: vec![],
        cost_micros: 0,
        seen_ms: None,
        cached: false,
    };
    let mut r = Replay::default();
    // An older version's runs: each counts from its start to its last line.
    r.apply(run(1_000, None));
    r.apply(done(1, 5_000));
    r.apply(run(10_000, None));
    r.apply(Entry::NotAccepted {
        key: Key(2),
        code: "X".into(),
        message: String::new(),
    });
    r.apply(done(2, 12_000));
    assert_eq!(r.wall_ms(), 4_000 + 2_000);
    // A run line that carries the total before it is taken at its word.
    r.apply(run(20_000, Some(100_000)));
    r.apply(done(1, 21_500));
    assert_eq!(r.wall_ms(), 101_500);
    let mut again = Replay::default();
    for entry in r.compacted() {
        again.apply(entry);
    }
    assert_eq!(again.wall_ms(), 101_500, "compacted");
}
