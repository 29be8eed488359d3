//! The moto harness itself (`tests/support/moto.rs`): it refuses a moto
//! too old to answer `If-None-Match: *` with 412, says why a start failed
//! with the tail of what the server printed, and (on Linux) a server whose
//! starting thread ends without dropping it is killed by the kernel.

#[path = "../benches/common/group.rs"]
mod group;
#[path = "support/moto.rs"]
mod moto;

use std::path::PathBuf;

use moto::{usable, version_numbers, Moto, Python};

#[test]
fn versions_read_and_only_those_honouring_create_only_puts_are_used() {
    assert_eq!(version_numbers("5.0.15"), Some([5, 0, 15]));
    assert_eq!(version_numbers("5.1.0.dev3"), Some([5, 1, 0]));
    assert_eq!(version_numbers("5.2rc1"), Some([5, 2, 0]));
    assert_eq!(version_numbers("6"), Some([6, 0, 0]));
    assert_eq!(version_numbers("dev"), None);
    for ok in ["5.0.15", "5.1.4", "5.2.1", "6.0.0"] {
        assert_eq!(usable(ok), Ok(()), "{ok}");
    }
    for old in ["4.2.14", "5.0.14", "5.0.0"] {
        let why = usable(old).unwrap_err();
        assert!(
            why.contains("5.0.15") && why.contains("If-None-Match"),
            "{why}"
        );
    }
    assert!(usable("5.2.0").unwrap_err().contains("500"));
    assert!(usable("unknown").is_err());
}

#[test]
fn a_moto_too_old_is_refused_before_it_is_started() {
    let python = Python {
        executable: PathBuf::from("/nonexistent/python3"),
        version: "5.0.3".into(),
    };
    let why = Moto::start_with(&python).err().expect("refused");
    assert!(
        why.contains("moto 5.0.3") && why.contains("older than 5.0.15"),
        "{why}"
    );
}

#[cfg(unix)]
#[test]
fn a_failed_start_says_why_with_the_tail_of_what_the_server_printed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("python3");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'starting…'\necho 'ModuleNotFoundError: No module named flask_cors' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let python = Python {
        executable: fake,
        version: "5.2.1".into(),
    };
    let why = Moto::start_with(&python).err().expect("it exits");
    assert!(why.contains("exited"), "{why}");
    assert!(why.contains("No module named flask_cors"), "{why}");
    assert!(why.contains("starting…"), "{why}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_server_left_behind_dies_with_the_thread_that_started_it() {
    let name = "a_server_left_behind_dies_with_the_thread_that_started_it";
    let started = std::thread::spawn(move || Moto::start_or_skip(name).map(Moto::leak));
    let Some(pid) = started.join().unwrap() else {
        return;
    };
    let pid = pid as libc::pid_t;
    // The kernel's SIGKILL follows the thread's end; reap the server.
    for _ in 0..1200 {
        let mut status = 0;
        // SAFETY: waitpid on our own child, with a valid status pointer.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if got == pid {
            assert!(
                libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
                "the server ended otherwise: {status:#x}"
            );
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: kill(2) on the group the harness made; touches no memory.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    panic!("the server outlived the thread that started it");
}
