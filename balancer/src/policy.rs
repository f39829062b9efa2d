//! The decision function: from reports and a host budget to per-VM resize
//! actions, each with a reason.
//!
//! One step:
//! 1. judge each VM's latest report ([`crate::report::judge`]); a VM with a
//!    stale or absurd report keeps its memory;
//! 2. want = max(target, assigned) for VMs with fresh reports, where
//!    target = committed × (1 + buffer) within [minimum, maximum]: memory
//!    is only taken when the budget is short;
//! 3. if the wants exceed the budget, first take memory above target from
//!    the VMs with the lowest pressure per weight, then share what is left
//!    above each VM's floor (max(minimum, committed)) in proportion to
//!    weight;
//! 4. turn the difference into actions under hysteresis, a rate limit, a
//!    cap on shrink steps and a hold after growth; shrinks are applied
//!    before growth, and growth never exceeds the budget's headroom.

use crate::report::{judge, Report, ReportVerdict};
use crate::settings::{SettingsError, VmSettings, VmState};

/// Tuning knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyConfig {
    /// A report older than this is stale, ms.
    pub stale_after_ms: u64,
    /// At most one resize per VM per this interval, ms.
    pub min_interval_ms: u64,
    /// Ignore changes smaller than this, MiB ...
    pub hysteresis_mib: u64,
    /// ... or smaller than this percentage of the VM's memory.
    pub hysteresis_pct: u64,
    /// Largest single shrink step, MiB.
    pub max_shrink_step_mib: u64,
    /// No shrink within this long after growth (unless over budget), ms.
    pub shrink_hold_ms: u64,
    /// Hot-add granularity, MiB.
    pub slot_mib: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            stale_after_ms: 5_000,
            min_interval_ms: 1_000,
            hysteresis_mib: 16,
            hysteresis_pct: 2,
            max_shrink_step_mib: 256,
            shrink_hold_ms: 10_000,
            slot_mib: 128,
        }
    }
}

/// One step towards a VM's new size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Shrink the balloon to this size, MiB.
    Deflate {
        /// New balloon size.
        to_balloon_mib: u64,
    },
    /// Grow the balloon to this size, MiB.
    Inflate {
        /// New balloon size.
        to_balloon_mib: u64,
    },
    /// Hot-add slots.
    HotAdd {
        /// How many.
        slots: u32,
        /// MiB each.
        slot_mib: u64,
    },
}

/// What the balancer decided for one VM in one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index of the VM.
    pub vm: usize,
    /// The VM's target (demand), MiB, or its current size if its report was
    /// not used.
    pub target_mib: u64,
    /// Memory before the step, MiB.
    pub assigned_before_mib: u64,
    /// Memory after the step, MiB.
    pub assigned_after_mib: u64,
    /// Actions to apply, in order.
    pub actions: Vec<Action>,
    /// Why, for people.
    pub reason: String,
}

struct Vm {
    settings: VmSettings,
    state: VmState,
    latest: Option<Report>,
    previous: Option<Report>,
}

/// The balancer over a fixed set of VMs.
pub struct Balancer {
    cfg: PolicyConfig,
    vms: Vec<Vm>,
}

/// Per-VM inputs of one step.
#[derive(Debug, Clone, Copy)]
struct Need {
    fresh: bool,
    committed: u64,
    target: u64,
    floor: u64,
    want: u64,
}

impl Balancer {
    /// A balancer for VMs booted at their startup memory.
    pub fn new(cfg: PolicyConfig, settings: Vec<VmSettings>) -> Result<Self, SettingsError> {
        let vms = settings
            .into_iter()
            .map(|s| {
                s.validate()?;
                Ok(Vm {
                    state: VmState::at_startup(&s),
                    settings: s,
                    latest: None,
                    previous: None,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { cfg, vms })
    }

    /// Records a report from VM `vm` (ignored if `vm` is unknown).
    pub fn report(&mut self, vm: usize, report: Report) {
        if let Some(v) = self.vms.get_mut(vm) {
            v.previous = v.latest.replace(report);
        }
    }

    /// The balancer's view of VM `vm`.
    pub fn state(&self, vm: usize) -> Option<VmState> {
        self.vms.get(vm).map(|v| v.state)
    }

    /// The settings of VM `vm`.
    pub fn settings(&self, vm: usize) -> Option<&VmSettings> {
        self.vms.get(vm).map(|v| &v.settings)
    }

    fn needs(&self, now_ms: u64) -> Vec<(Need, ReportVerdict)> {
        self.vms
            .iter()
            .map(|v| {
                let verdict = judge(
                    &v.settings,
                    v.latest.as_ref(),
                    v.previous.as_ref(),
                    now_ms,
                    self.cfg.stale_after_ms,
                );
                let assigned = v.state.assigned_mib();
                let need = match (&verdict, &v.latest) {
                    (ReportVerdict::Fresh, Some(r)) => {
                        let target = v.settings.target_mib(r.committed_mib);
                        let floor = r
                            .committed_mib
                            .clamp(v.settings.minimum_mib, v.settings.maximum_mib);
                        Need {
                            fresh: true,
                            committed: r.committed_mib,
                            target,
                            floor,
                            want: target.max(assigned),
                        }
                    }
                    _ => Need {
                        fresh: false,
                        committed: 0,
                        target: assigned,
                        floor: assigned,
                        want: assigned,
                    },
                };
                (need, verdict)
            })
            .collect()
    }

    /// Reduces `wants` to fit `budget` (steps 3 of the module doc).
    fn fit_budget(&self, needs: &mut [Need], budget: u64) {
        let total: u64 = needs.iter().map(|n| n.want).sum();
        if total <= budget {
            return;
        }
        let mut excess = total - budget;
        // (a) Memory above target, lowest pressure per weight first.
        let mut order: Vec<usize> = (0..needs.len()).filter(|&i| needs[i].fresh).collect();
        let score = |i: usize| {
            let n = &needs[i];
            let pressure = n.committed as f64 / n.want.max(1) as f64;
            pressure / f64::from(self.vms[i].settings.weight)
        };
        order.sort_by(|&a, &b| score(a).total_cmp(&score(b)).then(a.cmp(&b)));
        for &i in &order {
            let surplus = needs[i].want - needs[i].target.min(needs[i].want);
            let take = surplus.min(excess);
            needs[i].want -= take;
            excess -= take;
        }
        if excess == 0 {
            return;
        }
        // (b) Share what is left above the floors in proportion to weight.
        let fixed: u64 = needs.iter().filter(|n| !n.fresh).map(|n| n.want).sum();
        let floors: u64 = needs.iter().filter(|n| n.fresh).map(|n| n.floor).sum();
        let mut remaining = budget.saturating_sub(fixed + floors);
        let mut active: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| needs[i].want > needs[i].floor)
            .collect();
        let mut given = vec![0u64; needs.len()];
        loop {
            let weights: u64 = active
                .iter()
                .map(|&i| u64::from(self.vms[i].settings.weight))
                .sum();
            if active.is_empty() || weights == 0 {
                break;
            }
            let capped: Vec<usize> = active
                .iter()
                .copied()
                .filter(|&i| {
                    let share = remaining * u64::from(self.vms[i].settings.weight) / weights;
                    share >= needs[i].want - needs[i].floor
                })
                .collect();
            if capped.is_empty() {
                for &i in &active {
                    given[i] = remaining * u64::from(self.vms[i].settings.weight) / weights;
                }
                break;
            }
            for &i in &capped {
                given[i] = needs[i].want - needs[i].floor;
                remaining -= given[i];
            }
            active.retain(|i| !capped.contains(i));
        }
        for &i in &order {
            needs[i].want = needs[i].floor + given[i].min(needs[i].want - needs[i].floor);
        }
    }

    /// One balancing step at host time `now_ms` with `budget_mib` for all
    /// VMs; applies the decisions to the balancer's own state.
    pub fn step(&mut self, budget_mib: u64, now_ms: u64) -> Vec<Decision> {
        let judged = self.needs(now_ms);
        let mut needs: Vec<Need> = judged.iter().map(|(n, _)| *n).collect();
        self.fit_budget(&mut needs, budget_mib);
        let over_budget = self.vms.iter().map(|v| v.state.assigned_mib()).sum::<u64>() > budget_mib;
        let mut decisions: Vec<Decision> = Vec::with_capacity(self.vms.len());
        // Shrinks first, so growth can use what they free.
        for pass_grow in [false, true] {
            for i in 0..self.vms.len() {
                let assigned = self.vms[i].state.assigned_mib();
                let want = needs[i].want;
                if (want > assigned) != pass_grow {
                    continue;
                }
                let d = self.decide(i, &needs[i], &judged[i].1, budget_mib, now_ms, over_budget);
                decisions.push(d);
            }
        }
        decisions.sort_by_key(|d| d.vm);
        decisions
    }

    fn decide(
        &mut self,
        i: usize,
        need: &Need,
        verdict: &ReportVerdict,
        budget: u64,
        now_ms: u64,
        over_budget: bool,
    ) -> Decision {
        let headroom = budget.saturating_sub(self.vms.iter().map(|v| v.state.assigned_mib()).sum());
        let cfg = self.cfg;
        let v = &mut self.vms[i];
        let name = v.settings.name.clone();
        let assigned = v.state.assigned_mib();
        let mut d = Decision {
            vm: i,
            target_mib: need.target,
            assigned_before_mib: assigned,
            assigned_after_mib: assigned,
            actions: Vec::new(),
            reason: String::new(),
        };
        let pressure = (need.committed * 100).checked_div(assigned).unwrap_or(0);
        match verdict {
            ReportVerdict::Stale => {
                d.reason = format!("vm {name}: no recent report, keeps {assigned} MiB");
                return d;
            }
            ReportVerdict::Absurd(why) => {
                d.reason = format!("vm {name}: report ignored ({why}), keeps {assigned} MiB");
                return d;
            }
            ReportVerdict::Fresh => {}
        }
        let delta = need.want as i64 - assigned as i64;
        let threshold = cfg.hysteresis_mib.max(assigned * cfg.hysteresis_pct / 100);
        if delta.unsigned_abs() < threshold {
            d.reason = format!(
                "vm {name}: pressure {pressure}, target {} MiB within {threshold} MiB of {assigned} MiB: no change",
                need.target
            );
            return d;
        }
        if v.state
            .last_change_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < cfg.min_interval_ms)
        {
            d.reason = format!(
                "vm {name}: changed less than {} ms ago: wait",
                cfg.min_interval_ms
            );
            return d;
        }
        if delta < 0 {
            if !over_budget
                && v.state
                    .last_grow_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) < cfg.shrink_hold_ms)
            {
                d.reason = format!(
                    "vm {name}: grew less than {} ms ago: no shrink yet",
                    cfg.shrink_hold_ms
                );
                return d;
            }
            let floor = need.floor.max(v.settings.minimum_mib);
            let shrink = delta
                .unsigned_abs()
                .min(cfg.max_shrink_step_mib)
                .min(assigned.saturating_sub(floor));
            if shrink == 0 {
                d.reason = format!("vm {name}: at its floor of {floor} MiB");
                return d;
            }
            v.state.balloon_mib += shrink;
            d.actions.push(Action::Inflate {
                to_balloon_mib: v.state.balloon_mib,
            });
            d.reason = format!(
                "vm {name}: budget short, pressure {pressure} (target {} MiB): inflate {shrink} MiB",
                need.target
            );
        } else {
            let grow = (delta as u64).min(headroom);
            if grow == 0 {
                d.reason = format!("vm {name}: wants {} MiB more, no budget headroom", delta);
                return d;
            }
            let from_balloon = grow.min(v.state.balloon_mib);
            let rest = grow - from_balloon;
            let mut new_balloon = v.state.balloon_mib - from_balloon;
            let mut slots = 0u64;
            if rest > 0 {
                let room =
                    v.settings.maximum_mib.saturating_sub(v.state.plugged_mib) / cfg.slot_mib;
                slots = rest.div_ceil(cfg.slot_mib).min(room);
                let added = slots * cfg.slot_mib;
                // Keep the overshoot of the last slot in the balloon.
                new_balloon += added.saturating_sub(rest);
            }
            if from_balloon > 0 && slots == 0 {
                d.actions.push(Action::Deflate {
                    to_balloon_mib: new_balloon,
                });
            }
            if slots > 0 {
                d.actions.push(Action::HotAdd {
                    slots: slots as u32,
                    slot_mib: cfg.slot_mib,
                });
                let action = if new_balloon < v.state.balloon_mib {
                    Action::Deflate {
                        to_balloon_mib: new_balloon,
                    }
                } else {
                    Action::Inflate {
                        to_balloon_mib: new_balloon,
                    }
                };
                if new_balloon != v.state.balloon_mib {
                    d.actions.push(action);
                }
                v.state.plugged_mib += slots * cfg.slot_mib;
            }
            v.state.balloon_mib = new_balloon;
            v.state.last_grow_ms = Some(now_ms);
            d.reason = format!(
                "vm {name}: pressure {pressure} > {} (100+buffer), grow {} MiB ({} from the balloon, {} slot(s) hot-added)",
                100 + v.settings.buffer_pct,
                v.state.assigned_mib() - assigned,
                from_balloon,
                slots
            );
        }
        v.state.last_change_ms = Some(now_ms);
        d.assigned_after_mib = v.state.assigned_mib();
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(committed: u64, visible: u64, t: u64) -> Report {
        Report::at(committed, visible, t)
    }

    fn one_vm() -> Balancer {
        Balancer::new(
            PolicyConfig::default(),
            vec![VmSettings::new("a", 512, 256, 2048)],
        )
        .expect("valid")
    }

    #[test]
    fn grows_by_deflating_first_then_hot_adding() {
        let mut b = one_vm();
        b.report(0, report(200, 512, 0));
        // Budget short at first: shrinks to target 240.
        let d = b.step(4096, 0);
        assert!(
            d[0].reason.contains("no change") || d[0].actions.is_empty(),
            "{d:?}"
        );
        // Force a balloon: pretend the VM was shrunk earlier.
        b.vms[0].state.balloon_mib = 200;
        b.report(0, report(600, 312, 2000));
        let d = b.step(4096, 2000);
        let a = &d[0];
        // 408 MiB more: 200 from the balloon, 208 by two slots whose
        // overshoot (48 MiB) stays in the balloon.
        assert_eq!(
            a.actions,
            vec![
                Action::HotAdd {
                    slots: 2,
                    slot_mib: 128
                },
                Action::Deflate { to_balloon_mib: 48 }
            ],
            "{a:?}"
        );
        assert_eq!(a.assigned_after_mib, 720, "target = 600 * 1.2");
        let s = b.state(0).expect("vm");
        assert_eq!(s.plugged_mib, 512 + 256);
        assert_eq!(s.balloon_mib, 48);
        assert!(
            a.reason.contains("pressure") && a.reason.contains("200 from the balloon"),
            "{}",
            a.reason
        );
    }

    #[test]
    fn deflate_alone_when_the_balloon_covers_the_growth() {
        let mut b = one_vm();
        b.vms[0].state.balloon_mib = 200;
        b.report(0, report(300, 312, 0));
        let d = b.step(4096, 0);
        assert_eq!(
            d[0].actions,
            vec![Action::Deflate {
                to_balloon_mib: 152
            }]
        );
        assert_eq!(d[0].assigned_after_mib, 360);
    }

    #[test]
    fn silent_and_absurd_vms_keep_their_memory() {
        let mut b = one_vm();
        let d = b.step(100, 0);
        assert!(d[0].actions.is_empty() && d[0].reason.contains("no recent report"));
        b.report(0, report(99_999, 512, 0));
        let d = b.step(100, 0);
        assert!(
            d[0].actions.is_empty() && d[0].reason.contains("ignored"),
            "{}",
            d[0].reason
        );
    }

    #[test]
    fn shortage_takes_from_the_low_pressure_vm_never_below_committed() {
        let s = vec![
            VmSettings::new("a", 1024, 256, 2048),
            VmSettings::new("b", 1024, 256, 2048),
        ];
        let mut b = Balancer::new(PolicyConfig::default(), s).expect("valid");
        b.report(0, report(900, 1024, 0)); // busy: target 1080
        b.report(1, report(300, 1024, 0)); // idle: target 360
        let d = b.step(1536, 0);
        assert!(
            matches!(d[1].actions[..], [Action::Inflate { .. }]),
            "{d:?}"
        );
        // Startup sizes exceed the budget: the sum only ever falls, by
        // capped steps, until it fits; b never goes below its committed.
        let total = |b: &Balancer| {
            (0..2)
                .map(|i| b.state(i).expect("vm").assigned_mib())
                .sum::<u64>()
        };
        let mut last = total(&b);
        for k in 1..20u64 {
            let t = k * 1000;
            b.report(0, report(900, b.state(0).expect("a").assigned_mib(), t));
            b.report(1, report(300, b.state(1).expect("b").assigned_mib(), t));
            b.step(1536, t);
            assert!(total(&b) <= last.max(1536), "sum grew while over budget");
            last = total(&b);
            assert!(b.state(1).expect("b").assigned_mib() >= 300);
        }
        assert!(last <= 1536, "{last}");
        assert!(
            b.state(0).expect("a").assigned_mib() >= 1080,
            "a's demand is met once b shrank"
        );
    }

    #[test]
    fn hysteresis_and_rate_limit() {
        let mut b = one_vm();
        b.vms[0].state.balloon_mib = 100;
        b.report(0, report(340, 412, 0)); // target 408, 4 MiB away from 412
        assert!(b.step(4096, 0)[0].actions.is_empty());
        b.report(0, report(400, 412, 100)); // target 480
        assert!(!b.step(4096, 100)[0].actions.is_empty());
        b.report(0, report(420, 480, 200)); // target 504, but changed 100 ms ago
        let d = b.step(4096, 200);
        assert!(
            d[0].actions.is_empty() && d[0].reason.contains("wait"),
            "{}",
            d[0].reason
        );
    }
}
