//! What a guest agent reports, and whether to believe it.

use crate::settings::VmSettings;
use crate::stall::StallCounters;

/// One guest report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// Committed_AS, MiB.
    pub committed_mib: u64,
    /// MemTotal as the guest sees it, MiB.
    pub visible_mib: u64,
    /// MemAvailable, MiB.
    pub available_mib: u64,
    /// PSI memory "some" avg10, percent, if reported.
    pub psi_some_avg10: Option<f32>,
    /// PSI memory "some" total, µs: the guest's stall time since boot, if
    /// reported. Unchanged between two reports means no stall at all in
    /// between (avg10 decays for a while after a stall ends).
    pub psi_some_total_us: Option<u64>,
    /// The guest's allocation-stall and OOM-kill counters from its balloon
    /// statistics (not from the agent), if the guest sends them.
    pub stalls: Option<StallCounters>,
    /// When the agent took it (guest clock, ms).
    pub timestamp_ms: u64,
    /// When the host received it (host clock, ms).
    pub received_ms: u64,
}

impl Report {
    /// A report taken and received at `t_ms` with MemAvailable =
    /// visible - committed and no PSI (what simple agents and tests send).
    pub fn at(committed_mib: u64, visible_mib: u64, t_ms: u64) -> Self {
        Self {
            committed_mib,
            visible_mib,
            available_mib: visible_mib.saturating_sub(committed_mib),
            psi_some_avg10: None,
            psi_some_total_us: None,
            stalls: None,
            timestamp_ms: t_ms,
            received_ms: t_ms,
        }
    }
}

/// What the policy makes of the latest report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportVerdict {
    /// Use it.
    Fresh,
    /// No report, or none for too long: keep the VM's memory as it is.
    Stale,
    /// A report that cannot be true: keep the VM's memory as it is.
    Absurd(String),
}

/// Judges `latest` (with `previous` for monotonicity) at host time `now_ms`.
pub fn judge(
    settings: &VmSettings,
    latest: Option<&Report>,
    previous: Option<&Report>,
    now_ms: u64,
    stale_after_ms: u64,
) -> ReportVerdict {
    let Some(r) = latest else {
        return ReportVerdict::Stale;
    };
    if now_ms.saturating_sub(r.received_ms) > stale_after_ms {
        return ReportVerdict::Stale;
    }
    if r.committed_mib == 0 || r.visible_mib == 0 {
        return ReportVerdict::Absurd("committed or visible memory is 0".into());
    }
    if r.committed_mib > settings.maximum_mib.saturating_mul(10) {
        return ReportVerdict::Absurd(format!(
            "committed {} MiB is over 10x the maximum",
            r.committed_mib
        ));
    }
    if r.visible_mib < settings.minimum_mib / 2 {
        return ReportVerdict::Absurd(format!(
            "visible {} MiB is below half the minimum",
            r.visible_mib
        ));
    }
    if let Some(p) = previous {
        if r.timestamp_ms < p.timestamp_ms {
            return ReportVerdict::Absurd("report timestamps went backwards".into());
        }
    }
    ReportVerdict::Fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(committed: u64, visible: u64, ts: u64) -> Report {
        Report::at(committed, visible, ts)
    }

    #[test]
    fn verdicts() {
        let s = VmSettings::new("a", 512, 256, 1024);
        assert_eq!(judge(&s, None, None, 0, 5000), ReportVerdict::Stale);
        let r = report(300, 512, 1000);
        assert_eq!(judge(&s, Some(&r), None, 2000, 5000), ReportVerdict::Fresh);
        assert_eq!(judge(&s, Some(&r), None, 7000, 5000), ReportVerdict::Stale);
        assert!(matches!(
            judge(&s, Some(&report(0, 512, 1000)), None, 1000, 5000),
            ReportVerdict::Absurd(_)
        ));
        assert!(matches!(
            judge(&s, Some(&report(20_000, 512, 1000)), None, 1000, 5000),
            ReportVerdict::Absurd(_)
        ));
        assert!(matches!(
            judge(&s, Some(&report(300, 100, 1000)), None, 1000, 5000),
            ReportVerdict::Absurd(_)
        ));
        let earlier = report(300, 512, 500);
        assert!(matches!(
            judge(&s, Some(&earlier), Some(&r), 1000, 5000),
            ReportVerdict::Absurd(_)
        ));
    }
}
