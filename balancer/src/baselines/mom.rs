//! oVirt MoM's default balloon policy, written from its published
//! behaviour (the `balloon.rules` shipped with MoM), as a baseline.
//!
//! Every [`MomConfig::interval_ms`] (10 s):
//! - the host is **under pressure** when its free memory is below
//!   [`MomConfig::pressure_threshold_pct`] (20 %) of the host's memory;
//! - under pressure, every guest shrinks towards keeping a share of its
//!   memory free: [`MomConfig::min_guest_free_pct`] (20 %) scaled down by
//!   how short the host is (`20 % x host free / 20 %`); below
//!   [`MomConfig::pressure_critical_pct`] (5 %) host free, that share goes
//!   negative (`host free - 5 %`), forcing the guest to swap. A guest never
//!   loses more than [`MomConfig::max_change_pct`] (5 %) of its memory per
//!   step;
//! - otherwise every guest below its maximum grows by 5 % of its memory,
//!   or at once to `used + 20 % of its maximum` if that is more, never
//!   above its maximum;
//! - changes smaller than [`MomConfig::min_change_per_10k`] (0.25 %) of
//!   the guest's memory are skipped.
//!
//! In the simulator the host's memory is the budget and its free memory
//! the budget less the memory the guests hold; a guest's used memory is
//! its memory less its reported MemAvailable (MoM's `mem_unused`). MoM
//! never hot-adds: a guest boots with its maximum plugged and the balloon
//! holding everything above its startup memory, and moves between its
//! minimum (oVirt's guaranteed memory) and its maximum. A grow is capped
//! at the host's free memory (a real host would overcommit and swap).

use super::{decision, resize_to, validated, Policy};
use crate::action::Decision;
use crate::report::Report;
use crate::settings::{SettingsError, VmSettings, VmState};
use crate::sim::round_mib;

/// MoM's constants (its default rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MomConfig {
    /// The policy runs this often, ms.
    pub interval_ms: u64,
    /// The host is under pressure when free memory is below this, percent.
    pub pressure_threshold_pct: u64,
    /// ... and critically so below this, percent.
    pub pressure_critical_pct: u64,
    /// The free memory a guest keeps when the host is not short, percent.
    pub min_guest_free_pct: u64,
    /// Largest change per step, percent of the guest's memory.
    pub max_change_pct: u64,
    /// Smallest change worth a balloon operation, per 10 000 of the
    /// guest's memory.
    pub min_change_per_10k: u64,
    /// Stats older than this are not used, ms.
    pub stale_after_ms: u64,
}

impl Default for MomConfig {
    fn default() -> Self {
        Self {
            interval_ms: 10_000,
            pressure_threshold_pct: 20,
            pressure_critical_pct: 5,
            min_guest_free_pct: 20,
            max_change_pct: 5,
            min_change_per_10k: 25,
            stale_after_ms: 20_000,
        }
    }
}

/// MoM over a fixed set of VMs.
#[derive(Debug)]
pub struct Mom {
    cfg: MomConfig,
    settings: Vec<VmSettings>,
    states: Vec<VmState>,
    latest: Vec<Option<Report>>,
    last_run_ms: Option<u64>,
}

/// `pct` percent as a fraction.
fn frac(pct: u64) -> f64 {
    pct as f64 / 100.0
}

impl Mom {
    /// MoM over VMs booted at their startup memory (maximum plugged, the
    /// rest in the balloon).
    pub fn new(cfg: MomConfig, settings: Vec<VmSettings>) -> Result<Self, SettingsError> {
        let settings = validated(settings)?;
        let states = settings
            .iter()
            .map(|s| VmState {
                plugged_mib: s.maximum_mib,
                balloon_mib: s.maximum_mib - s.startup_mib,
                ..VmState::default()
            })
            .collect();
        let latest = vec![None; settings.len()];
        Ok(Self {
            cfg,
            settings,
            states,
            latest,
            last_run_ms: None,
        })
    }

    fn total_mib(&self) -> u64 {
        self.states.iter().map(VmState::assigned_mib).sum()
    }

    /// The guest's new size, if MoM changes it: `None` without fresh stats
    /// or when the change is too small.
    fn new_size(&self, i: usize, host_free: f64, pressure: bool, now_ms: u64) -> Option<f64> {
        let r = self.latest[i]
            .filter(|r| now_ms.saturating_sub(r.received_ms) <= self.cfg.stale_after_ms)?;
        let s = &self.settings[i];
        let assigned = self.states[i].assigned_mib();
        let cur = assigned as f64;
        let used = cur - r.available_mib.min(assigned) as f64;
        let max = s.maximum_mib as f64;
        let step = frac(self.cfg.max_change_pct);
        let size = if pressure {
            let guest_free = if host_free <= frac(self.cfg.pressure_critical_pct) {
                host_free - frac(self.cfg.pressure_critical_pct)
            } else {
                frac(self.cfg.min_guest_free_pct) * host_free
                    / frac(self.cfg.pressure_threshold_pct)
            };
            let size = (cur * (1.0 - step)).max(used + guest_free * cur);
            if size > cur {
                return None;
            }
            size
        } else {
            if cur >= max {
                return None;
            }
            let floor = used + frac(self.cfg.min_guest_free_pct) * max;
            (cur * (1.0 + step)).min(max).max(floor).min(max)
        };
        let big_enough = (size - cur).abs() > cur * self.cfg.min_change_per_10k as f64 / 10_000.0;
        big_enough.then_some(size)
    }
}

impl Policy for Mom {
    fn step(&mut self, reports: &[(usize, Report)], budget_mib: u64, now_ms: u64) -> Vec<Decision> {
        for &(i, r) in reports {
            if let Some(slot) = self.latest.get_mut(i) {
                *slot = Some(r);
            }
        }
        let due = self
            .last_run_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= self.cfg.interval_ms);
        let total = self.total_mib();
        let host_free = if budget_mib == 0 {
            0.0
        } else {
            budget_mib.saturating_sub(total) as f64 / budget_mib as f64
        };
        let pressure = host_free < frac(self.cfg.pressure_threshold_pct);
        if due {
            self.last_run_ms = Some(now_ms);
        }
        let mut out = Vec::with_capacity(self.states.len());
        for i in 0..self.states.len() {
            let before = self.states[i].assigned_mib();
            let name = self.settings[i].name.clone();
            let mut d = decision(i, before, before, before, Vec::new());
            let size = if due {
                self.new_size(i, host_free, pressure, now_ms)
            } else {
                None
            };
            match size {
                Some(size) => {
                    let mut new = round_mib(size);
                    if new > before {
                        let headroom = budget_mib.saturating_sub(self.total_mib());
                        new = new.min(before + headroom);
                    }
                    let slot_mib = 128;
                    let (st, s) = (&mut self.states[i], &self.settings[i]);
                    d.actions = resize_to(st, s, new, slot_mib);
                    d.assigned_after_mib = st.assigned_mib();
                    d.target_mib = new;
                    d.reason = format!(
                        "vm {name}: host free {:.1} % {} {} %: balloon to {} MiB",
                        host_free * 100.0,
                        if pressure { "<" } else { ">=" },
                        self.cfg.pressure_threshold_pct,
                        d.assigned_after_mib
                    );
                }
                None if due => {
                    d.reason =
                        format!("vm {name}: host free {:.1} %: no change", host_free * 100.0);
                }
                None => d.reason = format!("vm {name}: between MoM's runs"),
            }
            out.push(d);
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

    fn mom(vms: &[(u64, u64, u64)]) -> Mom {
        let s = vms
            .iter()
            .map(|&(start, min, max)| VmSettings::new("v", start, min, max))
            .collect();
        Mom::new(MomConfig::default(), s).expect("valid")
    }

    fn assigned(m: &Mom, i: usize) -> u64 {
        m.state(i).expect("vm").assigned_mib()
    }

    #[test]
    fn grows_towards_the_maximum_when_the_host_is_not_short() {
        let mut m = mom(&[(1000, 500, 2000)]);
        // Idle guest (100 used): +5 %, since used + 20 % of max is less.
        m.step(&[(0, Report::at(100, 1000, 0))], 8000, 0);
        assert_eq!(assigned(&m, 0), 1050);
        // Nothing between runs.
        m.step(&[(0, Report::at(100, 1050, 5000))], 8000, 5000);
        assert_eq!(assigned(&m, 0), 1050);
        // A full guest jumps to used + 20 % of its maximum.
        m.step(&[(0, Report::at(1050, 1050, 10_000))], 8000, 10_000);
        assert_eq!(assigned(&m, 0), 1450);
        assert_eq!(m.state(0).expect("vm").plugged_mib, 2000, "never hot-adds");
    }

    #[test]
    fn shrinks_at_most_five_percent_per_step_under_pressure() {
        // 2 x 1000 of a 2200 budget: 9 % free, under pressure.
        let mut m = mom(&[(1000, 500, 2000), (1000, 500, 2000)]);
        let d = m.step(
            &[(0, Report::at(100, 1000, 0)), (1, Report::at(950, 1000, 0))],
            2200,
            0,
        );
        // The idle guest: 5 %. The busy one keeps 9 % free: 950 + 90 > 1000.
        assert_eq!((assigned(&m, 0), assigned(&m, 1)), (950, 1000), "{d:?}");
        assert!(
            d[0].reason.contains("host free 9.1 % < 20 %"),
            "{}",
            d[0].reason
        );
    }

    #[test]
    fn never_below_the_minimum_nor_over_the_budget() {
        let mut m = mom(&[(600, 550, 2000)]);
        for k in 0..100u64 {
            let t = k * 10_000;
            let a = assigned(&m, 0);
            m.step(&[(0, Report::at(100, a, t))], 700, t);
            assert!(assigned(&m, 0) >= 550);
        }
        let mut m = mom(&[(600, 550, 2000)]);
        m.step(&[(0, Report::at(600, 600, 0))], 700, 0);
        assert!(assigned(&m, 0) <= 700);
    }
}
