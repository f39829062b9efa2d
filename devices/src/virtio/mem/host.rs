//! Giving unplugged blocks back to the host: `madvise(MADV_DONTNEED)` on
//! their part of the device region's mapping; and, when asked, making
//! plugged blocks resident at once (`MADV_POPULATE_WRITE`).

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

/// Why a discard was not done.
#[derive(Debug, thiserror::Error)]
pub enum DiscardError {
    /// The range is not inside one mapped guest memory region.
    #[error("{len:#x} bytes at {addr:#x} are not inside one guest memory region")]
    NotMapped {
        /// Guest-physical start.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The kernel refused the call.
    #[error("madvise({advice}) of {len:#x} bytes at {addr:#x}: {source}")]
    Madvise {
        /// Which advice.
        advice: &'static str,
        /// Guest-physical start.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// The OS error.
        source: std::io::Error,
    },
}

/// `MADV_POPULATE_WRITE` (Linux 5.14), not in every libc crate version.
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Discards `len` bytes of guest memory at `addr`, which must lie in one
/// region of `mem`: the host frees the pages, and the next guest access
/// reads zeros.
pub fn discard<M: GuestMemoryBackend>(mem: &M, addr: u64, len: u64) -> Result<(), DiscardError> {
    // SAFETY (of the call `advise` makes): MADV_DONTNEED on a private
    // anonymous mapping only drops the pages: the memory stays mapped and
    // reads back as zeros, which the virtio-mem protocol allows for
    // unplugged blocks.
    advise(mem, addr, len, libc::MADV_DONTNEED, "MADV_DONTNEED")
}

/// Makes `len` bytes of guest memory at `addr`, which must lie in one
/// region of `mem`, resident now (their contents do not change), as
/// QEMU's virtio-mem `prealloc=on` does on plug.
pub fn populate<M: GuestMemoryBackend>(mem: &M, addr: u64, len: u64) -> Result<(), DiscardError> {
    advise(mem, addr, len, MADV_POPULATE_WRITE, "MADV_POPULATE_WRITE")
}

/// `madvise(advice)` over `len` bytes of guest memory at `addr`, checked to
/// lie inside one region of `mem`. `advice` is one that keeps the mapping
/// valid ([`discard`]'s or [`populate`]'s).
fn advise<M: GuestMemoryBackend>(
    mem: &M,
    addr: u64,
    len: u64,
    advice: libc::c_int,
    name: &'static str,
) -> Result<(), DiscardError> {
    let not_mapped = || DiscardError::NotMapped { addr, len };
    let region = mem.find_region(GuestAddress(addr)).ok_or_else(not_mapped)?;
    let offset = addr - region.start_addr().0;
    if offset.checked_add(len).is_none_or(|end| end > region.len()) {
        return Err(not_mapped());
    }
    let host = region
        .get_host_address(MemoryRegionAddress(offset))
        .map_err(|_| not_mapped())?;
    let bytes = usize::try_from(len).map_err(|_| not_mapped())?;
    // SAFETY: `host .. host + bytes` lies inside one mapping that the
    // guest memory map owns (checked against the region's length above),
    // and that the VMM keeps for the VM's lifetime; the callers' advice
    // (MADV_DONTNEED on private anonymous memory, MADV_POPULATE_WRITE)
    // leaves it mapped.
    let rc = unsafe { libc::madvise(host.cast(), bytes, advice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(DiscardError::Madvise {
            advice: name,
            addr,
            len,
            source: std::io::Error::last_os_error(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryMmap};

    #[test]
    fn discarded_memory_reads_zero_and_ranges_outside_are_refused() {
        let m: GuestMemoryMmap<()> =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0x10_0000), 0x40_0000)]).expect("mem");
        m.write_obj(0xdead_beefu32, GuestAddress(0x30_0000))
            .expect("write");
        discard(&m, 0x30_0000, 0x20_0000).expect("discard");
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x30_0000)).expect("read"), 0);
        assert!(matches!(
            discard(&m, 0x40_0000, 0x20_0000),
            Err(DiscardError::NotMapped { .. })
        ));
        assert!(matches!(
            discard(&m, 0, 0x1000),
            Err(DiscardError::NotMapped { .. })
        ));
        assert!(matches!(
            discard(&m, 0x10_0000, u64::MAX),
            Err(DiscardError::NotMapped { .. })
        ));
    }

    #[test]
    fn populated_memory_is_resident_and_keeps_its_contents() {
        let m: GuestMemoryMmap<()> =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0x10_0000), 0x40_0000)]).expect("mem");
        m.write_obj(0xdead_beefu32, GuestAddress(0x10_0000))
            .expect("write");
        populate(&m, 0x10_0000, 0x40_0000).expect("populate");
        assert_eq!(
            m.read_obj::<u32>(GuestAddress(0x10_0000)).expect("read"),
            0xdead_beef
        );
        let host = m
            .get_host_address(GuestAddress(0x10_0000))
            .expect("host address");
        let mut vec = vec![0u8; 0x400];
        // SAFETY: the range is the one live mapping of `m`; `vec` has one
        // byte per 4 KiB page of it.
        let rc = unsafe { libc::mincore(host.cast(), 0x40_0000, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        assert!(vec.iter().all(|b| b & 1 == 1), "every page resident");
        assert!(matches!(
            populate(&m, 0x40_0000, 0x20_0000),
            Err(DiscardError::NotMapped { .. })
        ));
    }
}
