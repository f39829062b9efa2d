//! Host to guest: the receive queue. Control packets go first, then data
//! read from host streams, one buffer per connection in turn. A stream is
//! read only for as much as the guest's credit and the buffer allow, so
//! what the guest cannot take stays in the host socket.

use std::io::{self, Read};

use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestAddressSpace, GuestMemoryMmap};

use super::connection::SHUTDOWN_SEND;
use super::device::{Ending, Vsock};
use super::packet::{Op, HEADER_LEN, MAX_PAYLOAD};
use super::shared::VsockShared;
use super::stream::ConnKey;
use super::RX_QUEUE;

/// The device-writable segments of a receive chain, or `None` when it has
/// a device-readable descriptor or no room for a header.
fn rx_segments(chain: DescriptorChain<&GuestMemoryMmap<()>>) -> Option<Vec<(GuestAddress, usize)>> {
    let mut segs = Vec::new();
    let mut total = 0usize;
    for desc in chain {
        if !desc.is_write_only() {
            return None;
        }
        total = total.saturating_add(desc.len() as usize);
        segs.push((desc.addr(), desc.len() as usize));
    }
    (total >= HEADER_LEN).then_some(segs)
}

fn capacity(segs: &[(GuestAddress, usize)]) -> usize {
    segs.iter().map(|s| s.1).fold(0, usize::saturating_add)
}

/// Writes `parts` back to back into `segs`; returns the bytes written.
fn write_parts(
    m: &GuestMemoryMmap<()>,
    segs: &[(GuestAddress, usize)],
    parts: &[&[u8]],
) -> Option<u32> {
    let mut segs = segs.iter().copied();
    let (mut addr, mut room) = segs.next()?;
    let mut written = 0usize;
    for part in parts {
        let mut part: &[u8] = part;
        while !part.is_empty() {
            while room == 0 {
                (addr, room) = segs.next()?;
            }
            let n = part.len().min(room);
            m.write_slice(&part[..n], addr).ok()?;
            addr = addr.checked_add(n as u64)?;
            room -= n;
            part = &part[n..];
            written += n;
        }
    }
    u32::try_from(written).ok()
}

/// What reading a host stream gave.
enum ReadOutcome {
    Data(usize),
    Eof,
    WouldBlock,
    Failed(io::Error),
}

impl Vsock {
    /// Fills receive buffers: queued control packets, then host data.
    pub(super) fn process_rx(&mut self) {
        let Some(mem) = self.active.as_ref().map(|a| a.mem.clone()) else {
            return;
        };
        let guard = mem.memory();
        let m: &GuestMemoryMmap<()> = &guard;
        let mut used_any = false;
        while let Some(ctl) = self.control.front().copied() {
            let Some(chain) = self.pop_rx(m) else { break };
            let head = chain.head_index();
            used_any = true;
            let Some(segs) = rx_segments(chain) else {
                self.bad_rx_buffer(head);
                continue;
            };
            let h = self.header(ctl.op, ctl.key, 0, ctl.flags);
            let n = write_parts(m, &segs, &[&h.to_bytes()]).unwrap_or(0);
            self.add_used(RX_QUEUE, head, n);
            VsockShared::add(&self.shared.rx_packets, 1);
            self.control.pop_front();
        }
        if self.control.is_empty() {
            used_any |= self.rx_data(m);
        }
        if used_any {
            self.notify(RX_QUEUE);
        }
    }

    fn pop_rx<'m>(
        &mut self,
        m: &'m GuestMemoryMmap<()>,
    ) -> Option<DescriptorChain<&'m GuestMemoryMmap<()>>> {
        let chain = self.active.as_mut()?.rx.pop_descriptor_chain(m);
        if chain.is_none() {
            self.rx_starved = true;
        }
        chain
    }

    fn bad_rx_buffer(&mut self, head: u16) {
        log::debug!("vsock: unusable receive buffer {head}");
        VsockShared::add(&self.shared.malformed_packets, 1);
        self.add_used(RX_QUEUE, head, 0);
    }

    /// Moves host data into receive buffers, one buffer per readable
    /// connection per round, until buffers, credit or data run out.
    /// Returns whether a buffer was used.
    fn rx_data(&mut self, m: &GuestMemoryMmap<()>) -> bool {
        let mut used_any = false;
        loop {
            let ready: Vec<ConnKey> = self
                .conns
                .iter()
                .filter(|(_, c)| c.readable && c.can_read_host())
                .map(|(k, _)| *k)
                .collect();
            if ready.is_empty() {
                return used_any;
            }
            for key in ready {
                let Some(chain) = self.pop_rx(m) else {
                    return used_any;
                };
                let head = chain.head_index();
                let Some(segs) = rx_segments(chain) else {
                    self.bad_rx_buffer(head);
                    used_any = true;
                    continue;
                };
                if self.rx_one(m, key, head, &segs) {
                    used_any = true;
                } else if let Some(a) = self.active.as_mut() {
                    // Nothing to send after all: the guest keeps the buffer.
                    a.rx.go_to_previous_position();
                }
            }
        }
    }

    /// Reads connection `key`'s stream into one receive buffer; returns
    /// whether the buffer was used.
    fn rx_one(
        &mut self,
        m: &GuestMemoryMmap<()>,
        key: ConnKey,
        head: u16,
        segs: &[(GuestAddress, usize)],
    ) -> bool {
        let Some(c) = self.conns.get_mut(&key) else {
            return false;
        };
        let room = capacity(segs) - HEADER_LEN;
        // can_read_host guarantees credit; a header-only buffer is useless
        // for data (Linux never gives one) and goes back empty.
        let want = room
            .min(c.conn.peer_credit() as usize)
            .min(MAX_PAYLOAD as usize);
        if want == 0 {
            self.bad_rx_buffer(head);
            return true;
        }
        let mut buf = vec![0u8; want];
        let got = loop {
            match (&c.stream).read(&mut buf) {
                Ok(0) => break ReadOutcome::Eof,
                Ok(n) => break ReadOutcome::Data(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break ReadOutcome::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break ReadOutcome::Failed(e),
            }
        };
        let (h, payload) = match got {
            ReadOutcome::WouldBlock => {
                c.readable = false;
                return false;
            }
            ReadOutcome::Data(n) => {
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "a read fills at most `buf`: `want` <= MAX_PAYLOAD, a u32"
                )]
                let len = n as u32;
                c.conn.record_sent(len);
                VsockShared::add(&self.shared.rx_bytes, n as u64);
                (self.header(Op::Rw, key, len, 0), &buf[..n])
            }
            ReadOutcome::Eof => {
                c.host_eof = true;
                c.readable = false;
                (self.header(Op::Shutdown, key, 0, SHUTDOWN_SEND), &buf[..0])
            }
            ReadOutcome::Failed(e) => {
                log::debug!("vsock: host socket of {key:?} failed: {e}");
                let h = self.header(Op::Rst, key, 0, 0);
                self.close(key, Ending::Reset, false);
                (h, &buf[..0])
            }
        };
        let n = write_parts(m, segs, &[&h.to_bytes(), payload]).unwrap_or(0);
        self.add_used(RX_QUEUE, head, n);
        VsockShared::add(&self.shared.rx_packets, 1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_spread_over_segments() {
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).expect("mem");
        let segs = [(GuestAddress(0x100), 3), (GuestAddress(0x200), 10)];
        assert_eq!(write_parts(&m, &segs, &[b"ab", b"cdef"]), Some(6));
        let mut got = [0u8; 3];
        m.read_slice(&mut got, GuestAddress(0x200)).expect("read");
        assert_eq!(&got, b"def");
        assert_eq!(write_parts(&m, &segs, &[&[0u8; 14]]), None, "too long");
        assert_eq!(capacity(&segs), 13);
    }
}
