//! The VMM's sandbox. A running VM needs no privilege and a few dozen
//! system calls, so `memtide run`:
//!
//! 1. drops every capability before it creates anything
//!    ([`capabilities::drop_all`]), so that no thread it starts has one, and
//!    sets `no_new_privs`;
//! 2. once the VM is built and before the first vCPU runs guest code,
//!    installs a seccomp filter on every thread ([`install_filter`]): an
//!    allow-list with argument checks (KVM and terminal ioctls only, Unix
//!    sockets only, threads but no processes, no executable mappings).
//!
//! A call outside the list raises `SIGSYS`; [`sigsys`] prints which call
//! and ends the process with [`sigsys::EXIT_SECCOMP_VIOLATION`].
//! `docs/sandbox.md` explains the list.

pub mod capabilities;
pub mod filter;
pub mod sigsys;

/// Errors from entering the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    /// A capability could not be dropped from the bounding set.
    #[error("cannot drop capability {cap} from the bounding set: {source}")]
    BoundingSet {
        /// The capability number.
        cap: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading or clearing the thread's capability sets failed.
    #[error("cannot {what} the capability sets: {source}")]
    Capabilities {
        /// `read` or `clear`.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The filter's rules do not compile.
    #[error("cannot build the seccomp filter: {0}")]
    Compile(#[from] seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter on every thread: {0}")]
    Install(seccompiler::Error),
    /// The `SIGSYS` handler could not be installed.
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(std::io::Error),
}

/// Stops glibc from trimming the heaps of threads' malloc arenas: the first
/// trim (`shrink_heap`) opens `/proc/sys/vm/overcommit_memory`, which the
/// filter refuses, ending memtide (seen after about two minutes of
/// `GET /balancer` on a VM with its own balancer: each request's thread
/// freed a large copy of the balancer's timeline). Memory freed in an
/// arena stays mapped for reuse instead of being returned to the host; a
/// VMM's own heap is small next to its guest's memory.
fn keep_thread_heaps() {
    // SAFETY: mallopt only sets a malloc parameter; it takes no pointers
    // and is called before the filter, with any value valid.
    let ok = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) };
    if ok != 1 {
        log::warn!("sandbox: cannot turn off malloc heap trimming (mallopt failed)");
    }
}

/// Installs the `SIGSYS` reporter and then memtide's filters on every
/// thread of the process (seccomp `TSYNC`); threads started later inherit
/// them. Irreversible.
pub fn install_filter() -> Result<(), SandboxError> {
    let programs = filter::programs()?;
    keep_thread_heaps();
    sigsys::install_reporter().map_err(SandboxError::Handler)?;
    for program in &programs {
        seccompiler::apply_filter_all_threads(program).map_err(SandboxError::Install)?;
    }
    Ok(())
}
