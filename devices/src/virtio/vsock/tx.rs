//! Guest to host: the transmit queue. Each chain is one packet; it is
//! read whole, validated, and dispatched to its connection. A malformed
//! chain is counted and, where its ports can be read, answered with RST.

use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryMmap};

use super::connection::{Connection, Reply};
use super::device::{Ending, Vsock};
use super::packet::{raw_ports_and_op, Header, Op, HEADER_LEN, MAX_PAYLOAD};
use super::shared::VsockShared;
use super::stream::{ConnKey, HostConn};
use super::{uds, MAX_CONNECTIONS, MAX_PENDING_CONTROL, TX_QUEUE};

/// The readable bytes of a transmit chain.
struct TxChain {
    bytes: Vec<u8>,
    /// A write-only or unreadable descriptor was met.
    bad: bool,
}

/// Reads at most a header and the largest payload from the device-readable
/// descriptors of `chain`.
fn read_chain(m: &GuestMemoryMmap<()>, chain: DescriptorChain<&GuestMemoryMmap<()>>) -> TxChain {
    const LIMIT: usize = HEADER_LEN + MAX_PAYLOAD as usize;
    let mut out = TxChain {
        bytes: Vec::new(),
        bad: false,
    };
    for desc in chain {
        if desc.is_write_only() {
            out.bad = true;
            continue;
        }
        let take = (desc.len() as usize).min(LIMIT - out.bytes.len());
        if take == 0 {
            continue;
        }
        let start = out.bytes.len();
        out.bytes.resize(start + take, 0);
        if m.read_slice(&mut out.bytes[start..], desc.addr()).is_err() {
            out.bytes.truncate(start);
            out.bad = true;
        }
    }
    out
}

impl Vsock {
    /// Processes every chain on the transmit queue (pausing while too many
    /// control packets wait for receive buffers).
    pub(super) fn process_tx(&mut self) {
        let Some(mem) = self.active.as_ref().map(|a| a.mem.clone()) else {
            return;
        };
        let guard = mem.memory();
        let m: &GuestMemoryMmap<()> = &guard;
        let mut used_any = false;
        loop {
            if self.control.len() >= MAX_PENDING_CONTROL {
                self.tx_blocked = true;
                break;
            }
            let Some(a) = self.active.as_mut() else { break };
            let Some(chain) = a.tx.pop_descriptor_chain(m) else {
                break;
            };
            let head = chain.head_index();
            let pkt = read_chain(m, chain);
            self.add_used(TX_QUEUE, head, 0);
            used_any = true;
            VsockShared::add(&self.shared.tx_packets, 1);
            self.on_tx_chain(&pkt);
        }
        if used_any {
            self.notify(TX_QUEUE);
        }
    }

    fn on_tx_chain(&mut self, pkt: &TxChain) {
        let parsed = if pkt.bad {
            None
        } else {
            match Header::parse_packet(&pkt.bytes, self.guest_cid) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::debug!("vsock: malformed packet from the guest: {e}");
                    None
                }
            }
        };
        match parsed {
            Some((h, payload)) => self.on_guest_packet(&h, payload),
            None => self.malformed(&pkt.bytes),
        }
    }

    /// Counts a malformed packet and resets the connection it names, if
    /// its ports can be read (never answering an RST with an RST).
    fn malformed(&mut self, bytes: &[u8]) {
        VsockShared::add(&self.shared.malformed_packets, 1);
        let Some((src_port, dst_port, op)) = raw_ports_and_op(bytes) else {
            return;
        };
        let key = (dst_port, src_port);
        let answer = op != Op::Rst as u16;
        if self.conns.contains_key(&key) {
            self.close(key, Ending::Reset, answer);
        } else if answer {
            self.queue_control(Op::Rst, key, 0);
        }
    }

    fn on_guest_packet(&mut self, h: &Header, payload: &[u8]) {
        let key = (h.dst_port, h.src_port);
        if h.op == Op::Request {
            self.guest_connect(h);
            return;
        }
        let Some(c) = self.conns.get_mut(&key) else {
            if h.op != Op::Rst {
                self.queue_control(Op::Rst, key, 0);
            }
            return;
        };
        let was_shutting_down = c.shutting_down();
        let reply = match c.conn.on_guest_packet(h) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("vsock: resetting {key:?}: {e}");
                self.close(key, Ending::Reset, true);
                return;
            }
        };
        match h.op {
            Op::Rw => {
                c.queue_to_host(payload, true);
                self.flush(key);
            }
            Op::Response => {
                // A host-initiated connection is up: tell the host client.
                c.queue_to_host(&uds::ok_line(key.0), false);
                VsockShared::add(&self.shared.connections_opened, 1);
                self.flush(key);
            }
            Op::Rst => {
                let ending = if was_shutting_down {
                    Ending::Orderly
                } else {
                    Ending::Reset
                };
                self.close(key, ending, false);
            }
            Op::Shutdown if reply == Some(Reply::Rst) => {
                self.close(key, Ending::Orderly, true);
            }
            Op::Shutdown => self.flush(key),
            _ => {}
        }
        if reply == Some(Reply::CreditUpdate) && self.conns.contains_key(&key) {
            self.queue_control(Op::CreditUpdate, key, 0);
        }
    }

    /// Writes what connection `key` has for the host; resets it on a host
    /// error and tells the guest when it has new credit.
    pub(super) fn flush(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        match c.flush() {
            Ok(0) => {}
            Ok(n) => {
                VsockShared::add(&self.shared.tx_bytes, u64::from(n));
                if c.conn.record_forwarded(n) {
                    self.queue_control(Op::CreditUpdate, key, 0);
                }
            }
            Err(e) => {
                log::debug!("vsock: host socket of {key:?} failed: {e}");
                self.close(key, Ending::Reset, true);
            }
        }
    }

    /// A guest REQUEST: connect to `<uds>_<port>`; RESPONSE on success,
    /// RST otherwise.
    fn guest_connect(&mut self, h: &Header) {
        let key = (h.dst_port, h.src_port);
        if self.conns.contains_key(&key) {
            log::debug!("vsock: REQUEST for open connection {key:?}");
            self.close(key, Ending::Reset, true);
            return;
        }
        if self.conns.len() >= MAX_CONNECTIONS {
            memtide_log_limit::warn_limited!(
                "vsock: {MAX_CONNECTIONS} connections open; refusing {key:?}"
            );
            self.refuse(key);
            return;
        }
        let path = uds::port_path(&self.uds_path, h.dst_port);
        match uds::connect(&path) {
            Ok(stream) => {
                let (conn, _) = Connection::accept(h, self.buf_alloc);
                self.insert(key, HostConn::new(conn, stream, None));
                self.queue_control(Op::Response, key, 0);
                VsockShared::add(&self.shared.connections_opened, 1);
            }
            Err(e) => {
                log::debug!(
                    "vsock: guest port {} -> {}: {e}",
                    h.src_port,
                    path.display()
                );
                self.refuse(key);
            }
        }
    }

    fn refuse(&mut self, key: ConnKey) {
        VsockShared::add(&self.shared.connections_reset, 1);
        self.queue_control(Op::Rst, key, 0);
    }
}
