//! The ACPI platform of a VM: the tables (MADT for the vCPUs, DSDT for the
//! virtio-mmio devices), the ACPI sleep register (so `poweroff` works), and,
//! when configured, the place of the memory hot-plug controller: its MMIO
//! window and GED IRQ (the controller itself is `memory::hotplug`).

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use memtide_devices::acpi_sleep::AcpiSleep;
use memtide_devices::bus::{Bus, BusError};
use memtide_devices::memory_hotplug::WINDOW_SIZE;
use memtide_devices::virtio::mmio::MMIO_WINDOW_SIZE;
use vm_memory::GuestMemoryAtomic;
use vmm_sys_util::eventfd::EventFd;

use super::mmio::{
    MmioDeviceError, MmioDeviceManager, MmioSlot, MMIO_DEVICES_SIZE, MMIO_DEVICES_START,
};
use crate::acpi::{self, dsdt, AcpiError, HotplugAml, VirtioMmioAml, SLEEP_CONTROL_PORT};
use crate::config::HotplugConfig;
use crate::memory::hotplug::{HotplugSetup, HotplugSetupError, MemoryHotplug};
use crate::memory::GuestMemoryMmap;

/// Errors from building the ACPI platform.
#[derive(Debug, thiserror::Error)]
pub enum AcpiPlatformError {
    /// Memory hot-add could not be set up.
    #[error("memory hot-add set-up: {0}")]
    Hotplug(#[from] HotplugSetupError),
    /// The controller window or the GED IRQ could not be placed.
    #[error(transparent)]
    Mmio(#[from] MmioDeviceError),
    /// The sleep register could not be placed (a bug).
    #[error("device wiring: {0}")]
    Bus(#[from] BusError),
    /// The power-off eventfd could not be cloned.
    #[error("cannot clone the power-off eventfd: {0}")]
    Eventfd(std::io::Error),
    /// The ACPI tables could not be written.
    #[error("memory hot-add set-up: {0}")]
    Tables(#[from] AcpiError),
}

/// What the VM keeps from the wiring.
#[derive(Debug)]
pub struct AcpiPlatform {
    /// The run-time hot-add state, for the API (if hot-add is configured).
    pub hotplug: Option<Arc<Mutex<MemoryHotplug>>>,
    /// Address of the RSDP, for the zero page.
    pub rsdp: u64,
}

/// Everything the wiring needs from the VM being built.
#[derive(Debug)]
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

/// Places the hot-plug controller and its GED as `hc` describes; returns
/// the run-time state and what the DSDT must describe.
fn place_hotplug(
    hc: &HotplugConfig,
    inp: &mut WiringInputs<'_>,
) -> Result<(MemoryHotplug, HotplugAml), AcpiPlatformError> {
    let setup = HotplugSetup::new(inp.memory_mib, hc.slots, hc.slot_mib)?;
    let base = setup.layout.base;
    let controller_base = inp.mmio.add_raw(0x1000, setup.controller.clone())?;
    let ged_irq = inp.mmio.allocate_irq()?;
    let runtime = setup.connect(
        inp.vm,
        inp.guest_mem.clone(),
        ged_irq,
        inp.next_kvm_slot,
        inp.memory_mib,
        hc.max_mib,
    )?;
    log::info!(
        "memory hot-add: {} x {} MiB slots from {base:#x}, controller at {controller_base:#x}, GED IRQ {ged_irq}",
        hc.slots,
        hc.slot_mib,
    );
    let aml = HotplugAml {
        controller_base,
        controller_size: WINDOW_SIZE,
        slots: hc.slots,
        ged_irq,
    };
    Ok((runtime, aml))
}

/// The DSDT entry of virtio slot `s`.
#[allow(
    clippy::cast_possible_truncation,
    reason = "slots are allocated in the 32-bit device window (MMIO_DEVICES_START, below 4 GiB) and are 4 KiB"
)]
fn virtio_aml(s: MmioSlot) -> VirtioMmioAml {
    debug_assert!(s.base + MMIO_WINDOW_SIZE <= MMIO_DEVICES_START + MMIO_DEVICES_SIZE);
    VirtioMmioAml {
        base: s.base as u32,
        size: MMIO_WINDOW_SIZE as u32,
        irq: s.irq,
    }
}

/// Builds the ACPI platform. Call it after every virtio device is placed:
/// the DSDT declares them (instead of the command line).
pub fn wire(
    hotplug: Option<&HotplugConfig>,
    mut inp: WiringInputs<'_>,
) -> Result<AcpiPlatform, AcpiPlatformError> {
    let (runtime, aml) = match hotplug {
        Some(hc) => {
            let (rt, aml) = place_hotplug(hc, &mut inp)?;
            (Some(Arc::new(Mutex::new(rt))), Some(aml))
        }
        None => (None, None),
    };
    let off = inp
        .off_evt
        .try_clone()
        .map_err(AcpiPlatformError::Eventfd)?;
    inp.pio.insert(
        SLEEP_CONTROL_PORT.into(),
        2,
        Arc::new(Mutex::new(AcpiSleep::new(off, dsdt::S5_SLEEP_TYPE))),
    )?;
    let virtio: Vec<VirtioMmioAml> = inp.mmio.slots().iter().map(|s| virtio_aml(*s)).collect();
    let rsdp = acpi::write(inp.mem, inp.vcpus, aml.as_ref(), &virtio)?;
    Ok(AcpiPlatform {
        hotplug: runtime,
        rsdp,
    })
}
