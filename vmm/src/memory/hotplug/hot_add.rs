//! Hot-adding memory at run time: map the chosen slots, register them with
//! KVM, grow the guest memory map that devices use, mark the slots for the
//! guest's ACPI code, and raise the GED interrupt.

use memtide_devices::memory_hotplug::Slot;

use super::layout::{plan_hot_add, HotplugError};

/// Errors from hot-adding memory at run time.
#[derive(Debug, thiserror::Error)]
pub enum HotAddError {
    /// The request was refused before anything changed.
    #[error(transparent)]
    Refused(#[from] HotplugError),
    /// The host could not map the memory.
    #[error("cannot map {mib} MiB for hot-add: {source}")]
    Map {
        /// Size of the slot.
        mib: u64,
        /// Why.
        source: vm_memory::mmap::FromRangesError,
    },
    /// KVM refused the memory slot.
    #[error(transparent)]
    Register(#[from] crate::memory::MemoryError),
    /// The new region does not fit the guest memory map (a bug).
    #[error("cannot extend the guest memory map: {0}")]
    MemoryMap(String),
    /// The GED interrupt could not be raised.
    #[error("cannot raise the GED interrupt: {0}")]
    Interrupt(std::io::Error),
}

/// Run-time state of memory hot-add, shared with the control API.
#[derive(Debug)]
pub struct MemoryHotplug {
    vm: std::sync::Arc<kvm_ioctls::VmFd>,
    guest_mem: vm_memory::GuestMemoryAtomic<crate::memory::GuestMemoryMmap>,
    slots: memtide_devices::memory_hotplug::SharedSlots,
    ged: vmm_sys_util::eventfd::EventFd,
    next_kvm_slot: u32,
    boot_mib: u64,
    max_mib: u64,
}

/// A snapshot for `GET /memory`.
#[derive(Debug, Clone, PartialEq)]
pub struct HotplugStatus {
    /// Boot memory, MiB.
    pub boot_mib: u64,
    /// Boot memory plus hot-added memory, MiB.
    pub plugged_mib: u64,
    /// The maximum, MiB.
    pub max_mib: u64,
    /// Per slot.
    pub slots: Vec<SlotStatus>,
}

/// One slot in [`HotplugStatus`].
#[derive(Debug, Clone, PartialEq)]
pub struct SlotStatus {
    /// Guest-physical base.
    pub base: u64,
    /// Size, MiB.
    pub size_mib: u64,
    /// Populated.
    pub present: bool,
    /// The guest's `_OST` status code, once reported (0 = success).
    pub ost_status: Option<u32>,
    /// Milliseconds from populating the slot to the guest's `_OST` report.
    pub online_ms: Option<f64>,
}

impl MemoryHotplug {
    /// Creates the run-time state; `next_kvm_slot` is the first free KVM slot.
    pub fn new(
        vm: std::sync::Arc<kvm_ioctls::VmFd>,
        guest_mem: vm_memory::GuestMemoryAtomic<crate::memory::GuestMemoryMmap>,
        slots: memtide_devices::memory_hotplug::SharedSlots,
        ged: vmm_sys_util::eventfd::EventFd,
        next_kvm_slot: u32,
        boot_mib: u64,
        max_mib: u64,
    ) -> Self {
        Self {
            vm,
            guest_mem,
            slots,
            ged,
            next_kvm_slot,
            boot_mib,
            max_mib,
        }
    }

    fn plugged_mib(&self, slots: &[Slot]) -> u64 {
        self.boot_mib
            + slots
                .iter()
                .filter(|s| s.present)
                .map(|s| s.size >> 20)
                .sum::<u64>()
    }

    /// The current state.
    pub fn status(&self) -> HotplugStatus {
        let slots = memtide_devices::bus::lock(&self.slots);
        HotplugStatus {
            boot_mib: self.boot_mib,
            plugged_mib: self.plugged_mib(&slots),
            max_mib: self.max_mib,
            slots: slots
                .iter()
                .map(|s| SlotStatus {
                    base: s.base,
                    size_mib: s.size >> 20,
                    present: s.present,
                    ost_status: s.ost.map(|o| o.status),
                    online_ms: match (s.plugged_at, s.ost) {
                        (Some(p), Some(o)) if o.at >= p => Some((o.at - p).as_secs_f64() * 1e3),
                        _ => None,
                    },
                })
                .collect(),
        }
    }

    /// Maps `size_mib` more memory into the guest and tells it through the
    /// GED. Nothing changes if the request is refused.
    pub fn add(&mut self, size_mib: u64) -> Result<Vec<usize>, HotAddError> {
        use vm_memory::{GuestAddress, GuestAddressSpace};
        let mut slots = memtide_devices::bus::lock(&self.slots);
        let chosen = plan_hot_add(&slots, size_mib, self.plugged_mib(&slots), self.max_mib)?;
        for &i in &chosen {
            let (base, size) = (slots[i].base, slots[i].size);
            let len = usize::try_from(size).map_err(|_| {
                HotAddError::MemoryMap(format!("a {size}-byte slot exceeds the host address space"))
            })?;
            let region =
                vm_memory::GuestRegionMmap::<()>::from_range(GuestAddress(base), len, None)
                    .map_err(|source| HotAddError::Map {
                        mib: size >> 20,
                        source,
                    })?;
            crate::memory::register_region(&self.vm, self.next_kvm_slot, &region)?;
            self.next_kvm_slot += 1;
            let grown = self
                .guest_mem
                .memory()
                .insert_region(std::sync::Arc::new(region))
                .map_err(|e| HotAddError::MemoryMap(e.to_string()))?;
            match self.guest_mem.lock() {
                Ok(guard) => guard.replace(grown),
                Err(p) => p.into_inner().replace(grown),
            }
            slots[i].present = true;
            slots[i].inserting = true;
            slots[i].ost = None;
            slots[i].plugged_at = Some(std::time::Instant::now());
        }
        drop(slots);
        self.ged.write(1).map_err(HotAddError::Interrupt)?;
        Ok(chosen)
    }
}
