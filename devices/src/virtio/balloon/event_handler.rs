//! The balloon's side of the event loop: queue notifications, target
//! changes from the control API, and the statistics timer.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::device::{Balloon, Role};

/// The balloon plus its statistics timer, as subscribed to event-manager.
#[derive(Debug)]
pub struct BalloonHandler {
    balloon: std::sync::Arc<std::sync::Mutex<Balloon>>,
    timer: Option<TimerFd>,
}

impl BalloonHandler {
    /// Wraps the shared device.
    pub fn new(balloon: std::sync::Arc<std::sync::Mutex<Balloon>>) -> Self {
        Self {
            balloon,
            timer: None,
        }
    }
}

impl MutEventSubscriber for BalloonHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        let mut b = crate::bus::lock(&self.balloon);
        if fd == b.activate_evt.as_raw_fd() {
            let _ = b.activate_evt.read();
            let active: Vec<usize> = b.queues.iter().map(|q| q.index).collect();
            for i in active {
                if let Some(evt) = b.queue_evts.get(i) {
                    if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                        log::error!("balloon: cannot watch queue {i}: {e}");
                    }
                }
            }
            let has_stats = b.queues.iter().any(|q| q.role == Role::Stats);
            if let (true, Some(interval), None) = (has_stats, b.stats_interval, &self.timer) {
                match TimerFd::new() {
                    Ok(mut t) => {
                        if t.reset(interval, Some(interval)).is_ok()
                            && ops.add(Events::new(&t, EventSet::IN)).is_ok()
                        {
                            self.timer = Some(t);
                        }
                    }
                    Err(e) => log::error!("balloon: no stats timer: {e}"),
                }
            }
            // Pick up anything the driver queued before we were watching.
            for slot in 0..b.queues.len() {
                b.process_queue(slot);
            }
            return;
        }
        if fd == b.shared.target_evt.as_raw_fd() {
            let _ = b.shared.target_evt.read();
            b.target_changed();
            return;
        }
        if let Some(t) = &mut self.timer {
            if fd == t.as_raw_fd() {
                let _ = t.wait();
                b.request_stats();
                return;
            }
        }
        let slot = b.queues.iter().position(|q| {
            b.queue_evts
                .get(q.index)
                .is_some_and(|e| e.as_raw_fd() == fd)
        });
        if let Some(slot) = slot {
            let index = b.queues[slot].index;
            let _ = b.queue_evts[index].read();
            b.process_queue(slot);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let b = crate::bus::lock(&self.balloon);
        for evt in [&b.activate_evt, &b.shared.target_evt] {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                log::error!("balloon: cannot watch a control eventfd: {e}");
            }
        }
    }
}
