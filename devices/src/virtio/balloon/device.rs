//! The balloon device: configuration space, activation and queue handling.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::host::{apply, host_pieces, untracked_plan, DiscardMode, DiscardOutcome};
use super::pfn::{compact, Compacted, PfnRange};
use super::thp::{BlockTracker, Plan};
use super::{
    stats, BalloonShared, F_DEFLATE_ON_OOM, F_REPORTING, F_STATS_VQ, PAGE_SIZE, QUEUE_SIZE,
};
use crate::virtio::interrupt::{INT_CONFIG, INT_VRING};
use crate::virtio::{
    ActivateError, GuestMemory, Interrupt, VirtioDevice, TYPE_BALLOON, VIRTIO_F_VERSION_1,
};

/// Most PFNs read from one inflate/deflate chain (Linux sends 256).
const MAX_PFNS_PER_CHAIN: usize = 1 << 16;

/// What a queue is for, given the negotiated features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Inflate,
    Deflate,
    Stats,
    Reporting,
}

/// Queue roles in transport order for `acked` features (virtio 1.x
/// §5.5.2: inflateq, deflateq, then statsq and reporting_vq if negotiated).
pub(super) fn roles(acked: u64) -> Vec<Role> {
    let mut r = vec![Role::Inflate, Role::Deflate];
    if acked & (1 << F_STATS_VQ) != 0 {
        r.push(Role::Stats);
    }
    if acked & (1 << F_REPORTING) != 0 {
        r.push(Role::Reporting);
    }
    r
}

/// Gives each ready queue its role by its transport index (never by its
/// position among the ready ones): a driver that readies queue 1 but not
/// queue 0 must not have its deflate requests taken for inflates. Every
/// queue the negotiated features need must be ready; extra ones are
/// ignored.
pub(super) fn assign_roles(
    acked: u64,
    queues: Vec<(usize, Queue)>,
) -> Result<Vec<ActiveQueue>, ActivateError> {
    let roles = roles(acked);
    let mut slots: Vec<Option<Queue>> = roles.iter().map(|_| None).collect();
    for (index, queue) in queues {
        match slots.get_mut(index) {
            Some(slot) => *slot = Some(queue),
            None => log::debug!("balloon: ignored ready queue {index}"),
        }
    }
    slots
        .into_iter()
        .zip(roles)
        .enumerate()
        .map(|(index, (queue, role))| {
            queue
                .map(|queue| ActiveQueue { role, index, queue })
                .ok_or(ActivateError::QueueNotReady { index })
        })
        .collect()
}

/// An active queue.
#[derive(Debug)]
pub(super) struct ActiveQueue {
    pub(super) role: Role,
    pub(super) index: usize,
    pub(super) queue: Queue,
}

/// The virtio-balloon device.
#[derive(Debug)]
pub struct Balloon {
    pub(super) shared: Arc<BalloonShared>,
    pub(super) mode: DiscardMode,
    pub(super) stats_interval: Option<Duration>,
    pub(super) reporting: bool,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) activate_evt: EventFd,
    pub(super) queues: Vec<ActiveQueue>,
    pub(super) mem: Option<GuestMemory>,
    pub(super) interrupt: Option<Arc<Interrupt>>,
    /// The stats buffer the guest gave us and we hold until the next poll.
    pub(super) stats_head: Option<u16>,
    pub(super) started: Instant,
    /// Which host pages are ballooned, per 2 MiB block.
    pub(super) blocks: BlockTracker,
}

impl Balloon {
    /// Creates the device. `stats_interval` of `None` disables statistics;
    /// `reporting` offers free page reporting.
    pub fn new(
        shared: Arc<BalloonShared>,
        mode: DiscardMode,
        stats_interval: Option<Duration>,
        reporting: bool,
    ) -> std::io::Result<Self> {
        Ok(Self {
            shared,
            mode,
            stats_interval,
            reporting,
            queue_evts: Vec::new(),
            activate_evt: EventFd::new(libc::EFD_NONBLOCK)?,
            queues: Vec::new(),
            mem: None,
            interrupt: None,
            stats_head: None,
            started: Instant::now(),
            blocks: BlockTracker::new(),
        })
    }

    /// Hands the device clones of the transport's queue eventfds.
    pub fn set_queue_evts(&mut self, evts: Vec<EventFd>) {
        self.queue_evts = evts;
    }

    /// The shared state (for the control API).
    pub fn shared(&self) -> Arc<BalloonShared> {
        self.shared.clone()
    }

    pub(super) fn signal(&self, bits: u32) {
        if let Some(i) = &self.interrupt {
            if let Err(e) = i.signal(bits) {
                log::error!("balloon: cannot raise interrupt: {e}");
            }
        }
    }

    /// Reads little-endian u32 PFNs from the device-readable descriptors of
    /// `chain`; malformed descriptors are counted and skipped.
    fn read_pfns(
        &self,
        mem: &GuestMemoryMmap<()>,
        chain: DescriptorChain<&GuestMemoryMmap<()>>,
    ) -> Vec<u32> {
        let mut pfns = Vec::new();
        for desc in chain {
            let len = desc.len() as usize;
            if desc.is_write_only() || len % 4 != 0 || pfns.len() + len / 4 > MAX_PFNS_PER_CHAIN {
                self.shared
                    .counters
                    .malformed_descriptors
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut buf = vec![0u8; len];
            if mem.read_slice(&mut buf, desc.addr()).is_err() {
                self.shared
                    .counters
                    .malformed_descriptors
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            pfns.extend(
                buf.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        pfns
    }

    /// Processes every available chain of active queue `slot`.
    pub(super) fn process_queue(&mut self, slot: usize) {
        let Some(mem) = self.mem.clone() else { return };
        let guard = mem.memory();
        let m: &GuestMemoryMmap<()> = &guard;
        let Some(role) = self.queues.get(slot).map(|q| q.role) else {
            return;
        };
        let mut used_any = false;
        while let Some(chain) = self.queues[slot].queue.pop_descriptor_chain(m) {
            let head = chain.head_index();
            match role {
                Role::Inflate => self.inflate(m, chain),
                Role::Deflate => self.deflate(m, chain),
                Role::Reporting => self.free_pages_reported(m, chain),
                Role::Stats => {
                    self.stats_arrived(m, chain);
                    // Hold the buffer: returning it is how we ask for new stats.
                    match self.stats_head.replace(head) {
                        Some(old) => self.add_used(slot, old),
                        None => continue,
                    }
                    used_any = true;
                    continue;
                }
            }
            self.add_used(slot, head);
            used_any = true;
        }
        if used_any {
            self.notify(slot);
        }
    }

    /// Reads, validates and merges the PFNs of an inflate/deflate chain,
    /// counting what was rejected.
    fn pfn_ranges(
        &self,
        m: &GuestMemoryMmap<()>,
        chain: DescriptorChain<&GuestMemoryMmap<()>>,
    ) -> Compacted {
        let pfns = self.read_pfns(m, chain);
        let c = compact(&pfns, |pfn| {
            m.address_in_range(GuestAddress(pfn.saturating_mul(PAGE_SIZE)))
        });
        let k = &self.shared.counters;
        k.pfns_out_of_range
            .fetch_add(c.out_of_range, Ordering::Relaxed);
        k.pfns_duplicate.fetch_add(c.duplicates, Ordering::Relaxed);
        c
    }

    fn inflate(&mut self, m: &GuestMemoryMmap<()>, chain: DescriptorChain<&GuestMemoryMmap<()>>) {
        let c = self.pfn_ranges(m, chain);
        self.shared
            .counters
            .inflate_requests
            .fetch_add(1, Ordering::Relaxed);
        self.shared
            .counters
            .inflated_pages_total
            .fetch_add(c.ranges.iter().map(|r| r.pages).sum(), Ordering::Relaxed);
        self.track(m, &c.ranges, true);
    }

    fn deflate(&mut self, m: &GuestMemoryMmap<()>, chain: DescriptorChain<&GuestMemoryMmap<()>>) {
        let c = self.pfn_ranges(m, chain);
        self.shared
            .counters
            .deflate_requests
            .fetch_add(1, Ordering::Relaxed);
        self.shared
            .counters
            .deflated_pages_total
            .fetch_add(c.ranges.iter().map(|r| r.pages).sum(), Ordering::Relaxed);
        self.track(m, &c.ranges, false);
    }

    /// Records inflated (or deflated) `ranges` in the block tracker and
    /// makes the host calls that follow.
    fn track(&mut self, m: &GuestMemoryMmap<()>, ranges: &[PfnRange], inflate: bool) {
        let mut plan = Plan::default();
        for range in ranges {
            for piece in host_pieces(m, *range) {
                let r = if inflate {
                    self.blocks.inflate(piece.run, piece.mapping, &mut plan)
                } else {
                    self.blocks.deflate(piece.run, piece.mapping, &mut plan)
                };
                if let Err(e) = r {
                    memtide_log_limit::warn_limited!("balloon: {e}");
                }
            }
        }
        self.run_plan(m, &plan);
        self.shared
            .inflated_pages
            .store(self.blocks.pages(), Ordering::SeqCst);
        self.shared
            .counters
            .partial_blocks
            .store(self.blocks.partial_blocks(), Ordering::Relaxed);
    }

    /// Makes the calls of `plan` and counts them.
    fn run_plan(&self, m: &GuestMemoryMmap<()>, plan: &Plan) -> DiscardOutcome {
        let k = &self.shared.counters;
        let t = Instant::now();
        let out = apply(m, plan, self.mode);
        k.discard_ns
            .fetch_add(saturating_u64(t.elapsed().as_nanos()), Ordering::Relaxed);
        k.discard_calls.fetch_add(out.calls, Ordering::Relaxed);
        k.discard_errors.fetch_add(out.errors, Ordering::Relaxed);
        k.hugepage_advice_calls
            .fetch_add(out.advice_calls, Ordering::Relaxed);
        k.hugepage_advice_errors
            .fetch_add(out.advice_errors, Ordering::Relaxed);
        k.whole_block_discards
            .fetch_add(plan.whole_blocks, Ordering::Relaxed);
        if out.advice_errors > 0 {
            memtide_log_limit::warn_limited!(
                "balloon: {} huge-page advice calls failed (vm.max_map_count?)",
                out.advice_errors
            );
        }
        out
    }

    fn stats_arrived(
        &mut self,
        m: &GuestMemoryMmap<()>,
        chain: DescriptorChain<&GuestMemoryMmap<()>>,
    ) {
        let mut buf = Vec::new();
        for desc in chain {
            if desc.is_write_only() || desc.len() > 4096 {
                self.shared
                    .counters
                    .malformed_descriptors
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut part = vec![0u8; desc.len() as usize];
            if m.read_slice(&mut part, desc.addr()).is_ok() {
                buf.extend_from_slice(&part);
            }
        }
        let now = saturating_u64(self.started.elapsed().as_millis());
        *crate::bus::lock(&self.shared.stats) = Some(stats::parse(&buf, now));
    }

    fn free_pages_reported(
        &mut self,
        m: &GuestMemoryMmap<()>,
        chain: DescriptorChain<&GuestMemoryMmap<()>>,
    ) {
        let mut ranges = Vec::new();
        for desc in chain {
            let (addr, len) = (desc.addr().0, u64::from(desc.len()));
            if addr % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
                self.shared
                    .counters
                    .malformed_descriptors
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            ranges.push(PfnRange {
                start_pfn: addr / PAGE_SIZE,
                pages: len / PAGE_SIZE,
            });
        }
        let out = self.run_plan(m, &untracked_plan(m, &ranges));
        self.shared
            .counters
            .reported_pages
            .fetch_add(out.pages, Ordering::Relaxed);
    }

    fn add_used(&mut self, slot: usize, head: u16) {
        let Some(mem) = self.mem.clone() else { return };
        if let Err(e) = self.queues[slot].queue.add_used(&*mem.memory(), head, 0) {
            memtide_log_limit::warn_limited!("balloon: cannot return a buffer: {e}");
        }
    }

    fn notify(&mut self, slot: usize) {
        let Some(mem) = self.mem.clone() else { return };
        let needs = self.queues[slot]
            .queue
            .needs_notification(&*mem.memory())
            .unwrap_or(true);
        if needs {
            self.signal(INT_VRING);
        }
    }

    /// Returns the held stats buffer, asking the guest for fresh numbers.
    pub(super) fn request_stats(&mut self) {
        let Some(slot) = self.queues.iter().position(|q| q.role == Role::Stats) else {
            return;
        };
        if let Some(head) = self.stats_head.take() {
            self.add_used(slot, head);
            self.notify(slot);
        }
    }

    /// Tells the guest the target changed.
    pub(super) fn target_changed(&mut self) {
        self.signal(INT_CONFIG);
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        TYPE_BALLOON
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        // inflate, deflate, stats, reporting
        vec![QUEUE_SIZE; 4]
    }

    fn avail_features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1) | (1 << F_DEFLATE_ON_OOM);
        if self.stats_interval.is_some() {
            f |= 1 << F_STATS_VQ;
        }
        if self.reporting {
            f |= 1 << F_REPORTING;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut cfg = [0u8; 16];
        cfg[0..4].copy_from_slice(&self.shared.target_pages().to_le_bytes());
        cfg[4..8].copy_from_slice(&self.shared.actual_pages().to_le_bytes());
        // The offset is the guest's: one past any index reads as zero.
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, d) in data.iter_mut().enumerate() {
            *d = cfg.get(start.saturating_add(i)).copied().unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` (bytes 4..8) is driver-writable.
        if offset == 4 && data.len() == 4 {
            let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            self.shared.actual_pages.store(v, Ordering::SeqCst);
            self.shared.latency.actual_written(v, Instant::now());
        } else {
            log::debug!("balloon: ignored config write at {offset}");
        }
    }

    fn activate(
        &mut self,
        acked: u64,
        queues: Vec<(usize, Queue)>,
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        self.queues = assign_roles(acked, queues)?;
        self.mem = Some(mem);
        self.interrupt = Some(interrupt);
        self.shared.activated.store(true, Ordering::SeqCst);
        self.activate_evt.write(1).map_err(|_| ActivateError::Wake)
    }

    fn reset(&mut self) {
        // The driver forgets its balloon on reset: so does the host, and
        // partly ballooned blocks may be huge again.
        let plan = self.blocks.reset();
        if let Some(mem) = self.mem.clone() {
            self.run_plan(&mem.memory(), &plan);
        }
        self.shared.inflated_pages.store(0, Ordering::SeqCst);
        self.shared
            .counters
            .partial_blocks
            .store(0, Ordering::Relaxed);
        self.queues.clear();
        self.stats_head = None;
        self.shared.activated.store(false, Ordering::SeqCst);
    }
}

/// `n` as a u64, saturating (durations that would not fit are centuries).
fn saturating_u64(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_roles_follow_negotiated_features() {
        assert_eq!(roles(0), vec![Role::Inflate, Role::Deflate]);
        assert_eq!(
            roles((1 << F_STATS_VQ) | (1 << F_REPORTING)),
            vec![Role::Inflate, Role::Deflate, Role::Stats, Role::Reporting]
        );
        assert_eq!(
            roles(1 << F_REPORTING),
            vec![Role::Inflate, Role::Deflate, Role::Reporting]
        );
    }

    fn ready(indices: &[usize]) -> Vec<(usize, Queue)> {
        indices
            .iter()
            .map(|&i| (i, Queue::new(256).expect("queue")))
            .collect()
    }

    #[test]
    fn queue_roles_follow_the_transport_index_not_the_ready_order() {
        let active = assign_roles(0, ready(&[1, 0])).expect("both ready");
        let by_index: Vec<(usize, Role)> = active.iter().map(|q| (q.index, q.role)).collect();
        assert_eq!(by_index, vec![(0, Role::Inflate), (1, Role::Deflate)]);
        // Queues 1-3 ready, queue 0 not: refused, never "queue 1 inflates".
        let stats = (1 << F_STATS_VQ) | (1 << F_REPORTING);
        assert!(matches!(
            assign_roles(stats, ready(&[1, 2, 3])),
            Err(ActivateError::QueueNotReady { index: 0 })
        ));
        assert!(matches!(
            assign_roles(stats, ready(&[0, 1, 3])),
            Err(ActivateError::QueueNotReady { index: 2 })
        ));
        // A queue beyond the negotiated ones is ignored.
        let active = assign_roles(0, ready(&[0, 1, 2])).expect("extra ignored");
        assert_eq!(active.len(), 2);
    }

    #[test]
    fn config_space_exposes_target_and_takes_actual() {
        let shared = Arc::new(BalloonShared::new().expect("shared"));
        let mut b =
            Balloon::new(shared.clone(), DiscardMode::Ranges, None, false).expect("balloon");
        shared.set_target_mib(64).expect("target");
        let mut num = [0u8; 4];
        b.read_config(0, &mut num);
        assert_eq!(u32::from_le_bytes(num), 64 * 256);
        b.write_config(4, &(1000u32).to_le_bytes());
        assert_eq!(shared.actual_pages(), 1000);
        b.write_config(0, &(5u32).to_le_bytes());
        assert_eq!(shared.target_pages(), 64 * 256, "num_pages is read-only");
        let mut past_end = [0xffu8; 4];
        b.read_config(30, &mut past_end);
        assert_eq!(past_end, [0; 4]);
        let mut far = [0xffu8; 4];
        b.read_config(u64::MAX, &mut far);
        assert_eq!(far, [0; 4], "a huge guest offset reads zeros, no overflow");
        assert_eq!(
            b.avail_features() & (1 << F_STATS_VQ),
            0,
            "no stats without an interval"
        );
        assert_eq!(
            b.avail_features() & (1 << F_REPORTING),
            0,
            "reporting is opt-in"
        );
    }
}
