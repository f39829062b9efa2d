//! Kicking a vCPU out of `KVM_RUN`: a real-time signal whose handler sets
//! `immediate_exit` in the interrupted thread's `kvm_run`, so the vCPU
//! leaves `KVM_RUN` with `EINTR` whether the signal lands inside it or just
//! before it. The profiler (`profile.rs`) samples with the same signal.

use std::cell::Cell;

use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuFd;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

thread_local! {
    /// This thread's `kvm_run`, while [`KickTarget`] publishes it.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal that kicks a vCPU thread.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let _ = KVM_RUN.try_with(|run| {
        let run = run.get();
        if !run.is_null() {
            // SAFETY: `run` is this thread's `kvm_run` mapping, published by
            // a `KickTarget` that lives shorter than the `VcpuFd` owning the
            // mapping and clears the pointer when it drops; a volatile
            // one-byte store is async-signal-safe, and KVM reads the field
            // on the next `KVM_RUN`.
            unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
        }
    });
}

/// Installs the kick handler (process-wide; installing it again is harmless).
pub fn install_handler() -> Result<(), vmm_sys_util::errno::Error> {
    register_signal_handler(kick_signal(), handle_kick)
}

/// Publishes the calling thread's `kvm_run` to the kick handler until
/// dropped; it must be dropped before the [`VcpuFd`] it came from.
#[derive(Debug)]
pub struct KickTarget(());

impl KickTarget {
    /// Publishes `fd`'s `kvm_run` for the calling thread.
    pub fn publish(fd: &mut VcpuFd) -> Self {
        let run: *mut kvm_run = fd.get_kvm_run();
        KVM_RUN.with(|p| p.set(run));
        Self(())
    }
}

impl Drop for KickTarget {
    fn drop(&mut self) {
        let _ = KVM_RUN.try_with(|p| p.set(std::ptr::null_mut()));
    }
}
