//! Giving guest RAM back to the host.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::pfn::PfnRange;
use super::thp::{Advice, PageRun, Plan};
use super::PAGE_SIZE;

/// How ranges are returned to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiscardMode {
    /// One `madvise` per merged range (memtide's default).
    #[default]
    Ranges,
    /// One `madvise` per 4 KiB page, as QEMU and Cloud Hypervisor do: kept
    /// for side-by-side benchmarks.
    PerPage,
}

/// Result of carrying out a [`Plan`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiscardOutcome {
    /// Pages discarded.
    pub pages: u64,
    /// `MADV_DONTNEED` calls made.
    pub calls: u64,
    /// `MADV_DONTNEED` calls that failed.
    pub errors: u64,
    /// `MADV_HUGEPAGE`/`MADV_NOHUGEPAGE` calls made.
    pub advice_calls: u64,
    /// Advice calls that failed (e.g. `ENOMEM` past `vm.max_map_count`:
    /// the block then stays huge-page eligible, nothing else changes).
    pub advice_errors: u64,
}

/// A guest range's part inside one host mapping, in host page numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPiece {
    /// The pages.
    pub run: PageRun,
    /// The whole host mapping (guest RAM region) they lie in.
    pub mapping: PageRun,
}

/// The host mapping of a region, in host page numbers.
fn region_mapping<R: GuestMemoryRegion>(region: &R) -> Option<PageRun> {
    let host = region.get_host_address(MemoryRegionAddress(0)).ok()? as u64;
    Some(PageRun {
        start: host / PAGE_SIZE,
        pages: region.len() / PAGE_SIZE,
    })
}

/// Splits `range` at guest-RAM region boundaries into host pieces; pages
/// outside RAM are skipped.
pub fn host_pieces<M: GuestMemoryBackend>(mem: &M, range: PfnRange) -> Vec<HostPiece> {
    let mut out = Vec::new();
    let mut addr = range.start_pfn.saturating_mul(PAGE_SIZE);
    let end = range
        .start_pfn
        .saturating_add(range.pages)
        .saturating_mul(PAGE_SIZE);
    while addr < end {
        let Some(region) = mem.find_region(GuestAddress(addr)) else {
            addr += PAGE_SIZE;
            continue;
        };
        let offset = addr - region.start_addr().0;
        let region_end = region.start_addr().0 + region.len();
        let piece_end = end.min(region_end);
        if let Some(mapping) = region_mapping(region) {
            out.push(HostPiece {
                run: PageRun {
                    start: mapping.start + offset / PAGE_SIZE,
                    pages: (piece_end - addr) / PAGE_SIZE,
                },
                mapping,
            });
        }
        addr = piece_end;
    }
    out
}

/// A plan that discards every page of `ranges`, tracking nothing (free
/// page reporting: the guest reuses reported pages without telling).
pub fn untracked_plan<M: GuestMemoryBackend>(mem: &M, ranges: &[PfnRange]) -> Plan {
    let mut plan = Plan::default();
    for range in ranges {
        for piece in host_pieces(mem, *range) {
            plan.discard_untracked(piece.run);
        }
    }
    plan
}

fn madvise(run: PageRun, advice: libc::c_int) -> bool {
    let (Some(addr), Some(len)) = (
        run.start.checked_mul(PAGE_SIZE),
        run.pages
            .checked_mul(PAGE_SIZE)
            .and_then(|len| usize::try_from(len).ok()),
    ) else {
        return false;
    };
    // SAFETY: `run` lies inside one guest RAM mapping that the VMM owns
    // for the VM's lifetime (`apply` clips every call to a region of
    // `mem`). MADV_DONTNEED on a private anonymous mapping only drops the
    // pages (the next guest access reads zeros, which the balloon protocol
    // allows for inflated pages); MADV_HUGEPAGE / MADV_NOHUGEPAGE only
    // change how the kernel backs the range, never its contents.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) == 0 }
}

/// Makes the calls of `plan`, each clipped to the host mappings of `mem`'s
/// regions (a run outside them is never passed to the kernel).
pub fn apply<M: GuestMemoryBackend>(mem: &M, plan: &Plan, mode: DiscardMode) -> DiscardOutcome {
    let mappings: Vec<PageRun> = mem.iter().filter_map(region_mapping).collect();
    let mut out = DiscardOutcome::default();
    for action in plan.actions() {
        for mapping in &mappings {
            let start = action.run.start.max(mapping.start);
            let end = action.run.end().min(mapping.end());
            if start >= end {
                continue;
            }
            let run = PageRun {
                start,
                pages: end - start,
            };
            match (action.advice, mode) {
                (Advice::Discard, DiscardMode::Ranges) => {
                    out.calls += 1;
                    if madvise(run, libc::MADV_DONTNEED) {
                        out.pages += run.pages;
                    } else {
                        out.errors += 1;
                    }
                }
                (Advice::Discard, DiscardMode::PerPage) => {
                    for start in run.start..run.end() {
                        out.calls += 1;
                        if madvise(PageRun { start, pages: 1 }, libc::MADV_DONTNEED) {
                            out.pages += 1;
                        } else {
                            out.errors += 1;
                        }
                    }
                }
                (Advice::NoHugePage | Advice::HugePage, _) => {
                    let advice = if action.advice == Advice::HugePage {
                        libc::MADV_HUGEPAGE
                    } else {
                        libc::MADV_NOHUGEPAGE
                    };
                    out.advice_calls += 1;
                    if !madvise(run, advice) {
                        out.advice_errors += 1;
                    }
                }
            }
        }
    }
    out
}

/// Returns every page of `ranges` to the host, tracking nothing.
pub fn discard<M: GuestMemoryBackend>(
    mem: &M,
    ranges: &[PfnRange],
    mode: DiscardMode,
) -> DiscardOutcome {
    apply(mem, &untracked_plan(mem, ranges), mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryMmap};

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10_000),
            (GuestAddress(0x10_000), 0x10_000),
        ])
        .expect("mem")
    }

    #[test]
    fn discarded_pages_read_back_as_zero_and_calls_are_counted() {
        let m = mem();
        m.write_obj(0xdead_beefu32, GuestAddress(0x3000))
            .expect("write");
        m.write_obj(0xdead_beefu32, GuestAddress(0x11000))
            .expect("write");
        // One range spanning the boundary between the two regions.
        let r = [PfnRange {
            start_pfn: 3,
            pages: 15,
        }];
        let out = discard(&m, &r, DiscardMode::Ranges);
        assert_eq!(
            out,
            DiscardOutcome {
                pages: 15,
                calls: 2,
                ..Default::default()
            }
        );
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x3000)).expect("read"), 0);
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x11000)).expect("read"), 0);
        let out = discard(&m, &r, DiscardMode::PerPage);
        assert_eq!(
            out,
            DiscardOutcome {
                pages: 15,
                calls: 15,
                ..Default::default()
            }
        );
    }

    #[test]
    fn pages_outside_ram_are_skipped() {
        let out = discard(
            &mem(),
            &[PfnRange {
                start_pfn: 30,
                pages: 4,
            }],
            DiscardMode::Ranges,
        );
        assert_eq!(
            out,
            DiscardOutcome {
                pages: 2,
                calls: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn tracked_plans_advise_and_discard_inside_guest_ram() {
        use crate::virtio::balloon::thp::BlockTracker;
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).expect("mem");
        m.write_obj(7u32, GuestAddress(0x5000)).expect("write");
        let mut t = BlockTracker::new();
        let mut plan = Plan::default();
        // Every other page of the first MiB: partly ballooned blocks.
        for pfn in (0..256).step_by(2) {
            let range = PfnRange {
                start_pfn: pfn,
                pages: 1,
            };
            for p in host_pieces(&m, range) {
                t.inflate(p.run, p.mapping, &mut plan).expect("inflate");
            }
        }
        let out = apply(&m, &plan, DiscardMode::Ranges);
        assert_eq!((out.pages, out.errors, out.advice_errors), (128, 0, 0));
        assert!(out.advice_calls >= 1);
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x5000)).expect("read"), 7);
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x4000)).expect("read"), 0);
        // A run far outside guest RAM is never passed to the kernel.
        let mut stray = Plan::default();
        stray.discard_untracked(PageRun {
            start: 1,
            pages: 10,
        });
        assert_eq!(
            apply(&m, &stray, DiscardMode::Ranges),
            DiscardOutcome::default()
        );
    }

    /// Ballooned pages of `m` still resident on the host, after asking the
    /// kernel to collapse the mapping into huge pages as khugepaged would
    /// (`MADV_COLLAPSE`). `None` if this host cannot collapse at all.
    fn resident_after_collapse(m: &GuestMemoryMmap<()>, pfns: &[u64]) -> Option<usize> {
        const MADV_COLLAPSE: libc::c_int = 25;
        let host = m.get_host_address(GuestAddress(0)).expect("host address");
        let len = 8usize << 20;
        let mut vec = vec![0u8; len / 4096];
        // SAFETY: `host..host+len` is `m`'s one mapping; MADV_COLLAPSE only
        // changes how it is backed.
        let collapsed = unsafe { libc::madvise(host.cast(), len, MADV_COLLAPSE) } == 0;
        // SAFETY: same mapping; mincore only writes residency into `vec`,
        // which has one byte per page of it.
        let rc = unsafe { libc::mincore(host.cast(), len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        let resident = pfns
            .iter()
            .filter(|&&p| vec[usize::try_from(p).expect("pfn")] & 1 != 0)
            .count();
        (collapsed || resident < pfns.len()).then_some(resident)
    }

    #[test]
    fn scattered_balloon_pages_are_not_refilled_by_huge_page_collapse() {
        let fresh = || {
            let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).expect("mem");
            let host = m.get_host_address(GuestAddress(0)).expect("host");
            // SAFETY: the range is `m`'s own mapping; the advice only
            // changes how it is backed.
            unsafe { libc::madvise(host.cast(), 8 << 20, libc::MADV_HUGEPAGE) };
            for pfn in 0..2048u64 {
                m.write_obj(1u8, GuestAddress(pfn * PAGE_SIZE))
                    .expect("write");
            }
            m
        };
        // Every 4th page: every block is partly ballooned.
        let pfns: Vec<u64> = (0..2048).step_by(4).collect();
        let ranges: Vec<PfnRange> = pfns
            .iter()
            .map(|&start_pfn| PfnRange {
                start_pfn,
                pages: 1,
            })
            .collect();
        // The untracked path: a collapse refills the holes.
        let old = fresh();
        discard(&old, &ranges, DiscardMode::Ranges);
        let Some(refilled) = resident_after_collapse(&old, &pfns) else {
            eprintln!("skipped: no MADV_COLLAPSE / THP on this host");
            return;
        };
        // The tracked path: partly ballooned blocks are not collapsed.
        let new = fresh();
        let mut t = crate::virtio::balloon::thp::BlockTracker::new();
        let mut plan = Plan::default();
        for r in &ranges {
            for p in host_pieces(&new, *r) {
                t.inflate(p.run, p.mapping, &mut plan).expect("inflate");
            }
        }
        let out = apply(&new, &plan, DiscardMode::Ranges);
        assert_eq!((out.errors, out.advice_errors), (0, 0));
        let kept_out = resident_after_collapse(&new, &pfns).unwrap_or(0);
        eprintln!("ballooned pages resident after collapse: untracked {refilled}, tracked {kept_out} of {}", pfns.len());
        assert_eq!(kept_out, 0, "tracked ballooned pages came back");
    }
}
