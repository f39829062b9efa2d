//! Pure helpers for VMs with a virtio-mem device: how a grow splits into
//! balloon deflate, plugged blocks and (past the region) hot-add slots; how
//! a shrink splits into unplugged blocks and balloon; how much balloon can
//! become unplugged blocks. `docs/virtio-mem.md`, "How the balancer
//! chooses".

use crate::resize::plan_growth;
use crate::settings::VirtioMemSettings;

/// How a VM with virtio-mem grows: balloon first, then whole blocks, then
/// (only when the region or the maximum stops the blocks) hot-add slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmemGrowth {
    /// MiB taken back from the balloon.
    pub from_balloon_mib: u64,
    /// MiB plugged (whole blocks).
    pub plug_mib: u64,
    /// The requested size afterwards.
    pub new_requested_mib: u64,
    /// Slots hot-added (the region was full).
    pub slots: u32,
    /// Boot plus hot-added memory afterwards.
    pub new_plugged_mib: u64,
    /// The balloon afterwards.
    pub new_balloon_mib: u64,
}

impl VmemGrowth {
    /// Memory gained, MiB.
    pub fn gained_mib(&self, before_assigned_mib: u64) -> u64 {
        (self.new_plugged_mib + self.new_requested_mib)
            .saturating_sub(self.new_balloon_mib)
            .saturating_sub(before_assigned_mib)
    }
}

/// What a VM with virtio-mem has now, MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmemNow {
    /// Boot plus hot-added memory.
    pub plugged_mib: u64,
    /// The device's requested size.
    pub requested_mib: u64,
    /// The balloon.
    pub balloon_mib: u64,
    /// The VM's maximum.
    pub maximum_mib: u64,
}

/// Plans growing a VM by `grow_mib`: deflate the balloon first, then plug
/// whole blocks (rounded up to a block only when `slack_mib`, the headroom
/// left beyond `grow_mib`, covers the overshoot; else rounded down), within
/// the region and the maximum; only what the blocks cannot hold goes to
/// hot-add slots of `slot_mib` (0: none), with their overshoot in the
/// balloon as [`plan_growth`] does.
pub fn plan_vmem_growth(
    dev: &VirtioMemSettings,
    now: VmemNow,
    grow_mib: u64,
    slack_mib: u64,
    slot_mib: u64,
) -> VmemGrowth {
    let from_balloon_mib = grow_mib.min(now.balloon_mib);
    let rest = grow_mib - from_balloon_mib;
    let room = dev.floor_blocks(
        dev.region_mib.saturating_sub(now.requested_mib).min(
            now.maximum_mib
                .saturating_sub(now.plugged_mib + now.requested_mib),
        ),
    );
    let up = dev.ceil_blocks(rest);
    let plug_mib = if up <= room && up - rest <= slack_mib {
        up
    } else {
        dev.floor_blocks(rest.min(room))
    };
    let new_requested_mib = now.requested_mib + plug_mib;
    let left = rest.saturating_sub(plug_mib);
    let g = plan_growth(
        now.plugged_mib + new_requested_mib,
        0,
        now.maximum_mib,
        left,
        slot_mib,
    );
    VmemGrowth {
        from_balloon_mib,
        plug_mib,
        new_requested_mib,
        slots: g.slots,
        new_plugged_mib: g.new_plugged_mib - new_requested_mib,
        new_balloon_mib: now.balloon_mib - from_balloon_mib + g.new_balloon_mib,
    }
}

/// How a VM with virtio-mem gives up `shrink_mib`: unplug whole blocks
/// first, balloon only what unplug cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmemShrink {
    /// MiB unplugged (whole blocks).
    pub unplug_mib: u64,
    /// MiB inflated into the balloon.
    pub inflate_mib: u64,
}

/// Splits a shrink of `shrink_mib` (at most `max_mib`, the distance to the
/// VM's floor) of a VM with `requested_mib` plugged: unplug rounded up to a
/// block when that stays within `max_mib` (else down), never more than is
/// requested; the balloon takes the rest.
pub fn split_shrink(
    dev: &VirtioMemSettings,
    requested_mib: u64,
    shrink_mib: u64,
    max_mib: u64,
) -> VmemShrink {
    let up = dev.ceil_blocks(shrink_mib);
    let unplug_mib = if up <= max_mib {
        up
    } else {
        dev.floor_blocks(shrink_mib)
    }
    .min(dev.floor_blocks(requested_mib));
    VmemShrink {
        unplug_mib,
        inflate_mib: shrink_mib.saturating_sub(unplug_mib),
    }
}

/// How much balloon can become unplugged blocks: whole blocks of the
/// smaller of the balloon and the requested size.
pub fn convertible_mib(dev: &VirtioMemSettings, requested_mib: u64, balloon_mib: u64) -> u64 {
    dev.floor_blocks(requested_mib.min(balloon_mib))
}

/// The most a VM with virtio-mem can reach: what it has, whole blocks up
/// to the region and the maximum, then whole slots of `slot_mib`.
pub fn vmem_reachable_mib(
    dev: &VirtioMemSettings,
    plugged_mib: u64,
    requested_mib: u64,
    maximum_mib: u64,
    slot_mib: u64,
) -> u64 {
    let have = plugged_mib + requested_mib;
    let blocks = dev.floor_blocks(
        dev.region_mib
            .saturating_sub(requested_mib)
            .min(maximum_mib.saturating_sub(have)),
    );
    let slot = slot_mib.max(1);
    let slots = maximum_mib.saturating_sub(have + blocks) / slot * slot;
    have + blocks + slots
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: VirtioMemSettings = VirtioMemSettings {
        region_mib: 256,
        block_mib: 2,
    };

    fn now(requested: u64, balloon: u64) -> VmemNow {
        VmemNow {
            plugged_mib: 256,
            requested_mib: requested,
            balloon_mib: balloon,
            maximum_mib: 512,
        }
    }

    #[test]
    fn growth_deflates_then_plugs_whole_blocks_without_slot_overshoot() {
        let g = plan_vmem_growth(&DEV, now(0, 20), 120, 100, 128);
        assert_eq!((g.from_balloon_mib, g.plug_mib, g.slots), (20, 100, 0));
        assert_eq!((g.new_requested_mib, g.new_balloon_mib), (100, 0));
        assert_eq!(g.gained_mib(236), 120);
        // 101 MiB: one more block when the headroom has room for it ...
        let g = plan_vmem_growth(&DEV, now(0, 0), 101, 1, 128);
        assert_eq!(g.plug_mib, 102);
        // ... else one less.
        let g = plan_vmem_growth(&DEV, now(0, 0), 101, 0, 128);
        assert_eq!(g.plug_mib, 100);
    }

    #[test]
    fn growth_stops_at_the_region_then_uses_slots() {
        let dev = VirtioMemSettings {
            region_mib: 128,
            block_mib: 2,
        };
        let n = VmemNow {
            plugged_mib: 256,
            requested_mib: 100,
            balloon_mib: 0,
            maximum_mib: 640,
        };
        let g = plan_vmem_growth(&dev, n, 100, 0, 128);
        assert_eq!((g.plug_mib, g.slots), (28, 1));
        assert_eq!((g.new_plugged_mib, g.new_balloon_mib), (384, 56));
        assert_eq!(g.gained_mib(356), 100);
        // Without slots the region is the end.
        let g = plan_vmem_growth(&dev, n, 100, 0, 0);
        assert_eq!((g.plug_mib, g.slots, g.gained_mib(356)), (28, 0, 28));
    }

    #[test]
    fn shrink_unplugs_first_and_balloons_the_rest() {
        assert_eq!(
            split_shrink(&DEV, 200, 100, 150),
            VmemShrink {
                unplug_mib: 100,
                inflate_mib: 0
            }
        );
        // Rounded up when the floor allows, down when not.
        assert_eq!(split_shrink(&DEV, 200, 45, 46).unplug_mib, 46);
        assert_eq!(
            split_shrink(&DEV, 200, 45, 45),
            VmemShrink {
                unplug_mib: 44,
                inflate_mib: 1
            }
        );
        // Only what is plugged can be unplugged.
        assert_eq!(
            split_shrink(&DEV, 40, 100, 150),
            VmemShrink {
                unplug_mib: 40,
                inflate_mib: 60
            }
        );
    }

    #[test]
    fn conversion_and_reach_are_whole_blocks() {
        assert_eq!(convertible_mib(&DEV, 100, 45), 44);
        assert_eq!(convertible_mib(&DEV, 0, 45), 0);
        assert_eq!(vmem_reachable_mib(&DEV, 256, 0, 512, 128), 512);
        assert_eq!(vmem_reachable_mib(&DEV, 256, 0, 700, 128), 640);
        assert_eq!(vmem_reachable_mib(&DEV, 256, 0, 511, 128), 510);
    }
}
