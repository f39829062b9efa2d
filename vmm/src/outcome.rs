//! How a VM ends, and the one-shot signal that carries it to the main thread.

use std::sync::Mutex;

use memtide_devices::bus::lock;
use vmm_sys_util::eventfd::EventFd;

use crate::vcpu::{StopSink, VcpuError, VcpuStop};

/// Why the VM stopped.
#[derive(Debug)]
pub enum VmOutcome {
    /// The guest reset the machine (i8042 reset, or a KVM reset event):
    /// memtide treats this as the guest's request to stop.
    Reset,
    /// The guest powered off (KVM system event).
    PowerOff,
    /// A vCPU triple-faulted (`KVM_EXIT_SHUTDOWN`).
    TripleFault {
        /// The vCPU index.
        vcpu: u8,
        /// Its registers when it stopped, if KVM returned them.
        state: Option<crate::vcpu::snapshot::CpuSnapshot>,
    },
    /// A vCPU stopped with an error.
    VcpuFailed {
        /// The vCPU index.
        vcpu: u8,
        /// What went wrong.
        error: VcpuError,
    },
}

/// The first outcome reported wins; later ones are logged and dropped.
#[derive(Debug)]
pub struct ExitSignal {
    evt: EventFd,
    outcome: Mutex<Option<VmOutcome>>,
}

impl ExitSignal {
    /// Creates the signal around `evt`, which is written when an outcome arrives.
    pub fn new(evt: EventFd) -> Self {
        Self {
            evt,
            outcome: Mutex::new(None),
        }
    }

    /// Records `outcome` unless one is already recorded, and wakes the main thread.
    pub fn report(&self, outcome: VmOutcome) {
        let mut slot = lock(&self.outcome);
        match &*slot {
            Some(first) => log::debug!("VM already stopping ({first:?}); ignoring {outcome:?}"),
            None => *slot = Some(outcome),
        }
        drop(slot);
        if let Err(e) = self.evt.write(1) {
            log::error!("cannot wake the main thread: {e}");
        }
    }

    /// Takes the recorded outcome, if any.
    pub fn take(&self) -> Option<VmOutcome> {
        lock(&self.outcome).take()
    }
}

impl StopSink for ExitSignal {
    fn vcpu_stopped(&self, vcpu: u8, stop: VcpuStop) {
        self.report(match stop {
            VcpuStop::Reset => VmOutcome::Reset,
            VcpuStop::PowerOff => VmOutcome::PowerOff,
            VcpuStop::TripleFault(state) => VmOutcome::TripleFault { vcpu, state },
            VcpuStop::Failed(error) => VmOutcome::VcpuFailed { vcpu, error },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_outcome_wins() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let sig = ExitSignal::new(evt.try_clone().expect("clone"));
        assert!(sig.take().is_none());
        sig.report(VmOutcome::Reset);
        sig.report(VmOutcome::PowerOff);
        assert!(evt.read().expect("woken") >= 1);
        assert!(matches!(sig.take(), Some(VmOutcome::Reset)));
    }
}
