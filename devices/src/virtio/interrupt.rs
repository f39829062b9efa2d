//! The interrupt line of a virtio-mmio device: an irqfd plus the
//! InterruptStatus register the driver reads and acknowledges.

use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::eventfd::EventFd;

/// InterruptStatus bit: a queue has new used buffers.
pub const INT_VRING: u32 = 1;
/// InterruptStatus bit: the configuration space changed.
pub const INT_CONFIG: u32 = 2;

/// A device's interrupt line and status register.
#[derive(Debug)]
pub struct Interrupt {
    irqfd: EventFd,
    status: AtomicU32,
}

impl Interrupt {
    /// Wraps `irqfd`, which the VMM registers with KVM.
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            irqfd,
            status: AtomicU32::new(0),
        }
    }

    /// Sets `bits` in InterruptStatus and raises the line.
    pub fn signal(&self, bits: u32) -> std::io::Result<()> {
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.irqfd.write(1)
    }

    /// Current InterruptStatus.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears acknowledged bits (InterruptACK).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears everything (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_sets_status_and_ack_clears_only_given_bits() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let i = Interrupt::new(evt.try_clone().expect("clone"));
        i.signal(INT_VRING).expect("signal");
        i.signal(INT_CONFIG).expect("signal");
        assert_eq!(i.status(), 3);
        assert_eq!(evt.read().expect("raised"), 2);
        i.ack(INT_VRING);
        assert_eq!(i.status(), INT_CONFIG);
        i.clear();
        assert_eq!(i.status(), 0);
    }
}
