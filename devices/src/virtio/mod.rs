//! virtio devices on the MMIO transport (virtio 1.x, "modern" MMIO v2).

pub mod balloon;
pub mod interrupt;
pub mod mem;
pub mod mmio;
pub mod vsock;

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

pub use interrupt::Interrupt;

/// Guest memory as virtio devices see it: swappable, so that memory added
/// later (hot-add) becomes visible to devices.
pub type GuestMemory = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// Feature bit: the device conforms to virtio 1.x.
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// Device type of the memory balloon.
pub const TYPE_BALLOON: u32 = 5;
/// Device type of the socket device (virtio-vsock).
pub const TYPE_VSOCK: u32 = 19;
/// Device type of the memory device (virtio-mem).
pub const TYPE_MEM: u32 = 24;

/// Errors a device reports when the driver activates it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActivateError {
    /// The driver set up fewer queues than the negotiated features need.
    #[error("device needs {needed} queues, the driver enabled {got}")]
    QueueCount {
        /// Queues required.
        needed: usize,
        /// Queues ready.
        got: usize,
    },
    /// A queue the negotiated features need was not made ready.
    #[error("queue {index} is needed but the driver did not make it ready")]
    QueueNotReady {
        /// The queue's transport index.
        index: usize,
    },
    /// The device could not signal its event loop.
    #[error("cannot wake the device's event loop")]
    Wake,
}

/// What a device must provide to sit behind the MMIO transport.
pub trait VirtioDevice: Send {
    /// The virtio device type.
    fn device_type(&self) -> u32;
    /// Maximum size of each queue the device can offer.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Feature bits the device offers.
    fn avail_features(&self) -> u64;
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the queues the driver made ready.
    fn activate(
        &mut self,
        acked_features: u64,
        queues: Vec<(usize, Queue)>,
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError>;
    /// Returns the device to its initial state (driver wrote status 0).
    fn reset(&mut self);
}
