//! The policy's reading of a guest's PSI (pressure stall information):
//! memory `some` avg10, the share of the last ~10 s in which at least one
//! task waited for memory.
//!
//! Two signals, both on top of the committed-memory target:
//! - **high**: avg10 above [`PolicyConfig::psi_high_pct`] and not falling
//!   since the previous report: the guest stalls although committed memory
//!   may say it fits (page cache it needs, kernel memory Committed_AS does
//!   not count); its target gets an extra step;
//! - **calm**: no stall for [`PolicyConfig::psi_calm_after_ms`]: the
//!   `some` total has not grown (or, for agents without the total, avg10
//!   has read zero, 0.00 as `/proc/pressure/memory` prints it, all that
//!   time); the guest may give back memory down to committed plus the
//!   smaller [`PolicyConfig::calm_buffer_pct`]. The total answers sooner:
//!   avg10 takes a minute or more to decay to zero after a stall ends.

use crate::policy::PolicyConfig;
use crate::report::Report;

/// What a VM's PSI says this step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PsiSignal {
    /// No PSI in the report, or nothing to act on.
    Quiet,
    /// avg10 above the threshold and not falling.
    High {
        /// The reported avg10, percent.
        avg10: f32,
    },
    /// avg10 zero for at least the calm time.
    Calm {
        /// How long it has been zero, ms.
        for_ms: u64,
    },
}

/// Whether `avg10` reads as zero: below 0.005 %, i.e. 0.00 as printed.
pub fn is_zero(avg10: f32) -> bool {
    avg10 < 0.005
}

/// Whether `report` says the guest is not stalling on memory, given the
/// report before it: its stall total has not grown since `before` (when
/// both carry it), or else its avg10 reads zero. `false` without PSI;
/// `None` for the very report recorded before (nothing new).
pub fn calm_now(report: &Report, before: Option<&Report>) -> Option<bool> {
    if before.is_some_and(|b| b.timestamp_ms == report.timestamp_ms) {
        return None;
    }
    let Some(avg10) = report.psi_some_avg10 else {
        return Some(false);
    };
    Some(
        match (
            report.psi_some_total_us,
            before.and_then(|b| b.psi_some_total_us),
        ) {
            (Some(now), Some(then)) => now <= then,
            _ => is_zero(avg10),
        },
    )
}

/// The signal of `latest` (with `previous` to see whether PSI falls), for
/// a VM calm (see [`calm_now`]) since `calm_since_ms`, at `now_ms`.
pub fn psi_signal(
    cfg: &PolicyConfig,
    latest: &Report,
    previous: Option<&Report>,
    calm_since_ms: Option<u64>,
    now_ms: u64,
) -> PsiSignal {
    let Some(p) = latest.psi_some_avg10 else {
        return PsiSignal::Quiet;
    };
    let falling = previous
        .and_then(|r| r.psi_some_avg10)
        .is_some_and(|q| p < q);
    if f64::from(p) > f64::from(cfg.psi_high_pct) && !falling {
        return PsiSignal::High { avg10: p };
    }
    match calm_since_ms {
        Some(t) if now_ms.saturating_sub(t) >= cfg.psi_calm_after_ms => PsiSignal::Calm {
            for_ms: now_ms.saturating_sub(t),
        },
        _ => PsiSignal::Quiet,
    }
}

/// The extra step a VM under PSI gets: `psi_step_pct` of its memory, at
/// least twice the hysteresis threshold (so that it is acted on).
pub fn psi_step_mib(cfg: &PolicyConfig, assigned_mib: u64, threshold_mib: u64) -> u64 {
    (assigned_mib.saturating_mul(cfg.psi_step_pct) / 100).max(threshold_mib.saturating_mul(2))
}

/// `committed x (100 + pct) / 100`, rounded up.
pub fn with_pct(committed_mib: u64, pct: u64) -> u64 {
    committed_mib
        .saturating_mul(100u64.saturating_add(pct))
        .div_ceil(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_psi(p: Option<f32>, t: u64) -> Report {
        let mut r = Report::at(300, 512, t);
        r.psi_some_avg10 = p;
        r
    }

    #[test]
    fn high_calm_and_quiet() {
        let cfg = PolicyConfig::default();
        let high = with_psi(Some(25.0), 1000);
        assert_eq!(
            psi_signal(&cfg, &high, None, None, 1000),
            PsiSignal::High { avg10: 25.0 }
        );
        // Falling since the previous report: the last step is working.
        let before = with_psi(Some(40.0), 0);
        assert_eq!(
            psi_signal(&cfg, &high, Some(&before), None, 1000),
            PsiSignal::Quiet
        );
        let zero = with_psi(Some(0.0), 40_000);
        assert_eq!(
            psi_signal(&cfg, &zero, None, Some(10_000), 40_000),
            PsiSignal::Calm { for_ms: 30_000 }
        );
        assert_eq!(
            psi_signal(&cfg, &zero, None, Some(20_000), 40_000),
            PsiSignal::Quiet,
            "not calm for long enough"
        );
        assert_eq!(
            psi_signal(&cfg, &with_psi(None, 0), None, Some(0), 99_999),
            PsiSignal::Quiet
        );
        assert_eq!(psi_step_mib(&cfg, 1000, 20), 100);
        assert_eq!(psi_step_mib(&cfg, 100, 16), 32);
        assert_eq!(with_pct(300, 10), 330);
    }

    #[test]
    fn calm_by_total_when_reported_else_by_avg10() {
        let mut a = with_psi(Some(3.0), 0);
        a.psi_some_total_us = Some(500);
        let mut b = with_psi(Some(2.5), 1000);
        b.psi_some_total_us = Some(500);
        assert_eq!(calm_now(&b, Some(&a)), Some(true), "no stall since a");
        b.psi_some_total_us = Some(501);
        assert_eq!(calm_now(&b, Some(&a)), Some(false));
        assert_eq!(calm_now(&a, Some(&a)), None, "the same report");
        assert_eq!(calm_now(&with_psi(Some(0.0), 5), None), Some(true));
        assert_eq!(calm_now(&with_psi(Some(0.5), 5), None), Some(false));
        assert_eq!(calm_now(&with_psi(None, 5), None), Some(false));
    }
}
