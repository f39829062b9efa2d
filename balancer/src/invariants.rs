//! Checks over a simulated timeline ([`crate::sim::Tick`]s): each returns
//! the first violation, described for people.

use crate::policy::PolicyConfig;
use crate::resize::hysteresis_mib;
use crate::settings::VmSettings;
use crate::sim::{SimVm, Tick};

/// Safety, every tick: each VM within [minimum, maximum], plugged within
/// maximum, balloon within [0, plugged - minimum]; and the budget with its
/// slack: once the VMs fit the budget they stay within it, and while they
/// are above it (startup sizes, or floors, above the budget) their sum
/// never grows and every decision reports the excess.
pub fn check_safety(vms: &[VmSettings], budget_mib: u64, ticks: &[Tick]) -> Result<(), String> {
    let mut prev: u64 = vms.iter().map(|v| v.startup_mib).sum();
    for t in ticks {
        let entries = [t.assigned.len(), t.plugged.len(), t.balloon.len()];
        if entries.iter().any(|&n| n != vms.len()) {
            return Err(format!(
                "t={}: {} assigned, {} plugged and {} balloon entries for {} VMs (one decision per VM)",
                t.t_ms,
                entries[0],
                entries[1],
                entries[2],
                vms.len()
            ));
        }
        let total: u64 = t.assigned.iter().sum();
        if total > budget_mib && total > prev.max(budget_mib) {
            return Err(format!(
                "t={}: {total} MiB assigned, over budget {budget_mib} and grown from {prev}",
                t.t_ms
            ));
        }
        if t.over_budget_mib != total.saturating_sub(budget_mib) {
            return Err(format!(
                "t={}: over budget by {} MiB but {} reported",
                t.t_ms,
                total.saturating_sub(budget_mib),
                t.over_budget_mib
            ));
        }
        prev = total;
        for (i, s) in vms.iter().enumerate() {
            let a = t.assigned[i];
            if a < s.minimum_mib || a > s.maximum_mib {
                return Err(format!(
                    "t={}: vm {} has {a} MiB outside [{}, {}]",
                    t.t_ms, s.name, s.minimum_mib, s.maximum_mib
                ));
            }
            if t.plugged[i] > s.maximum_mib || t.plugged[i] < s.startup_mib {
                return Err(format!(
                    "t={}: vm {} plugged {} MiB outside [startup, maximum]",
                    t.t_ms, s.name, t.plugged[i]
                ));
            }
            let vmem = t.vmem.get(i).copied().unwrap_or(0);
            if t.balloon[i] > (t.plugged[i] + vmem).saturating_sub(s.minimum_mib) {
                return Err(format!(
                    "t={}: vm {} balloon {} MiB above plugged - minimum",
                    t.t_ms, s.name, t.balloon[i]
                ));
            }
        }
    }
    Ok(())
}

/// Hot-add is never undone: plugged memory never falls.
pub fn check_no_hot_remove(ticks: &[Tick]) -> Result<(), String> {
    for w in ticks.windows(2) {
        if w[1].plugged.iter().zip(&w[0].plugged).any(|(b, a)| b < a) {
            return Err(format!("t={}: plugged memory fell", w[1].t_ms));
        }
    }
    Ok(())
}

/// virtio-mem accounting, every tick, for VMs with a device: assigned is
/// boot + hot-added + requested - balloon; the requested size is whole
/// blocks within the region; and unplugged memory is never counted as
/// assigned: the requested size (what is counted) is at most what the
/// device has plugged, but for a plug still under way (the requested size
/// rose within the last `settle_ms`). Ticks without virtio-mem figures pass.
pub fn check_virtio_mem(vms: &[VmSettings], ticks: &[Tick], settle_ms: u64) -> Result<(), String> {
    // Per VM, when its requested size last rose.
    let mut rose_at: Vec<Option<u64>> = vec![None; vms.len()];
    let mut prev: Vec<u64> = vec![0; vms.len()];
    for t in ticks {
        if t.vmem.len() != vms.len() || t.vmem_plugged.len() != vms.len() {
            continue;
        }
        for (i, s) in vms.iter().enumerate() {
            let Some(dev) = s.virtio_mem else {
                continue;
            };
            let (req, plugged) = (t.vmem[i], t.vmem_plugged[i]);
            if req > prev[i] {
                rose_at[i] = Some(t.t_ms);
            }
            prev[i] = req;
            let counted = (t.plugged[i] + req).saturating_sub(t.balloon[i]);
            if t.assigned[i] != counted {
                return Err(format!(
                    "t={}: vm {} assigned {} MiB, but boot + hot-added {} + virtio-mem {req} - balloon {} = {counted}",
                    t.t_ms, s.name, t.assigned[i], t.plugged[i], t.balloon[i]
                ));
            }
            if req > dev.region_mib || dev.floor_blocks(req) != req {
                return Err(format!(
                    "t={}: vm {} requests {req} MiB: not whole {} MiB blocks within {} MiB",
                    t.t_ms, s.name, dev.block_mib, dev.region_mib
                ));
            }
            let plugging = rose_at[i].is_some_and(|r| t.t_ms.saturating_sub(r) < settle_ms);
            if req > plugged && !plugging {
                return Err(format!(
                    "t={}: vm {} counts {req} MiB of virtio-mem, only {plugged} MiB plugged",
                    t.t_ms, s.name
                ));
            }
        }
    }
    Ok(())
}

/// Number of times `series` changes direction (up then down or the reverse).
pub fn direction_changes(series: &[u64]) -> usize {
    let mut changes = 0;
    let mut last = 0i8;
    for w in series.windows(2) {
        let dir = i8::from(w[1] > w[0]) - i8::from(w[1] < w[0]);
        if dir != 0 {
            if last != 0 && dir != last {
                changes += 1;
            }
            last = dir;
        }
    }
    changes
}

/// No oscillation: from tick `from` on, no VM's assigned memory changes
/// direction more than `max_changes` times.
pub fn check_no_oscillation(ticks: &[Tick], from: usize, max_changes: usize) -> Result<(), String> {
    let Some(first) = ticks.get(from) else {
        return Ok(());
    };
    for i in 0..first.assigned.len() {
        let series: Vec<u64> = ticks[from..].iter().map(|t| t.assigned[i]).collect();
        let n = direction_changes(&series);
        if n > max_changes {
            return Err(format!(
                "vm {i}: {n} direction changes from t={}: {series:?}",
                first.t_ms
            ));
        }
    }
    Ok(())
}

/// Demand is met when the budget allows: at every tick where, for the last
/// `settle_ticks` ticks, every agent was honest and every VM's committed
/// memory was the same, and the targets fit the budget, each VM has its
/// target up to the hysteresis threshold, and the VMs fit the budget.
pub fn check_demand_met(
    cfg: &PolicyConfig,
    budget_mib: u64,
    ticks: &[Tick],
    settle_ticks: usize,
) -> Result<(), String> {
    for k in settle_ticks..ticks.len() {
        let window = &ticks[k - settle_ticks..=k];
        let t = &ticks[k];
        let settled = window
            .iter()
            .all(|w| w.honest.iter().all(|&h| h) && w.committed == t.committed);
        if !settled || t.target.iter().sum::<u64>() > budget_mib {
            continue;
        }
        for (i, (&a, &target)) in t.assigned.iter().zip(&t.target).enumerate() {
            let tol = hysteresis_mib(a, cfg.hysteresis_mib, cfg.hysteresis_pct);
            if a + tol < target {
                return Err(format!(
                    "t={}: vm {i} has {a} MiB, target {target} MiB, after {settle_ticks} settled ticks",
                    t.t_ms
                ));
            }
        }
        if t.over_budget_mib > 0 {
            return Err(format!("t={}: still over budget", t.t_ms));
        }
    }
    Ok(())
}

/// Weight is respected in a shortage: from tick `from` on, of two VMs with
/// the same minimum, maximum and buffer and the same committed memory, the
/// heavier has at least as much memory as the lighter, up to `tol_mib`.
pub fn check_weight_order(
    vms: &[SimVm],
    ticks: &[Tick],
    from: usize,
    tol_mib: u64,
) -> Result<(), String> {
    let alike = |a: &SimVm, b: &SimVm| {
        let (a, b) = (&a.settings, &b.settings);
        (a.minimum_mib, a.maximum_mib, a.buffer_pct) == (b.minimum_mib, b.maximum_mib, b.buffer_pct)
    };
    for t in ticks.iter().skip(from) {
        for (h, heavy) in vms.iter().enumerate() {
            for (l, light) in vms.iter().enumerate() {
                if heavy.settings.weight > light.settings.weight
                    && alike(heavy, light)
                    && t.committed[h] == t.committed[l]
                    && t.assigned[h] + tol_mib < t.assigned[l]
                {
                    return Err(format!(
                        "t={}: vm {h} (weight {}) has {} MiB, vm {l} (weight {}) {} MiB",
                        t.t_ms,
                        heavy.settings.weight,
                        t.assigned[h],
                        light.settings.weight,
                        t.assigned[l]
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{settings_of, Curve};

    fn tick(t_ms: u64, assigned: Vec<u64>) -> Tick {
        let n = assigned.len();
        Tick {
            t_ms,
            plugged: assigned.clone(),
            balloon: vec![0; n],
            vmem: Vec::new(),
            vmem_plugged: Vec::new(),
            committed: vec![100; n],
            target: vec![120; n],
            honest: vec![true; n],
            over_budget_mib: 0,
            reasons: vec![String::new(); n],
            assigned,
        }
    }

    #[test]
    fn direction_changes_counts_turns() {
        assert_eq!(direction_changes(&[1, 2, 3, 3, 2, 1, 2]), 2);
        assert_eq!(direction_changes(&[5, 5, 5]), 0);
        let ticks: Vec<Tick> = [1, 2, 1, 2]
            .iter()
            .map(|&a| tick(0, vec![a * 512]))
            .collect();
        assert!(check_no_oscillation(&ticks, 0, 1).is_err());
        assert!(check_no_oscillation(&ticks, 2, 0).is_ok());
    }

    #[test]
    fn safety_catches_growth_over_budget_and_bounds() {
        let vms = [SimVm::new("a", 512, 256, 1024, Curve::Idle)];
        let ok = [tick(0, vec![512])];
        assert!(check_safety(&settings_of(&vms), 1024, &ok).is_ok());
        let mut over = tick(0, vec![600]);
        over.over_budget_mib = 100;
        assert!(
            check_safety(&settings_of(&vms), 500, &[over]).is_err(),
            "grew over budget"
        );
        assert!(check_safety(&settings_of(&vms), 4096, &[tick(0, vec![2000])]).is_err());
        // Two entries for one VM: a VM decided twice in one step.
        let twice = check_safety(&settings_of(&vms), 4096, &[tick(0, vec![512, 512])]);
        assert!(
            twice.as_ref().is_err_and(|e| e.contains("2 assigned")),
            "{twice:?}"
        );
    }

    #[test]
    fn demand_and_weight_checks_catch_violations() {
        let cfg = PolicyConfig::default();
        let short = vec![tick(0, vec![512]), tick(250, vec![90])];
        assert!(check_demand_met(&cfg, 4096, &short, 1).is_err());
        assert!(check_demand_met(&cfg, 4096, &short, 2).is_ok());
        let mut heavy = SimVm::new("h", 512, 256, 1024, Curve::Idle);
        heavy.settings.weight = 9000;
        let vms = [heavy, SimVm::new("l", 512, 256, 1024, Curve::Idle)];
        let t = [tick(0, vec![400, 500])];
        assert!(check_weight_order(&vms, &t, 0, 16).is_err());
        assert!(check_weight_order(&vms, &t, 0, 100).is_ok());
    }
}
