//! A server started for a bench or a test (nginx, moto) in a process group
//! of its own, so that every process it forks dies with it: the group is
//! killed when the handle drops, on a panic too.
//!
//! Shared by `benches/common/nginx.rs` and `tests/support/moto.rs` (tests
//! take it with `#[path]`).

use std::process::{Child, Command};

/// A child whose whole process group is killed on drop.
pub struct Group {
    pub child: Child,
}

impl Group {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Group> {
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        cmd.spawn().map(|child| Group { child })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The group's id is the leader's pid (`process_group(0)`).
        #[cfg(unix)]
        if let Ok(group) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group
            // only; it touches no memory.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
