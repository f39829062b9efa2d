//! Giving unplugged blocks back to the host: `madvise(MADV_DONTNEED)` on
//! their part of the device region's mapping.

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
    #[error("madvise(MADV_DONTNEED) of {len:#x} bytes at {addr:#x}: {source}")]
    Madvise {
        /// Guest-physical start.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Discards `len` bytes of guest memory at `addr`, which must lie in one
/// region of `mem`: the host frees the pages, and the next guest access
/// reads zeros.
pub fn discard<M: GuestMemoryBackend>(mem: &M, addr: u64, len: u64) -> Result<(), DiscardError> {
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
    // and that the VMM keeps for the VM's lifetime. MADV_DONTNEED on a
    // private anonymous mapping only drops the pages: the memory stays
    // mapped and reads back as zeros, which the virtio-mem protocol allows
    // for unplugged blocks.
    let rc = unsafe { libc::madvise(host.cast(), bytes, libc::MADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(DiscardError::Madvise {
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
}
