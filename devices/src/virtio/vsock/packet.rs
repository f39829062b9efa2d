//! The virtio-vsock packet header (virtio 1.x §5.10.6), parsed and checked.

/// Size of the header on the wire.
pub const HEADER_LEN: usize = 44;
/// The host's CID.
pub const HOST_CID: u64 = 2;
/// Largest payload memtide accepts in one packet.
pub const MAX_PAYLOAD: u32 = 64 * 1024;
/// The only socket type virtio-vsock defines for streams.
pub const TYPE_STREAM: u16 = 1;

/// Packet operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Connect request.
    Request = 1,
    /// Connect accepted.
    Response = 2,
    /// Reset.
    Rst = 3,
    /// Shutdown (flags say which directions).
    Shutdown = 4,
    /// Data.
    Rw = 5,
    /// Credit update.
    CreditUpdate = 6,
    /// Credit request.
    CreditRequest = 7,
}

impl Op {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// Why a header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("header is {0} bytes, needs {HEADER_LEN}")]
    Short(usize),
    /// An operation code virtio-vsock does not define.
    #[error("unknown operation {0}")]
    BadOp(u16),
    /// A socket type other than stream.
    #[error("unsupported socket type {0}")]
    BadType(u16),
    /// A payload length over the limit or on a non-data packet.
    #[error("bad payload length {len} for {op:?}")]
    BadLen {
        /// The operation.
        op: Op,
        /// The length claimed.
        len: u32,
    },
    /// A source CID that is not the guest's.
    #[error("source CID {got} is not the guest's ({expected})")]
    BadSrcCid {
        /// The CID claimed.
        got: u64,
        /// The guest's CID.
        expected: u64,
    },
    /// A destination other than the host (guest-to-guest is not offered).
    #[error("destination CID {0} is not the host")]
    BadDstCid(u64),
    /// The header claims more payload than the buffer holds.
    #[error("header claims {len} payload bytes, the buffer holds {available}")]
    Truncated {
        /// The length claimed.
        len: u32,
        /// Payload bytes present after the header.
        available: usize,
    },
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Operation.
    pub op: Op,
    /// Operation flags (shutdown directions).
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed so far.
    pub fwd_cnt: u32,
}

/// The ports and raw operation of a header too broken to parse, so that
/// its connection can still be reset: `(src_port, dst_port, op)`, or
/// `None` for fewer than [`HEADER_LEN`] bytes.
pub fn raw_ports_and_op(b: &[u8]) -> Option<(u32, u32, u16)> {
    if b.len() < HEADER_LEN {
        return None;
    }
    Some((
        u32_at(b, 16),
        u32_at(b, 20),
        u16::from_le_bytes([b[30], b[31]]),
    ))
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl Header {
    /// Parses and validates a header sent by the guest with CID `guest_cid`.
    pub fn parse_from_guest(b: &[u8], guest_cid: u64) -> Result<Self, PacketError> {
        if b.len() < HEADER_LEN {
            return Err(PacketError::Short(b.len()));
        }
        let ty = u16::from_le_bytes([b[28], b[29]]);
        let op_raw = u16::from_le_bytes([b[30], b[31]]);
        let op = Op::from_u16(op_raw).ok_or(PacketError::BadOp(op_raw))?;
        if ty != TYPE_STREAM {
            return Err(PacketError::BadType(ty));
        }
        let h = Header {
            src_cid: u64_at(b, 0),
            dst_cid: u64_at(b, 8),
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            op,
            flags: u32_at(b, 32),
            buf_alloc: u32_at(b, 36),
            fwd_cnt: u32_at(b, 40),
        };
        if h.src_cid != guest_cid {
            return Err(PacketError::BadSrcCid {
                got: h.src_cid,
                expected: guest_cid,
            });
        }
        if (op != Op::Rw && h.len != 0) || h.len > MAX_PAYLOAD {
            return Err(PacketError::BadLen { op, len: h.len });
        }
        Ok(h)
    }

    /// Parses a whole packet from the guest (`b` is the header followed
    /// by what the guest put after it): the header checks of
    /// [`Self::parse_from_guest`], plus a host destination and a buffer
    /// that holds the whole payload. Returns the header and its payload.
    pub fn parse_packet(b: &[u8], guest_cid: u64) -> Result<(Self, &[u8]), PacketError> {
        let h = Self::parse_from_guest(b, guest_cid)?;
        if h.dst_cid != HOST_CID {
            return Err(PacketError::BadDstCid(h.dst_cid));
        }
        let available = b.len() - HEADER_LEN;
        let len = h.len as usize;
        if len > available {
            return Err(PacketError::Truncated {
                len: h.len,
                available,
            });
        }
        Ok((h, &b[HEADER_LEN..HEADER_LEN + len]))
    }

    /// The header on the wire.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&TYPE_STREAM.to_le_bytes());
        b[30..32].copy_from_slice(&(self.op as u16).to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(op: Op, len: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1234,
            dst_port: 5100,
            len,
            op,
            flags: 0,
            buf_alloc: 65536,
            fwd_cnt: 7,
        }
    }

    #[test]
    fn round_trip() {
        let h = header(Op::Rw, 100);
        assert_eq!(Header::parse_from_guest(&h.to_bytes(), 3), Ok(h));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let good = header(Op::Request, 0).to_bytes();
        assert_eq!(
            Header::parse_from_guest(&good[..10], 3),
            Err(PacketError::Short(10))
        );
        let mut b = good;
        b[30] = 9;
        assert_eq!(Header::parse_from_guest(&b, 3), Err(PacketError::BadOp(9)));
        let mut b = good;
        b[28] = 2; // SOCK_SEQPACKET
        assert_eq!(
            Header::parse_from_guest(&b, 3),
            Err(PacketError::BadType(2))
        );
        assert!(matches!(
            Header::parse_from_guest(&header(Op::Request, 5).to_bytes(), 3),
            Err(PacketError::BadLen { .. })
        ));
        assert!(matches!(
            Header::parse_from_guest(&header(Op::Rw, MAX_PAYLOAD + 1).to_bytes(), 3),
            Err(PacketError::BadLen { .. })
        ));
        assert!(matches!(
            Header::parse_from_guest(&good, 4),
            Err(PacketError::BadSrcCid {
                got: 3,
                expected: 4
            })
        ));
    }

    #[test]
    fn whole_packets_need_a_host_destination_and_their_payload() {
        let h = header(Op::Rw, 5);
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(b"hello, and more");
        let (parsed, payload) = Header::parse_packet(&b, 3).expect("valid");
        assert_eq!(parsed, h);
        assert_eq!(payload, b"hello", "bytes past len are not payload");
        assert_eq!(
            Header::parse_packet(&b[..HEADER_LEN + 3], 3),
            Err(PacketError::Truncated {
                len: 5,
                available: 3
            })
        );
        let mut other = h;
        other.dst_cid = 5;
        assert_eq!(
            Header::parse_packet(&other.to_bytes(), 3),
            Err(PacketError::BadDstCid(5))
        );
        assert_eq!(Header::parse_packet(&b[..7], 3), Err(PacketError::Short(7)));
    }

    #[test]
    fn raw_ports_survive_a_bad_header() {
        let mut b = header(Op::Request, 0).to_bytes();
        b[30] = 99;
        assert_eq!(raw_ports_and_op(&b), Some((1234, 5100, 99)));
        assert_eq!(raw_ports_and_op(&b[..43]), None);
    }
}
