//! `--virtio-mem-mib`: maps the device region (see `memory::virtio_mem`)
//! and places the virtio-mem device on the virtio-mmio transport.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use memtide_devices::bus::lock;
use memtide_devices::virtio::mem::{VirtioMem, VirtioMemHandler, VirtioMemShared};
use memtide_devices::virtio::VirtioDevice;
use vm_memory::GuestMemoryAtomic;

use super::mmio::{MmioDeviceError, MmioDeviceManager};
use crate::config::VmConfig;
use crate::memory::virtio_mem::{self, VirtioMemError};
use crate::memory::GuestMemoryMmap;

/// Errors from setting up virtio-mem.
#[derive(Debug, thiserror::Error)]
pub enum VirtioMemWiringError {
    /// The region could not be laid out or mapped.
    #[error("virtio-mem: {0}")]
    Region(#[from] VirtioMemError),
    /// The device or its eventfds could not be created.
    #[error("cannot create the virtio-mem device: {0}")]
    Device(std::io::Error),
    /// No window or IRQ for the device.
    #[error(transparent)]
    Mmio(#[from] MmioDeviceError),
}

/// What the VM keeps of virtio-mem.
#[derive(Debug)]
pub struct VirtioMemParts {
    /// The state the API and the balancer use.
    pub shared: Arc<VirtioMemShared>,
    /// The event-loop side.
    pub handler: VirtioMemHandler,
}

/// Maps the region of `config`'s virtio-mem as KVM slot `kvm_slot` and
/// places the device; `None` when `config` has no virtio-mem.
pub fn wire(
    config: &VmConfig,
    vm: &VmFd,
    mmio: &mut MmioDeviceManager,
    guest_mem: &GuestMemoryAtomic<GuestMemoryMmap>,
    kvm_slot: u32,
) -> Result<Option<VirtioMemParts>, VirtioMemWiringError> {
    let Some(vc) = &config.virtio_mem else {
        return Ok(None);
    };
    let region = virtio_mem::region(config.memory_mib, config.hotplug.as_ref(), vc)?;
    virtio_mem::map(vm, guest_mem, region, kvm_slot)?;
    let shared = Arc::new(VirtioMemShared::new(region).map_err(VirtioMemWiringError::Device)?);
    let mut device = VirtioMem::new(shared.clone()).map_err(VirtioMemWiringError::Device)?;
    device.set_populate_on_plug(config.prefault);
    let device = Arc::new(Mutex::new(device));
    let virtio: Arc<Mutex<dyn VirtioDevice>> = device.clone();
    let (slot, evts) = mmio.add(vm, virtio, guest_mem.clone())?;
    if let Some(evt) = evts.into_iter().next() {
        lock(&device).set_queue_evt(evt);
    }
    log::info!(
        "virtio-mem at {:#x}, IRQ {}: region {:#x} + {} MiB, {} MiB blocks",
        slot.base,
        slot.irq,
        region.base,
        region.size >> 20,
        region.block_size >> 20
    );
    Ok(Some(VirtioMemParts {
        shared,
        handler: VirtioMemHandler::new(device),
    }))
}
