//! The channel to the guest memory agent: a virtio-vsock device whose host
//! side is Unix sockets (`--vsock-uds PATH`), and the reader that takes the
//! agent's reports from `PATH_<agent port>`.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use memtide_balancer::reader::{self, AgentReports};
use memtide_devices::bus::lock;
use memtide_devices::virtio::vsock::{Vsock, VsockHandler, VsockShared};
use memtide_devices::virtio::{GuestMemory, VirtioDevice};

use super::mmio::{MmioDeviceError, MmioDeviceManager};
use crate::config::VsockConfig;

/// Errors from setting up the guest channel.
#[derive(Debug, thiserror::Error)]
pub enum GuestChannelError {
    /// The virtio-vsock device.
    #[error("virtio-vsock: {0}")]
    Vsock(#[from] memtide_devices::virtio::vsock::VsockError),
    /// Its place on the MMIO bus.
    #[error(transparent)]
    Mmio(#[from] MmioDeviceError),
    /// The guest agent's report reader.
    #[error(transparent)]
    AgentReader(#[from] reader::ReaderError),
}

/// What the VM keeps of the channel.
#[derive(Debug)]
pub struct GuestChannel {
    /// The device's event-loop side.
    pub handler: VsockHandler,
    /// Device state and counters, for the API.
    pub vsock: Arc<VsockShared>,
    /// The agent's latest report, for the API and the balancer.
    pub reports: Arc<AgentReports>,
}

/// Places the vsock device on the MMIO bus and starts the report reader.
pub fn wire(
    config: &VsockConfig,
    vm: &VmFd,
    mmio: &mut MmioDeviceManager,
    guest_mem: GuestMemory,
) -> Result<GuestChannel, GuestChannelError> {
    let shared = Arc::new(VsockShared::new(config.guest_cid));
    let vsock = Vsock::new(config.guest_cid, config.uds_path.clone(), shared.clone())?;
    let vsock = Arc::new(Mutex::new(vsock));
    let device: Arc<Mutex<dyn VirtioDevice>> = vsock.clone();
    let (slot, evts) = mmio.add(vm, device, guest_mem)?;
    log::info!(
        "virtio-vsock at {:#x}, IRQ {}, guest CID {}, host sockets {}",
        slot.base,
        slot.irq,
        config.guest_cid,
        config.uds_path.display()
    );
    lock(&vsock).set_queue_evts(evts);
    let reports = Arc::new(AgentReports::new());
    let path = reader::start(&config.uds_path, config.agent_port, reports.clone())?;
    log::info!("guest agent reports are read from {}", path.display());
    Ok(GuestChannel {
        handler: VsockHandler::new(vsock),
        vsock: shared,
        reports,
    })
}
