//! A pretend guest driver for the vsock tests: the three split queues in
//! guest memory (virtio-queue's mock), buffers and kicks, and an
//! event-manager loop running the device's handler, as the VMM does.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::packet::{Header, Op, HEADER_LEN, HOST_CID};
use super::{Vsock, VsockHandler, VsockShared, VsockStatus, RX_QUEUE, TX_QUEUE};
use crate::bus::lock;
use crate::virtio::{Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};

/// The guest's CID in every test.
pub(super) const GUEST_CID: u64 = 3;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const QSIZE: u16 = 256;

/// Guest memory for one test.
pub(super) fn test_mem() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).expect("guest memory")
}

/// A fresh directory for one test's sockets.
pub(super) fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mt-vsock-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A header as the guest would send it.
pub(super) fn guest_header(op: Op, src_port: u32, dst_port: u32, len: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len,
        op,
        flags: 0,
        buf_alloc: 65536,
        fwd_cnt: 0,
    }
}

/// A chain as `(bytes, write_only)` segments.
pub(super) type Segments = Vec<(Vec<u8>, bool)>;

type Loop = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// The driver, the device and the event loop.
pub(super) struct Driver<'a> {
    mem: &'a GuestMemoryMmap<()>,
    queues: Vec<MockSplitQueue<'a, GuestMemoryMmap<()>>>,
    next_desc: [u16; 3],
    used_seen: [u16; 3],
    rx_bufs: HashMap<u16, Vec<(u64, u32)>>,
    next_addr: u64,
    received: VecDeque<(Header, Vec<u8>)>,
    /// Receive buffers the device gave back unused.
    pub(super) empty_rx: usize,
    evts: Vec<EventFd>,
    event_loop: Loop,
    /// The device.
    pub(super) dev: Arc<Mutex<Vsock>>,
    /// The test's directory.
    pub(super) dir: PathBuf,
    /// The device's listener path.
    pub(super) uds: PathBuf,
}

impl Drop for Driver<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl<'a> Driver<'a> {
    /// A device whose driver is up (all three queues ready).
    pub(super) fn new(mem: &'a GuestMemoryMmap<()>, name: &str) -> Self {
        let mut d = Self::inactive(mem, name);
        d.activate();
        d
    }

    /// A device the driver has not activated yet.
    pub(super) fn inactive(mem: &'a GuestMemoryMmap<()>, name: &str) -> Self {
        let dir = temp_dir(name);
        let uds = dir.join("v.sock");
        let shared = Arc::new(VsockShared::new(GUEST_CID));
        let mut dev = Vsock::new(GUEST_CID, uds.clone(), shared).expect("device");
        let evts: Vec<EventFd> = (0..3)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"))
            .collect();
        dev.set_queue_evts(evts.iter().map(|e| e.try_clone().expect("clone")).collect());
        let dev = Arc::new(Mutex::new(dev));
        let mut event_loop = Loop::new().expect("event manager");
        event_loop.add_subscriber(Arc::new(Mutex::new(VsockHandler::new(dev.clone()))));
        let queues = (0..3u64)
            .map(|i| MockSplitQueue::create(mem, GuestAddress(0x10000 * (i + 1)), QSIZE))
            .collect();
        Self {
            mem,
            queues,
            next_desc: [0; 3],
            used_seen: [0; 3],
            rx_bufs: HashMap::new(),
            next_addr: 0x10_0000,
            received: VecDeque::new(),
            empty_rx: 0,
            evts,
            event_loop,
            dev,
            dir,
            uds,
        }
    }

    /// Brings the driver up: features, queues, DRIVER_OK.
    pub(super) fn activate(&mut self) {
        let queues: Vec<(usize, Queue)> = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| (i, q.create_queue::<Queue>().expect("queue")))
            .collect();
        let irq = EventFd::new(libc::EFD_NONBLOCK).expect("irq");
        lock(&self.dev)
            .activate(
                1 << VIRTIO_F_VERSION_1,
                queues,
                GuestMemoryAtomic::new(self.mem.clone()),
                Arc::new(Interrupt::new(irq)),
            )
            .expect("activate");
        self.pump();
    }

    /// The device's counters.
    pub(super) fn status(&self) -> VsockStatus {
        lock(&self.dev).shared().status()
    }

    fn alloc(&mut self, len: u32) -> u64 {
        let a = self.next_addr;
        self.next_addr += (u64::from(len) + 0xf) & !0xf;
        assert!(self.next_addr < 16 << 20, "test guest memory exhausted");
        a
    }

    /// Puts a chain of `(bytes, write_only)` segments on queue `q`.
    fn add_chain(&mut self, q: usize, segs: &[(Vec<u8>, bool)]) -> u16 {
        let head = self.next_desc[q];
        let mut descs = Vec::new();
        let mut placed = Vec::new();
        for (i, (bytes, write_only)) in segs.iter().enumerate() {
            let len = u32::try_from(bytes.len()).expect("segment fits a descriptor");
            let addr = self.alloc(len);
            self.mem
                .write_slice(bytes, GuestAddress(addr))
                .expect("write buffer");
            let mut flags = if *write_only { F_WRITE } else { 0 };
            if i + 1 < segs.len() {
                flags |= F_NEXT;
            }
            let next = head.wrapping_add(u16::try_from(i + 1).expect("chain index")) % QSIZE;
            descs.push(RawDescriptor::from(SplitDescriptor::new(
                addr, len, flags, next,
            )));
            placed.push((addr, len));
        }
        self.queues[q]
            .add_desc_chains(&descs, head)
            .expect("add chain");
        self.next_desc[q] = (head + u16::try_from(segs.len()).expect("chain length")) % QSIZE;
        if q == RX_QUEUE {
            self.rx_bufs.insert(head, placed);
        }
        head
    }

    fn kick(&mut self, q: usize) {
        self.evts[q].write(1).expect("kick");
        self.pump();
    }

    /// Gives the device `count` receive buffers of `size` bytes.
    pub(super) fn give_rx(&mut self, count: usize, size: u32) {
        for _ in 0..count {
            self.add_chain(RX_QUEUE, &[(vec![0; size as usize], true)]);
        }
        self.kick(RX_QUEUE);
    }

    /// Sends a chain built of raw segments.
    pub(super) fn send_segments(&mut self, segs: &[(Vec<u8>, bool)]) {
        self.add_chain(TX_QUEUE, segs);
        self.kick(TX_QUEUE);
    }

    /// Sends a packet in one descriptor.
    pub(super) fn send(&mut self, h: &Header, payload: &[u8]) {
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(payload);
        self.send_segments(&[(b, false)]);
    }

    /// Sends a packet with header and payload in separate descriptors.
    pub(super) fn send_split(&mut self, h: &Header, payload: &[u8]) {
        self.send_segments(&[(h.to_bytes().to_vec(), false), (payload.to_vec(), false)]);
    }

    /// Runs the event loop until nothing is ready.
    pub(super) fn pump(&mut self) {
        for _ in 0..100 {
            if self.event_loop.run_with_timeout(5).expect("event loop") == 0 {
                return;
            }
        }
    }

    /// Runs the event loop until `done` holds (panics after ~5 s).
    pub(super) fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        for _ in 0..500 {
            if done(self) {
                return;
            }
            self.event_loop.run_with_timeout(10).expect("event loop");
        }
        panic!("timed out waiting for {what}");
    }

    /// Chains the device has returned on the transmit queue.
    pub(super) fn tx_used(&self) -> u16 {
        self.queues[TX_QUEUE].used().idx().load()
    }

    fn collect_rx(&mut self) {
        let idx = self.queues[RX_QUEUE].used().idx().load();
        while self.used_seen[RX_QUEUE] != idx {
            let slot = self.used_seen[RX_QUEUE] % QSIZE;
            let elem = self.queues[RX_QUEUE]
                .used()
                .ring()
                .ref_at(usize::from(slot))
                .expect("used slot")
                .load();
            self.used_seen[RX_QUEUE] = self.used_seen[RX_QUEUE].wrapping_add(1);
            let segs = self
                .rx_bufs
                .remove(&u16::try_from(elem.id()).expect("descriptor index"))
                .expect("known buffer");
            let mut bytes = Vec::new();
            for (addr, len) in segs {
                let mut b = vec![0u8; len as usize];
                self.mem
                    .read_slice(&mut b, GuestAddress(addr))
                    .expect("read");
                bytes.extend_from_slice(&b);
            }
            bytes.truncate(elem.len() as usize);
            if bytes.len() < HEADER_LEN {
                self.empty_rx += 1;
                continue;
            }
            let h = Header::parse_from_guest(&bytes, HOST_CID).expect("device header");
            let payload = bytes[HEADER_LEN..].to_vec();
            assert_eq!(payload.len(), h.len as usize, "used length = header + len");
            self.received.push_back((h, payload));
        }
    }

    /// Packets the guest has received and not looked at yet.
    pub(super) fn take_rx(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.pump();
        self.collect_rx();
        self.received.drain(..).collect()
    }

    /// Waits for the next packet to the guest.
    pub(super) fn next_rx(&mut self) -> (Header, Vec<u8>) {
        self.run_until("a packet for the guest", |d| {
            d.collect_rx();
            !d.received.is_empty()
        });
        self.received.pop_front().expect("a packet")
    }
}

/// Reads from a non-blocking host stream while running the loop, until
/// `n` bytes or EOF; returns what came.
pub(super) fn read_host(d: &mut Driver<'_>, s: &mut UnixStream, n: usize) -> Vec<u8> {
    s.set_nonblocking(true).expect("nonblocking");
    let mut got = Vec::new();
    let mut eof = false;
    d.run_until("host bytes", |_| {
        let mut b = [0u8; 4096];
        loop {
            match s.read(&mut b) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => got.extend_from_slice(&b[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        eof || got.len() >= n
    });
    got
}

/// Whether the host stream has been closed by the device (waits for it).
pub(super) fn host_sees_eof(d: &mut Driver<'_>, s: &mut UnixStream) -> bool {
    let got = read_host(d, s, usize::MAX);
    got.is_empty()
}
