//! The vsock device's side of the event loop: the wake eventfd
//! (activation, reset), the rx/tx queue eventfds once the driver is up,
//! the `<uds>` listener, pending host clients and connected host streams.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::device::Vsock;
use super::watch::Watcher;

/// The vsock device as subscribed to event-manager.
#[derive(Debug)]
pub struct VsockHandler {
    dev: Arc<Mutex<Vsock>>,
}

impl VsockHandler {
    /// Wraps the shared device.
    pub fn new(dev: Arc<Mutex<Vsock>>) -> Self {
        Self { dev }
    }
}

/// [`Watcher`] on event-manager's operations.
struct Ops<'a, 'b>(&'a mut EventOps<'b>);

impl Watcher for Ops<'_, '_> {
    fn watch(&mut self, fd: RawFd, old: Option<EventSet>, new: Option<EventSet>) -> bool {
        let r = match (old, new) {
            (None, None) => Ok(()),
            (None, Some(set)) => self.0.add(Events::new_raw(fd, set)),
            (Some(_), Some(set)) => self.0.modify(Events::new_raw(fd, set)),
            (Some(_), None) => self.0.remove(Events::empty_raw(fd)),
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                log::error!("vsock: cannot change what is watched on fd {fd}: {e}");
                false
            }
        }
    }
}

impl MutEventSubscriber for VsockHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut dev = crate::bus::lock(&self.dev);
        dev.handle_event(events.fd(), events.event_set());
        dev.sync_watches(&mut Ops(ops));
    }

    fn init(&mut self, ops: &mut EventOps) {
        crate::bus::lock(&self.dev).sync_watches(&mut Ops(ops));
    }
}
