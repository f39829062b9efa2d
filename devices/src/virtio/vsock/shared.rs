//! State the vsock device shares with the control API: counters and
//! whether the driver is up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters and flags, updated by the device and read by the API.
#[derive(Debug)]
pub struct VsockShared {
    guest_cid: u64,
    pub(super) driver_ready: AtomicBool,
    pub(super) connections: AtomicU64,
    pub(super) tx_packets: AtomicU64,
    pub(super) rx_packets: AtomicU64,
    pub(super) tx_bytes: AtomicU64,
    pub(super) rx_bytes: AtomicU64,
    pub(super) connections_opened: AtomicU64,
    pub(super) connections_reset: AtomicU64,
    pub(super) malformed_packets: AtomicU64,
}

/// A snapshot for `GET /vsock`. "tx" is guest to host (the transmit
/// queue), "rx" host to guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VsockStatus {
    /// Whether the guest driver brought the device up.
    pub driver_ready: bool,
    /// The guest's CID.
    pub guest_cid: u64,
    /// Connections open now (including host-initiated ones the guest has
    /// not accepted yet).
    pub connections: u64,
    /// Packets the guest sent (valid or not).
    pub tx_packets: u64,
    /// Packets given to the guest.
    pub rx_packets: u64,
    /// Payload bytes written to host sockets.
    pub tx_bytes: u64,
    /// Payload bytes given to the guest.
    pub rx_bytes: u64,
    /// Connections established, in either direction.
    pub connections_opened: u64,
    /// Connections refused or ended by a reset rather than an orderly
    /// shutdown (no host socket, no guest listener, credit overrun,
    /// protocol error, host socket error, a reset from either side).
    pub connections_reset: u64,
    /// Transmit chains refused as malformed (short or broken header,
    /// wrong descriptor direction, length beyond the buffer, wrong CIDs).
    pub malformed_packets: u64,
}

impl VsockShared {
    /// Creates zeroed state for the guest with CID `guest_cid`.
    pub fn new(guest_cid: u64) -> Self {
        Self {
            guest_cid,
            driver_ready: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            rx_packets: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            connections_opened: AtomicU64::new(0),
            connections_reset: AtomicU64::new(0),
            malformed_packets: AtomicU64::new(0),
        }
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The current status.
    pub fn status(&self) -> VsockStatus {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        VsockStatus {
            driver_ready: self.driver_ready.load(Ordering::SeqCst),
            guest_cid: self.guest_cid,
            connections: get(&self.connections),
            tx_packets: get(&self.tx_packets),
            rx_packets: get(&self.rx_packets),
            tx_bytes: get(&self.tx_bytes),
            rx_bytes: get(&self.rx_bytes),
            connections_opened: get(&self.connections_opened),
            connections_reset: get(&self.connections_reset),
            malformed_packets: get(&self.malformed_packets),
        }
    }

    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
