//! One connection as the device keeps it: the protocol state
//! ([`Connection`]), the host's Unix stream, bytes on their way to the host,
//! and what the event loop should watch on the stream.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use vmm_sys_util::epoll::EventSet;

use super::connection::{Connection, State, SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::uds;

/// A connection's identity: (host-side port, guest-side port).
pub(super) type ConnKey = (u32, u32);

/// A connection with its host stream.
#[derive(Debug)]
pub(super) struct HostConn {
    /// Protocol state and credit.
    pub(super) conn: Connection,
    /// The host side.
    pub(super) stream: UnixStream,
    /// Bytes for the host not written yet; the first `uncounted` are the
    /// device's own (the `OK` line), the rest came from the guest.
    to_host: Vec<u8>,
    uncounted: usize,
    /// The stream may have data (or an EOF/error) to read.
    pub(super) readable: bool,
    /// The host will send no more; the guest has been told.
    pub(super) host_eof: bool,
    /// Write side of the host stream shut after the guest's SHUTDOWN.
    host_write_shut: bool,
    /// What the event loop watches on the stream now.
    pub(super) registered: Option<EventSet>,
}

impl HostConn {
    /// Wraps a connection and its stream; `registered` is what the event
    /// loop already watches on the stream.
    pub(super) fn new(conn: Connection, stream: UnixStream, registered: Option<EventSet>) -> Self {
        Self {
            conn,
            stream,
            to_host: Vec::new(),
            uncounted: 0,
            readable: false,
            host_eof: false,
            host_write_shut: false,
            registered,
        }
    }

    /// The stream's fd.
    pub(super) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn guest_shutdown_flags(&self) -> u32 {
        match self.conn.state {
            State::PeerShutdown(f) => f,
            State::Closed => SHUTDOWN_RCV | SHUTDOWN_SEND,
            _ => 0,
        }
    }

    /// Whether either side has begun an orderly shutdown.
    pub(super) fn shutting_down(&self) -> bool {
        self.host_eof || self.guest_shutdown_flags() != 0
    }

    /// Whether data from the host may go to the guest now: established,
    /// neither side closed that direction, and the guest has credit left.
    pub(super) fn can_read_host(&self) -> bool {
        let open = matches!(self.conn.state, State::Established | State::PeerShutdown(_));
        open && !self.host_eof
            && self.guest_shutdown_flags() & SHUTDOWN_RCV == 0
            && self.conn.peer_credit() > 0
    }

    /// What the event loop should watch: input while it can go to the
    /// guest (and there are receive buffers), output while bytes wait.
    pub(super) fn interest(&self, rx_starved: bool) -> Option<EventSet> {
        let mut set = EventSet::empty();
        if self.can_read_host() && !rx_starved {
            set |= EventSet::IN;
        }
        if !self.to_host.is_empty() {
            set |= EventSet::OUT;
        }
        (!set.is_empty()).then_some(set)
    }

    /// Bytes waiting for the host socket.
    #[cfg(test)]
    pub(super) fn pending_to_host(&self) -> usize {
        self.to_host.len()
    }

    /// Queues bytes for the host; `from_guest` bytes count towards the
    /// credit the guest gets back once written.
    pub(super) fn queue_to_host(&mut self, bytes: &[u8], from_guest: bool) {
        if !from_guest {
            // Device bytes go before any guest bytes (only the OK line,
            // sent before the guest can send anything).
            let mut v = bytes.to_vec();
            v.append(&mut self.to_host);
            self.to_host = v;
            self.uncounted += bytes.len();
        } else {
            self.to_host.extend_from_slice(bytes);
        }
    }

    /// Writes what the host takes; returns how many guest bytes went out.
    /// Once the guest has shut its sending side and everything is
    /// written, shuts the stream's write side so the host sees EOF.
    pub(super) fn flush(&mut self) -> io::Result<u32> {
        let mut written = 0usize;
        while written < self.to_host.len() {
            match uds::send(&self.stream, &self.to_host[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.to_host.drain(..written);
        let own = written.min(self.uncounted);
        self.uncounted -= own;
        let from_guest = written - own;
        if self.to_host.is_empty()
            && !self.host_write_shut
            && self.guest_shutdown_flags() & SHUTDOWN_SEND != 0
        {
            self.host_write_shut = true;
            // The host may already be gone; its reads see EOF either way.
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        // At most BUF_ALLOC guest bytes are ever pending.
        Ok(u32::try_from(from_guest).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::vsock::packet::{Header, Op, HOST_CID};
    use std::io::Read;

    fn established(buf_alloc: u32) -> (HostConn, UnixStream) {
        let (a, b) = UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        let req = Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1,
            dst_port: 2,
            len: 0,
            op: Op::Request,
            flags: 0,
            buf_alloc,
            fwd_cnt: 0,
        };
        let (conn, _) = Connection::accept(&req, 100);
        (HostConn::new(conn, a, None), b)
    }

    #[test]
    fn own_bytes_go_first_and_do_not_count_as_forwarded() {
        let (mut c, mut peer) = established(10);
        c.queue_to_host(b"data", true);
        c.queue_to_host(b"OK 1\n", false);
        assert_eq!(c.interest(false), Some(EventSet::IN | EventSet::OUT));
        assert_eq!(c.flush().expect("flush"), 4);
        let mut got = [0u8; 9];
        peer.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"OK 1\ndata");
        assert_eq!(c.interest(true), None, "starved and nothing to write");
    }

    #[test]
    fn no_input_interest_without_guest_credit() {
        let (c, _peer) = established(0);
        assert!(!c.can_read_host());
        assert_eq!(c.interest(false), None);
    }
}
