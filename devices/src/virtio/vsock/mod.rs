//! virtio-vsock in user space (groundwork): the packet header and the
//! per-connection state machine with credit flow control. The device,
//! its queues and the Unix-socket host side (Firecracker's convention:
//! guest port P -> `<uds>_P`, host `CONNECT <port>\n` -> guest listener)
//! build on these; see `docs/vsock.md`.

pub mod connection;
pub mod packet;
