//! What happens when a memtide thread makes a system call its filter does
//! not allow: the kernel raises `SIGSYS` (seccomp `RET_TRAP`), and this
//! handler writes the call's number and the thread to stderr and ends the
//! process with [`EXIT_SECCOMP_VIOLATION`]. That is a memtide bug; running
//! with `--no-sandbox` works around it.

/// The exit status after a refused system call (128 + `SIGSYS`).
pub const EXIT_SECCOMP_VIOLATION: i32 = 159;

/// Where `si_syscall` sits in an x86_64 `siginfo_t` for `SIGSYS`: after
/// three ints, four bytes of padding and the 8-byte `si_call_addr`.
const SI_SYSCALL_OFFSET: usize = 24;

/// Formats `n` in decimal into the end of `buf`; returns the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        // `n % 10` is below 10, so the cast keeps it.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (n % 10) as u8;
        buf[at] = b'0' + digit;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Writes `parts` to stderr with `write(2)` only (async-signal-safe).
fn write_stderr(parts: &[&[u8]]) {
    for part in parts {
        // SAFETY: writes `part.len()` bytes from a live slice to fd 2;
        // a failed write has nowhere better to be reported.
        let _ = unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
}

extern "C" fn report_and_exit(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` for a SA_SIGINFO
    // handler; for SIGSYS from seccomp it fills `si_syscall` at this
    // offset (x86_64 layout), and an unaligned read copes with any base.
    let syscall = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    // SAFETY: gettid takes no arguments.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let mut nbuf = [0u8; 20];
    let mut tbuf = [0u8; 20];
    write_stderr(&[
        b"memtide: the sandbox refused system call ",
        decimal(u64::try_from(syscall).unwrap_or(0), &mut nbuf),
        b" (thread ",
        decimal(u64::try_from(tid).unwrap_or(0), &mut tbuf),
        b"); this is a memtide bug: please report it; --no-sandbox works around it\n",
    ]);
    // SAFETY: ends the process at once, which is all that is safe from a
    // signal handler in a thread whose state is unknown.
    unsafe { libc::_exit(EXIT_SECCOMP_VIOLATION) };
}

/// Installs the `SIGSYS` handler for the whole process.
pub fn install_reporter() -> std::io::Result<()> {
    // SAFETY: an all-zero sigaction is a valid value to fill in.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
        report_and_exit;
    action.sa_sigaction = handler as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `action.sa_mask` is a live sigset_t.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: installs a handler that only makes async-signal-safe calls;
    // `action` outlives the call and no old action is requested.
    if unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_formats_without_allocating() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(317, &mut buf), b"317");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }
}
