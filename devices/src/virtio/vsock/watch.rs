//! Which fds the event loop watches, brought in line with what the device
//! needs after every event. A stream is watched for input only while its
//! data can go to the guest, and for output only while bytes wait, so a
//! level-triggered loop never spins on data the guest cannot take. Closed
//! streams are unwatched before they are closed (their fd numbers may be
//! reused at once).

use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::epoll::EventSet;

use super::device::Vsock;
use super::{RX_QUEUE, TX_QUEUE};

/// The event loop's side: change what is watched on `fd` from `old` to
/// `new` (`None`: not watched). Returns whether it worked.
pub(super) trait Watcher {
    /// Applies one change.
    fn watch(&mut self, fd: RawFd, old: Option<EventSet>, new: Option<EventSet>) -> bool;
}

fn apply(
    w: &mut dyn Watcher,
    fd: RawFd,
    registered: &mut Option<EventSet>,
    want: Option<EventSet>,
) {
    if *registered != want && w.watch(fd, *registered, want) {
        *registered = want;
    }
}

impl Vsock {
    /// Brings the watched set in line with the device's needs.
    pub(super) fn sync_watches(&mut self, w: &mut dyn Watcher) {
        let on = Some(EventSet::IN);
        if !self.watched.wake && w.watch(self.wake_evt.as_raw_fd(), None, on) {
            self.watched.wake = true;
        }
        if !self.watched.listener && w.watch(self.listener.as_raw_fd(), None, on) {
            self.watched.listener = true;
        }
        if self.active.is_some() && !self.watched.queues {
            // The event queue is never used, so never watched.
            for i in [RX_QUEUE, TX_QUEUE] {
                if let Some(evt) = self.queue_evts.get(i) {
                    w.watch(evt.as_raw_fd(), None, on);
                }
            }
            self.watched.queues = true;
        }
        for (stream, registered) in self.graveyard.drain(..) {
            if registered.is_some() {
                w.watch(stream.as_raw_fd(), registered, None);
            }
        }
        let starved = self.rx_starved;
        for c in self.conns.values_mut() {
            let want = c.interest(starved);
            let fd = c.fd();
            apply(w, fd, &mut c.registered, want);
        }
        for (fd, cl) in self.clients.iter_mut() {
            apply(w, *fd, &mut cl.registered, on);
        }
    }
}
