//! The wire format of virtio-mem requests and responses (virtio 1.2
//! §5.15.6), parsed and encoded without touching guest memory.
//!
//! ```text
//! request  (24 bytes): le16 type, le16 padding[3], le64 addr, le16 nb_blocks, le16 padding[3]
//! response (10 bytes): le16 type, le16 padding[3], le16 state
//! ```

/// Size of a request (`struct virtio_mem_req`).
pub const REQUEST_SIZE: usize = 24;
/// Size of a response (`struct virtio_mem_resp`).
pub const RESPONSE_SIZE: usize = 10;

/// Request type: plug memory blocks.
pub const REQ_PLUG: u16 = 0;
/// Request type: unplug memory blocks.
pub const REQ_UNPLUG: u16 = 1;
/// Request type: unplug all memory blocks.
pub const REQ_UNPLUG_ALL: u16 = 2;
/// Request type: query the state of memory blocks.
pub const REQ_STATE: u16 = 3;

/// A request as the driver sent it (ranges not yet checked against the
/// device: see [`super::bitmap::BlockBitmap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Plug `nb_blocks` blocks from `addr`.
    Plug {
        /// Guest-physical start.
        addr: u64,
        /// Number of device blocks.
        nb_blocks: u16,
    },
    /// Unplug `nb_blocks` blocks from `addr`.
    Unplug {
        /// Guest-physical start.
        addr: u64,
        /// Number of device blocks.
        nb_blocks: u16,
    },
    /// Unplug every block.
    UnplugAll,
    /// The state of `nb_blocks` blocks from `addr`.
    State {
        /// Guest-physical start.
        addr: u64,
        /// Number of device blocks.
        nb_blocks: u16,
    },
}

/// Why a request could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than [`REQUEST_SIZE`] device-readable bytes.
    #[error("request of {0} bytes, {REQUEST_SIZE} needed")]
    Short(usize),
    /// A request type the spec does not define.
    #[error("unknown request type {0}")]
    UnknownType(u16),
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Request {
    /// Parses the first [`REQUEST_SIZE`] bytes of `bytes` (extra bytes
    /// and the padding fields are ignored, as the spec asks).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let Some(b) = bytes.get(..REQUEST_SIZE) else {
            return Err(ParseError::Short(bytes.len()));
        };
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&b[8..16]);
        let addr = u64::from_le_bytes(addr);
        let nb_blocks = le16(b, 16);
        match le16(b, 0) {
            REQ_PLUG => Ok(Self::Plug { addr, nb_blocks }),
            REQ_UNPLUG => Ok(Self::Unplug { addr, nb_blocks }),
            REQ_UNPLUG_ALL => Ok(Self::UnplugAll),
            REQ_STATE => Ok(Self::State { addr, nb_blocks }),
            t => Err(ParseError::UnknownType(t)),
        }
    }
}

/// State of a range of blocks (answer to [`Request::State`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// Every block is plugged.
    Plugged = 0,
    /// Every block is unplugged.
    Unplugged = 1,
    /// Some are plugged, some not.
    Mixed = 2,
}

/// The device's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Done (with the state, for a state request).
    Ack(Option<BlockState>),
    /// Refused for now (e.g. it would plug beyond the requested size); the
    /// driver may retry later.
    Nack,
    /// Busy (memtide never answers this).
    Busy,
    /// An invalid request (bad range, wrong block state).
    Error,
}

impl Response {
    /// The response type field.
    pub fn type_code(self) -> u16 {
        match self {
            Self::Ack(_) => 0,
            Self::Nack => 1,
            Self::Busy => 2,
            Self::Error => 3,
        }
    }

    /// The response's wire bytes.
    pub fn encode(self) -> [u8; RESPONSE_SIZE] {
        let mut out = [0u8; RESPONSE_SIZE];
        out[0..2].copy_from_slice(&self.type_code().to_le_bytes());
        if let Self::Ack(Some(state)) = self {
            out[8..10].copy_from_slice(&(state as u16).to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ty: u16, addr: u64, nb: u16) -> [u8; REQUEST_SIZE] {
        let mut b = [0xaau8; REQUEST_SIZE]; // padding is garbage on purpose
        b[0..2].copy_from_slice(&ty.to_le_bytes());
        b[8..16].copy_from_slice(&addr.to_le_bytes());
        b[16..18].copy_from_slice(&nb.to_le_bytes());
        b
    }

    #[test]
    fn every_request_type_parses_and_padding_is_ignored() {
        let a = 0x1_4000_0000;
        assert_eq!(
            Request::parse(&raw(0, a, 3)),
            Ok(Request::Plug {
                addr: a,
                nb_blocks: 3
            })
        );
        assert_eq!(
            Request::parse(&raw(1, a, 1)),
            Ok(Request::Unplug {
                addr: a,
                nb_blocks: 1
            })
        );
        assert_eq!(Request::parse(&raw(2, a, 7)), Ok(Request::UnplugAll));
        assert_eq!(
            Request::parse(&raw(3, a, 0)),
            Ok(Request::State {
                addr: a,
                nb_blocks: 0
            })
        );
        let mut long = raw(0, a, 1).to_vec();
        long.extend_from_slice(&[1, 2, 3]);
        assert!(Request::parse(&long).is_ok(), "trailing bytes are ignored");
    }

    #[test]
    fn short_and_unknown_requests_are_refused() {
        assert_eq!(Request::parse(&[]), Err(ParseError::Short(0)));
        assert_eq!(
            Request::parse(&raw(0, 0, 1)[..23]),
            Err(ParseError::Short(23))
        );
        assert_eq!(
            Request::parse(&raw(4, 0, 1)),
            Err(ParseError::UnknownType(4))
        );
        assert_eq!(
            Request::parse(&raw(u16::MAX, 0, 1)),
            Err(ParseError::UnknownType(u16::MAX))
        );
    }

    #[test]
    fn responses_encode_type_and_state() {
        assert_eq!(Response::Ack(None).encode(), [0; RESPONSE_SIZE]);
        assert_eq!(
            Response::Ack(Some(BlockState::Mixed)).encode(),
            [0, 0, 0, 0, 0, 0, 0, 0, 2, 0]
        );
        assert_eq!(Response::Nack.encode()[0], 1);
        assert_eq!(Response::Busy.encode()[0], 2);
        assert_eq!(Response::Error.encode(), [3, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
