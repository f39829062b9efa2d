//! Thin, checked wrappers over the system calls the guest init needs.

use std::ffi::CString;

use crate::process::ExitKind;

/// A failed system call.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SysError {
    /// What was attempted.
    pub what: String,
    /// The OS error.
    pub source: std::io::Error,
}

fn cstr(s: &str) -> Result<CString, SysError> {
    CString::new(s).map_err(|e| SysError {
        what: format!("path {s:?}"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })
}

/// Mounts `fstype` at `target`, creating the directory first; an
/// already-mounted target (EBUSY) counts as success.
pub fn mount(fstype: &str, target: &str) -> Result<(), SysError> {
    let _ = std::fs::create_dir_all(target);
    let src = cstr(fstype)?;
    let tgt = cstr(target)?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive
    // the call; a null data pointer is allowed.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EBUSY) {
        return Ok(());
    }
    Err(SysError {
        what: format!("mount {fstype} on {target}"),
        source: err,
    })
}

/// Flushes file systems and restarts the machine. memtide boots guests with
/// `reboot=k`, so the kernel restarts through the keyboard controller: a
/// write of 0xfe to i8042 port 0x64, which memtide treats as the guest
/// powering off cleanly (a VM has nothing to restart into). Returns only on
/// failure.
pub fn reboot() -> SysError {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    // SAFETY: RB_AUTOBOOT is a valid command; as PID 1 we may reboot.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    SysError {
        what: "reboot".into(),
        source: std::io::Error::last_os_error(),
    }
}

/// A child process the init has reaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Its process ID.
    pub pid: u32,
    /// Its name (`/proc/<pid>/comm`), or `?` if that could not be read.
    pub name: String,
    /// How it ended.
    pub exit: ExitKind,
}

/// Whether [`reap`] waits for a child to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Block until a child ends.
    Block,
    /// Return at once when no child has ended.
    NoHang,
}

/// Reaps one ended child (as PID 1 the init inherits every orphan, and
/// nobody else collects their status). Reads the child's name while it is
/// still a zombie. `Ok(None)` when no child has ended ([`Wait::NoHang`]) or
/// there are no children at all.
pub fn reap(wait: Wait) -> Result<Option<Reaped>, SysError> {
    let mut flags = libc::WEXITED | libc::WNOWAIT;
    if wait == Wait::NoHang {
        flags |= libc::WNOHANG;
    }
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waitid with P_ALL ignores the id and writes only `info`,
        // a valid siginfo_t that outlives the call.
        let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) };
        if rc == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(None),
            _ => {
                return Err(SysError {
                    what: "waitid".into(),
                    source: err,
                })
            }
        }
    }
    // SAFETY: waitid filled `info` for a child state change (or left it
    // zeroed under WNOHANG), so si_pid is the field to read.
    let pid = unsafe { info.si_pid() };
    if pid <= 0 {
        return Ok(None);
    }
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".to_string());
    let mut status = 0;
    loop {
        // SAFETY: waitpid on a child known to have ended, with a valid
        // status pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(SysError {
                what: format!("waitpid {pid}"),
                source: err,
            });
        }
    }
    let exit = ExitKind::from_wait_status(status).ok_or_else(|| SysError {
        what: format!("waitpid {pid}"),
        source: std::io::Error::other(format!("unexpected status {status:#x}")),
    })?;
    Ok(Some(Reaped {
        pid: pid.unsigned_abs(),
        name,
        exit,
    }))
}

/// Waits until everything written to the console (standard output) has
/// gone out, so that the last lines reach memtide before the VM stops.
/// Best effort: a standard output that is not a terminal is left as is.
pub fn drain_console() {
    // SAFETY: tcdrain only reads the file descriptor number.
    unsafe { libc::tcdrain(libc::STDOUT_FILENO) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `/bin/sh -c script` and reaps it with [`reap`].
    #[allow(clippy::zombie_processes)] // reap() waits for the child.
    fn run_and_reap(script: &str) -> Reaped {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .spawn()
            .expect("spawn /bin/sh");
        let pid = child.id();
        loop {
            let r = reap(Wait::Block).expect("reap").expect("a child");
            if r.pid == pid {
                return r;
            }
        }
    }

    // One test for every case: reap() takes any child of this process, so
    // two tests reaping in parallel would steal each other's children.
    #[test]
    fn reap_reports_exit_codes_signals_and_names() {
        let r = run_and_reap("exit 7");
        assert_eq!(r.exit, ExitKind::Exited(7));
        let r = run_and_reap("kill -SEGV $$");
        assert!(
            matches!(
                r.exit,
                ExitKind::Signaled {
                    signal: libc::SIGSEGV,
                    ..
                }
            ),
            "{r:?}"
        );
        assert_eq!(r.name, "sh");
        assert_eq!(reap(Wait::NoHang).expect("reap"), None);
    }
}
