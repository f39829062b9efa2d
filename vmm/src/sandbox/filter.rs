//! The seccomp allow-list of a running VM: every system call memtide's
//! threads make once the VM is built (vCPUs, event loop, devices, control
//! API, agent reader, balancer), some with argument checks. Anything else
//! traps ([`super::sigsys`]).
//!
//! A second filter answers `clone3` with `ENOSYS`: its flags sit in
//! memory that seccomp cannot inspect, and glibc then falls back to
//! `clone`, whose flags the first filter checks (threads only).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::SandboxError;

/// System calls allowed with any arguments.
const ALLOWED: &[libc::c_long] = &[
    // I/O on descriptors memtide already holds or accepts.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_dup,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    // The balloon's statistics timer, created when the guest driver
    // activates the device.
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    // Unix sockets: API, agent reports, vsock (creation is checked below).
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    // Removing memtide's own sockets when the VM stops.
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    // Memory: guest RAM, hot-added regions, balloon discards, the heap.
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_brk,
    // Threads, their stacks, signals and time.
    libc::SYS_clone3,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_tgkill,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// `ioctl` request types allowed: KVM's (`0xAE`) on /dev/kvm, the VM and
/// vCPU descriptors.
const KVM_IOCTL_TYPE: u64 = 0xAE;
/// Terminal and descriptor `ioctl`s: the console's stdin mode (set at
/// start, restored at exit) and non-blocking or close-on-exec flags.
const OTHER_IOCTLS: &[libc::c_ulong] = &[
    libc::TCGETS,
    libc::TCSETS,
    libc::TCSETSW,
    libc::TIOCGWINSZ,
    libc::FIONBIO,
    libc::FIOCLEX,
];
/// `prctl` options allowed: naming a new thread, and (newer glibc) naming
/// its stack mapping.
const PRCTL_OPTIONS: &[libc::c_int] = &[libc::PR_SET_NAME, PR_SET_VMA];
/// Signals whose handlers glibc installs itself when the process starts
/// its first thread (`SIGCANCEL` = 32, `SIGSETXID` = 33, below the
/// application's `SIGRTMIN`): a VM without API, balloon or agent threads
/// starts its first thread, a vCPU, after the filter is in.
const GLIBC_SIGNALS: [u64; 2] = [32, 33];
/// `PR_SET_VMA` (Linux 5.17), not in every libc release.
const PR_SET_VMA: libc::c_int = 0x5356_4d41;

/// One condition, with the crate's error mapped.
fn condition(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SandboxError> {
    Ok(SeccompCondition::new(arg, len, op, value)?)
}

/// A rule of one condition.
fn rule(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompRule, SandboxError> {
    Ok(SeccompRule::new(vec![condition(arg, len, op, value)?])?)
}

/// Rules for the system calls allowed only with some arguments.
fn checked_rules() -> Result<Vec<(libc::c_long, Vec<SeccompRule>)>, SandboxError> {
    use SeccompCmpArgLen::{Dword, Qword};
    use SeccompCmpOp::{Eq, MaskedEq};
    let no_exec = u64::from(libc::PROT_EXEC.unsigned_abs());
    let thread = u64::from(libc::CLONE_THREAD.unsigned_abs());

    let mut ioctl = vec![rule(1, Dword, MaskedEq(0xff00), KVM_IOCTL_TYPE << 8)?];
    for request in OTHER_IOCTLS {
        ioctl.push(rule(1, Dword, Eq, *request)?);
    }
    let prctl = PRCTL_OPTIONS
        .iter()
        .map(|option| rule(0, Dword, Eq, u64::from(option.unsigned_abs())))
        .collect::<Result<Vec<_>, _>>()?;
    let sigaction = GLIBC_SIGNALS
        .iter()
        .map(|sig| rule(0, Dword, Eq, *sig))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![
        (libc::SYS_ioctl, ioctl),
        (libc::SYS_rt_sigaction, sigaction),
        (libc::SYS_prctl, prctl),
        // Unix sockets only.
        (
            libc::SYS_socket,
            vec![rule(0, Dword, Eq, u64::from(libc::AF_UNIX.unsigned_abs()))?],
        ),
        // Threads, never processes.
        (
            libc::SYS_clone,
            vec![rule(0, Qword, MaskedEq(thread), thread)?],
        ),
        // No executable memory.
        (libc::SYS_mmap, vec![rule(2, Dword, MaskedEq(no_exec), 0)?]),
        (
            libc::SYS_mprotect,
            vec![rule(2, Dword, MaskedEq(no_exec), 0)?],
        ),
    ])
}

/// The allow-list filter: listed calls pass, anything else traps.
fn allow_list() -> Result<BpfProgram, SandboxError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|nr| (*nr, Vec::new())).collect();
    rules.extend(checked_rules()?);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// The filter that answers `clone3` with `ENOSYS` (see the module docs).
fn clone3_refusal() -> Result<BpfProgram, SandboxError> {
    let filter = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// Both filters, compiled, in the order to install them: the allow-list
/// last, since installing a filter takes a `prctl` it does not allow.
pub fn programs() -> Result<Vec<BpfProgram>, SandboxError> {
    Ok(vec![clone3_refusal()?, allow_list()?])
}

#[cfg(test)]
mod tests {
    use super::super::sigsys::{install_reporter, EXIT_SECCOMP_VIOLATION};
    use super::*;

    /// Runs `attempt` in a forked child under memtide's filters and returns
    /// the child's exit status. The filters are compiled before the fork;
    /// the child makes only system calls.
    fn status_under_filters(attempt: fn() -> libc::c_long) -> i32 {
        let programs = programs().expect("filters compile");
        // SAFETY: the child only makes system calls (installing a filter,
        // the handler and the attempt) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: opens /dev/null and puts it on stderr so that the
            // reporter's line stays out of the test output.
            unsafe {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                libc::dup2(null, 2);
            }
            if install_reporter().is_err() {
                // SAFETY: ends the child.
                unsafe { libc::_exit(90) };
            }
            for program in &programs {
                if seccompiler::apply_filter(program).is_err() {
                    // SAFETY: ends the child.
                    unsafe { libc::_exit(91) };
                }
            }
            let rc = attempt();
            // SAFETY: ends the child; 0 when the call was allowed and
            // succeeded, 1 when it was allowed and failed.
            unsafe { libc::_exit(i32::from(rc < 0)) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child died: {status:#x}");
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn the_filters_compile() {
        let programs = programs().expect("compile");
        assert_eq!(programs.len(), 2);
        assert!(programs[1].len() > programs[0].len(), "allow-list last");
        assert!(programs.iter().all(|p| !p.is_empty()));
    }

    /// A raw system call with six integer arguments.
    fn sys(nr: libc::c_long, args: [libc::c_long; 6]) -> libc::c_long {
        // SAFETY: the tests pass only integers, null, and pointers to
        // static C strings; every call here either runs in a child that
        // exits right after it or is refused by the filter before it runs.
        unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) }
    }

    /// A static C string as a system call argument.
    fn ptr(s: &'static std::ffi::CStr) -> libc::c_long {
        s.as_ptr() as libc::c_long
    }

    const ANON: libc::c_long = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as libc::c_long;

    #[test]
    fn allowed_calls_pass() {
        assert_eq!(status_under_filters(|| sys(libc::SYS_getpid, [0; 6])), 0);
        let unix = || {
            let (family, kind) = (libc::AF_UNIX.into(), libc::SOCK_STREAM.into());
            sys(libc::SYS_socket, [family, kind, 0, 0, 0, 0])
        };
        assert_eq!(status_under_filters(unix), 0);
        let rw = || {
            let prot = (libc::PROT_READ | libc::PROT_WRITE).into();
            sys(libc::SYS_mmap, [0, 4096, prot, ANON, -1, 0])
        };
        assert_eq!(status_under_filters(rw), 0);
        // glibc's own handler, installed with the first thread; a query
        // (null new action) is enough to exercise the rule.
        let setxid = || sys(libc::SYS_rt_sigaction, [33, 0, 0, 8, 0, 0]);
        assert_eq!(status_under_filters(setxid), 0);
    }

    /// A thread starts and ends under the filter (clone3 answered ENOSYS,
    /// clone with CLONE_THREAD, its stack mappings and name). (glibc's
    /// first-thread handlers, which the boot tests found, were installed in
    /// the test process before the fork: `allowed_calls_pass` checks that
    /// rule.)
    #[test]
    fn a_thread_can_start_under_the_filter() {
        let spawn = || {
            let t = std::thread::spawn(|| 7);
            t.join().map_or(-1, |v| if v == 7 { 0 } else { -1 })
        };
        assert_eq!(status_under_filters(spawn), 0);
    }

    #[test]
    fn clone3_is_answered_enosys_so_glibc_uses_clone() {
        let clone3 = || {
            let rc = sys(libc::SYS_clone3, [0; 6]);
            let errno = std::io::Error::last_os_error().raw_os_error();
            if rc < 0 && errno == Some(libc::ENOSYS) {
                0
            } else {
                -1
            }
        };
        assert_eq!(status_under_filters(clone3), 0);
    }

    #[test]
    fn forbidden_calls_end_the_process_with_the_sandbox_status() {
        let attempts: [fn() -> libc::c_long; 6] = [
            // Replacing memtide's own SIGSYS reporter.
            || sys(libc::SYS_rt_sigaction, [libc::SIGSYS.into(), 0, 0, 8, 0, 0]),
            || {
                let at = libc::AT_FDCWD.into();
                sys(libc::SYS_openat, [at, ptr(c"/etc/passwd"), 0, 0, 0, 0])
            },
            || {
                let (family, kind) = (libc::AF_INET.into(), libc::SOCK_STREAM.into());
                sys(libc::SYS_socket, [family, kind, 0, 0, 0, 0])
            },
            // fork: clone without CLONE_THREAD.
            || sys(libc::SYS_clone, [libc::SIGCHLD.into(), 0, 0, 0, 0, 0]),
            || {
                let prot = (libc::PROT_READ | libc::PROT_EXEC).into();
                sys(libc::SYS_mmap, [0, 4096, prot, ANON, -1, 0])
            },
            || {
                let request = libc::c_long::try_from(libc::TIOCSTI).unwrap_or(0);
                sys(libc::SYS_ioctl, [0, request, ptr(c"x"), 0, 0, 0])
            },
        ];
        for (i, attempt) in attempts.into_iter().enumerate() {
            assert_eq!(
                status_under_filters(attempt),
                EXIT_SECCOMP_VIOLATION,
                "attempt {i}"
            );
        }
    }
}
