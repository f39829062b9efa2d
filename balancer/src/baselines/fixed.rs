//! The static baseline: every VM keeps one size for ever, whatever its
//! demand (what a host without a balancer does).

use super::{decision, validated, Policy};
use crate::action::Decision;
use crate::report::Report;
use crate::settings::{SettingsError, VmSettings, VmState};

/// VMs of fixed sizes.
#[derive(Debug)]
pub struct Fixed {
    settings: Vec<VmSettings>,
    states: Vec<VmState>,
}

impl Fixed {
    /// Each VM keeps its startup memory.
    pub fn at_startup(settings: Vec<VmSettings>) -> Result<Self, SettingsError> {
        let sizes = settings.iter().map(|s| s.startup_mib).collect::<Vec<_>>();
        Self::with_sizes(settings, &sizes)
    }

    /// Each VM keeps `sizes[i]` MiB (within its minimum and maximum; a VM
    /// without a size keeps its startup memory): memory above startup is
    /// plugged at boot, memory below it held by the balloon.
    pub fn with_sizes(settings: Vec<VmSettings>, sizes: &[u64]) -> Result<Self, SettingsError> {
        let settings = validated(settings)?;
        let states = settings
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let size = sizes
                    .get(i)
                    .copied()
                    .unwrap_or(s.startup_mib)
                    .clamp(s.minimum_mib, s.maximum_mib);
                let plugged = size.max(s.startup_mib);
                VmState {
                    plugged_mib: plugged,
                    balloon_mib: plugged - size,
                    ..VmState::default()
                }
            })
            .collect();
        Ok(Self { settings, states })
    }
}

impl Policy for Fixed {
    fn step(&mut self, _reports: &[(usize, Report)], _budget: u64, _now_ms: u64) -> Vec<Decision> {
        self.states
            .iter()
            .zip(&self.settings)
            .enumerate()
            .map(|(i, (st, s))| {
                let a = st.assigned_mib();
                let mut d = decision(i, a, a, a, Vec::new());
                d.reason = format!("vm {}: static, keeps {a} MiB", s.name);
                d
            })
            .collect()
    }

    fn state(&self, vm: usize) -> Option<VmState> {
        self.states.get(vm).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_kept_within_bounds() {
        let s = vec![
            VmSettings::new("a", 512, 256, 2048),
            VmSettings::new("b", 512, 256, 2048),
        ];
        let mut f = Fixed::with_sizes(s, &[900, 100]).expect("valid");
        let d = f.step(&[(0, Report::at(2000, 900, 0))], 100, 0);
        assert!(d.iter().all(Decision::is_noop));
        let a = f.state(0).expect("a");
        let b = f.state(1).expect("b");
        assert_eq!((a.plugged_mib, a.assigned_mib()), (900, 900));
        assert_eq!((b.plugged_mib, b.assigned_mib()), (512, 256));
    }
}
