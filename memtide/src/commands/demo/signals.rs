//! The demo's decisions that a guest signal beyond committed memory drove:
//! PSI (a stalling or a calm guest), the balloon statistics' allocation
//! stalls and OOM kills, idle reclaim. Printed at the end of the run so
//! that the signals are visible even when the live view missed them.

use memtide_balancer::trace::Trace;
use memtide_balancer::PolicyConfig;

/// Words a decision's reason carries when a signal drove it
/// (`memtide_balancer::psi`, `::stall`, `::idle`).
pub const SIGNAL_MARKS: [&str; 3] = ["PSI ", "balloon stats: ", "idle "];

/// The demo's policy: the default, but for the PSI calm time, which the
/// demo scales with its phases like the rest of its clock: one and a half
/// phases (30 s, the default, at the default 20 s phases). A guest whose
/// PSI shows no stall for that long, and whose commit has not risen, gives
/// back memory down to committed + 10 % (`docs/balancer.md`, PSI).
pub fn demo_policy(phase_s: u64) -> PolicyConfig {
    PolicyConfig {
        psi_calm_after_ms: phase_s.saturating_mul(1500),
        ..PolicyConfig::default()
    }
}

/// How many signal reasons the summary prints.
const SHOWN: usize = 6;

/// The decisions of `trace` whose reason names a signal: (time in ms, VM
/// name, reason), oldest first.
pub fn signal_reasons(trace: &Trace) -> Vec<(u64, &str, &str)> {
    trace
        .ticks
        .iter()
        .flat_map(|t| {
            t.reasons.iter().enumerate().filter_map(move |(i, r)| {
                let name = trace.vms.get(i).map_or("?", |v| v.name.as_str());
                SIGNAL_MARKS
                    .iter()
                    .any(|m| r.contains(m))
                    .then_some((t.t_ms, name, r.as_str()))
            })
        })
        .collect()
}

/// Prints how many decisions a signal drove and the first few of them.
pub fn print(trace: &Trace) {
    let found = signal_reasons(trace);
    if found.is_empty() {
        println!("[demo] no decision needed a PSI, stall or idle signal (committed memory alone)");
        return;
    }
    println!(
        "[demo] {} decision(s) driven by PSI, balloon stall statistics or idle reclaim; the first:",
        found.len()
    );
    for (t_ms, name, reason) in found.iter().take(SHOWN) {
        #[allow(
            clippy::cast_precision_loss,
            reason = "a run's milliseconds are far below 2^52"
        )]
        let s = *t_ms as f64 / 1000.0;
        println!("[demo] signal at {s:.1} s ({name}): {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtide_balancer::sim::Tick;
    use memtide_balancer::VmSettings;

    fn tick(t_ms: u64, reasons: [&str; 2]) -> Tick {
        Tick {
            t_ms,
            assigned: vec![256, 256],
            plugged: vec![256, 256],
            balloon: vec![0, 0],
            vmem: vec![0, 0],
            vmem_plugged: vec![0, 0],
            committed: vec![100, 100],
            target: vec![256, 256],
            honest: vec![true, true],
            over_budget_mib: 0,
            reasons: reasons.iter().map(|r| (*r).to_string()).collect(),
        }
    }

    #[test]
    fn the_calm_time_is_one_and_a_half_phases() {
        assert_eq!(demo_policy(20), PolicyConfig::default());
        assert_eq!(demo_policy(6).psi_calm_after_ms, 9_000);
    }

    #[test]
    fn only_reasons_that_name_a_signal_are_picked() {
        let trace = Trace {
            version: memtide_balancer::trace::TRACE_VERSION,
            budget_mib: 640,
            vms: vec![
                VmSettings::new("web", 256, 128, 512),
                VmSettings::new("batch", 256, 128, 512),
            ],
            ticks: vec![
                tick(0, ["vm web: pressure 120 > 83, grow 64 MiB", ""]),
                tick(
                    250,
                    [
                        "",
                        "vm batch: pressure 90, grow 40 MiB; PSI some avg10 23.00 % > 10 %: target 300 MiB",
                    ],
                ),
                tick(
                    500,
                    [
                        "vm web: ...; balloon stats: 3 allocation stalls since last step: deflate 64 MiB at once",
                        "",
                    ],
                ),
            ],
        };
        let found = signal_reasons(&trace);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].0, found[0].1), (250, "batch"));
        assert_eq!((found[1].0, found[1].1), (500, "web"));
    }
}
