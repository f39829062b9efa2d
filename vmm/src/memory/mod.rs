//! Guest RAM: anonymous host mappings registered as KVM memory slots
//! ([`register_region`] is the one place a region becomes a KVM slot, for
//! boot RAM, hot-added slots and the virtio-mem region alike); memory
//! hot-add is [`hotplug`], the virtio-mem region [`virtio_mem`].

pub mod hotplug;
pub mod huge_aligned;
pub mod virtio_mem;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use crate::arch::x86_64::layout;

/// The guest's RAM as the VMM sees it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Errors from creating or registering guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host could not map the requested RAM.
    #[error("cannot allocate {mib} MiB of guest RAM: {source}")]
    Allocate {
        /// Requested size.
        mib: u64,
        /// Why the mapping failed.
        source: vm_memory::mmap::FromRangesError,
    },
    /// A size that does not fit the host's address type.
    #[error("guest RAM size {0} bytes is too large for this host")]
    TooLarge(u64),
    /// A region without a host mapping (never happens for mmap-backed RAM).
    #[error("guest RAM region at {0:#x} has no host mapping")]
    NoHostMapping(u64),
    /// KVM refused the memory slot.
    #[error("KVM rejected memory slot {slot}: {source}")]
    SetSlot {
        /// The slot number.
        slot: u32,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
}

/// Maps `ram_mib` MiB of anonymous memory laid out by [`layout::ram_regions`].
pub fn create_guest_memory(ram_mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let bytes = ram_mib << 20;
    let ranges = layout::ram_regions(bytes)
        .into_iter()
        .map(|(addr, len)| {
            usize::try_from(len)
                .map(|len| (addr, len))
                .map_err(|_| MemoryError::TooLarge(bytes))
        })
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Allocate {
        mib: ram_mib,
        source,
    })
}

/// The host mapping of every RAM region: (start pointer, length in bytes).
fn host_mappings(mem: &GuestMemoryMmap) -> impl Iterator<Item = (*mut u8, usize)> + '_ {
    mem.iter().filter_map(|region| {
        let host = region.get_host_address(MemoryRegionAddress(0)).ok()?;
        let len = usize::try_from(region.len()).ok()?;
        Some((host, len))
    })
}

/// Asks the host to back guest RAM with transparent huge pages where it
/// can (as QEMU does). Fewer, larger host pages make the host's second-level
/// (or shadow) page tables smaller and guest page faults rarer; on hosts
/// whose THP mode is `madvise` this is the difference between 4 KiB and
/// 2 MiB backing. Failure is harmless and only logged.
pub fn advise_huge_pages(mem: &GuestMemoryMmap) {
    for (host, len) in host_mappings(mem) {
        // SAFETY: the range is exactly one mapping owned by `mem`;
        // MADV_HUGEPAGE only changes how the kernel backs it, never its
        // contents or validity.
        let rc = unsafe { libc::madvise(host.cast(), len, libc::MADV_HUGEPAGE) };
        if rc != 0 {
            log::info!(
                "madvise(MADV_HUGEPAGE) on guest RAM failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Registers one guest RAM region as KVM memory slot `slot`.
///
/// The region's mapping must stay alive as long as the VM: callers keep it
/// in the guest memory map, which the VMM holds until it exits.
pub fn register_region(
    vm: &VmFd,
    slot: u32,
    region: &vm_memory::GuestRegionMmap<()>,
) -> Result<(), MemoryError> {
    let host = region
        .get_host_address(MemoryRegionAddress(0))
        .map_err(|_| MemoryError::NoHostMapping(region.start_addr().0))?;
    let region_desc = kvm_userspace_memory_region {
        slot,
        guest_phys_addr: region.start_addr().0,
        memory_size: region.len(),
        userspace_addr: host as u64,
        flags: 0,
    };
    // SAFETY: the host range is the region's own mapping, which (per this
    // function's contract) lives as long as the VM; guest RAM regions and
    // hot-plug slots never overlap, so neither do the memory slots.
    unsafe { vm.set_user_memory_region(region_desc) }
        .map_err(|source| MemoryError::SetSlot { slot, source })
}

/// Registers every region of `mem` with KVM, one slot per region starting at 0.
///
/// Returns the next free slot number.
pub fn register_with_kvm(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<u32, MemoryError> {
    let mut slot = 0u32;
    for region in mem.iter() {
        register_region(vm, slot, region)?;
        slot += 1;
    }
    Ok(slot)
}

/// Bytes of guest RAM currently resident on the host, measured with
/// `mincore` over every RAM mapping.
pub fn resident_bytes(mem: &GuestMemoryMmap) -> u64 {
    const PAGE: usize = 4096;
    let mut total = 0u64;
    for (host, len) in host_mappings(mem) {
        let mut vec = vec![0u8; len.div_ceil(PAGE)];
        // SAFETY: `host..host+len` is one live mapping owned by `mem`, and
        // `vec` has one byte per page of it, as mincore requires.
        let rc = unsafe { libc::mincore(host.cast(), len, vec.as_mut_ptr()) };
        if rc == 0 {
            total += vec.iter().filter(|b| *b & 1 != 0).count() as u64 * PAGE as u64;
        }
    }
    total
}

/// Makes all guest RAM resident now (like QEMU's `-mem-prealloc`), so that
/// balloon measurements start from a known host footprint.
pub fn prefault(mem: &GuestMemoryMmap) {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    for (host, len) in host_mappings(mem) {
        // SAFETY: the range is one live mapping owned by `mem`;
        // MADV_POPULATE_WRITE only faults its pages in (zero-filled).
        let rc = unsafe { libc::madvise(host.cast(), len, MADV_POPULATE_WRITE) };
        if rc != 0 {
            // Older hosts: touch one byte per page instead.
            for off in (0..len).step_by(4096) {
                // SAFETY: `off < len`, inside the mapping; writing zero over
                // a fresh anonymous page keeps its contents.
                unsafe { host.add(off).write_volatile(0) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefault_makes_ram_resident_and_resident_bytes_sees_it() {
        let mem = create_guest_memory(16).expect("mem");
        let before = resident_bytes(&mem);
        prefault(&mem);
        let after = resident_bytes(&mem);
        assert!(after >= 16 << 20, "resident after prefault: {after}");
        assert!(before < after);
        assert_eq!(layout::ram_bytes(&mem), 16 << 20);
        assert_eq!(layout::low_ram_end(&mem), 16 << 20);
    }
}
