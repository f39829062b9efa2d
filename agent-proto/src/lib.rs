//! The guest memory agent's report and its wire encoding, shared by the
//! agent inside the guest (`memtide-agent`, in `memtide-guest`) and the host
//! side that reads the reports (the balancer).
//!
//! A report travels as one length-framed message on a vsock stream: a
//! `u32` little-endian payload length, then the payload, which starts with
//! the `u16` wire version. [`encode`] builds a whole frame,
//! [`decode_payload`] reads one payload, and [`FrameReader`] cuts frames
//! out of a byte stream that arrives in arbitrary pieces. The byte layout
//! is in `docs/agent.md` and in [`wire`].

mod frame_reader;
pub mod guest_command;
mod report;
pub mod signal;
pub mod wire;

pub use frame_reader::FrameReader;
pub use report::{GuestReport, MemoryPressure};
pub use wire::{decode_payload, encode, DecodeError};

/// The wire version this crate writes, and the only one it reads.
pub const VERSION: u16 = 1;

/// The vsock port on the host (CID 2) the agent sends its reports to.
pub const DEFAULT_PORT: u32 = 5100;

/// The largest payload length a frame may announce (the 4-byte length
/// prefix not counted). A longer announcement means the stream is corrupt
/// or hostile; the reader then gives up on the connection.
pub const MAX_FRAME_LEN: usize = 4096;
