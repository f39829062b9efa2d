//! A simple, explicit model of a simulated guest's memory pressure, for
//! comparing policies ([`crate::compare`]).
//!
//! A guest's **working set** is the memory it touches: its committed
//! memory times a per-VM factor (`working_set_pct`): above 100 % for a
//! guest that also needs page cache Committed_AS does not count, below for
//! one that commits memory it never touches.
//!
//! - **stall**: the share of time some task waits for memory. None while
//!   the working set leaves at least [`RESERVE_PCT`] of the guest's memory
//!   free (the kernel's watermarks and a minimal page cache); from there it
//!   rises linearly to 100 % when the working set exceeds that point by
//!   [`FULL_STALL_SPAN_PCT`] of the memory:
//!   `stall = clamp((ws - (1 - 8 %) x assigned) / (20 % x assigned), 0, 1)`;
//! - **PSI some avg10**: the stall averaged as the kernel does, an
//!   exponential moving average with a 10 s time constant,
//!   `avg += (stall - avg) x (1 - exp(-dt / 10 s))`, reported rounded to
//!   0.01 % as `/proc/pressure/memory` prints it, with the `some` total
//!   (stall time so far, µs);
//! - **OOM risk**: the working set exceeds the guest's memory by more than
//!   [`OOM_MARGIN_PCT`]: more than reclaim can cover; without swap the
//!   guest's OOM killer runs, with swap it thrashes.

use crate::sim::round_mib;

/// Free memory (percent of the guest's) below which the guest stalls.
pub const RESERVE_PCT: u64 = 8;
/// How far past that point (percent of the guest's memory) stall is 100 %.
pub const FULL_STALL_SPAN_PCT: u64 = 20;
/// The time constant of avg10, ms.
pub const AVG10_WINDOW_MS: u64 = 10_000;
/// A working set this far (percent) above the guest's memory is an OOM
/// risk.
pub const OOM_MARGIN_PCT: u64 = 10;

/// The working set of a guest with `committed_mib` and factor `pct`.
pub fn working_set_mib(committed_mib: u64, pct: u64) -> u64 {
    committed_mib.saturating_mul(pct) / 100
}

/// Instantaneous stall, percent, of a guest with `ws_mib` working set in
/// `assigned_mib` of memory.
pub fn stall_pct(ws_mib: u64, assigned_mib: u64) -> f64 {
    let a = assigned_mib.max(1) as f64;
    let start = a * (100 - RESERVE_PCT) as f64 / 100.0;
    let span = a * FULL_STALL_SPAN_PCT as f64 / 100.0;
    ((ws_mib as f64 - start) / span).clamp(0.0, 1.0) * 100.0
}

/// Whether a working set of `ws_mib` in `assigned_mib` is an OOM risk.
pub fn oom_risk(ws_mib: u64, assigned_mib: u64) -> bool {
    u128::from(ws_mib) * 100 > u128::from(assigned_mib) * u128::from(100 + OOM_MARGIN_PCT)
}

/// A guest's PSI memory `some` avg10.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiModel {
    avg10: f64,
    total_us: f64,
}

impl PsiModel {
    /// The guest ran `dt_ms` with `ws_mib` working set in `assigned_mib`.
    pub fn advance(&mut self, dt_ms: u64, ws_mib: u64, assigned_mib: u64) {
        let stall = stall_pct(ws_mib, assigned_mib);
        let k = 1.0 - (-(dt_ms as f64) / AVG10_WINDOW_MS as f64).exp();
        self.avg10 += (stall - self.avg10) * k;
        self.total_us += stall / 100.0 * dt_ms as f64 * 1000.0;
    }

    /// The `some` total, µs: stall time so far.
    pub fn total_us(&self) -> u64 {
        round_mib(self.total_us)
    }

    /// avg10 as the guest reports it, percent, rounded to 0.01.
    pub fn avg10(&self) -> f32 {
        let centi = u16::try_from(round_mib(self.avg10 * 100.0)).unwrap_or(u16::MAX);
        f32::from(centi) / 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_starts_at_the_reserve_and_saturates() {
        assert_eq!(stall_pct(920, 1000), 0.0);
        assert!((stall_pct(1020, 1000) - 50.0).abs() < 1e-9);
        assert_eq!(stall_pct(2000, 1000), 100.0);
        assert!(!oom_risk(1100, 1000) && oom_risk(1101, 1000));
        assert_eq!(working_set_mib(1000, 130), 1300);
    }

    #[test]
    fn avg10_follows_with_a_ten_second_lag_and_decays_to_zero() {
        let mut p = PsiModel::default();
        p.advance(10_000, 2000, 1000);
        assert!((f64::from(p.avg10()) - 63.21).abs() < 0.01, "{}", p.avg10());
        for _ in 0..120 {
            p.advance(1000, 100, 1000);
        }
        assert_eq!(p.avg10(), 0.0);
        assert_eq!(p.total_us(), 10_000_000, "10 s of full stall");
    }
}
