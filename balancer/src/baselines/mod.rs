//! Policies the simulator can run side by side: memtide's own
//! [`Balancer`] and three baselines written from their published
//! behaviour, all behind one small trait, [`Policy`].
//!
//! - [`mom::Mom`]: oVirt MoM's default balloon rules (host free memory
//!   below 20 % of the host: shrink every guest towards 20 % free, at most
//!   5 % per 10 s; otherwise grow them back towards their maximum);
//! - [`hyperv_like::HypervLike`]: committed + buffer, grown at once and
//!   given back slowly, shared by weight when short (no PSI);
//! - [`fixed::Fixed`]: every VM keeps one size (its startup memory) for
//!   ever.

pub mod fixed;
pub mod hyperv_like;
pub mod mom;

use crate::action::{resize_actions, Action, Decision};
use crate::policy::{Balancer, PolicyConfig};
use crate::report::Report;
use crate::resize::plan_growth;
use crate::settings::{SettingsError, VmSettings, VmState};

/// A memory policy over a fixed set of VMs, stepped by the simulator.
pub trait Policy: std::fmt::Debug {
    /// One step at host time `now_ms` with `budget_mib` for all VMs, given
    /// this step's reports (VM index, report): one decision per VM, in VM
    /// order, already applied to the policy's own view of the VMs.
    fn step(&mut self, reports: &[(usize, Report)], budget_mib: u64, now_ms: u64) -> Vec<Decision>;

    /// The policy's view of VM `vm` (plugged, balloon).
    fn state(&self, vm: usize) -> Option<VmState>;
}

impl Policy for Balancer {
    fn step(&mut self, reports: &[(usize, Report)], budget_mib: u64, now_ms: u64) -> Vec<Decision> {
        Balancer::step(self, reports, budget_mib, now_ms)
    }

    fn state(&self, vm: usize) -> Option<VmState> {
        Balancer::state(self, vm)
    }
}

/// The idle time after which `memtide-idle` reclaims, ms: 30 s, short
/// enough for the 100 s recorded demo's idle phases.
pub const SIM_IDLE_RECLAIM_AFTER_MS: u64 = 30_000;

/// The policies the simulator knows, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// memtide's [`Balancer`] with [`PolicyConfig::default`].
    Memtide,
    /// memtide with idle reclaim on, after [`SIM_IDLE_RECLAIM_AFTER_MS`].
    MemtideIdle,
    /// oVirt MoM's default balloon rules.
    Mom,
    /// Hyper-V Dynamic Memory style.
    HypervLike,
    /// Startup memory for ever.
    Static,
}

impl PolicyKind {
    /// Every policy, in table order.
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::Memtide,
        PolicyKind::MemtideIdle,
        PolicyKind::Mom,
        PolicyKind::HypervLike,
        PolicyKind::Static,
    ];

    /// The name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Memtide => "memtide",
            PolicyKind::MemtideIdle => "memtide-idle",
            PolicyKind::Mom => "mom",
            PolicyKind::HypervLike => "hyperv-like",
            PolicyKind::Static => "static",
        }
    }

    /// The policy called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// A fresh policy of this kind over VMs with `settings`, booted at
    /// their startup memory.
    pub fn build(self, settings: Vec<VmSettings>) -> Result<Box<dyn Policy>, SettingsError> {
        Ok(match self {
            PolicyKind::Memtide => Box::new(Balancer::new(PolicyConfig::default(), settings)?),
            PolicyKind::MemtideIdle => Box::new(Balancer::new(
                PolicyConfig {
                    idle_reclaim_after_ms: Some(SIM_IDLE_RECLAIM_AFTER_MS),
                    ..PolicyConfig::default()
                },
                settings,
            )?),
            PolicyKind::Mom => Box::new(mom::Mom::new(mom::MomConfig::default(), settings)?),
            PolicyKind::HypervLike => Box::new(hyperv_like::HypervLike::new(
                hyperv_like::HypervConfig::default(),
                settings,
            )?),
            PolicyKind::Static => Box::new(fixed::Fixed::at_startup(settings)?),
        })
    }
}

/// Validates every VM's settings.
fn validated(settings: Vec<VmSettings>) -> Result<Vec<VmSettings>, SettingsError> {
    settings.iter().try_for_each(VmSettings::validate)?;
    Ok(settings)
}

/// Moves `state` to `new_assigned_mib` (clamped to the VM's minimum and to
/// what whole `slot_mib` slots below its maximum allow): a shrink inflates
/// the balloon, a grow deflates it first and then hot-adds. Returns the
/// actions, empty when nothing changes.
fn resize_to(
    state: &mut VmState,
    settings: &VmSettings,
    new_assigned_mib: u64,
    slot_mib: u64,
) -> Vec<Action> {
    let assigned = state.assigned_mib();
    let new = new_assigned_mib.max(settings.minimum_mib);
    let old_balloon = state.balloon_mib;
    if new < assigned {
        state.balloon_mib += assigned - new;
        return resize_actions(old_balloon, state.balloon_mib, 0, slot_mib);
    }
    let g = plan_growth(
        state.plugged_mib,
        state.balloon_mib,
        settings.maximum_mib,
        new - assigned,
        slot_mib,
    );
    state.plugged_mib = g.new_plugged_mib;
    state.balloon_mib = g.new_balloon_mib;
    resize_actions(old_balloon, g.new_balloon_mib, g.slots, slot_mib)
}

/// A decision for VM `vm` that went from `before` to `after` MiB.
fn decision(vm: usize, target_mib: u64, before: u64, after: u64, actions: Vec<Action>) -> Decision {
    Decision {
        vm,
        target_mib,
        assigned_before_mib: before,
        assigned_after_mib: after,
        actions,
        over_budget_mib: 0,
        reason: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in PolicyKind::ALL {
            assert_eq!(PolicyKind::from_name(k.name()), Some(k));
        }
        assert_eq!(PolicyKind::from_name("esx"), None);
    }

    #[test]
    fn resize_to_deflates_then_hot_adds_and_respects_the_minimum() {
        let s = VmSettings::new("a", 512, 256, 2048);
        let mut st = VmState::at_startup(&s);
        assert!(resize_to(&mut st, &s, 512, 128).is_empty());
        resize_to(&mut st, &s, 100, 128);
        assert_eq!(st.assigned_mib(), 256, "not below the minimum");
        resize_to(&mut st, &s, 600, 128);
        assert_eq!((st.assigned_mib(), st.plugged_mib), (600, 640));
    }
}
