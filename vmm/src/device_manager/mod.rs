//! The devices of a VM and where the guest finds them: the legacy port-I/O
//! devices ([`legacy`]), virtio-mmio placement ([`mmio`]), the balloon, the
//! vsock channel to the guest agent ([`guest_channel`]), virtio-mem
//! ([`virtio_mem`]) and the ACPI
//! platform with the place of the memory hot-plug controller
//! ([`acpi_platform`]).

pub mod acpi_platform;
pub mod guest_channel;
pub mod legacy;
pub mod mmio;
pub mod virtio_mem;

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use memtide_devices::bus::{lock, Bus, BusError};
use memtide_devices::serial::{GuestWatch, SerialConsole};
use memtide_devices::virtio::balloon::{Balloon, BalloonHandler, BalloonShared};
use memtide_devices::virtio::VirtioDevice;
use vm_memory::GuestMemoryAtomic;
use vmm_sys_util::eventfd::EventFd;

use crate::config::VmConfig;
use crate::memory::hotplug::MemoryHotplug;
use crate::memory::GuestMemoryMmap;
use acpi_platform::{AcpiPlatformError, WiringInputs};
use guest_channel::{GuestChannel, GuestChannelError};
use memtide_devices::virtio::mem::{VirtioMemHandler, VirtioMemShared};
use mmio::{MmioDeviceError, MmioDeviceManager};
use virtio_mem::VirtioMemWiringError;

/// Errors from creating or placing devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceManagerError {
    /// Port-bus wiring (a bug).
    #[error("device wiring: {0}")]
    Bus(#[from] BusError),
    /// An eventfd or a device could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A KVM ioctl failed.
    #[error("cannot {what}: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// virtio-mmio device placement.
    #[error(transparent)]
    Mmio(#[from] MmioDeviceError),
    /// The vsock channel to the guest agent.
    #[error(transparent)]
    GuestChannel(#[from] GuestChannelError),
    /// The ACPI platform or memory hot-add.
    #[error(transparent)]
    AcpiPlatform(#[from] AcpiPlatformError),
    /// virtio-mem.
    #[error(transparent)]
    VirtioMem(#[from] VirtioMemWiringError),
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> DeviceManagerError {
    move |source| DeviceManagerError::Io { what, source }
}

/// What the guest needs to be told at boot about its devices.
#[derive(Debug)]
pub struct BootInfo {
    /// `virtio_mmio.device=` entries for the command line (empty when
    /// the DSDT declares the devices).
    pub cmdline_args: Vec<String>,
    /// Address of the ACPI RSDP, for the zero page.
    pub acpi_rsdp: Option<u64>,
}

/// Every device of a VM, as built from its [`VmConfig`].
#[derive(Debug)]
pub struct Devices {
    /// The port-I/O bus (serial, i8042, ACPI sleep register).
    pub pio: Arc<Bus>,
    /// The MMIO bus (virtio-mmio transports, hot-plug controller).
    pub mmio: Arc<Bus>,
    /// The serial console, whose input the event loop feeds from stdin.
    pub console: Arc<Mutex<SerialConsole>>,
    /// The balloon's event-loop side, if configured.
    pub balloon_handler: Option<BalloonHandler>,
    /// The balloon's shared state, for the API and the balancer.
    pub balloon: Option<Arc<BalloonShared>>,
    /// The vsock channel to the guest agent, if configured.
    pub channel: Option<GuestChannel>,
    /// Run-time memory hot-add, if configured.
    pub hotplug: Option<Arc<Mutex<MemoryHotplug>>>,
    /// virtio-mem's event-loop side, if configured.
    pub virtio_mem_handler: Option<VirtioMemHandler>,
    /// virtio-mem's shared state, for the API.
    pub virtio_mem: Option<Arc<VirtioMemShared>>,
    /// What the boot tables must say about the devices.
    pub boot: BootInfo,
}

/// What device creation needs from the VM being built.
#[derive(Debug)]
pub struct DeviceInputs<'a> {
    /// The VM.
    pub vm: &'a Arc<VmFd>,
    /// Boot guest RAM (for the ACPI tables).
    pub mem: &'a GuestMemoryMmap,
    /// Guest RAM as devices see it (grown by hot-add).
    pub guest_mem: GuestMemoryAtomic<GuestMemoryMmap>,
    /// First free KVM memory slot (for hot-added slots).
    pub next_kvm_slot: u32,
    /// Written by the i8042 reset and the ACPI sleep register.
    pub reset_evt: &'a EventFd,
    /// What the console watches for on the guest's output.
    pub watch: &'a Arc<GuestWatch>,
}

/// Creates and places every device `config` asks for.
pub fn build(config: &VmConfig, inp: DeviceInputs<'_>) -> Result<Devices, DeviceManagerError> {
    let (mut pio, console) = legacy::build(inp.vm, inp.reset_evt, inp.watch)?;
    let mut mmio = MmioDeviceManager::new()?;

    let mut balloon_handler = None;
    let mut balloon = None;
    if let Some(bc) = &config.balloon {
        let shared = Arc::new(BalloonShared::new().map_err(io_err("create balloon state"))?);
        let device = Arc::new(Mutex::new(
            Balloon::new(
                shared.clone(),
                bc.discard,
                bc.stats_interval,
                bc.free_page_reporting,
            )
            .map_err(io_err("create the balloon"))?,
        ));
        let virtio: Arc<Mutex<dyn VirtioDevice>> = device.clone();
        let (slot, evts) = mmio.add(inp.vm, virtio, inp.guest_mem.clone())?;
        log::info!("virtio-balloon at {:#x}, IRQ {}", slot.base, slot.irq);
        lock(&device).set_queue_evts(evts);
        balloon_handler = Some(BalloonHandler::new(device));
        balloon = Some(shared);
    }
    let channel = match &config.vsock {
        Some(vc) => Some(guest_channel::wire(
            vc,
            inp.vm,
            &mut mmio,
            inp.guest_mem.clone(),
        )?),
        None => None,
    };
    let virtio_mem =
        virtio_mem::wire(config, inp.vm, &mut mmio, &inp.guest_mem, inp.next_kvm_slot)?;
    // The virtio-mem region took one KVM slot; hot-added slots follow.
    let next_kvm_slot = inp.next_kvm_slot + u32::from(virtio_mem.is_some());
    let platform = if config.acpi {
        Some(acpi_platform::wire(
            config.hotplug.as_ref(),
            WiringInputs {
                vm: inp.vm,
                mem: inp.mem,
                guest_mem: inp.guest_mem.clone(),
                mmio: &mut mmio,
                pio: &mut pio,
                off_evt: inp.reset_evt,
                next_kvm_slot,
                vcpus: config.vcpus,
                memory_mib: config.memory_mib,
            },
        )?)
    } else {
        None
    };
    let boot = BootInfo {
        // Without ACPI tables the guest learns of virtio devices here.
        cmdline_args: if platform.is_none() {
            mmio.cmdline_args()
        } else {
            Vec::new()
        },
        acpi_rsdp: platform.as_ref().map(|p| p.rsdp),
    };
    let (virtio_mem_handler, virtio_mem) = match virtio_mem {
        Some(p) => (Some(p.handler), Some(p.shared)),
        None => (None, None),
    };
    Ok(Devices {
        pio: Arc::new(pio),
        mmio: Arc::new(mmio.into_bus()),
        console,
        balloon_handler,
        balloon,
        channel,
        hotplug: platform.and_then(|p| p.hotplug),
        virtio_mem_handler,
        virtio_mem,
        boot,
    })
}
