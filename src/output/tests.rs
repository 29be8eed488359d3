//! What a journal record means for results.csv, the totals and file names,
//! checked record by record.

use super::{row_result, ResultTotals, RowStatus, Stems};
use crate::journal::{Entry, Left, Record, Replay, State};
use crate::vocab::{Code, Key, Usd};

/// The stems of a folder whose journal says row `key` saved `file`.
fn stems_of(done: &[(u64, &str)]) -> Stems {
    let mut replay = Replay::default();
    for &(key, file) in done {
        replay.apply(Entry::Done {
            key: Key(key),
            at_ms: 0,
            files: vec![file.into()],
            sha256: vec!["x".into()],
            stamps: vec![],
            cost_micros: 0,
            seen_ms: None,
            cached: false,
        });
    }
    Stems::from_journal(&replay)
}

#[test]
fn stems_never_leave_the_folder_and_never_collide() {
    let stems = stems_of(&[(1, "images/cat_s1_0.png")]);
    assert_eq!(stems.stem("cat_s1", Key(1)), "cat_s1", "its own files");
    assert_eq!(
        stems.stem("cat_s1", Key(2)),
        format!("cat_s1-{}", Key(2)),
        "another row's name"
    );
    assert_eq!(stems.stem("dog_s1", Key(2)), "dog_s1");
    for evil in ["../x", "/abs", ".hidden", "a/b", ""] {
        assert_eq!(stems.stem(evil, Key(3)), Key(3).to_string(), "{evil}");
    }
}

/// On macOS and Windows `Cat_s1_0.png` and `cat_s1_0.png` are one file:
/// a row of today's manifest never takes the name of an older row's file
/// but for case, and no row takes a name two rows' files already bear.
#[test]
fn stems_equal_but_for_case_are_another_rows_name() {
    let stems = stems_of(&[
        (1, "images/Cat_s1_0.png"),
        (2, "images/j_s2_0.png"),
        (3, "images/J_s2_0.png"),
    ]);
    assert_eq!(stems.stem("cat_s1", Key(9)), format!("cat_s1-{}", Key(9)));
    assert_eq!(stems.stem("cat_s1", Key(1)), "cat_s1", "its own files");
    for key in [Key(2), Key(3)] {
        assert_eq!(stems.stem("j_s2", key), format!("j_s2-{key}"));
    }
}

#[test]
fn every_record_reads_as_one_status() {
    let price = Usd::from_micros(50_000);
    let rec = |state: State, left: Option<&str>| Record {
        state,
        left: left.map(|c| {
            Box::new(Left {
                code: c.into(),
                message: "why".into(),
            })
        }),
        ..Record::default()
    };
    let r = |rec: Option<&Record>| row_result(rec, price, Some((Code::Interrupted.as_str(), "")));
    let none = r(None);
    assert_eq!(
        (none.status, none.error_code.as_str()),
        (RowStatus::NotRun, Code::Interrupted.as_str())
    );
    let pending = r(Some(&rec(State::Pending, None)));
    assert_eq!(pending.status, RowStatus::NotRun);
    let gave_up = r(Some(&rec(
        State::Pending,
        Some(Code::ConnectionFailed.as_str()),
    )));
    assert_eq!(
        (
            gave_up.status,
            gave_up.error_code.as_str(),
            gave_up.possibly_charged
        ),
        (
            RowStatus::Failed,
            Code::ConnectionFailed.as_str(),
            Usd::default()
        )
    );
    let uncertain = r(Some(&rec(State::Uncertain, None)));
    assert!(uncertain.is_uncertain());
    assert_eq!(uncertain.possibly_charged, price);
    let accepted = r(Some(&rec(State::Submitted, Some(Code::Disk.as_str()))));
    assert_eq!(
        (
            accepted.status,
            accepted.error_code.as_str(),
            accepted.possibly_charged
        ),
        (RowStatus::Accepted, Code::Disk.as_str(), price)
    );
    let mut t = ResultTotals::default();
    for x in [&none, &pending, &gave_up, &uncertain, &accepted] {
        t.add(x);
    }
    assert_eq!(t.rows, 5);
    assert_eq!(t.count(RowStatus::Failed), 2);
    assert_eq!(t.uncertain, 1);
    assert_eq!(t.possibly_charged_usd, Usd::from_micros(100_000));
    assert_eq!(t.accepted_by_code[Code::Disk.as_str()], 1);
    assert_eq!(
        t.rows_line(),
        "5 rows: 0 completed, 2 failed, 2 not run, 1 accepted to collect (rerun to collect them) (1 uncertain)"
    );
}
