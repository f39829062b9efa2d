//! Giving guest RAM back to the host.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::pfn::PfnRange;
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

/// Result of discarding a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiscardOutcome {
    /// Pages discarded.
    pub pages: u64,
    /// System calls made.
    pub calls: u64,
    /// System calls that failed.
    pub errors: u64,
}

/// Splits `range` at guest-RAM region boundaries into (host pointer, bytes)
/// pieces; pages outside RAM are skipped.
fn host_pieces<M: GuestMemoryBackend>(mem: &M, range: PfnRange) -> Vec<(*mut u8, usize)> {
    let mut out = Vec::new();
    let mut addr = range.start_pfn * PAGE_SIZE;
    let end = (range.start_pfn + range.pages) * PAGE_SIZE;
    while addr < end {
        let Some(region) = mem.find_region(GuestAddress(addr)) else {
            addr += PAGE_SIZE;
            continue;
        };
        let offset = addr - region.start_addr().0;
        let region_end = region.start_addr().0 + region.len();
        let piece_end = end.min(region_end);
        if let Ok(host) = region.get_host_address(MemoryRegionAddress(offset)) {
            out.push((host, (piece_end - addr) as usize));
        }
        addr = piece_end;
    }
    out
}

fn madvise_dontneed(host: *mut u8, len: usize) -> bool {
    // SAFETY: `host..host+len` lies inside one guest RAM mapping that the
    // VMM owns for the VM's lifetime (checked by `host_pieces`).
    // MADV_DONTNEED on a private anonymous mapping only drops the pages;
    // the next access by the guest reads zeros, which is what the balloon
    // protocol allows for inflated pages.
    unsafe { libc::madvise(host.cast(), len, libc::MADV_DONTNEED) == 0 }
}

/// Returns every page of `ranges` to the host.
pub fn discard<M: GuestMemoryBackend>(
    mem: &M,
    ranges: &[PfnRange],
    mode: DiscardMode,
) -> DiscardOutcome {
    let mut out = DiscardOutcome::default();
    for range in ranges {
        for (host, len) in host_pieces(mem, *range) {
            let pages = len as u64 / PAGE_SIZE;
            match mode {
                DiscardMode::Ranges => {
                    out.calls += 1;
                    if madvise_dontneed(host, len) {
                        out.pages += pages;
                    } else {
                        out.errors += 1;
                    }
                }
                DiscardMode::PerPage => {
                    for i in 0..pages as usize {
                        out.calls += 1;
                        // SAFETY (pointer arithmetic): i * 4096 < len, inside the piece.
                        if madvise_dontneed(
                            host.wrapping_add(i * PAGE_SIZE as usize),
                            PAGE_SIZE as usize,
                        ) {
                            out.pages += 1;
                        } else {
                            out.errors += 1;
                        }
                    }
                }
            }
        }
    }
    out
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
                errors: 0
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
                errors: 0
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
                errors: 0
            }
        );
    }
}
