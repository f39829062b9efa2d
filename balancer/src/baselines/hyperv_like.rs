//! A Hyper-V Dynamic Memory style baseline: each VM's target is its
//! committed memory plus its buffer (no PSI); a VM below its target grows
//! at once (balloon first, then hot-add) as far as the budget allows, a VM
//! above it gives memory back slowly ([`HypervConfig::slow_shrink_mib`]
//! per [`HypervConfig::min_interval_ms`], after
//! [`HypervConfig::shrink_hold_ms`] without growth) whether or not the
//! host is short; when the targets do not fit the budget, the budget above
//! the VMs' minimums is shared in proportion to their weights (Hyper-V's
//! memory weight) and VMs above their share shrink at once.

use super::{decision, resize_to, validated, Policy};
use crate::action::Decision;
use crate::report::Report;
use crate::resize::hysteresis_mib;
use crate::settings::{SettingsError, VmSettings, VmState};

/// The baseline's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HypervConfig {
    /// At most one change per VM per this interval, ms.
    pub min_interval_ms: u64,
    /// A VM above its target gives back at most this much per change, MiB.
    pub slow_shrink_mib: u64,
    /// ... and only this long after it last grew, ms.
    pub shrink_hold_ms: u64,
    /// Largest shrink step when the budget is short, MiB.
    pub short_shrink_mib: u64,
    /// Changes smaller than this, MiB, or ...
    pub hysteresis_mib: u64,
    /// ... this percentage of the VM's memory are skipped.
    pub hysteresis_pct: u64,
    /// Hot-add granularity, MiB.
    pub slot_mib: u64,
    /// A report older than this is not used (the VM keeps its memory), ms.
    pub stale_after_ms: u64,
}

impl Default for HypervConfig {
    fn default() -> Self {
        Self {
            min_interval_ms: 1_000,
            slow_shrink_mib: 32,
            shrink_hold_ms: 10_000,
            short_shrink_mib: 256,
            hysteresis_mib: 16,
            hysteresis_pct: 2,
            slot_mib: 128,
            stale_after_ms: 5_000,
        }
    }
}

/// The Hyper-V-like policy over a fixed set of VMs.
#[derive(Debug)]
pub struct HypervLike {
    cfg: HypervConfig,
    settings: Vec<VmSettings>,
    states: Vec<VmState>,
    latest: Vec<Option<Report>>,
}

/// Shares `budget_mib` among VMs with `minimums`, `targets` and `weights`:
/// each gets its minimum, and the rest is shared in proportion to weight,
/// none above its target (water-filling).
pub fn weighted_shares(
    minimums: &[u64],
    targets: &[u64],
    weights: &[u32],
    budget_mib: u64,
) -> Vec<u64> {
    let mut grant: Vec<u64> = minimums
        .iter()
        .zip(targets)
        .map(|(&m, &t)| m.min(t))
        .collect();
    let mut rest = budget_mib.saturating_sub(grant.iter().sum());
    let mut active: Vec<usize> = (0..grant.len())
        .filter(|&i| targets[i] > grant[i])
        .collect();
    while rest > 0 && !active.is_empty() {
        let wsum: u128 = active.iter().map(|&i| u128::from(weights[i])).sum();
        let share = |i: usize| {
            u64::try_from(u128::from(rest) * u128::from(weights[i]) / wsum.max(1))
                .unwrap_or(u64::MAX)
        };
        let (done, open): (Vec<usize>, Vec<usize>) = active
            .iter()
            .partition(|&&i| targets[i] - grant[i] <= share(i));
        if done.is_empty() {
            let shares: Vec<u64> = open.iter().map(|&i| share(i)).collect();
            for (&i, s) in open.iter().zip(shares) {
                grant[i] += s;
            }
            break;
        }
        for &i in &done {
            rest -= targets[i] - grant[i];
            grant[i] = targets[i];
        }
        active = open;
    }
    grant
}

impl HypervLike {
    /// The policy over VMs booted at their startup memory.
    pub fn new(cfg: HypervConfig, settings: Vec<VmSettings>) -> Result<Self, SettingsError> {
        let settings = validated(settings)?;
        let states = settings.iter().map(VmState::at_startup).collect();
        let latest = vec![None; settings.len()];
        Ok(Self {
            cfg,
            settings,
            states,
            latest,
        })
    }

    /// Committed + buffer within the VM's bounds and whole slots, or its
    /// memory as it is without a fresh report.
    fn target(&self, i: usize, now_ms: u64) -> Option<u64> {
        let r = self.latest[i]
            .filter(|r| now_ms.saturating_sub(r.received_ms) <= self.cfg.stale_after_ms)?;
        let (s, st) = (&self.settings[i], &self.states[i]);
        let slot = s.slot_mib.unwrap_or(self.cfg.slot_mib).max(1);
        let reach = st.plugged_mib + s.maximum_mib.saturating_sub(st.plugged_mib) / slot * slot;
        Some(s.target_mib(r.committed_mib).min(reach))
    }
}

impl Policy for HypervLike {
    fn step(&mut self, reports: &[(usize, Report)], budget_mib: u64, now_ms: u64) -> Vec<Decision> {
        for &(i, r) in reports {
            if let Some(slot) = self.latest.get_mut(i) {
                *slot = Some(r);
            }
        }
        let n = self.states.len();
        let assigned: Vec<u64> = self.states.iter().map(VmState::assigned_mib).collect();
        let fresh: Vec<Option<u64>> = (0..n).map(|i| self.target(i, now_ms)).collect();
        let targets: Vec<u64> = (0..n).map(|i| fresh[i].unwrap_or(assigned[i])).collect();
        let short = targets.iter().sum::<u64>() > budget_mib;
        let grants = if short {
            // VMs without fresh reports keep what they have.
            let mins: Vec<u64> = (0..n)
                .map(|i| fresh[i].map_or(assigned[i], |_| self.settings[i].minimum_mib))
                .collect();
            let weights: Vec<u32> = self.settings.iter().map(|s| s.weight).collect();
            weighted_shares(&mins, &targets, &weights, budget_mib)
        } else {
            targets.clone()
        };
        let mut out: Vec<Decision> = (0..n)
            .map(|i| decision(i, targets[i], assigned[i], assigned[i], Vec::new()))
            .collect();
        // Shrinks first, so that growth can use what they free.
        for grow in [false, true] {
            for i in 0..n {
                let (a, g) = (assigned[i], grants[i]);
                let name = &self.settings[i].name;
                let st = self.states[i];
                let threshold = hysteresis_mib(a, self.cfg.hysteresis_mib, self.cfg.hysteresis_pct);
                let recent = |t: Option<u64>, within: u64| {
                    t.is_some_and(|t| now_ms.saturating_sub(t) < within)
                };
                if (g > a) != grow
                    || a.abs_diff(g) < threshold
                    || recent(st.last_change_ms, self.cfg.min_interval_ms)
                {
                    continue;
                }
                let new = if grow {
                    let headroom = budget_mib
                        .saturating_sub(self.states.iter().map(VmState::assigned_mib).sum());
                    a + (g - a).min(headroom)
                } else if short {
                    a - (a - g).min(self.cfg.short_shrink_mib)
                } else if recent(st.last_grow_ms, self.cfg.shrink_hold_ms) {
                    continue;
                } else {
                    a - (a - g).min(self.cfg.slow_shrink_mib)
                };
                let slot = self.settings[i].slot_mib.unwrap_or(self.cfg.slot_mib);
                let (st, s) = (&mut self.states[i], &self.settings[i]);
                let actions = resize_to(st, s, new, slot);
                if actions.is_empty() {
                    continue;
                }
                st.last_change_ms = Some(now_ms);
                if grow {
                    st.last_grow_ms = Some(now_ms);
                }
                let d = &mut out[i];
                d.actions = actions;
                d.assigned_after_mib = st.assigned_mib();
                d.reason = format!(
                    "vm {name}: target {} MiB (committed + {} %){}, {} to {} MiB",
                    targets[i],
                    s.buffer_pct,
                    if short {
                        format!(", weighted share {g} MiB")
                    } else {
                        String::new()
                    },
                    if grow { "grow" } else { "shrink" },
                    d.assigned_after_mib
                );
            }
        }
        out
    }

    fn state(&self, vm: usize) -> Option<VmState> {
        self.states.get(vm).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_weights_above_the_minimums() {
        assert_eq!(
            weighted_shares(&[100, 100], &[1000, 1000], &[3, 1], 600),
            vec![400, 200]
        );
        // A VM whose share covers its target gets exactly that.
        assert_eq!(
            weighted_shares(&[100, 100], &[150, 1000], &[1, 1], 600),
            vec![150, 450]
        );
        assert_eq!(
            weighted_shares(&[100, 100], &[150, 200], &[1, 1], 600),
            vec![150, 200]
        );
    }

    #[test]
    fn grows_at_once_and_gives_back_slowly() {
        let s = vec![VmSettings::new("a", 512, 256, 2048)];
        let mut h = HypervLike::new(HypervConfig::default(), s).expect("valid");
        let a = |h: &HypervLike| h.state(0).expect("vm").assigned_mib();
        h.step(&[(0, Report::at(1000, 512, 0))], 4096, 0);
        assert_eq!(a(&h), 1200, "committed + 20 % at once");
        // Demand falls: nothing during the hold, then 32 MiB a second.
        h.step(&[(0, Report::at(200, 1200, 5000))], 4096, 5000);
        assert_eq!(a(&h), 1200);
        h.step(&[(0, Report::at(200, 1200, 10_000))], 4096, 10_000);
        assert_eq!(a(&h), 1168);
    }
}
