//! The vsock device: configuration space, activation, reset, the
//! connection table and event dispatch. The packet paths live in `tx.rs`
//! (guest to host) and `rx.rs` (host to guest), the Unix sockets in
//! `host.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::packet::{Header, Op, HOST_CID};
use super::shared::VsockShared;
use super::stream::{ConnKey, HostConn};
use super::{
    uds, VsockError, BUF_ALLOC, FIRST_EPHEMERAL_PORT, MAX_PENDING_CONTROL, MIN_GUEST_CID,
    NUM_QUEUES, QUEUE_SIZE, RX_QUEUE, TX_QUEUE,
};
use crate::virtio::interrupt::INT_VRING;
use crate::virtio::{
    ActivateError, GuestMemory, Interrupt, VirtioDevice, TYPE_VSOCK, VIRTIO_F_VERSION_1,
};

/// What the driver handed over at activation.
#[derive(Debug)]
pub(super) struct Active {
    pub(super) mem: GuestMemory,
    pub(super) interrupt: Arc<Interrupt>,
    pub(super) rx: Queue,
    pub(super) tx: Queue,
    /// Kept so the driver's buffers stay ours; memtide sends no events.
    _event: Queue,
}

impl Active {
    /// The rx queue for [`RX_QUEUE`], else the tx queue.
    fn data_queue(&mut self, index: usize) -> &mut Queue {
        if index == RX_QUEUE {
            &mut self.rx
        } else {
            &mut self.tx
        }
    }
}

/// A control packet waiting for a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Control {
    pub(super) op: Op,
    pub(super) key: ConnKey,
    pub(super) flags: u32,
}

/// A host client that has not finished its `CONNECT` line.
#[derive(Debug)]
pub(super) struct PendingClient {
    pub(super) stream: UnixStream,
    pub(super) line: Vec<u8>,
    pub(super) registered: Option<EventSet>,
    /// When it was accepted.
    pub(super) since: std::time::Instant,
}

/// Which fixed fds the event loop watches already.
#[derive(Debug, Default)]
pub(super) struct Watched {
    pub(super) wake: bool,
    pub(super) listener: bool,
    pub(super) queues: bool,
}

/// How a connection ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// After a shutdown from either side.
    Orderly,
    /// Refused, or reset without a shutdown.
    Reset,
}

/// The virtio-vsock device.
#[derive(Debug)]
pub struct Vsock {
    pub(super) guest_cid: u64,
    pub(super) uds_path: PathBuf,
    pub(super) shared: Arc<VsockShared>,
    /// Credit advertised per connection (tests shrink it).
    pub(super) buf_alloc: u32,
    pub(super) listener: UnixListener,
    /// Written on activation and reset so the event loop picks up the
    /// queues and forgets closed streams.
    pub(super) wake_evt: EventFd,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) active: Option<Active>,
    pub(super) conns: BTreeMap<ConnKey, HostConn>,
    pub(super) by_fd: HashMap<RawFd, ConnKey>,
    pub(super) clients: HashMap<RawFd, PendingClient>,
    pub(super) control: VecDeque<Control>,
    /// Streams closed but maybe still watched; dropped once unwatched.
    pub(super) graveyard: Vec<(UnixStream, Option<EventSet>)>,
    /// The guest gave no receive buffer last time one was needed.
    pub(super) rx_starved: bool,
    /// Transmit processing paused: too many control packets pending.
    pub(super) tx_blocked: bool,
    pub(super) next_port: u32,
    pub(super) watched: Watched,
}

impl Vsock {
    /// Creates the device for the guest with CID `guest_cid` and starts
    /// listening for host clients on `uds_path` (a stale socket there is
    /// replaced). `shared` must be for the same CID.
    pub fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        shared: Arc<VsockShared>,
    ) -> Result<Self, VsockError> {
        if !(MIN_GUEST_CID..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        if shared.guest_cid() != guest_cid {
            return Err(VsockError::CidMismatch {
                device: guest_cid,
                shared: shared.guest_cid(),
            });
        }
        uds::check_path(&uds_path)?;
        let wake_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(VsockError::EventFd)?;
        let listener = uds::listen(&uds_path)?;
        Ok(Self {
            guest_cid,
            uds_path,
            shared,
            buf_alloc: BUF_ALLOC,
            listener,
            wake_evt,
            queue_evts: Vec::new(),
            active: None,
            conns: BTreeMap::new(),
            by_fd: HashMap::new(),
            clients: HashMap::new(),
            control: VecDeque::new(),
            graveyard: Vec::new(),
            rx_starved: false,
            tx_blocked: false,
            next_port: FIRST_EPHEMERAL_PORT,
            watched: Watched::default(),
        })
    }

    /// Hands the device clones of the transport's queue eventfds (queue
    /// `i` is element `i`).
    pub fn set_queue_evts(&mut self, evts: Vec<EventFd>) {
        self.queue_evts = evts;
    }

    /// The shared state (for the control API).
    pub fn shared(&self) -> Arc<VsockShared> {
        self.shared.clone()
    }

    pub(super) fn is_queue_evt(&self, fd: RawFd, index: usize) -> bool {
        self.queue_evts
            .get(index)
            .is_some_and(|e| e.as_raw_fd() == fd)
    }

    /// Handles readiness of one of the device's fds, then moves whatever
    /// can move to the guest.
    pub(super) fn handle_event(&mut self, fd: RawFd, set: EventSet) {
        if fd == self.wake_evt.as_raw_fd() {
            let _ = self.wake_evt.read();
            self.process_tx();
        } else if self.is_queue_evt(fd, RX_QUEUE) {
            let _ = self.queue_evts[RX_QUEUE].read();
            self.rx_starved = false;
        } else if self.is_queue_evt(fd, TX_QUEUE) {
            let _ = self.queue_evts[TX_QUEUE].read();
            self.process_tx();
        } else if fd == self.listener.as_raw_fd() {
            self.accept_clients();
        } else if let Some(&key) = self.by_fd.get(&fd) {
            self.stream_event(key, set);
        } else if self.clients.contains_key(&fd) {
            self.client_readable(fd);
        } else {
            log::debug!("vsock: event on an fd no longer in use ({fd})");
        }
        self.pump();
    }

    /// Sends what is pending to the guest; resumes transmit processing
    /// that waited for room in the control queue.
    pub(super) fn pump(&mut self) {
        self.process_rx();
        for _ in 0..4 {
            if !self.tx_blocked || self.control.len() >= MAX_PENDING_CONTROL {
                break;
            }
            self.tx_blocked = false;
            self.process_tx();
            self.process_rx();
        }
    }

    /// Queues a control packet for the guest.
    pub(super) fn queue_control(&mut self, op: Op, key: ConnKey, flags: u32) {
        self.control.push_back(Control { op, key, flags });
    }

    /// A header from the host side of connection `key`, with the
    /// connection's current credit if it still exists.
    pub(super) fn header(&self, op: Op, key: ConnKey, len: u32, flags: u32) -> Header {
        let (buf_alloc, fwd_cnt) = self
            .conns
            .get(&key)
            .map_or((0, 0), |c| c.conn.credit_fields());
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.0,
            dst_port: key.1,
            len,
            op,
            flags,
            buf_alloc,
            fwd_cnt,
        }
    }

    /// Adds a connection to the table.
    pub(super) fn insert(&mut self, key: ConnKey, c: HostConn) {
        self.by_fd.insert(c.fd(), key);
        self.conns.insert(key, c);
        self.update_gauge();
    }

    /// Ends connection `key`: optionally tells the guest with RST, and
    /// hands the stream to the graveyard (closed once unwatched).
    pub(super) fn close(&mut self, key: ConnKey, ending: Ending, send_rst: bool) {
        if send_rst {
            self.queue_control(Op::Rst, key, 0);
        }
        let Some(mut c) = self.conns.remove(&key) else {
            return;
        };
        self.by_fd.remove(&c.fd());
        if ending == Ending::Orderly {
            // Best effort: what the guest sent before closing.
            let _ = c.flush();
        }
        if ending == Ending::Reset {
            VsockShared::add(&self.shared.connections_reset, 1);
        }
        self.graveyard.push((c.stream, c.registered));
        self.update_gauge();
    }

    /// Drops a host client that never completed `CONNECT`.
    pub(super) fn drop_client(&mut self, fd: RawFd) {
        if let Some(cl) = self.clients.remove(&fd) {
            self.graveyard.push((cl.stream, cl.registered));
        }
    }

    fn update_gauge(&self) {
        self.shared
            .connections
            .store(self.conns.len() as u64, Ordering::Relaxed);
    }

    /// A free local port for a host-initiated connection to guest `port`.
    pub(super) fn alloc_port(&mut self, peer_port: u32) -> Option<u32> {
        for _ in 0..=self.conns.len() {
            let p = self.next_port;
            self.next_port = if p >= u32::MAX - 1 {
                FIRST_EPHEMERAL_PORT
            } else {
                p + 1
            };
            if !self.conns.contains_key(&(p, peer_port)) {
                return Some(p);
            }
        }
        None
    }

    /// Returns a used buffer to queue `index` (rx or tx).
    pub(super) fn add_used(&mut self, index: usize, head: u16, len: u32) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let mem = a.mem.memory();
        let q = a.data_queue(index);
        if let Err(e) = q.add_used(&*mem, head, len) {
            memtide_log_limit::warn_limited!("vsock: cannot return a buffer: {e}");
        }
    }

    /// Interrupts the guest if queue `index` asks for it.
    pub(super) fn notify(&mut self, index: usize) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let mem = a.mem.memory();
        let q = a.data_queue(index);
        if q.needs_notification(&*mem).unwrap_or(true) {
            if let Err(e) = a.interrupt.signal(INT_VRING) {
                log::error!("vsock: cannot raise interrupt: {e}");
            }
        }
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; NUM_QUEUES]
    }

    fn avail_features(&self) -> u64 {
        // Stream sockets need no feature bit; SEQPACKET is not offered.
        1u64 << VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = self.guest_cid.to_le_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            *d = at.and_then(|a| cfg.get(a)).copied().unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("vsock: ignored config write at {offset} (guest_cid is read-only)");
    }

    fn activate(
        &mut self,
        _acked: u64,
        queues: Vec<(usize, Queue)>,
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        let got = queues.len();
        let mut slots: [Option<Queue>; NUM_QUEUES] = [None, None, None];
        for (i, q) in queues {
            if let Some(s) = slots.get_mut(i) {
                *s = Some(q);
            }
        }
        // Transport order: RX_QUEUE, TX_QUEUE, EVENT_QUEUE.
        let [Some(rx), Some(tx), Some(event)] = slots else {
            return Err(ActivateError::QueueCount {
                needed: NUM_QUEUES,
                got,
            });
        };
        self.active = Some(Active {
            mem,
            interrupt,
            rx,
            tx,
            _event: event,
        });
        self.rx_starved = false;
        self.tx_blocked = false;
        self.shared.driver_ready.store(true, Ordering::SeqCst);
        self.wake_evt.write(1).map_err(|_| ActivateError::Wake)
    }

    fn reset(&mut self) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.close(key, Ending::Orderly, false);
        }
        self.control.clear();
        self.active = None;
        self.rx_starved = false;
        self.tx_blocked = false;
        self.shared.driver_ready.store(false, Ordering::SeqCst);
        // Let the event loop unwatch and close the streams.
        if let Err(e) = self.wake_evt.write(1) {
            log::error!("vsock: cannot wake the event loop after reset: {e}");
        }
    }
}
