//! virtio-balloon (device type 5): the guest gives pages back to the host.
//!
//! Inflate: the guest driver takes pages from its allocator and sends their
//! PFNs; memtide validates them against guest RAM, merges them into ranges
//! ([`pfn`]) and discards each range with one `madvise(MADV_DONTNEED)`
//! ([`host`]). Guest RAM is backed by transparent huge pages, so ballooned
//! pages are also counted per 2 MiB host block ([`thp`]): a fully ballooned
//! block is discarded whole, a partly ballooned one is kept from
//! khugepaged (which would refill it). Deflate: bookkeeping and huge-page
//! advice only (the next guest touch faults in a zero page). Free page
//! reporting: the guest reports free 2 MiB blocks, discarded the same way. Statistics: the guest
//! refills a buffer whenever memtide returns it (every stats interval).

mod device;
mod event_handler;
pub use event_handler::BalloonHandler;
pub mod host;
pub mod latency;
pub mod pfn;
pub mod stats;
pub mod thp;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

pub use device::Balloon;
use vmm_sys_util::eventfd::EventFd;

pub use stats::BalloonStats;

/// Feature: a statistics queue.
pub const F_STATS_VQ: u32 = 1;
/// Feature: the guest deflates on OOM instead of killing.
pub const F_DEFLATE_ON_OOM: u32 = 2;
/// Feature: free page reporting queue.
pub const F_REPORTING: u32 = 5;
/// Balloon page size (always 4 KiB, whatever the guest page size).
pub const PAGE_SIZE: u64 = 4096;
/// Queue size offered for every balloon queue.
pub const QUEUE_SIZE: u16 = 256;

/// Host-side counters, for the API and benchmarks.
#[derive(Debug, Default)]
pub struct BalloonCounters {
    /// Inflate requests (descriptor chains) processed.
    pub inflate_requests: AtomicU64,
    /// Deflate requests processed.
    pub deflate_requests: AtomicU64,
    /// PFNs outside guest RAM, ignored.
    pub pfns_out_of_range: AtomicU64,
    /// PFNs repeated within a request, counted once.
    pub pfns_duplicate: AtomicU64,
    /// Malformed descriptors (wrong direction, bad length, unreadable).
    pub malformed_descriptors: AtomicU64,
    /// `madvise` calls made.
    pub discard_calls: AtomicU64,
    /// `madvise` calls that failed.
    pub discard_errors: AtomicU64,
    /// Nanoseconds spent in those calls (the host side of inflation).
    pub discard_ns: AtomicU64,
    /// Pages discarded through free page reporting.
    pub reported_pages: AtomicU64,
    /// 2 MiB host blocks discarded whole (fully ballooned, or reported).
    pub whole_block_discards: AtomicU64,
    /// 2 MiB host blocks partly ballooned now, each advised
    /// `MADV_NOHUGEPAGE` so that khugepaged does not refill it.
    pub partial_blocks: AtomicU64,
    /// `MADV_HUGEPAGE`/`MADV_NOHUGEPAGE` calls made for ballooned blocks.
    pub hugepage_advice_calls: AtomicU64,
    /// Those that failed (e.g. past `vm.max_map_count`).
    pub hugepage_advice_errors: AtomicU64,
    /// 4 KiB pages the guest gave up (inflate), valid ones only.
    pub inflated_pages_total: AtomicU64,
    /// 4 KiB pages the guest took back (deflate), valid ones only.
    pub deflated_pages_total: AtomicU64,
}

/// State shared between the device, the control API and benchmarks.
#[derive(Debug)]
pub struct BalloonShared {
    target_pages: AtomicU32,
    actual_pages: AtomicU32,
    inflated_pages: AtomicU64,
    activated: AtomicBool,
    /// Latest statistics from the guest.
    pub stats: Mutex<Option<BalloonStats>>,
    /// Host-side counters.
    pub counters: BalloonCounters,
    /// How long the guest takes to follow each new target.
    pub latency: latency::ResizeLatency,
    target_evt: EventFd,
}

/// A snapshot for `GET /balloon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalloonStatus {
    /// Requested balloon size, MiB.
    pub target_mib: u64,
    /// Balloon size the guest driver reports, MiB, never more than the
    /// host has seen inflated (`actual` is guest-written: a driver that
    /// claims pages it never gave up is not believed).
    pub actual_mib: u64,
    /// Memory the host has discarded and not seen deflated, MiB.
    pub inflated_mib: u64,
    /// Whether the guest driver brought the device up.
    pub driver_ready: bool,
}

impl BalloonShared {
    /// Creates the shared state with a zero target.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            target_pages: AtomicU32::new(0),
            actual_pages: AtomicU32::new(0),
            inflated_pages: AtomicU64::new(0),
            activated: AtomicBool::new(false),
            stats: Mutex::new(None),
            counters: BalloonCounters::default(),
            latency: latency::ResizeLatency::default(),
            target_evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Sets the balloon target; the device tells the guest at once.
    pub fn set_target_mib(&self, mib: u64) -> std::io::Result<()> {
        let pages = u32::try_from(mib.saturating_mul(1 << 20) / PAGE_SIZE).unwrap_or(u32::MAX);
        self.target_pages.store(pages, Ordering::SeqCst);
        self.latency
            .target_set(self.actual_pages(), pages, std::time::Instant::now());
        self.target_evt.write(1)
    }

    /// The current status.
    pub fn status(&self) -> BalloonStatus {
        let mib = |pages: u64| pages.saturating_mul(PAGE_SIZE) >> 20;
        let inflated = self.inflated_pages.load(Ordering::SeqCst);
        let claimed = u64::from(self.actual_pages.load(Ordering::SeqCst));
        BalloonStatus {
            target_mib: mib(u64::from(self.target_pages.load(Ordering::SeqCst))),
            actual_mib: mib(claimed.min(inflated)),
            inflated_mib: mib(inflated),
            driver_ready: self.activated.load(Ordering::SeqCst),
        }
    }

    /// Requested balloon size in pages.
    pub fn target_pages(&self) -> u32 {
        self.target_pages.load(Ordering::SeqCst)
    }

    /// Balloon size the guest reports, in pages (as written: unchecked).
    pub fn actual_pages(&self) -> u32 {
        self.actual_pages.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_claim_above_what_it_inflated_is_not_believed() {
        let shared = BalloonShared::new().expect("shared");
        shared.actual_pages.store(u32::MAX, Ordering::SeqCst);
        shared.inflated_pages.store(28 * 256, Ordering::SeqCst);
        let s = shared.status();
        assert_eq!((s.actual_mib, s.inflated_mib), (28, 28));
        shared.actual_pages.store(16 * 256, Ordering::SeqCst);
        assert_eq!(shared.status().actual_mib, 16, "an honest claim is shown");
    }

    #[test]
    fn a_huge_target_saturates_instead_of_wrapping() {
        let shared = BalloonShared::new().expect("shared");
        shared.set_target_mib(u64::MAX).expect("target");
        assert_eq!(shared.target_pages(), u32::MAX);
    }
}
