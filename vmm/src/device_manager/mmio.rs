//! Placing virtio-mmio devices in the guest: an address window and an IRQ
//! each (from vm-allocator), KVM ioeventfds for queue notifications and an
//! irqfd for interrupts, and the `virtio_mmio.device=` command-line entry
//! through which the guest finds them.

use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, VmFd};
use memtide_devices::bus::Bus;
use memtide_devices::virtio::mmio::{MmioTransport, MMIO_WINDOW_SIZE, QUEUE_NOTIFY_OFFSET};
use memtide_devices::virtio::{GuestMemory, Interrupt, VirtioDevice};
use vm_allocator::{AddressAllocator, AllocPolicy, IdAllocator};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout;

/// Base of the virtio-mmio windows (start of the 32-bit device window).
pub const MMIO_DEVICES_START: u64 = layout::MMIO32_START;
/// Room for virtio-mmio windows (below the ACPI/IOAPIC area).
pub const MMIO_DEVICES_SIZE: u64 = 0x100_0000;
/// First IRQ line for virtio devices (4 is COM1).
pub const FIRST_DEVICE_IRQ: u32 = 5;

/// Errors from placing a device.
#[derive(Debug, thiserror::Error)]
pub enum MmioDeviceError {
    /// Address or IRQ space exhausted, or a bad request.
    #[error("cannot allocate resources for a virtio device: {0}")]
    Allocate(vm_allocator::Error),
    /// The transport could not be built.
    #[error(transparent)]
    Transport(#[from] memtide_devices::virtio::mmio::MmioError),
    /// KVM refused an ioeventfd or irqfd.
    #[error("cannot {what}: {source}")]
    Kvm {
        /// What was being registered.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// An eventfd could not be made.
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
    /// Bus overlap (a bug).
    #[error(transparent)]
    Bus(#[from] memtide_devices::bus::BusError),
}

/// Where one device ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    /// Base of its register window.
    pub base: u64,
    /// Its IRQ line.
    pub irq: u32,
}

impl MmioSlot {
    /// The kernel command-line entry announcing this device.
    pub fn cmdline_arg(&self) -> String {
        format!("virtio_mmio.device=4K@{:#x}:{}", self.base, self.irq)
    }
}

/// Allocates and wires virtio-mmio devices.
#[derive(Debug)]
pub struct MmioDeviceManager {
    addresses: AddressAllocator,
    irqs: IdAllocator,
    bus: Bus,
    slots: Vec<MmioSlot>,
}

impl MmioDeviceManager {
    /// Creates an empty manager.
    pub fn new() -> Result<Self, MmioDeviceError> {
        Ok(Self {
            addresses: AddressAllocator::new(MMIO_DEVICES_START, MMIO_DEVICES_SIZE)
                .map_err(MmioDeviceError::Allocate)?,
            irqs: IdAllocator::new(FIRST_DEVICE_IRQ, u32::from(layout::IRQ_MAX))
                .map_err(MmioDeviceError::Allocate)?,
            bus: Bus::new(),
            slots: Vec::new(),
        })
    }

    /// Places `device`; returns its slot and clones of its queue eventfds
    /// (for the device's event handler).
    pub fn add(
        &mut self,
        vm: &VmFd,
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemory,
    ) -> Result<(MmioSlot, Vec<EventFd>), MmioDeviceError> {
        let range = self
            .addresses
            .allocate(MMIO_WINDOW_SIZE, MMIO_WINDOW_SIZE, AllocPolicy::FirstMatch)
            .map_err(MmioDeviceError::Allocate)?;
        let irq = self.irqs.allocate_id().map_err(MmioDeviceError::Allocate)?;
        let slot = MmioSlot {
            base: range.start(),
            irq,
        };
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(MmioDeviceError::EventFd)?;
        vm.register_irqfd(&irqfd, irq)
            .map_err(|source| MmioDeviceError::Kvm {
                what: "register a virtio irqfd",
                source,
            })?;
        let transport = MmioTransport::new(device, mem, Arc::new(Interrupt::new(irqfd)))?;
        let notify = IoEventAddress::Mmio(slot.base + QUEUE_NOTIFY_OFFSET);
        let mut evts = Vec::new();
        for (i, evt) in (0u32..).zip(transport.queue_evts()) {
            vm.register_ioevent(evt, &notify, i)
                .map_err(|source| MmioDeviceError::Kvm {
                    what: "register a queue ioeventfd",
                    source,
                })?;
            evts.push(evt.try_clone().map_err(MmioDeviceError::EventFd)?);
        }
        self.bus
            .insert(slot.base, MMIO_WINDOW_SIZE, Arc::new(Mutex::new(transport)))?;
        self.slots.push(slot);
        Ok((slot, evts))
    }

    /// Reserves an MMIO window of `size` bytes (page aligned) for a
    /// non-virtio device and puts `device` there; returns its base.
    pub fn add_raw(
        &mut self,
        size: u64,
        device: memtide_devices::bus::SharedBusDevice,
    ) -> Result<u64, MmioDeviceError> {
        let range = self
            .addresses
            .allocate(size, 0x1000, AllocPolicy::FirstMatch)
            .map_err(MmioDeviceError::Allocate)?;
        self.bus.insert(range.start(), size, device)?;
        Ok(range.start())
    }

    /// Reserves an IRQ line.
    pub fn allocate_irq(&mut self) -> Result<u32, MmioDeviceError> {
        self.irqs.allocate_id().map_err(MmioDeviceError::Allocate)
    }

    /// Every virtio device placed so far.
    pub fn slots(&self) -> &[MmioSlot] {
        &self.slots
    }

    /// Command-line entries for every device placed so far.
    pub fn cmdline_args(&self) -> Vec<String> {
        self.slots.iter().map(MmioSlot::cmdline_arg).collect()
    }

    /// The MMIO bus with every device on it.
    pub fn into_bus(self) -> Bus {
        self.bus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_entry_format_matches_the_kernel_parser() {
        let s = MmioSlot {
            base: 0xc000_0000,
            irq: 5,
        };
        assert_eq!(s.cmdline_arg(), "virtio_mmio.device=4K@0xc0000000:5");
    }
}
