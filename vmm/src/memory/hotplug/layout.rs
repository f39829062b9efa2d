//! The memory hot-plug window and its slots (pure layout and planning;
//! the register interface is `memtide_devices::memory_hotplug`).
//!
//! The window starts above all boot RAM, at 4 GiB or later, aligned to the
//! guest's 128 MiB memory block size, and is split into `slots` slots of
//! `slot_mib` MiB (a multiple of 128). Slots are populated lowest first and
//! never removed (as in Hyper-V: shrinking is the balloon's job).

use memtide_devices::memory_hotplug::Slot;

use crate::arch::x86_64::layout;

/// The Linux x86 memory block size: the unit the guest onlines.
pub const BLOCK_MIB: u64 = 128;
const MIB: u64 = 1 << 20;

/// Errors in hot-plug settings or requests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HotplugError {
    /// Slot size not a positive multiple of the block size.
    #[error("--slot-mib {0}: must be a positive multiple of {BLOCK_MIB}")]
    SlotSize(u64),
    /// Too many slots.
    #[error("--hotplug-slots {0}: at most 255")]
    SlotCount(u32),
    /// A request that is not a whole number of slots.
    #[error("{requested} MiB is not a positive multiple of the {slot_mib} MiB slot size")]
    NotWholeSlots {
        /// Requested MiB.
        requested: u64,
        /// Slot size.
        slot_mib: u64,
    },
    /// Not enough free slots.
    #[error("{wanted} slots requested, {free} free")]
    NoFreeSlots {
        /// Slots needed.
        wanted: usize,
        /// Slots free.
        free: usize,
    },
    /// The request would exceed the VM's maximum memory.
    #[error("{current} MiB + {requested} MiB would exceed the maximum of {maximum} MiB")]
    ExceedsMaximum {
        /// Memory now.
        current: u64,
        /// Requested addition.
        requested: u64,
        /// The VM's maximum.
        maximum: u64,
    },
}

/// Where the hot-plug window lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotplugLayout {
    /// Guest-physical base of slot 0.
    pub base: u64,
    /// Bytes per slot.
    pub slot_bytes: u64,
    /// Number of slots.
    pub slots: u32,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl HotplugLayout {
    /// Lays out `slots` slots of `slot_mib` above `ram_bytes` of boot RAM.
    pub fn new(ram_bytes: u64, slots: u32, slot_mib: u64) -> Result<Self, HotplugError> {
        if slot_mib == 0 || slot_mib % BLOCK_MIB != 0 {
            return Err(HotplugError::SlotSize(slot_mib));
        }
        if slots > 255 {
            return Err(HotplugError::SlotCount(slots));
        }
        Ok(Self {
            base: align_up(layout::above_ram(ram_bytes), BLOCK_MIB * MIB),
            slot_bytes: slot_mib * MIB,
            slots,
        })
    }

    /// The (empty) slots of this layout.
    pub fn empty_slots(&self) -> Vec<Slot> {
        (0..u64::from(self.slots))
            .map(|i| Slot {
                base: self.base + i * self.slot_bytes,
                size: self.slot_bytes,
                present: false,
                inserting: false,
                ost: None,
                plugged_at: None,
            })
            .collect()
    }
}

/// Chooses the slots for adding `requested_mib` to a VM that has
/// `current_mib` and may have `maximum_mib`; changes nothing.
pub fn plan_hot_add(
    slots: &[Slot],
    requested_mib: u64,
    current_mib: u64,
    maximum_mib: u64,
) -> Result<Vec<usize>, HotplugError> {
    let slot_mib = slots.first().map_or(BLOCK_MIB, |s| s.size / MIB);
    if requested_mib == 0 || requested_mib % slot_mib != 0 {
        return Err(HotplugError::NotWholeSlots {
            requested: requested_mib,
            slot_mib,
        });
    }
    if current_mib + requested_mib > maximum_mib {
        return Err(HotplugError::ExceedsMaximum {
            current: current_mib,
            requested: requested_mib,
            maximum: maximum_mib,
        });
    }
    // The request is the client's: saturate (then refused for want of
    // slots) rather than wrap.
    let wanted = usize::try_from(requested_mib / slot_mib).unwrap_or(usize::MAX);
    let free: Vec<usize> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.present)
        .map(|(i, _)| i)
        .collect();
    if free.len() < wanted {
        return Err(HotplugError::NoFreeSlots {
            wanted,
            free: free.len(),
        });
    }
    Ok(free[..wanted].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_at_4_gib_for_small_guests_and_after_high_ram_otherwise() {
        let l = HotplugLayout::new(256 * MIB, 4, 128).expect("layout");
        assert_eq!(l.base, 1 << 32);
        let l = HotplugLayout::new((3 << 30) + 100 * MIB, 2, 256).expect("layout");
        // High RAM ends at 4 GiB + 100 MiB; aligned up to 128 MiB.
        assert_eq!(l.base, (1 << 32) + 128 * MIB);
        let s = l.empty_slots();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].base - s[0].base, 256 * MIB);
        assert!(s.iter().all(|s| s.base % (128 * MIB) == 0 && !s.present));
    }

    #[test]
    fn bad_settings_are_refused() {
        assert_eq!(
            HotplugLayout::new(0, 1, 100),
            Err(HotplugError::SlotSize(100))
        );
        assert_eq!(HotplugLayout::new(0, 1, 0), Err(HotplugError::SlotSize(0)));
        assert_eq!(
            HotplugLayout::new(0, 256, 128),
            Err(HotplugError::SlotCount(256))
        );
    }

    #[test]
    fn planning_picks_lowest_free_slots_and_refuses_what_does_not_fit() {
        let mut slots = HotplugLayout::new(256 * MIB, 4, 128)
            .expect("l")
            .empty_slots();
        slots[0].present = true;
        assert_eq!(plan_hot_add(&slots, 256, 384, 1024), Ok(vec![1, 2]));
        assert!(matches!(
            plan_hot_add(&slots, 100, 384, 1024),
            Err(HotplugError::NotWholeSlots { .. })
        ));
        assert!(matches!(
            plan_hot_add(&slots, 0, 384, 1024),
            Err(HotplugError::NotWholeSlots { .. })
        ));
        assert_eq!(
            plan_hot_add(&slots, 512, 384, 2048),
            Err(HotplugError::NoFreeSlots { wanted: 4, free: 3 })
        );
        assert!(matches!(
            plan_hot_add(&slots, 256, 900, 1024),
            Err(HotplugError::ExceedsMaximum { .. })
        ));
    }
}
