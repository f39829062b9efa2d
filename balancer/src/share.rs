//! Fitting the VMs' wants into the host budget (pure).
//!
//! Two phases, used only when the wants add up to more than the budget:
//! 1. take memory above target (a VM's surplus), lowest
//!    `pressure x weight` first (idle, unimportant VMs lose first);
//! 2. if that is not enough, give every fresh VM its floor (committed) and
//!    share what is left of the budget above the floors in proportion to
//!    weight (water-filling: a VM whose share covers its whole want gets
//!    exactly that, and the rest is shared again among the others); if even
//!    the floors do not fit, share the budget above the minimums instead
//!    (then, and only then, the policy may shrink a VM below its committed
//!    memory, down to its weighted share and never below its minimum).

/// One VM's needs in one step, MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Whether the VM's report is used; a VM without a usable report keeps
    /// its memory and is not part of the sharing.
    pub fresh: bool,
    /// Committed memory from the report (0 when not fresh).
    pub committed: u64,
    /// `clamp(committed * (1 + buffer/100), minimum, maximum)`.
    pub target: u64,
    /// Never take memory below this: `clamp(committed, minimum, maximum)`.
    pub floor: u64,
    /// The VM's minimum (at most `floor`).
    pub minimum: u64,
    /// What the VM should have; the output of [`fit_budget`].
    pub want: u64,
}

/// The order in which surplus is taken: `committed / want x weight`,
/// lowest first (ties by index). Only fresh VMs are listed.
pub fn surplus_order(needs: &[Need], weights: &[u32]) -> Vec<usize> {
    let score = |i: usize| {
        let n = &needs[i];
        let pressure = n.committed as f64 / n.want.max(1) as f64;
        pressure * f64::from(weights[i])
    };
    let mut order: Vec<usize> = (0..needs.len()).filter(|&i| needs[i].fresh).collect();
    order.sort_by(|&a, &b| score(a).total_cmp(&score(b)).then(a.cmp(&b)));
    order
}

/// Reduces the `want` of `needs` so that they fit `budget_mib` where the
/// floors allow it. `weights[i]` is VM `i`'s weight. Wants never fall
/// below a VM's floor (or its minimum, when the floors do not fit); VMs
/// that are not fresh keep their want. Returns whether the floors fit.
pub fn fit_budget(needs: &mut [Need], weights: &[u32], budget_mib: u64) -> bool {
    let total: u64 = needs.iter().map(|n| n.want).sum();
    if total <= budget_mib {
        return true;
    }
    let mut excess = total - budget_mib;
    let order = surplus_order(needs, weights);
    for &i in &order {
        let surplus = needs[i].want.saturating_sub(needs[i].target);
        let take = surplus.min(excess);
        needs[i].want -= take;
        excess -= take;
    }
    if excess == 0 {
        return true;
    }
    let fixed: u64 = needs.iter().filter(|n| !n.fresh).map(|n| n.want).sum();
    let floors: u64 = needs.iter().filter(|n| n.fresh).map(|n| n.floor).sum();
    let floors_fit = fixed + floors <= budget_mib;
    // What each fresh VM keeps before sharing: its floor, or its minimum.
    let base: Vec<u64> = needs
        .iter()
        .map(|n| {
            if floors_fit {
                n.floor
            } else {
                n.minimum.min(n.floor)
            }
        })
        .collect();
    let bases: u64 = order.iter().map(|&i| base[i]).sum();
    let mut remaining = budget_mib.saturating_sub(fixed + bases);
    let mut active: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| needs[i].want > base[i])
        .collect();
    let mut given = vec![0u64; needs.len()];
    while !active.is_empty() {
        let weight_sum: u64 = active.iter().map(|&i| u64::from(weights[i])).sum();
        let share = |i: usize| remaining * u64::from(weights[i]) / weight_sum.max(1);
        let capped: Vec<usize> = active
            .iter()
            .copied()
            .filter(|&i| share(i) >= needs[i].want - base[i])
            .collect();
        if capped.is_empty() {
            for &i in &active {
                given[i] = share(i);
            }
            break;
        }
        for &i in &capped {
            given[i] = needs[i].want - base[i];
            remaining -= given[i];
        }
        active.retain(|i| !capped.contains(i));
    }
    for &i in &order {
        needs[i].want = base[i] + given[i].min(needs[i].want - base[i]);
    }
    floors_fit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(committed: u64, target: u64, want: u64) -> Need {
        Need {
            fresh: true,
            committed,
            target,
            floor: committed,
            minimum: 64,
            want,
        }
    }

    fn wants(needs: &[Need]) -> Vec<u64> {
        needs.iter().map(|n| n.want).collect()
    }

    #[test]
    fn nothing_changes_within_budget() {
        let mut n = vec![fresh(100, 120, 500), fresh(200, 240, 240)];
        fit_budget(&mut n, &[5000, 5000], 740);
        assert_eq!(wants(&n), vec![500, 240]);
    }

    #[test]
    fn surplus_is_taken_first_from_the_lowest_pressure_per_weight() {
        // Both hold surplus; the first has the lower pressure and loses first.
        let mut n = vec![fresh(100, 120, 1000), fresh(400, 480, 600)];
        fit_budget(&mut n, &[5000, 5000], 1400);
        assert_eq!(wants(&n), vec![800, 600]);
        // A heavy weight protects a VM with the same pressure.
        let mut n = vec![fresh(100, 120, 500), fresh(100, 120, 500)];
        fit_budget(&mut n, &[9000, 1000], 800);
        assert_eq!(wants(&n), vec![500, 300]);
    }

    #[test]
    fn a_shortage_is_shared_above_the_floors_by_weight() {
        // Targets 1200 each, floors 1000 each, budget 2100: 100 above floors.
        let mut n = vec![fresh(1000, 1200, 1200), fresh(1000, 1200, 1200)];
        fit_budget(&mut n, &[7500, 2500], 2100);
        assert_eq!(wants(&n), vec![1075, 1025]);
    }

    #[test]
    fn water_filling_gives_a_capped_vm_its_want_and_shares_the_rest() {
        // VM 0 wants only 10 above its floor; the rest goes to VM 1 and 2.
        let mut n = vec![
            fresh(100, 110, 110),
            fresh(1000, 1200, 1200),
            fresh(1000, 1200, 1200),
        ];
        fit_budget(&mut n, &[5000, 5000, 5000], 2210);
        assert_eq!(wants(&n), vec![110, 1050, 1050]);
    }

    #[test]
    fn floors_and_silent_vms_are_never_cut() {
        let silent = Need {
            fresh: false,
            committed: 0,
            target: 900,
            floor: 900,
            minimum: 900,
            want: 900,
        };
        let mut n = vec![silent, fresh(800, 960, 960)];
        fit_budget(&mut n, &[5000, 5000], 1000);
        assert_eq!(wants(&n), vec![900, 100], "the budget above the minimum");
    }

    #[test]
    fn when_floors_do_not_fit_the_budget_is_shared_above_the_minimums() {
        let mut n = vec![fresh(1000, 1200, 1200), fresh(1000, 1200, 1200)];
        fit_budget(&mut n, &[7500, 2500], 1128);
        // 1000 above the minimums (64 each), shared 3:1.
        assert_eq!(wants(&n), vec![814, 314]);
    }
}
