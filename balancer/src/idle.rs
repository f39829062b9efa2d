//! Idle reclaim (optional, off by default): a guest whose demand has stayed
//! low for [`crate::PolicyConfig::idle_reclaim_after_ms`] gives back the
//! memory it has above demand + buffer even when the budget is not short,
//! below its startup memory too (never below its minimum), so that the
//! host keeps free memory for new VMs: Hyper-V's "remove memory from
//! guests whose demand is low".
//!
//! Low demand: its committed memory has not risen above the lowest value
//! since the idle time began by more than the hysteresis threshold, and,
//! where the agent reports PSI, memory `some` avg10 has stayed below
//! [`IDLE_PSI_MAX_PCT`]. A rise in either, or a stall or OOM kill in the
//! balloon statistics, starts the idle time again.

use crate::report::Report;

/// PSI `some` avg10 (percent) below which a guest counts as idle.
pub const IDLE_PSI_MAX_PCT: f32 = 1.0;

/// One VM's idle time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdleTracker {
    /// Since when (host ms) the VM has been idle, if it is.
    since_ms: Option<u64>,
    /// The lowest committed memory since then, MiB.
    base_mib: u64,
}

impl IdleTracker {
    /// Reads a new report; `rise_mib` is how far committed memory may rise
    /// above its lowest value and still count as stable.
    pub fn observe(&mut self, report: &Report, rise_mib: u64) {
        let quiet = report
            .psi_some_avg10
            .is_none_or(|p| f64::from(p) < f64::from(IDLE_PSI_MAX_PCT));
        let c = report.committed_mib;
        match self.since_ms {
            Some(_) if quiet && c <= self.base_mib.saturating_add(rise_mib) => {
                self.base_mib = self.base_mib.min(c);
            }
            _ if quiet => {
                self.since_ms = Some(report.received_ms);
                self.base_mib = c;
            }
            _ => self.since_ms = None,
        }
    }

    /// Forgets the idle time (the guest stalled).
    pub fn interrupt(&mut self) {
        self.since_ms = None;
    }

    /// How long the VM has been idle at `now_ms`, if it is.
    pub fn idle_for_ms(&self, now_ms: u64) -> Option<u64> {
        self.since_ms.map(|t| now_ms.saturating_sub(t))
    }
}

/// What idle reclaim makes of a VM this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleReclaim {
    /// The memory to keep: demand + buffer (within the VM's bounds).
    pub keep_mib: u64,
    /// For the reason.
    pub text: String,
}

/// Whether a VM idle for `idle_for_ms` (if at all) with `assigned_mib`
/// gives memory back down to `demand_mib` (its committed + buffer target,
/// within its bounds): only once idle for `after_ms` (`None`: idle reclaim
/// off), and only when it has more than `threshold_mib` above it.
pub fn reclaim(
    after_ms: Option<u64>,
    idle_for_ms: Option<u64>,
    assigned_mib: u64,
    demand_mib: u64,
    threshold_mib: u64,
) -> Option<IdleReclaim> {
    let (after, idle) = (after_ms?, idle_for_ms?);
    let excess = assigned_mib.saturating_sub(demand_mib);
    if idle < after || excess < threshold_mib {
        return None;
    }
    Some(IdleReclaim {
        keep_mib: demand_mib,
        text: format!(
            "idle {} s: give back {excess} MiB above demand + buffer ({demand_mib} MiB)",
            idle / 1000
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(committed: u64, psi: Option<f32>, t: u64) -> Report {
        let mut r = Report::at(committed, 512, t);
        r.psi_some_avg10 = psi;
        r
    }

    #[test]
    fn stable_commit_and_quiet_psi_are_idle() {
        let mut t = IdleTracker::default();
        t.observe(&report(200, Some(0.0), 1000), 16);
        t.observe(&report(210, Some(0.5), 2000), 16);
        t.observe(&report(190, Some(0.0), 3000), 16);
        assert_eq!(t.idle_for_ms(61_000), Some(60_000));
        // 190 is the base now: 210 is a rise of 20 > 16.
        t.observe(&report(210, Some(0.0), 4000), 16);
        assert_eq!(t.idle_for_ms(5000), Some(1000), "a rise starts again");
        t.observe(&report(210, Some(4.0), 6000), 16);
        assert_eq!(t.idle_for_ms(7000), None, "PSI above 1 %: not idle");
        t.observe(&report(210, None, 8000), 16);
        assert_eq!(t.idle_for_ms(9000), Some(1000), "no PSI: commit alone");
        t.interrupt();
        assert_eq!(t.idle_for_ms(9000), None);
    }

    #[test]
    fn reclaim_needs_the_knob_the_time_and_an_excess() {
        assert_eq!(reclaim(None, Some(999_000), 512, 200, 16), None, "off");
        assert_eq!(reclaim(Some(120_000), Some(60_000), 512, 200, 16), None);
        assert_eq!(reclaim(Some(120_000), None, 512, 200, 16), None);
        assert_eq!(reclaim(Some(120_000), Some(120_000), 210, 200, 16), None);
        let r = reclaim(Some(120_000), Some(125_000), 296, 200, 16).expect("reclaims");
        assert_eq!(r.keep_mib, 200);
        assert_eq!(
            r.text,
            "idle 125 s: give back 96 MiB above demand + buffer (200 MiB)"
        );
    }
}
