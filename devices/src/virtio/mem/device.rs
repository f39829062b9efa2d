//! The virtio-mem device: configuration space, activation, and the request
//! queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::bitmap::BlockBitmap;
use super::handling::{handle, Handled};
use super::request::{Request, Response, REQUEST_SIZE, RESPONSE_SIZE};
use super::{host, VirtioMemShared, QUEUE_SIZE};
use crate::virtio::interrupt::{INT_CONFIG, INT_VRING};
use crate::virtio::{
    ActivateError, GuestMemory, Interrupt, VirtioDevice, TYPE_MEM, VIRTIO_F_VERSION_1,
};

/// Size of the configuration space (`struct virtio_mem_config`).
const CONFIG_SIZE: usize = 56;

/// The virtio-mem device.
#[derive(Debug)]
pub struct VirtioMem {
    pub(super) shared: Arc<VirtioMemShared>,
    bitmap: BlockBitmap,
    pub(super) queue_evt: Option<EventFd>,
    pub(super) activate_evt: EventFd,
    queue: Option<Queue>,
    mem: Option<GuestMemory>,
    interrupt: Option<Arc<Interrupt>>,
    /// Make plugged blocks resident on the host before acknowledging them.
    populate_on_plug: bool,
}

/// What was read from one descriptor chain.
struct Chain {
    head: u16,
    request: Vec<u8>,
    unreadable: bool,
    response_at: Option<vm_memory::GuestAddress>,
}

impl VirtioMem {
    /// A device over the region of `shared`, every block unplugged.
    pub fn new(shared: Arc<VirtioMemShared>) -> std::io::Result<Self> {
        let r = shared.region();
        let blocks = usize::try_from(r.size / r.block_size).unwrap_or(usize::MAX);
        Ok(Self {
            bitmap: BlockBitmap::new(r.base, r.block_size, blocks),
            shared,
            queue_evt: None,
            activate_evt: EventFd::new(libc::EFD_NONBLOCK)?,
            queue: None,
            mem: None,
            interrupt: None,
            populate_on_plug: false,
        })
    }

    /// With `on`, every plug is made resident on the host before it is
    /// acknowledged (`MADV_POPULATE_WRITE`, as QEMU's `prealloc=on`; for
    /// `--prefault` runs, whose measurements start from known residency).
    pub fn set_populate_on_plug(&mut self, on: bool) {
        self.populate_on_plug = on;
    }

    /// Hands the device a clone of the transport's queue eventfd.
    pub fn set_queue_evt(&mut self, evt: EventFd) {
        self.queue_evt = Some(evt);
    }

    /// The shared state (for the control API).
    pub fn shared(&self) -> Arc<VirtioMemShared> {
        self.shared.clone()
    }

    fn signal(&self, bits: u32) {
        if let Some(i) = &self.interrupt {
            if let Err(e) = i.signal(bits) {
                log::error!("virtio-mem: cannot raise interrupt: {e}");
            }
        }
    }

    /// Tells the guest the requested size changed.
    pub(super) fn requested_changed(&self) {
        self.signal(INT_CONFIG);
    }

    /// Reads the request bytes and finds room for the response.
    fn read_chain(m: &GuestMemoryMmap<()>, chain: DescriptorChain<&GuestMemoryMmap<()>>) -> Chain {
        let mut c = Chain {
            head: chain.head_index(),
            request: Vec::with_capacity(REQUEST_SIZE),
            unreadable: false,
            response_at: None,
        };
        for desc in chain {
            if desc.is_write_only() {
                if c.response_at.is_none() && desc.len() as usize >= RESPONSE_SIZE {
                    c.response_at = Some(desc.addr());
                }
                continue;
            }
            let want = (REQUEST_SIZE - c.request.len()).min(desc.len() as usize);
            if want == 0 {
                continue;
            }
            let mut buf = vec![0u8; want];
            if m.read_slice(&mut buf, desc.addr()).is_err() {
                c.unreadable = true;
                continue;
            }
            c.request.extend_from_slice(&buf);
        }
        c
    }

    /// Processes every available request.
    pub(super) fn process_queue(&mut self) {
        let Some(mem) = self.mem.clone() else { return };
        let guard = mem.memory();
        let m: &GuestMemoryMmap<()> = &guard;
        let mut used_any = false;
        while let Some(chain) = self.queue.as_mut().and_then(|q| q.pop_descriptor_chain(m)) {
            let c = Self::read_chain(m, chain);
            let response = self.answer(m, &c);
            let written = match (response, c.response_at) {
                (Some(r), Some(at)) => match m.write_slice(&r.encode(), at) {
                    Ok(()) => RESPONSE_SIZE,
                    Err(_) => {
                        bump(&self.shared.counters.malformed_requests);
                        0
                    }
                },
                _ => 0,
            };
            if let Some(q) = self.queue.as_mut() {
                // RESPONSE_SIZE is 10: the conversion cannot fail.
                let len = u32::try_from(written).unwrap_or(0);
                if let Err(e) = q.add_used(m, c.head, len) {
                    memtide_log_limit::warn_limited!("virtio-mem: cannot return a buffer: {e}");
                }
            }
            used_any = true;
        }
        if used_any {
            let needs = self
                .queue
                .as_mut()
                .map(|q| q.needs_notification(m).unwrap_or(true))
                .unwrap_or(false);
            if needs {
                self.signal(INT_VRING);
            }
        }
    }

    /// The response to one chain (`None`: nothing can be answered), after
    /// carrying out the request.
    fn answer(&mut self, m: &GuestMemoryMmap<()>, c: &Chain) -> Option<Response> {
        let k = &self.shared.counters;
        if c.response_at.is_none() || c.unreadable {
            bump(&k.malformed_requests);
            memtide_log_limit::warn_limited!(
                "virtio-mem: malformed request chain (no room for the response, or unreadable)"
            );
            return c.response_at.map(|_| Response::Error);
        }
        let req = match Request::parse(&c.request) {
            Ok(r) => r,
            Err(e) => {
                bump(&k.malformed_requests);
                bump(&k.errors);
                memtide_log_limit::warn_limited!("virtio-mem: {e}");
                return Some(Response::Error);
            }
        };
        bump(match req {
            Request::Plug { .. } => &k.plug_requests,
            Request::Unplug { .. } => &k.unplug_requests,
            Request::UnplugAll => &k.unplug_all_requests,
            Request::State { .. } => &k.state_requests,
        });
        let usable = self.bitmap.blocks();
        let h = handle(req, &mut self.bitmap, self.shared.requested(), usable);
        self.discard(m, &h);
        if let (true, Request::Plug { addr, nb_blocks }, Response::Ack(_)) =
            (self.populate_on_plug, req, h.response)
        {
            let len = u64::from(nb_blocks).saturating_mul(self.bitmap.block_size());
            if let Err(e) = host::populate(m, addr, len) {
                memtide_log_limit::warn_limited!("virtio-mem: {e}");
            }
        }
        self.shared
            .plugged
            .store(self.bitmap.plugged_bytes(), Ordering::SeqCst);
        match h.response {
            Response::Nack => bump(&k.nacks),
            Response::Error => bump(&k.errors),
            _ => {}
        }
        if let Some(why) = h.refusal {
            log::debug!("virtio-mem: {req:?} refused: {why}");
        }
        Some(h.response)
    }

    /// Returns the blocks `h` unplugged to the host.
    fn discard(&self, m: &GuestMemoryMmap<()>, h: &Handled) {
        let k = &self.shared.counters;
        for run in &h.discard {
            let addr = self.bitmap.block_addr(run.start);
            let len = (run.len() as u64).saturating_mul(self.bitmap.block_size());
            let t = Instant::now();
            let r = host::discard(m, addr, len);
            let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            k.discard_ns.fetch_add(ns, Ordering::Relaxed);
            bump(&k.discard_calls);
            if let Err(e) = r {
                bump(&k.discard_errors);
                memtide_log_limit::warn_limited!("virtio-mem: {e}");
            }
        }
    }

    fn config_bytes(&self) -> [u8; CONFIG_SIZE] {
        let r = self.shared.region();
        let mut cfg = [0u8; CONFIG_SIZE];
        cfg[0..8].copy_from_slice(&r.block_size.to_le_bytes());
        // node_id (8..10) is 0 and only meaningful with ACPI_PXM; 10..16 padding.
        cfg[16..24].copy_from_slice(&r.base.to_le_bytes());
        cfg[24..32].copy_from_slice(&r.size.to_le_bytes());
        // usable_region_size: the whole region is always usable.
        cfg[32..40].copy_from_slice(&r.size.to_le_bytes());
        cfg[40..48].copy_from_slice(&self.shared.plugged().to_le_bytes());
        cfg[48..56].copy_from_slice(&self.shared.requested().to_le_bytes());
        cfg
    }
}

/// Adds one to a counter.
fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl VirtioDevice for VirtioMem {
    fn device_type(&self) -> u32 {
        TYPE_MEM
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        1u64 << VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = self.config_bytes();
        // The offset is the guest's: anything past the end reads as zero.
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, d) in data.iter_mut().enumerate() {
            *d = cfg.get(start.saturating_add(i)).copied().unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // The whole configuration space is read-only for the driver.
        log::debug!("virtio-mem: ignored config write at {offset}");
    }

    fn activate(
        &mut self,
        _acked: u64,
        queues: Vec<(usize, Queue)>,
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        let queue = queues
            .into_iter()
            .find_map(|(i, q)| (i == 0).then_some(q))
            .ok_or(ActivateError::QueueNotReady { index: 0 })?;
        self.queue = Some(queue);
        self.mem = Some(mem);
        self.interrupt = Some(interrupt);
        self.shared.activated.store(true, Ordering::SeqCst);
        self.activate_evt.write(1).map_err(|_| ActivateError::Wake)
    }

    fn reset(&mut self) {
        // The spec forbids changing block states on reset: a new driver
        // sees plugged_size and unplugs everything itself.
        self.queue = None;
        self.shared.activated.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::mem::request::{BlockState, REQ_PLUG, REQ_STATE, REQ_UNPLUG};
    use crate::virtio::mem::RegionInfo;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{GuestAddress, GuestMemoryAtomic, GuestMemoryBackend};

    const BASE: u64 = 0x100_0000;
    const BS: u64 = 2 << 20;
    const F_WRITE: u16 = 2;

    struct Rig {
        dev: VirtioMem,
        mem: GuestMemory,
    }

    fn rig() -> Rig {
        // Low 1 MiB for the queue and buffers, then the 16 MiB device region.
        let m = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(BASE), 0x100_0000),
        ])
        .expect("mem");
        let mem = GuestMemoryAtomic::new(m);
        let shared = Arc::new(
            VirtioMemShared::new(RegionInfo {
                base: BASE,
                size: 0x100_0000,
                block_size: BS,
            })
            .expect("shared"),
        );
        let dev = VirtioMem::new(shared).expect("device");
        Rig { dev, mem }
    }

    fn req(ty: u16, addr: u64, nb: u16) -> [u8; REQUEST_SIZE] {
        let mut b = [0u8; REQUEST_SIZE];
        b[0..2].copy_from_slice(&ty.to_le_bytes());
        b[8..16].copy_from_slice(&addr.to_le_bytes());
        b[16..18].copy_from_slice(&nb.to_le_bytes());
        b
    }

    /// Sends one chain of (bytes, len, flags) descriptors; returns the
    /// response bytes at 0x9000 and the used length.
    fn send(r: &mut Rig, descs: &[(u64, u32, u16)]) -> ([u8; RESPONSE_SIZE], u32) {
        let guard = r.mem.memory();
        let m: &GuestMemoryMmap<()> = &guard;
        let vq = MockSplitQueue::new(m, 16);
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let next = u16::try_from(i + 1).expect("small");
                let more = if i + 1 < descs.len() { 1 } else { 0 };
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags | more, next))
            })
            .collect();
        vq.build_desc_chain(&raw).expect("chain");
        r.dev.queue = Some(vq.create_queue().expect("queue"));
        r.dev.mem = Some(r.mem.clone());
        r.dev.process_queue();
        let used = vq.used().ring().ref_at(0).expect("used").load();
        let mut resp = [0u8; RESPONSE_SIZE];
        guard
            .read_slice(&mut resp, GuestAddress(0x9000))
            .expect("read response");
        (resp, used.len())
    }

    fn request(r: &mut Rig, ty: u16, addr: u64, nb: u16) -> ([u8; RESPONSE_SIZE], u32) {
        r.mem
            .memory()
            .write_slice(&req(ty, addr, nb), GuestAddress(0x8000))
            .expect("write request");
        r.mem
            .memory()
            .write_slice(&[0xff; RESPONSE_SIZE], GuestAddress(0x9000))
            .expect("poison response");
        send(
            r,
            &[
                (0x8000, 24, 0),
                (0x9000, u32::try_from(RESPONSE_SIZE).expect("10"), F_WRITE),
            ],
        )
    }

    /// Pages of `len` bytes at `addr` resident on the host.
    fn resident_pages(r: &Rig, addr: u64, len: usize) -> usize {
        let guard = r.mem.memory();
        let host = guard
            .get_host_address(GuestAddress(addr))
            .expect("host address");
        let mut vec = vec![0u8; len / 4096];
        // SAFETY: the range lies in one live mapping of the rig's memory;
        // `vec` has one byte per 4 KiB page of it.
        let rc = unsafe { libc::mincore(host.cast(), len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.iter().filter(|b| *b & 1 == 1).count()
    }

    #[test]
    fn with_populate_on_plug_plugged_blocks_are_resident_and_refused_plugs_are_not() {
        let len = usize::try_from(BS).expect("small");
        for populate in [false, true] {
            let mut r = rig();
            r.dev.set_populate_on_plug(populate);
            r.dev.shared.activated.store(true, Ordering::SeqCst);
            r.dev.shared.set_requested_mib(4).expect("requested");
            let (resp, _) = request(&mut r, REQ_PLUG, BASE, 2);
            assert_eq!(resp, Response::Ack(None).encode());
            let (resp, _) = request(&mut r, REQ_PLUG, BASE + 2 * BS, 1);
            assert_eq!(resp, Response::Nack.encode());
            let want = if populate { len / 4096 } else { 0 };
            assert_eq!(resident_pages(&r, BASE, len), want, "populate {populate}");
            assert_eq!(
                resident_pages(&r, BASE + BS, len),
                want,
                "populate {populate}"
            );
            assert_eq!(resident_pages(&r, BASE + 2 * BS, len), 0, "NACKed block");
        }
    }

    #[test]
    fn plug_and_unplug_update_plugged_size_and_discard() {
        let mut r = rig();
        r.dev.shared.activated.store(true, Ordering::SeqCst);
        r.dev.shared.set_requested_mib(8).expect("requested");
        r.mem
            .memory()
            .write_obj(0x55u8, GuestAddress(BASE + BS))
            .expect("write");
        let (resp, len) = request(&mut r, REQ_PLUG, BASE, 4);
        assert_eq!((resp, len), (Response::Ack(None).encode(), 10));
        assert_eq!(r.dev.shared.plugged(), 4 * BS);
        let (resp, _) = request(&mut r, REQ_PLUG, BASE + 4 * BS, 1);
        assert_eq!(resp, Response::Nack.encode(), "above the requested size");
        let (resp, _) = request(&mut r, REQ_STATE, BASE, 5);
        assert_eq!(resp, Response::Ack(Some(BlockState::Mixed)).encode());
        let (resp, _) = request(&mut r, REQ_UNPLUG, BASE + BS, 1);
        assert_eq!(resp, Response::Ack(None).encode());
        assert_eq!(r.dev.shared.plugged(), 3 * BS);
        let byte: u8 = r
            .mem
            .memory()
            .read_obj(GuestAddress(BASE + BS))
            .expect("read");
        assert_eq!(byte, 0, "the unplugged block was discarded");
        let k = &r.dev.shared.counters;
        assert_eq!(k.discard_calls.load(Ordering::Relaxed), 1);
        assert_eq!(k.nacks.load(Ordering::Relaxed), 1);
        let mut cfg = [0u8; 8];
        r.dev.read_config(40, &mut cfg);
        assert_eq!(u64::from_le_bytes(cfg), 3 * BS, "plugged_size");
        r.dev.read_config(48, &mut cfg);
        assert_eq!(u64::from_le_bytes(cfg), 8 << 20, "requested_size");
    }

    #[test]
    fn malformed_chains_are_counted_and_never_panic() {
        let mut r = rig();
        // Request too short: ERROR.
        r.mem
            .memory()
            .write_slice(&req(REQ_PLUG, BASE, 1), GuestAddress(0x8000))
            .expect("write");
        let (resp, len) = send(&mut r, &[(0x8000, 8, 0), (0x9000, 10, F_WRITE)]);
        assert_eq!((resp[0], len), (3, 10));
        // No writable descriptor: nothing written, buffer returned.
        let (_, len) = send(&mut r, &[(0x8000, 24, 0)]);
        assert_eq!(len, 0);
        // Response descriptor too small.
        let (_, len) = send(&mut r, &[(0x8000, 24, 0), (0x9000, 4, F_WRITE)]);
        assert_eq!(len, 0);
        // Request outside guest memory.
        let (resp, _) = send(&mut r, &[(0xffff_0000, 24, 0), (0x9000, 10, F_WRITE)]);
        assert_eq!(resp[0], 3);
        // Unknown request type.
        let (resp, _) = request(&mut r, 9, BASE, 1);
        assert_eq!(resp[0], 3);
        let k = &r.dev.shared.counters;
        assert_eq!(k.malformed_requests.load(Ordering::Relaxed), 5);
        assert_eq!(r.dev.shared.plugged(), 0);
    }

    #[test]
    fn config_space_is_read_only_and_reads_past_the_end_are_zero() {
        let mut r = rig();
        let mut b = [0u8; 8];
        r.dev.read_config(0, &mut b);
        assert_eq!(u64::from_le_bytes(b), BS);
        r.dev.read_config(16, &mut b);
        assert_eq!(u64::from_le_bytes(b), BASE);
        let mut half = [0u8; 4];
        r.dev.read_config(28, &mut half);
        assert_eq!(half, [0; 4], "upper half of region_size");
        r.dev.write_config(48, &[1; 8]);
        r.dev.read_config(48, &mut b);
        assert_eq!(b, [0; 8]);
        r.dev.read_config(u64::MAX, &mut b);
        assert_eq!(b, [0; 8]);
        assert_eq!(r.dev.avail_features(), 1 << VIRTIO_F_VERSION_1);
    }
}
