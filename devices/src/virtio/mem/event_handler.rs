//! virtio-mem's side of the event loop: queue notifications, activation,
//! and requested-size changes from the control API.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::VirtioMem;
use crate::bus::lock;

/// The device as subscribed to event-manager.
#[derive(Debug)]
pub struct VirtioMemHandler {
    device: Arc<Mutex<VirtioMem>>,
}

impl VirtioMemHandler {
    /// Wraps the shared device.
    pub fn new(device: Arc<Mutex<VirtioMem>>) -> Self {
        Self { device }
    }
}

impl MutEventSubscriber for VirtioMemHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        let mut d = lock(&self.device);
        if fd == d.activate_evt.as_raw_fd() {
            let _ = d.activate_evt.read();
            if let Some(evt) = &d.queue_evt {
                // Already watched after a reset and a new activation.
                if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                    log::debug!("virtio-mem: queue eventfd: {e}");
                }
            }
            // Anything the driver queued before we were watching, and the
            // requested size it may have missed.
            d.process_queue();
            d.requested_changed();
            return;
        }
        if fd == d.shared.requested_evt.as_raw_fd() {
            let _ = d.shared.requested_evt.read();
            d.requested_changed();
            return;
        }
        if d.queue_evt.as_ref().is_some_and(|e| e.as_raw_fd() == fd) {
            if let Some(evt) = &d.queue_evt {
                let _ = evt.read();
            }
            d.process_queue();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let d = lock(&self.device);
        for evt in [&d.activate_evt, &d.shared.requested_evt] {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                log::error!("virtio-mem: cannot watch a control eventfd: {e}");
            }
        }
    }
}
