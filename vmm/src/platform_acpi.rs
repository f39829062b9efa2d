//! The ACPI platform of a VM: the tables (MADT for the vCPUs, DSDT for the
//! virtio-mmio devices), the ACPI sleep register (so `poweroff` works), and,
//! when configured, memory hot-add: the hot-plug controller's MMIO window
//! and the GED interrupt.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use memtide_devices::acpi_sleep::AcpiSleep;
use memtide_devices::bus::Bus;
use memtide_devices::memory_hotplug::{MemoryHotplugController, WINDOW_SIZE};
use memtide_devices::virtio::mmio::MMIO_WINDOW_SIZE;
use vm_memory::GuestMemoryAtomic;
use vmm_sys_util::eventfd::EventFd;

use crate::acpi::{self, dsdt, HotplugAml, VirtioMmioAml, SLEEP_CONTROL_PORT};
use crate::config::HotplugConfig;
use crate::hot_add::MemoryHotplug;
use crate::hotplug::HotplugLayout;
use crate::memory::GuestMemoryMmap;
use crate::mmio_devices::MmioDeviceManager;
use crate::vm::VmError;

/// What the VM keeps from the wiring.
pub struct AcpiPlatform {
    /// The run-time hot-add state, for the API (if hot-add is configured).
    pub hotplug: Option<Arc<Mutex<MemoryHotplug>>>,
    /// Address of the RSDP, for the zero page.
    pub rsdp: u64,
}

/// Everything the wiring needs from the VM being built.
pub struct WiringInputs<'a> {
    /// The VM.
    pub vm: &'a Arc<VmFd>,
    /// Guest RAM (the boot part, for the ACPI tables).
    pub mem: &'a GuestMemoryMmap,
    /// Guest RAM as devices see it (grown by hot-add).
    pub guest_mem: GuestMemoryAtomic<GuestMemoryMmap>,
    /// The MMIO device manager (window and IRQ allocation).
    pub mmio: &'a mut MmioDeviceManager,
    /// The port-I/O bus (for the sleep register).
    pub pio: &'a mut Bus,
    /// Written when the guest powers off through ACPI.
    pub off_evt: &'a EventFd,
    /// First free KVM memory slot.
    pub next_kvm_slot: u32,
    /// vCPU count (for the MADT).
    pub vcpus: u8,
    /// Boot memory, MiB.
    pub memory_mib: u64,
}

/// Sets up hot-add as `hc` describes: the controller, the GED and the
/// run-time state; returns the state and what the DSDT must describe.
fn wire_hotplug(
    hc: &HotplugConfig,
    inp: &mut WiringInputs<'_>,
) -> Result<(MemoryHotplug, HotplugAml), VmError> {
    let layout = HotplugLayout::new(inp.memory_mib << 20, hc.slots, hc.slot_mib)
        .map_err(|e| VmError::Hotplug(e.to_string()))?;
    let slots = Arc::new(Mutex::new(layout.empty_slots()));
    let controller = Arc::new(Mutex::new(MemoryHotplugController::new(slots.clone())));
    let controller_base = inp.mmio.add_raw(0x1000, controller)?;
    let ged_irq = inp.mmio.allocate_irq()?;
    let ged = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmError::Io {
        what: "create the GED eventfd",
        source,
    })?;
    inp.vm
        .register_irqfd(&ged, ged_irq)
        .map_err(|source| VmError::Kvm {
            what: "register the GED irqfd",
            source,
        })?;
    log::info!(
        "memory hot-add: {} x {} MiB slots from {:#x}, controller at {controller_base:#x}, GED IRQ {ged_irq}",
        hc.slots,
        hc.slot_mib,
        layout.base
    );
    let runtime = MemoryHotplug::new(
        inp.vm.clone(),
        inp.guest_mem.clone(),
        slots,
        ged,
        inp.next_kvm_slot,
        inp.memory_mib,
        hc.max_mib,
    );
    let aml = HotplugAml {
        controller_base,
        controller_size: WINDOW_SIZE,
        slots: hc.slots,
        ged_irq,
    };
    Ok((runtime, aml))
}

/// Builds the ACPI platform. Call it after every virtio device is placed:
/// the DSDT declares them (instead of the command line).
pub fn wire(
    hotplug: Option<&HotplugConfig>,
    mut inp: WiringInputs<'_>,
) -> Result<AcpiPlatform, VmError> {
    let (runtime, aml) = match hotplug {
        Some(hc) => {
            let (rt, aml) = wire_hotplug(hc, &mut inp)?;
            (Some(Arc::new(Mutex::new(rt))), Some(aml))
        }
        None => (None, None),
    };
    let off = inp.off_evt.try_clone().map_err(|source| VmError::Io {
        what: "clone the power-off eventfd",
        source,
    })?;
    inp.pio.insert(
        SLEEP_CONTROL_PORT.into(),
        2,
        Arc::new(Mutex::new(AcpiSleep::new(off, dsdt::S5_SLEEP_TYPE))),
    )?;
    let virtio: Vec<VirtioMmioAml> = inp
        .mmio
        .slots()
        .iter()
        .map(|s| VirtioMmioAml {
            base: s.base as u32,
            size: MMIO_WINDOW_SIZE as u32,
            irq: s.irq,
        })
        .collect();
    let rsdp = acpi::write(inp.mem, inp.vcpus, aml.as_ref(), &virtio)
        .map_err(|e| VmError::Hotplug(e.to_string()))?;
    Ok(AcpiPlatform {
        hotplug: runtime,
        rsdp,
    })
}
