//! Pure helpers that turn a wanted size into a resize step.

/// `committed / assigned x 100`, 0 when nothing is assigned; computed
/// wide, so an absurd committed figure saturates instead of wrapping.
pub fn pressure_pct(committed_mib: u64, assigned_mib: u64) -> u64 {
    let pct = (u128::from(committed_mib) * 100)
        .checked_div(u128::from(assigned_mib))
        .unwrap_or(0);
    u64::try_from(pct).unwrap_or(u64::MAX)
}

/// Changes smaller than `max(min_mib, pct % of assigned)` are ignored.
pub fn hysteresis_mib(assigned_mib: u64, min_mib: u64, pct: u64) -> u64 {
    min_mib.max(assigned_mib.saturating_mul(pct) / 100)
}

/// How a VM grows: balloon first, then whole hot-add slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    /// MiB taken back from the balloon.
    pub from_balloon_mib: u64,
    /// Slots hot-added.
    pub slots: u32,
    /// The balloon afterwards (the last slot's overshoot stays in it).
    pub new_balloon_mib: u64,
    /// Plugged memory afterwards.
    pub new_plugged_mib: u64,
}

impl Growth {
    /// Memory gained, MiB.
    pub fn gained_mib(&self, plugged_mib: u64, balloon_mib: u64) -> u64 {
        (self.new_plugged_mib - self.new_balloon_mib).saturating_sub(plugged_mib - balloon_mib)
    }
}

/// Plans growing a VM by `grow_mib`: deflate the balloon first, then
/// hot-add whole `slot_mib` slots while plugged stays within `maximum_mib`;
/// the overshoot of the last slot stays in the balloon, so the VM gains
/// exactly `grow_mib` unless the maximum stops it.
pub fn plan_growth(
    plugged_mib: u64,
    balloon_mib: u64,
    maximum_mib: u64,
    grow_mib: u64,
    slot_mib: u64,
) -> Growth {
    let from_balloon_mib = grow_mib.min(balloon_mib);
    let rest = grow_mib - from_balloon_mib;
    let mut new_balloon_mib = balloon_mib - from_balloon_mib;
    let mut slots = 0;
    if rest > 0 && slot_mib > 0 {
        let room = maximum_mib.saturating_sub(plugged_mib) / slot_mib;
        slots = rest.div_ceil(slot_mib).min(room);
        new_balloon_mib += (slots * slot_mib).saturating_sub(rest);
    }
    Growth {
        from_balloon_mib,
        slots: u32::try_from(slots).unwrap_or(u32::MAX),
        new_balloon_mib,
        new_plugged_mib: plugged_mib + slots * slot_mib,
    }
}

/// How much to inflate a VM with `assigned_mib` that should have
/// `want_mib`: at most `cap_mib`, never below `floor_mib`.
pub fn plan_shrink(assigned_mib: u64, want_mib: u64, floor_mib: u64, cap_mib: u64) -> u64 {
    assigned_mib
        .saturating_sub(want_mib)
        .min(cap_mib)
        .min(assigned_mib.saturating_sub(floor_mib))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_figures_saturate_instead_of_wrapping() {
        // A report of 2^62 KiB committed is 2^52 MiB.
        assert_eq!(pressure_pct(1 << 52, 256), (1u64 << 52) / 256 * 100);
        assert_eq!(pressure_pct(u64::MAX, 1), u64::MAX);
        assert_eq!(hysteresis_mib(u64::MAX, 16, 5), u64::MAX / 100);
    }

    #[test]
    fn pressure_and_hysteresis() {
        assert_eq!(pressure_pct(600, 500), 120);
        assert_eq!(pressure_pct(600, 0), 0);
        assert_eq!(hysteresis_mib(400, 16, 2), 16);
        assert_eq!(hysteresis_mib(4000, 16, 2), 80);
    }

    #[test]
    fn growth_deflates_first() {
        let g = plan_growth(512, 200, 2048, 150, 128);
        assert_eq!(
            (g.from_balloon_mib, g.slots, g.new_balloon_mib),
            (150, 0, 50)
        );
        assert_eq!(g.gained_mib(512, 200), 150);
    }

    #[test]
    fn growth_hot_adds_whole_slots_and_balloons_the_overshoot() {
        let g = plan_growth(512, 200, 2048, 408, 128);
        assert_eq!(
            (g.from_balloon_mib, g.slots, g.new_balloon_mib),
            (200, 2, 48)
        );
        assert_eq!(g.new_plugged_mib, 768);
        assert_eq!(g.gained_mib(512, 200), 408);
    }

    #[test]
    fn growth_stops_at_the_maximum() {
        // 200 MiB of room holds one whole slot only.
        let g = plan_growth(512, 0, 712, 500, 128);
        assert_eq!((g.slots, g.new_plugged_mib, g.new_balloon_mib), (1, 640, 0));
        assert_eq!(g.gained_mib(512, 0), 128);
        let g = plan_growth(700, 0, 712, 500, 128);
        assert_eq!(g.gained_mib(700, 0), 0);
    }

    #[test]
    fn shrink_is_capped_and_floored() {
        assert_eq!(plan_shrink(1000, 900, 300, 256), 100);
        assert_eq!(plan_shrink(1000, 300, 300, 256), 256);
        assert_eq!(plan_shrink(1000, 300, 900, 256), 100);
        assert_eq!(plan_shrink(1000, 1200, 300, 256), 0);
    }
}
