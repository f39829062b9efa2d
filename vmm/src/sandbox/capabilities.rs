//! Dropping every Linux capability of the calling thread (effective,
//! permitted, inheritable, ambient and bounding sets) and setting
//! `no_new_privs`. Call it before any thread starts: threads inherit the
//! sets of the thread that creates them.

use super::SandboxError;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// `CAP_SETPCAP`, needed to shrink the bounding set.
const CAP_SETPCAP: u32 = 8;
/// Capabilities are numbered below this (two 32-bit words).
const CAP_WORDS_BITS: u32 = 64;

/// `struct __user_cap_header_struct`.
#[repr(C)]
#[derive(Debug, Default)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's effective, permitted and inheritable sets, each as
/// one 64-bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    /// Effective capabilities.
    pub effective: u64,
    /// Permitted capabilities.
    pub permitted: u64,
    /// Inheritable capabilities.
    pub inheritable: u64,
}

/// Reads the calling thread's capability sets.
pub fn current() -> Result<CapSets, SandboxError> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two `CapData` (version 3) into `data`, which
    // has room for them, and reads `header`; both outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(SandboxError::Capabilities {
            what: "read",
            source: std::io::Error::last_os_error(),
        });
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(CapSets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

/// Sets `no_new_privs` and drops every capability of the calling thread.
/// A thread without `CAP_SETPCAP` keeps its bounding set, which it can
/// then never use: it holds nothing, and `no_new_privs` stops `execve`
/// from granting anything.
pub fn drop_all() -> Result<(), SandboxError> {
    // SAFETY: prctl with integer arguments only; it reads no memory.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SandboxError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    let sets = current()?;
    if sets.effective & (1 << CAP_SETPCAP) != 0 {
        drop_bounding_set()?;
    }
    // SAFETY: prctl with integer arguments only. Kernels without ambient
    // capabilities answer EINVAL, and then there is nothing to clear.
    let _ = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if sets.effective | sets.permitted | sets.inheritable == 0 {
        return Ok(());
    }
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads `header` and two `CapData` from `data`, both
    // alive for the call; all-zero sets are always allowed.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(SandboxError::Capabilities {
            what: "clear",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Drops each capability the kernel knows from the bounding set.
fn drop_bounding_set() -> Result<(), SandboxError> {
    for cap in 0..CAP_WORDS_BITS {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) } < 0 {
            // EINVAL: past the last capability this kernel knows.
            break;
        }
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) } != 0 {
            return Err(SandboxError::BoundingSet {
                cap,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a forked child (single-threaded, so the parent's other test
    /// threads keep their sets), drops everything and checks with capget;
    /// only system calls run in the child.
    #[test]
    fn drop_all_leaves_no_capability_and_sets_no_new_privs() {
        // SAFETY: the child makes only system calls (no allocation, no
        // locks) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = match (drop_all(), current()) {
                (Ok(()), Ok(sets)) if sets.effective | sets.permitted | sets.inheritable != 0 => 2,
                (Ok(()), Ok(_)) => {
                    // SAFETY: prctl with integer arguments only.
                    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
                    if nnp == 1 {
                        0
                    } else {
                        3
                    }
                }
                _ => 4,
            };
            // SAFETY: ends the child without running the parent's atexit
            // handlers or destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above; `status` is writable.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child died: {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "2: sets left, 3: no nnp, 4: error"
        );
    }
}
