//! The demand traces the policies are compared on ([`crate::compare`]):
//! two VMs under one budget, ten minutes at one tick a second. Every VM
//! boots with 512 MiB and may move between 256 MiB and 2 GiB; the budget
//! is 3 GiB, less than the two maximums, so that the VMs compete when both
//! are busy.

use crate::sim::{Curve, SimVm};

/// How long each trace runs, ms.
pub const DURATION_MS: u64 = 600_000;
/// The simulator's tick (and the agents' report interval), ms.
pub const TICK_MS: u64 = 1_000;
/// The host budget, MiB.
pub const BUDGET_MIB: u64 = 3072;

/// One trace: VMs with demand curves and working-set factors.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it shows, for people.
    pub about: &'static str,
    /// The host budget, MiB.
    pub budget_mib: u64,
    /// The VMs; their demand is committed memory.
    pub vms: Vec<SimVm>,
    /// Per VM, the working set as a percentage of committed memory
    /// ([`crate::guest_model`]).
    pub working_set_pct: Vec<u64>,
}

fn vm(name: &str, demand: Curve) -> SimVm {
    SimVm::new(name, 512, 256, 2048, demand)
}

fn sine(base: u64, amplitude: u64) -> Curve {
    Curve::Sine {
        base,
        amplitude,
        period_ms: 300_000,
    }
}

fn workload(name: &'static str, about: &'static str, vms: Vec<(SimVm, u64)>) -> Workload {
    let (vms, working_set_pct) = vms.into_iter().unzip();
    Workload {
        name,
        about,
        budget_mib: BUDGET_MIB,
        vms,
        working_set_pct,
    }
}

/// Every trace, in table order.
pub fn all() -> Vec<Workload> {
    vec![
        workload(
            "step",
            "a: 400 -> 1400 MiB committed at 120 s; b: 600 MiB committed, 80 % of it touched",
            vec![
                (
                    vm(
                        "a",
                        Curve::Step {
                            at_ms: 120_000,
                            before: 400,
                            after: 1400,
                        },
                    ),
                    100,
                ),
                (vm("b", Curve::Constant(600)), 80),
            ],
        ),
        workload(
            "ramp",
            "a: 300 -> 1800 MiB over 400 s; b: 500 MiB committed plus 30 % page cache it needs",
            vec![
                (
                    vm(
                        "a",
                        Curve::Ramp {
                            from: 300,
                            to: 1800,
                            over_ms: 400_000,
                        },
                    ),
                    100,
                ),
                (vm("b", Curve::Constant(500)), 130),
            ],
        ),
        workload(
            "burst",
            "a: 300 MiB with 20 s bursts to 1500 MiB every 120 s; b: 700 MiB",
            vec![
                (
                    vm(
                        "a",
                        Curve::Burst {
                            base: 300,
                            peak: 1500,
                            every_ms: 120_000,
                            for_ms: 20_000,
                        },
                    ),
                    100,
                ),
                (vm("b", Curve::Constant(700)), 100),
            ],
        ),
        workload(
            "diurnal",
            "a: 1000 +- 600 MiB, b: 500 +- 200 MiB, in phase, 300 s period; a needs 10 % page cache",
            vec![(vm("a", sine(1000, 600)), 110), (vm("b", sine(500, 200)), 100)],
        ),
        workload(
            "out-of-phase",
            "a and b: 1100 +- 800 MiB, 300 s period, half a period apart",
            vec![
                (vm("a", sine(1100, 800)), 100),
                (
                    vm(
                        "b",
                        Curve::Shifted {
                            by_ms: 150_000,
                            inner: Box::new(sine(1100, 800)),
                        },
                    ),
                    100,
                ),
            ],
        ),
    ]
}

/// The trace called `name`, if any.
pub fn by_name(name: &str) -> Option<Workload> {
    all().into_iter().find(|w| w.name == name)
}

/// Every trace's name.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|w| w.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_traces_with_one_factor_per_vm() {
        let all = all();
        assert!(all.len() >= 5);
        for w in &all {
            assert_eq!(w.vms.len(), w.working_set_pct.len(), "{}", w.name);
            assert_eq!(by_name(w.name).map(|b| b.name), Some(w.name));
        }
        assert!(by_name("nope").is_none());
    }
}
