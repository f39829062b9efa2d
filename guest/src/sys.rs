//! Thin, checked wrappers over the system calls the guest init needs.

use std::ffi::CString;

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

/// Reaps any exited children without blocking. As PID 1 the init inherits
/// every orphan, and nobody else collects their exit status.
pub fn reap_zombies() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG and a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}
