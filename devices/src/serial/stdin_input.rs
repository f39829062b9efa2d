//! Host standard input feeding the serial console, driven by event-manager.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::SerialConsole;
use crate::bus::lock;

/// Reads host stdin when it is readable and queues the bytes for the guest.
#[derive(Debug)]
pub struct StdinInput {
    console: Arc<Mutex<SerialConsole>>,
    stdin: std::io::Stdin,
}

impl StdinInput {
    /// Creates the input pump for `console`.
    pub fn new(console: Arc<Mutex<SerialConsole>>) -> Self {
        Self {
            console,
            stdin: std::io::stdin(),
        }
    }
}

impl MutEventSubscriber for StdinInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        let closed = events.event_set().contains(EventSet::HANG_UP)
            || events.event_set().contains(EventSet::ERROR);
        let n = if events.event_set().contains(EventSet::IN) {
            self.stdin.lock().read(&mut buf).unwrap_or(0)
        } else {
            0
        };
        if n == 0 || closed {
            // End of input: stop listening so a closed stdin does not spin.
            if let Err(e) = ops.remove(events) {
                log::warn!("stdin: cannot unregister: {e}");
            }
            return;
        }
        lock(&self.console).enqueue_input(&buf[..n]);
    }

    fn init(&mut self, ops: &mut EventOps) {
        let fd = self.stdin.as_raw_fd();
        if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
            // stdin may be /dev/null or a regular file, which epoll rejects.
            log::info!("stdin: not readable through epoll ({e}); console input disabled");
        }
    }
}
