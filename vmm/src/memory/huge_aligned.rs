//! Anonymous guest memory whose host mapping starts on a 2 MiB boundary and
//! is advised `MADV_HUGEPAGE`, so that every 2 MiB-aligned guest block is
//! exactly one host transparent huge page.
//!
//! The virtio-mem region uses it: its blocks (2 MiB or more) are plugged
//! and unplugged whole, so with huge pages a plug populates 64 pages per
//! 128 MiB instead of 32768 and an unplug frees as few. Linux aligns large
//! anonymous mappings to 2 MiB by itself only since 6.7; on older hosts
//! (Debian 12's 6.1, the svm lane's L1) a plain `mmap` lands on any 4 KiB
//! boundary, and every guest block then straddles two huge pages, which
//! the host can back with huge pages only partly.
//!
//! The mapping is made once per VM and kept for the rest of the process
//! (memtide runs one VM per process): vm-memory does not unmap a mapping it
//! did not make, and the guest memory map is shared with device threads
//! until the process exits.

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestRegionMmap, MmapRegion};

/// The host's transparent huge page size on x86_64.
pub const HUGE_PAGE: usize = 2 << 20;

/// Why an aligned mapping could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HugeAlignedError {
    /// A size of zero or one that overflows with the alignment slack.
    #[error("cannot map {0:#x} bytes aligned to 2 MiB")]
    BadSize(usize),
    /// `mmap` failed.
    #[error("cannot map {len:#x} bytes of anonymous memory: {source}")]
    Mmap {
        /// Bytes asked for (with the alignment slack).
        len: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// vm-memory refused the mapping (a bug: the pointer is page-aligned).
    #[error("vm-memory refused the aligned mapping: {0}")]
    Region(vm_memory::mmap::MmapRegionError),
    /// The region would wrap the guest address space.
    #[error("a {len:#x}-byte region at guest address {base:#x} wraps around")]
    Wraps {
        /// Guest-physical start.
        base: u64,
        /// Length in bytes.
        len: usize,
    },
}

/// For a mapping at `start` padded by [`HUGE_PAGE`] bytes: where its
/// aligned part begins, and the padding bytes before and after it (pure).
pub fn aligned_split(start: usize) -> (usize, usize, usize) {
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let head = aligned - start;
    (aligned, head, HUGE_PAGE - head)
}

/// Maps `len` bytes of private anonymous `MAP_NORESERVE` memory starting on
/// a 2 MiB host boundary, advises it `MADV_HUGEPAGE` and returns it as the
/// guest region at `base`.
pub fn map(base: GuestAddress, len: usize) -> Result<GuestRegionMmap<()>, HugeAlignedError> {
    let padded = len
        .checked_add(HUGE_PAGE)
        .filter(|_| len > 0)
        .ok_or(HugeAlignedError::BadSize(len))?;
    let wraps = HugeAlignedError::Wraps { base: base.0, len };
    if base.0.checked_add(len as u64).is_none() {
        return Err(wraps);
    }
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: a new anonymous mapping at an address of the kernel's
    // choosing: it cannot overlap anything this process uses.
    let raw = unsafe { libc::mmap(std::ptr::null_mut(), padded, prot, flags, -1, 0) };
    if raw == libc::MAP_FAILED {
        return Err(HugeAlignedError::Mmap {
            len: padded,
            source: std::io::Error::last_os_error(),
        });
    }
    let (aligned, head, tail) = aligned_split(raw as usize);
    // SAFETY: `head` and `tail` bytes at the two ends lie inside the mapping
    // just made, outside the aligned `len` bytes kept; nothing refers to
    // them. Failure would only leave them mapped.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        libc::munmap((aligned + len) as *mut libc::c_void, tail);
    }
    let ptr = aligned as *mut u8;
    // SAFETY: `ptr` is the start of `len` mapped bytes; MADV_HUGEPAGE only
    // changes how the host backs them. Failure (a host without THP) is
    // harmless and only logged.
    if unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) } != 0 {
        log::info!(
            "madvise(MADV_HUGEPAGE) on a {len:#x}-byte guest region failed: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: `ptr` and `len` are exactly the mapping kept above, which
    // stays mapped for the rest of the process (module docs).
    let region: MmapRegion<()> = unsafe {
        MmapRegionBuilder::new(len)
            .with_mmap_prot(prot)
            .with_mmap_flags(flags)
            .with_raw_mmap_pointer(ptr)
    }
    .build()
    .map_err(HugeAlignedError::Region)?;
    GuestRegionMmap::new(region, base).ok_or(wraps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryRegion, MemoryRegionAddress};

    #[test]
    fn the_kept_part_starts_on_a_huge_page_and_fits_the_padding() {
        for start in [0x7f00_0000_0000usize, 0x7f00_0000_1000, 0x7f00_001f_f000] {
            let (aligned, head, tail) = aligned_split(start);
            assert_eq!(aligned % HUGE_PAGE, 0);
            assert_eq!(aligned, start + head);
            assert_eq!(head + tail, HUGE_PAGE);
        }
        assert_eq!(aligned_split(0x20_0000), (0x20_0000, 0, HUGE_PAGE));
    }

    #[test]
    fn a_mapping_is_aligned_usable_and_checked() {
        let r = map(GuestAddress(0x1_0000_0000), 4 << 20).expect("map");
        let host = r
            .get_host_address(MemoryRegionAddress(0))
            .expect("host address") as usize;
        assert_eq!(host % HUGE_PAGE, 0);
        assert_eq!(r.len(), 4 << 20);
        r.write_obj(0xabcd_u64, MemoryRegionAddress((4 << 20) - 8))
            .expect("write");
        assert_eq!(
            r.read_obj::<u64>(MemoryRegionAddress((4 << 20) - 8))
                .expect("read"),
            0xabcd
        );
        assert!(matches!(
            map(GuestAddress(0), 0),
            Err(HugeAlignedError::BadSize(0))
        ));
        assert!(matches!(
            map(GuestAddress(u64::MAX - 0x1000), 4 << 20),
            Err(HugeAlignedError::Wraps { .. })
        ));
    }
}
