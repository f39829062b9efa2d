//! One vsock stream connection: its state and credit flow control
//! (virtio 1.x §5.10.6.3). Pure: the device turns [`Reply`]s into packets
//! and moves the bytes.
//!
//! Credit: each side advertises `buf_alloc` (its receive buffer) and
//! `fwd_cnt` (bytes it has consumed). A sender may have at most
//! `peer_buf_alloc - (tx_cnt - peer_fwd_cnt)` bytes in flight; all counters
//! wrap at 2^32.

use super::packet::{Header, Op};

/// Shutdown flag: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// Shutdown flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The host sent REQUEST and waits for RESPONSE.
    Connecting,
    /// Data may flow.
    Established,
    /// The guest shut down one or both directions (flags as received).
    PeerShutdown(u32),
    /// Finished; drop it.
    Closed,
}

/// What the device must send back to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Accept a guest's connection request.
    Response,
    /// Reset the connection.
    Rst,
    /// Tell the guest our credit.
    CreditUpdate,
}

/// Why a guest packet breaks the connection (it is then reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// More data than the credit we gave.
    #[error("guest sent {len} bytes with only {credit} bytes of credit")]
    CreditOverrun {
        /// Bytes sent.
        len: u32,
        /// Credit left.
        credit: u32,
    },
    /// A packet that makes no sense in the current state.
    #[error("{op:?} not expected in state {state:?}")]
    Unexpected {
        /// The operation.
        op: Op,
        /// The state.
        state: State,
    },
}

/// A connection between a guest port and a host socket.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Current state.
    pub state: State,
    buf_alloc: u32,
    fwd_cnt: u32,
    rx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
    last_advertised_fwd: u32,
}

impl Connection {
    fn new(state: State, buf_alloc: u32) -> Self {
        Self {
            state,
            buf_alloc,
            fwd_cnt: 0,
            rx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            last_advertised_fwd: 0,
        }
    }

    /// A connection the guest asked for with `request`; answer with
    /// [`Reply::Response`].
    pub fn accept(request: &Header, buf_alloc: u32) -> (Self, Reply) {
        let mut c = Self::new(State::Established, buf_alloc);
        c.peer_buf_alloc = request.buf_alloc;
        c.peer_fwd_cnt = request.fwd_cnt;
        (c, Reply::Response)
    }

    /// A connection the host asked for (it has sent REQUEST).
    pub fn connecting(buf_alloc: u32) -> Self {
        Self::new(State::Connecting, buf_alloc)
    }

    /// Our receive buffer and consumed count, for outgoing headers.
    pub fn credit_fields(&self) -> (u32, u32) {
        (self.buf_alloc, self.fwd_cnt)
    }

    /// Bytes we may still send to the guest.
    pub fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .wrapping_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    /// Bytes the guest may still send us.
    pub fn our_credit(&self) -> u32 {
        self.buf_alloc
            .wrapping_sub(self.rx_cnt.wrapping_sub(self.fwd_cnt))
    }

    /// Handles a packet from the guest (header already validated); on
    /// error the device must reset the connection.
    pub fn on_guest_packet(&mut self, h: &Header) -> Result<Option<Reply>, ConnError> {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = h.fwd_cnt;
        let unexpected = |s: State| ConnError::Unexpected { op: h.op, state: s };
        match (h.op, self.state) {
            (Op::Response, State::Connecting) => {
                self.state = State::Established;
                Ok(None)
            }
            (Op::Rw, State::Established) | (Op::Rw, State::PeerShutdown(_)) => {
                let credit = self.our_credit();
                if h.len > credit {
                    return Err(ConnError::CreditOverrun { len: h.len, credit });
                }
                self.rx_cnt = self.rx_cnt.wrapping_add(h.len);
                Ok(None)
            }
            (Op::CreditUpdate, State::Established | State::PeerShutdown(_)) => Ok(None),
            (Op::CreditRequest, State::Established | State::PeerShutdown(_)) => {
                self.last_advertised_fwd = self.fwd_cnt;
                Ok(Some(Reply::CreditUpdate))
            }
            (Op::Shutdown, State::Established | State::PeerShutdown(_)) => {
                let prev = match self.state {
                    State::PeerShutdown(f) => f,
                    _ => 0,
                };
                let flags = prev | (h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND));
                if flags == SHUTDOWN_RCV | SHUTDOWN_SEND {
                    self.state = State::Closed;
                    Ok(Some(Reply::Rst))
                } else {
                    self.state = State::PeerShutdown(flags);
                    Ok(None)
                }
            }
            (Op::Rst, _) => {
                self.state = State::Closed;
                Ok(None)
            }
            (_, s) => Err(unexpected(s)),
        }
    }

    /// Records `n` bytes sent to the guest; `n` must not exceed
    /// [`Self::peer_credit`] (the device checks before sending).
    pub fn record_sent(&mut self, n: u32) {
        self.tx_cnt = self.tx_cnt.wrapping_add(n);
    }

    /// Records `n` received bytes handed to the host socket; returns
    /// whether the guest should be told (half the buffer freed since the
    /// last update).
    pub fn record_forwarded(&mut self, n: u32) -> bool {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n);
        if self.fwd_cnt.wrapping_sub(self.last_advertised_fwd) >= self.buf_alloc / 2 {
            self.last_advertised_fwd = self.fwd_cnt;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::vsock::packet::HOST_CID;

    fn h(op: Op, len: u32, flags: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 5100,
            len,
            op,
            flags,
            buf_alloc,
            fwd_cnt,
        }
    }

    #[test]
    fn guest_connects_and_sends_within_credit() {
        let (mut c, reply) = Connection::accept(&h(Op::Request, 0, 0, 4096, 0), 1000);
        assert_eq!(reply, Reply::Response);
        assert_eq!(c.peer_credit(), 4096);
        assert_eq!(c.on_guest_packet(&h(Op::Rw, 600, 0, 4096, 0)), Ok(None));
        assert_eq!(c.our_credit(), 400);
        assert_eq!(
            c.on_guest_packet(&h(Op::Rw, 500, 0, 4096, 0)),
            Err(ConnError::CreditOverrun {
                len: 500,
                credit: 400
            })
        );
        assert!(c.record_forwarded(600), "more than half the buffer freed");
        assert_eq!(c.our_credit(), 1000);
        assert_eq!(c.credit_fields(), (1000, 600));
    }

    #[test]
    fn peer_credit_wraps_and_follows_updates() {
        let (mut c, _) = Connection::accept(&h(Op::Request, 0, 0, 100, u32::MAX - 10), 1000);
        c.tx_cnt = u32::MAX - 10;
        c.record_sent(50); // crosses the wrap
        assert_eq!(c.peer_credit(), 50);
        c.on_guest_packet(&h(Op::CreditUpdate, 0, 0, 100, 39))
            .expect("update");
        assert_eq!(c.peer_credit(), 100);
    }

    #[test]
    fn credit_request_shutdown_and_reset() {
        let (mut c, _) = Connection::accept(&h(Op::Request, 0, 0, 100, 0), 1000);
        assert_eq!(
            c.on_guest_packet(&h(Op::CreditRequest, 0, 0, 100, 0)),
            Ok(Some(Reply::CreditUpdate))
        );
        assert_eq!(
            c.on_guest_packet(&h(Op::Shutdown, 0, SHUTDOWN_SEND, 100, 0)),
            Ok(None)
        );
        assert_eq!(c.state, State::PeerShutdown(SHUTDOWN_SEND));
        assert_eq!(
            c.on_guest_packet(&h(Op::Shutdown, 0, SHUTDOWN_RCV, 100, 0)),
            Ok(Some(Reply::Rst))
        );
        assert_eq!(c.state, State::Closed);
    }

    #[test]
    fn host_initiated_connection_and_unexpected_packets() {
        let mut c = Connection::connecting(1000);
        assert!(matches!(
            c.on_guest_packet(&h(Op::Rw, 1, 0, 100, 0)),
            Err(ConnError::Unexpected { .. })
        ));
        assert_eq!(c.on_guest_packet(&h(Op::Response, 0, 0, 100, 0)), Ok(None));
        assert_eq!(c.state, State::Established);
        assert!(matches!(
            c.on_guest_packet(&h(Op::Request, 0, 0, 100, 0)),
            Err(ConnError::Unexpected { .. })
        ));
        assert_eq!(c.on_guest_packet(&h(Op::Rst, 0, 0, 100, 0)), Ok(None));
        assert_eq!(c.state, State::Closed);
    }
}
