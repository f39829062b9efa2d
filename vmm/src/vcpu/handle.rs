//! The VMM's handle on a running vCPU thread: kick it out of `KVM_RUN`
//! and join it.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::kick;

/// A running vCPU thread.
#[derive(Debug)]
pub struct VcpuHandle {
    id: u8,
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl VcpuHandle {
    /// Wraps the thread of vCPU `id`, which leaves its loop once `stop` is
    /// set and it is kicked.
    pub(super) fn new(id: u8, thread: JoinHandle<()>, stop: Arc<AtomicBool>) -> Self {
        Self { id, thread, stop }
    }

    /// The vCPU index.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The vCPU thread (for the profiler, which signals it).
    pub fn thread(&self) -> &JoinHandle<()> {
        &self.thread
    }

    /// Asks the vCPU to stop and kicks it out of `KVM_RUN`.
    pub fn kick(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.thread.is_finished() {
            return;
        }
        let target = self.thread.as_pthread_t();
        // SAFETY: `target` is a thread this handle has not joined yet, so
        // the pthread_t is valid even if the thread has just returned; the
        // signal has the handler `kick::install_handler` installed before
        // any vCPU thread started.
        let rc = unsafe { libc::pthread_kill(target, kick::kick_signal()) };
        if rc != 0 && rc != libc::ESRCH {
            log::warn!("vcpu{}: cannot kick the thread: error {rc}", self.id);
        }
    }

    /// Waits for the vCPU thread to end (kick it first).
    pub fn join(self) {
        if self.thread.join().is_err() {
            log::error!("vcpu{}: the thread panicked", self.id);
        }
    }
}
