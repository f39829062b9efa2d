//! Turns the i8042 reset and the exit eventfd into the end of the main
//! loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::outcome::{ExitSignal, VmOutcome};

/// The event-loop subscriber that stops the loop.
#[derive(Debug)]
pub struct StopWatcher {
    /// Written by [`ExitSignal`] when an outcome arrives.
    pub exit_evt: EventFd,
    /// Written by the i8042 and the ACPI sleep register.
    pub reset_evt: EventFd,
    /// The VM's outcome.
    pub exit: Arc<ExitSignal>,
    /// Set when the loop must end.
    pub stopped: Arc<AtomicBool>,
}

impl MutEventSubscriber for StopWatcher {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        use std::os::fd::AsRawFd;
        if events.fd() == self.reset_evt.as_raw_fd() {
            let _ = self.reset_evt.read();
            self.exit.report(VmOutcome::Reset);
        } else if events.fd() == self.exit_evt.as_raw_fd() {
            let _ = self.exit_evt.read();
            self.stopped.store(true, Ordering::SeqCst);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for evt in [&self.exit_evt, &self.reset_evt] {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                log::error!("cannot watch a stop eventfd: {e}");
            }
        }
    }
}
