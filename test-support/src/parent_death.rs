//! A spawned `memtide` dies with the test that spawned it.
//!
//! A test executable killed from outside (a CI time limit, a developer's
//! Ctrl-C or `kill`) runs no `Drop`, so its guests would outlive it: each
//! keeps a host core busy and can hold the suite's boot lock. The kernel's
//! parent-death signal (`PR_SET_PDEATHSIG`) ends them instead. It fires
//! when the *thread* that spawned the child exits, which for
//! [`crate::spawn_memtide`] is the test's own thread: every test spawns its
//! guests there and keeps them no longer than itself.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child of `cmd` receive `SIGKILL` when the spawning thread
/// exits, and exit at once if that already happened before it could ask.
pub(crate) fn kill_with_parent(cmd: &mut Command) {
    // SAFETY: getpid has no preconditions and cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec. It calls
    // only prctl, getppid and _exit, all async-signal-safe, allocates
    // nothing and touches no lock the parent's other threads might hold.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then
            // nobody would send the signal, and the child was re-parented.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    /// A child spawned from a thread that then exits is killed.
    #[test]
    fn a_child_dies_when_its_spawning_thread_exits() {
        let pid = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30").stdout(Stdio::null());
            kill_with_parent(&mut cmd);
            let child = cmd.spawn().expect("spawn sleep");
            let pid = child.id();
            // Dropping a Child neither kills nor waits for it.
            drop(child);
            pid
        })
        .join()
        .expect("spawning thread");
        let gone = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
                .unwrap_or(true)
        };
        let start = Instant::now();
        while !gone(pid) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sleep {pid} outlived the thread that spawned it"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Reap it (it is this process's child) so no zombie stays.
        let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
        let mut status = 0;
        // SAFETY: waitpid on this process's own child, with a valid status
        // pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
}
