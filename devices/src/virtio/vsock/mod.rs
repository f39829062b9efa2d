//! virtio-vsock (device type 19) in user space, with the host side on Unix
//! domain sockets in Firecracker's convention (see `docs/vsock.md`):
//!
//! - a guest connection to host CID 2 port P is forwarded to the Unix
//!   socket `<uds>_P`;
//! - a host client that connects to `<uds>` and writes `CONNECT <port>\n`
//!   reaches a guest listener on that port, after an `OK <local port>\n`.
//!
//! Pieces: [`packet`] (the header), [`connection`] (state and credit),
//! `device` (the virtio side), `tx` (guest to host), `rx` (host to guest),
//! `host` (the Unix sockets), `stream` (one connection's host socket and
//! buffers), `watch` (which host fds the event loop watches) and
//! `event_handler`. A malformed packet resets at most its connection,
//! never the VMM.

pub mod connection;
mod device;
mod event_handler;
mod host;
pub mod packet;
mod rx;
mod shared;
mod stream;
mod tx;
mod uds;
mod watch;

#[cfg(test)]
mod test_driver;
#[cfg(test)]
mod tests;

pub use device::Vsock;
pub use event_handler::VsockHandler;
pub use shared::{VsockShared, VsockStatus};

/// Size offered for each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue (device to driver).
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue (driver to device).
pub const TX_QUEUE: usize = 1;
/// Index of the event queue (transport events; memtide sends none).
pub const EVENT_QUEUE: usize = 2;
/// Number of queues.
pub const NUM_QUEUES: usize = 3;
/// Receive buffer memtide advertises per connection (the credit a guest
/// gets), bytes.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Most connections open at once; further requests are reset.
pub const MAX_CONNECTIONS: usize = 128;
/// Most host clients still writing their `CONNECT` line.
pub const MAX_PENDING_CLIENTS: usize = 32;
/// Longest `CONNECT <port>\n` line accepted, newline included.
pub const MAX_CONNECT_LINE: usize = 32;
/// How long a host client may take to send its `CONNECT` line before it
/// may be dropped to make room for others.
pub const CONNECT_LINE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// First local port of host-initiated connections.
pub const FIRST_EPHEMERAL_PORT: u32 = 1 << 30;
/// Control packets queued for the guest before the device stops reading
/// the transmit queue until the guest gives receive buffers.
pub const MAX_PENDING_CONTROL: usize = 512;

/// Lowest CID a guest may have (0, 1 and 2 are reserved).
pub const MIN_GUEST_CID: u64 = 3;

impl From<memtide_uds::BindError> for VsockError {
    fn from(e: memtide_uds::BindError) -> Self {
        use memtide_uds::BindError;
        match e {
            BindError::InUse(path) => Self::InUse(path),
            BindError::NotASocket(path) => Self::NotASocket(path),
            BindError::Bind { path, source } | BindError::Permissions { path, source } => {
                Self::Listen { path, source }
            }
        }
    }
}

/// Errors from building the device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// A reserved or out-of-range guest CID.
    #[error("guest CID {0} is invalid: it must be 3 or more and below 2^32 - 1")]
    InvalidCid(u64),
    /// The shared state was made for another CID.
    #[error("shared state is for guest CID {shared}, the device for {device}")]
    CidMismatch {
        /// The device's CID.
        device: u64,
        /// The shared state's CID.
        shared: u64,
    },
    /// The socket path leaves no room for `_<port>` in a Unix address.
    #[error("socket path {0:?} is too long for a Unix socket address with a port suffix")]
    PathTooLong(std::path::PathBuf),
    /// Something other than a socket sits at the listener path.
    #[error("{0:?} exists and is not a socket; not removing it")]
    NotASocket(std::path::PathBuf),
    /// Another process (another VM) listens on the socket path.
    #[error("{0:?} is in use by another process (another memtide?); choose another --vsock-uds")]
    InUse(std::path::PathBuf),
    /// The host-side listener could not be set up.
    #[error("cannot listen on {path:?}: {source}")]
    Listen {
        /// The socket path.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No eventfd.
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
}
