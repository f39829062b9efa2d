//! virtio-mem (device type 24): guest memory plugged and unplugged in
//! device blocks (2 MiB by default) of one device region.
//!
//! The host sets a requested size ([`VirtioMemShared::set_requested_mib`])
//! and raises a configuration-change interrupt; the guest driver then sends
//! PLUG or UNPLUG requests for block ranges until its plugged size matches.
//! memtide checks every request against the region and a bitmap of plugged
//! blocks ([`bitmap`], [`handling`]), answers ACK, NACK or ERROR
//! ([`request`]), and gives unplugged blocks back to the host with
//! `madvise(MADV_DONTNEED)` ([`host`]). `VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE`
//! is not offered: unplugged blocks stay mapped (reading zeros).

pub mod bitmap;
mod device;
mod event_handler;
pub mod handling;
pub mod host;
pub mod request;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use device::VirtioMem;
pub use event_handler::VirtioMemHandler;
use vmm_sys_util::eventfd::EventFd;

/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 128;
/// Default device block size, MiB.
pub const DEFAULT_BLOCK_MIB: u64 = 2;
const MIB: u64 = 1 << 20;

/// Host-side counters, for the API.
#[derive(Debug, Default)]
pub struct VirtioMemCounters {
    /// PLUG requests.
    pub plug_requests: AtomicU64,
    /// UNPLUG requests.
    pub unplug_requests: AtomicU64,
    /// UNPLUG_ALL requests.
    pub unplug_all_requests: AtomicU64,
    /// STATE requests.
    pub state_requests: AtomicU64,
    /// Requests answered NACK.
    pub nacks: AtomicU64,
    /// Requests answered ERROR (invalid range, wrong block state, unknown
    /// type, malformed).
    pub errors: AtomicU64,
    /// Chains that were not a request the device could read or answer
    /// (short request, no room for the response, unreadable memory, unknown
    /// request type).
    pub malformed_requests: AtomicU64,
    /// `madvise(MADV_DONTNEED)` calls for unplugged blocks.
    pub discard_calls: AtomicU64,
    /// Those that failed.
    pub discard_errors: AtomicU64,
    /// Nanoseconds spent in those calls.
    pub discard_ns: AtomicU64,
}

/// Where the device region lies and how it is cut into blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// Guest-physical base.
    pub base: u64,
    /// Size in bytes (a multiple of `block_size`).
    pub size: u64,
    /// Block size in bytes (a power of two).
    pub block_size: u64,
}

/// Why a requested size was refused (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum RequestedSizeError {
    /// Not a whole number of blocks.
    #[error("{requested_mib} MiB is not a multiple of the {block_mib} MiB block size")]
    NotBlockMultiple {
        /// The request.
        requested_mib: u64,
        /// The block size.
        block_mib: u64,
    },
    /// More than the device region.
    #[error("{requested_mib} MiB exceeds the virtio-mem region of {region_mib} MiB")]
    AboveRegion {
        /// The request.
        requested_mib: u64,
        /// The region size.
        region_mib: u64,
    },
    /// The guest driver has not brought the device up.
    #[error("the guest's virtio-mem driver has not activated the device yet")]
    NotActivated,
    /// The device's event loop could not be woken.
    #[error("cannot signal the device: {0}")]
    Signal(std::io::Error),
}

/// State shared between the device, its event-loop side and the API.
#[derive(Debug)]
pub struct VirtioMemShared {
    region: RegionInfo,
    requested: AtomicU64,
    plugged: AtomicU64,
    activated: AtomicBool,
    requested_evt: EventFd,
    /// Host-side counters.
    pub counters: VirtioMemCounters,
}

/// A snapshot for `GET /memory/virtio-mem`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMemStatus {
    /// The region.
    pub region: RegionInfo,
    /// Requested size, bytes.
    pub requested: u64,
    /// Plugged size, bytes.
    pub plugged: u64,
    /// Whether the guest driver brought the device up.
    pub driver_ready: bool,
}

impl VirtioMemShared {
    /// Shared state for a device over `region`, nothing requested.
    pub fn new(region: RegionInfo) -> std::io::Result<Self> {
        Ok(Self {
            region,
            requested: AtomicU64::new(0),
            plugged: AtomicU64::new(0),
            activated: AtomicBool::new(false),
            requested_evt: EventFd::new(libc::EFD_NONBLOCK)?,
            counters: VirtioMemCounters::default(),
        })
    }

    /// The region.
    pub fn region(&self) -> RegionInfo {
        self.region
    }

    /// Asks the guest for `mib` MiB plugged; refused, changing nothing,
    /// unless a whole number of blocks within the region, with the driver
    /// up. The device raises a configuration-change interrupt.
    pub fn set_requested_mib(&self, mib: u64) -> Result<(), RequestedSizeError> {
        let region_mib = self.region.size / MIB;
        let bytes = mib
            .checked_mul(MIB)
            .filter(|b| *b <= self.region.size)
            .ok_or(RequestedSizeError::AboveRegion {
                requested_mib: mib,
                region_mib,
            })?;
        if bytes % self.region.block_size != 0 {
            return Err(RequestedSizeError::NotBlockMultiple {
                requested_mib: mib,
                block_mib: self.region.block_size / MIB,
            });
        }
        if !self.activated.load(Ordering::SeqCst) {
            return Err(RequestedSizeError::NotActivated);
        }
        self.requested.store(bytes, Ordering::SeqCst);
        self.requested_evt
            .write(1)
            .map_err(RequestedSizeError::Signal)
    }

    /// Requested size, bytes.
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::SeqCst)
    }

    /// Plugged size, bytes.
    pub fn plugged(&self) -> u64 {
        self.plugged.load(Ordering::SeqCst)
    }

    /// The current status.
    pub fn status(&self) -> VirtioMemStatus {
        VirtioMemStatus {
            region: self.region,
            requested: self.requested(),
            plugged: self.plugged(),
            driver_ready: self.activated.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> VirtioMemShared {
        VirtioMemShared::new(RegionInfo {
            base: 0x2_0000_0000,
            size: 512 * MIB,
            block_size: 2 * MIB,
        })
        .expect("shared")
    }

    #[test]
    fn requested_sizes_are_checked_before_anything_changes() {
        let s = shared();
        assert!(matches!(
            s.set_requested_mib(128),
            Err(RequestedSizeError::NotActivated)
        ));
        s.activated.store(true, Ordering::SeqCst);
        assert!(matches!(
            s.set_requested_mib(3),
            Err(RequestedSizeError::NotBlockMultiple { .. })
        ));
        assert!(matches!(
            s.set_requested_mib(514),
            Err(RequestedSizeError::AboveRegion { .. })
        ));
        assert!(matches!(
            s.set_requested_mib(u64::MAX),
            Err(RequestedSizeError::AboveRegion { .. })
        ));
        assert_eq!(s.requested(), 0);
        s.set_requested_mib(512).expect("the whole region");
        assert_eq!(s.requested(), 512 * MIB);
        assert_eq!(s.requested_evt.read().expect("signalled"), 1);
        s.set_requested_mib(0).expect("nothing");
        assert_eq!(s.status().requested, 0);
    }
}
