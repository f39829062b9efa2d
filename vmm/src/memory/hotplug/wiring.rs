//! Setting up memory hot-add for a VM: the slots, the hot-plug controller
//! device that exposes them to the guest's ACPI code, and the GED
//! interrupt (an irqfd) that tells the guest to look at them.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use memtide_devices::memory_hotplug::MemoryHotplugController;
use vm_memory::GuestMemoryAtomic;
use vmm_sys_util::eventfd::EventFd;

use super::hot_add::MemoryHotplug;
use super::layout::{HotplugError, HotplugLayout};
use crate::memory::GuestMemoryMmap;

/// Errors from setting up memory hot-add.
#[derive(Debug, thiserror::Error)]
pub enum HotplugSetupError {
    /// The window or slot sizes do not work.
    #[error(transparent)]
    Layout(#[from] HotplugError),
    /// The GED eventfd could not be created.
    #[error("cannot create the GED eventfd: {0}")]
    Eventfd(std::io::Error),
    /// KVM refused the GED irqfd.
    #[error("cannot register the GED irqfd: {0}")]
    Irqfd(kvm_ioctls::Error),
}

/// Hot-add before the controller is placed: the planned window, its slots
/// and the controller device.
#[derive(Debug)]
pub struct HotplugSetup {
    /// The window and its slots.
    pub layout: HotplugLayout,
    /// The controller device, to be placed on the MMIO bus.
    pub controller: Arc<Mutex<MemoryHotplugController>>,
    slots: memtide_devices::memory_hotplug::SharedSlots,
}

impl HotplugSetup {
    /// Plans `slots` slots of `slot_mib` MiB above `boot_mib` MiB of boot
    /// RAM and creates the controller that exposes them.
    pub fn new(boot_mib: u64, slots: u32, slot_mib: u64) -> Result<Self, HotplugSetupError> {
        let layout = HotplugLayout::new(boot_mib << 20, slots, slot_mib)?;
        let slots = Arc::new(Mutex::new(layout.empty_slots()));
        let controller = Arc::new(Mutex::new(MemoryHotplugController::new(slots.clone())));
        Ok(Self {
            layout,
            controller,
            slots,
        })
    }

    /// Connects the GED interrupt (`ged_irq`, routed through an irqfd) and
    /// returns the run-time state; hot-added slots become KVM memory slots
    /// from `next_kvm_slot` on, up to `max_mib` MiB of guest RAM in all.
    pub fn connect(
        self,
        vm: &Arc<VmFd>,
        guest_mem: GuestMemoryAtomic<GuestMemoryMmap>,
        ged_irq: u32,
        next_kvm_slot: u32,
        boot_mib: u64,
        max_mib: u64,
    ) -> Result<MemoryHotplug, HotplugSetupError> {
        let ged = EventFd::new(libc::EFD_NONBLOCK).map_err(HotplugSetupError::Eventfd)?;
        vm.register_irqfd(&ged, ged_irq)
            .map_err(HotplugSetupError::Irqfd)?;
        Ok(MemoryHotplug::new(
            vm.clone(),
            guest_mem,
            self.slots,
            ged,
            next_kvm_slot,
            boot_mib,
            max_mib,
        ))
    }
}
