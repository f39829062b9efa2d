//! The virtio-mem device region: where it lies in guest-physical space
//! (pure), and mapping it at boot: one anonymous `MAP_NORESERVE` mapping,
//! one KVM memory slot, inserted into the guest memory map that devices
//! use (so the balloon accepts its pages). It is not in the e820 map: the
//! guest's virtio-mem driver adds the plugged parts itself.
//!
//! ```text
//! boot RAM ─ 3 GiB ─ device window ─ 4 GiB ─ [high RAM] ─ [hot-add slots] ─ virtio-mem region
//! ```
//!
//! The region starts 128 MiB aligned (the Linux x86 memory block size)
//! after boot RAM and the hot-add window, and its size is a multiple of
//! 128 MiB, so the guest can add and remove whole memory blocks.

use std::sync::Arc;

use kvm_ioctls::VmFd;
use memtide_devices::virtio::mem::RegionInfo;
use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemoryAtomic};

use super::hotplug::{HotplugError, HotplugLayout, BLOCK_MIB};
use super::{GuestMemoryMmap, MemoryError};
use crate::arch::x86_64::layout;
use crate::config::{HotplugConfig, VirtioMemConfig};

const MIB: u64 = 1 << 20;
/// Largest device block accepted, MiB (the spec allows more; Linux then
/// adds memory in blocks that large).
pub const MAX_BLOCK_MIB: u64 = 1024;

/// Errors in virtio-mem settings or in mapping its region.
#[derive(Debug, thiserror::Error)]
pub enum VirtioMemError {
    /// A region size that is not a positive multiple of 128 MiB and of the
    /// block size.
    #[error("--virtio-mem-mib {size_mib}: must be a positive multiple of {BLOCK_MIB} MiB and of --virtio-mem-block-mib {block_mib}")]
    RegionSize {
        /// Region size given.
        size_mib: u64,
        /// Block size given.
        block_mib: u64,
    },
    /// A block size that is not a power of two in range.
    #[error("--virtio-mem-block-mib {0}: must be a power of two from 2 to {MAX_BLOCK_MIB}")]
    BlockSize(u64),
    /// The hot-add window below the region is invalid.
    #[error(transparent)]
    Hotplug(#[from] HotplugError),
    /// The host could not map the region.
    #[error("cannot map the {mib} MiB virtio-mem region: {source}")]
    Map {
        /// Region size.
        mib: u64,
        /// Why.
        source: super::huge_aligned::HugeAlignedError,
    },
    /// KVM refused the memory slot.
    #[error(transparent)]
    Register(#[from] MemoryError),
    /// The region does not fit the guest memory map (a bug).
    #[error("cannot insert the virtio-mem region into the guest memory map: {0}")]
    MemoryMap(vm_memory::GuestRegionCollectionError),
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Checks the sizes of `vc`.
pub fn validate(vc: &VirtioMemConfig) -> Result<(), VirtioMemError> {
    let b = vc.block_mib;
    if !(2..=MAX_BLOCK_MIB).contains(&b) || !b.is_power_of_two() {
        return Err(VirtioMemError::BlockSize(b));
    }
    let s = vc.size_mib;
    if s == 0 || s % BLOCK_MIB != 0 || s % b != 0 || s > crate::config::MAX_MEMORY_MIB {
        return Err(VirtioMemError::RegionSize {
            size_mib: s,
            block_mib: b,
        });
    }
    Ok(())
}

/// Where the region of `vc` lies for `memory_mib` MiB of boot RAM and the
/// hot-add window of `hotplug`, if any.
pub fn region(
    memory_mib: u64,
    hotplug: Option<&HotplugConfig>,
    vc: &VirtioMemConfig,
) -> Result<RegionInfo, VirtioMemError> {
    validate(vc)?;
    let ram_bytes = memory_mib * MIB;
    let mut after = layout::above_ram(ram_bytes);
    if let Some(h) = hotplug {
        let l = HotplugLayout::new(ram_bytes, h.slots, h.slot_mib)?;
        after = after.max(l.base + u64::from(l.slots) * l.slot_bytes);
    }
    // Aligned to the block size too (a block above 128 MiB must start on
    // its own boundary).
    let align = (BLOCK_MIB * MIB).max(vc.block_mib * MIB);
    Ok(RegionInfo {
        base: align_up(after, align),
        size: vc.size_mib * MIB,
        block_size: vc.block_mib * MIB,
    })
}

/// Maps `region`, registers it as KVM memory slot `kvm_slot`, and inserts
/// it into `guest_mem`.
pub fn map(
    vm: &VmFd,
    guest_mem: &GuestMemoryAtomic<GuestMemoryMmap>,
    region: RegionInfo,
    kvm_slot: u32,
) -> Result<(), VirtioMemError> {
    let mib = region.size / MIB;
    let len = usize::try_from(region.size).map_err(|_| MemoryError::TooLarge(region.size))?;
    // MAP_NORESERVE: no memory is committed until a block is plugged and
    // touched. Huge pages on 2 MiB host boundaries: every device block is
    // whole host huge pages, so a plug populates and an unplug frees 512
    // times fewer pages than with 4 KiB backing (docs/virtio-mem.md).
    let mapped = super::huge_aligned::map(GuestAddress(region.base), len)
        .map_err(|source| VirtioMemError::Map { mib, source })?;
    super::register_region(vm, kvm_slot, &mapped)?;
    let grown = guest_mem
        .memory()
        .insert_region(Arc::new(mapped))
        .map_err(VirtioMemError::MemoryMap)?;
    match guest_mem.lock() {
        Ok(guard) => guard.replace(grown),
        Err(p) => p.into_inner().replace(grown),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc(size_mib: u64, block_mib: u64) -> VirtioMemConfig {
        VirtioMemConfig {
            size_mib,
            block_mib,
        }
    }

    #[test]
    fn the_region_lies_above_ram_and_the_hot_add_window() {
        let r = region(256, None, &vc(1024, 2)).expect("region");
        assert_eq!((r.base, r.size, r.block_size), (1 << 32, 1 << 30, 2 * MIB));
        let h = HotplugConfig {
            slots: 3,
            slot_mib: 128,
            max_mib: 640,
        };
        let r = region(256, Some(&h), &vc(512, 2)).expect("region");
        assert_eq!(r.base, (1 << 32) + 384 * MIB);
        // Boot RAM above 3 GiB, then slots, then the region.
        let r = region(3 * 1024 + 100, Some(&h), &vc(512, 2)).expect("region");
        assert_eq!(r.base, (1 << 32) + 128 * MIB + 384 * MIB);
        assert_eq!(r.base % (128 * MIB), 0);
        // A 256 MiB block is aligned to itself.
        let r = region(3 * 1024 + 100, None, &vc(512, 256)).expect("region");
        assert_eq!(r.base, (1 << 32) + 256 * MIB);
    }

    #[test]
    fn bad_sizes_are_refused() {
        for (size, block) in [
            (100, 2),
            (0, 2),
            (128, 256),
            (128, 3),
            (128, 1),
            (4096, 2048),
        ] {
            assert!(validate(&vc(size, block)).is_err(), "{size} / {block}");
        }
        validate(&vc(128, 128)).expect("one block");
        validate(&vc(4096, 4)).expect("fine");
    }
}
