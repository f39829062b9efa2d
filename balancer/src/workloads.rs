//! The demand traces the policies are compared on ([`crate::compare`]):
//! two VMs under one budget, ten minutes at one tick a second. Every VM
//! boots with 512 MiB and may move between 256 MiB and 2 GiB; the budget
//! is 3 GiB, less than the two maximums, so that the VMs compete when both
//! are busy.

use crate::sim::{Agent, Curve, SimVm};
use crate::trace::Trace;

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
    /// How long it runs, ms.
    pub duration_ms: u64,
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
        duration_ms: DURATION_MS,
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
        recorded_demo(),
    ]
}

/// A real run: `memtide demo --phase-s 20` on the nested host
/// (2026-12-02), two 256 MiB guests (128..512 MiB) under 640 MiB, each
/// with memtide-agent reporting the Committed_AS of its memtide-hog
/// phases. Only the reasons were dropped from the recorded trace.
const DEMO_RECORDING: &str = include_str!("../traces/demo-2026-12-02.json");

/// The recorded demo as a workload (empty if the recording does not parse,
/// which a unit test rules out).
fn recorded_demo() -> Workload {
    let about = "memtide demo, 2 guests, memtide-hog phases, as their agents reported them (recorded 2026-12-02)";
    match Trace::from_json(DEMO_RECORDING) {
        Ok(t) => recorded("recorded-demo", about, &t),
        Err(_) => Workload {
            name: "recorded-demo",
            about,
            budget_mib: 0,
            duration_ms: 0,
            vms: Vec::new(),
            working_set_pct: Vec::new(),
        },
    }
}

/// The trace called `name`, if any.
pub fn by_name(name: &str) -> Option<Workload> {
    all().into_iter().find(|w| w.name == name)
}

/// Working set of a recorded VM, percent of committed memory: the
/// recording has committed memory only; memtide-hog touches what it
/// commits, so most of it is in use.
pub const RECORDED_WORKING_SET_PCT: u64 = 90;

/// A workload replaying a recorded balancer run (`memtide balance --trace`
/// or the demo): each VM's settings and budget as recorded, its demand the
/// committed memory its agent reported at each tick (ticks without an
/// honest report keep the previous value), from the first tick on.
pub fn recorded(name: &'static str, about: &'static str, trace: &Trace) -> Workload {
    let t0 = trace.ticks.first().map_or(0, |t| t.t_ms);
    let vms: Vec<SimVm> = trace
        .vms
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let points = trace
                .ticks
                .iter()
                .filter(|t| t.honest.get(i).copied().unwrap_or(false))
                .filter_map(|t| Some((t.t_ms.saturating_sub(t0), *t.committed.get(i)?)))
                .collect();
            SimVm {
                settings: s.clone(),
                demand: Curve::Recorded(points),
                agent: Agent::Honest,
                pinned: None,
            }
        })
        .collect();
    let last = trace.ticks.last().map_or(t0, |t| t.t_ms);
    Workload {
        name,
        about,
        budget_mib: trace.budget_mib,
        duration_ms: last.saturating_sub(t0) / TICK_MS * TICK_MS,
        working_set_pct: vec![RECORDED_WORKING_SET_PCT; vms.len()],
        vms,
    }
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

    #[test]
    fn a_recorded_run_replays_its_committed_memory() {
        use crate::settings::VmSettings;
        use crate::sim::Tick;
        let tick = |t_ms: u64, committed: u64, honest: bool| Tick {
            t_ms,
            assigned: vec![256],
            plugged: vec![256],
            balloon: vec![0],
            vmem: Vec::new(),
            vmem_plugged: Vec::new(),
            committed: vec![committed],
            target: vec![0],
            honest: vec![honest],
            over_budget_mib: 0,
            reasons: vec![String::new()],
        };
        let trace = Trace {
            version: crate::trace::TRACE_VERSION,
            budget_mib: 512,
            vms: vec![VmSettings::new("a", 256, 128, 384)],
            ticks: vec![
                tick(10_000, 100, true),
                tick(11_000, 999, false),
                tick(12_000, 200, true),
                tick(15_500, 150, true),
            ],
        };
        let w = recorded("r", "test", &trace);
        assert_eq!((w.budget_mib, w.duration_ms), (512, 5_000));
        let d = &w.vms[0].demand;
        // The dishonest tick is skipped; each value holds until the next.
        assert_eq!(
            [d.at(0), d.at(1_000), d.at(2_000), d.at(5_499), d.at(5_500)],
            [100, 100, 200, 200, 150]
        );
    }

    #[test]
    fn the_recorded_demo_parses_and_has_demand() {
        assert!(Trace::from_json(DEMO_RECORDING).is_ok());
        let w = recorded_demo();
        assert_eq!(w.vms.len(), 2);
        assert!(w.duration_ms >= 60_000, "{} ms", w.duration_ms);
        let peak = (0..w.duration_ms / TICK_MS)
            .map(|k| w.vms[0].demand.at(k * TICK_MS))
            .max();
        assert!(peak.unwrap_or(0) > 200, "{peak:?}");
    }
}
