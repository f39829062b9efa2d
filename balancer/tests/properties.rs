//! Property tests: random traces of 2-4 VMs with random settings, demand
//! curves and agents, checked against every invariant.

#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top level of their own test binary"
)]

mod common;

use memtide_balancer::invariants::{
    check_demand_met, check_no_hot_remove, check_no_oscillation, check_safety, check_weight_order,
};
use memtide_balancer::sim::{settings_of, simulate, Agent, Curve, SimVm};
use memtide_balancer::{PolicyConfig, VmSettings};
use proptest::prelude::*;

const TICK: u64 = 250;
/// 160 s: every settling curve has settled by 60 s.
const TICKS: u64 = 640;
/// 30 s of settled demand.
const SETTLE: usize = 120;

fn agent() -> impl Strategy<Value = Agent> {
    prop_oneof![
        6 => Just(Agent::Honest),
        1 => (0u64..60_000).prop_map(Agent::SilentFrom),
        1 => (0u64..60_000).prop_map(Agent::AbsurdFrom),
    ]
}

fn sim_vm() -> impl Strategy<Value = SimVm> {
    (
        (128u64..1024, 0u64..1024, 0u64..2048),
        (0u32..=100, 1u32..=10_000),
        common::any_curve(),
        agent(),
    )
        .prop_map(
            |((min, extra_start, extra_max), (buffer, weight), demand, agent)| {
                let mut settings =
                    VmSettings::new("vm", min + extra_start, min, min + extra_start + extra_max);
                settings.buffer_pct = buffer;
                settings.weight = weight;
                SimVm {
                    settings,
                    demand,
                    agent,
                    pinned: None,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn invariants_hold_on_random_traces(
        vms in proptest::collection::vec(sim_vm(), 2..=4),
        budget in 512u64..8192,
    ) {
        let cfg = PolicyConfig::default();
        let t = simulate(cfg, &vms, budget, TICK, TICKS).expect("sim");
        prop_assert_eq!(check_safety(&settings_of(&vms), budget, &t), Ok(()));
        prop_assert_eq!(check_no_hot_remove(&t), Ok(()));
        prop_assert_eq!(check_demand_met(&cfg, budget, &t, SETTLE), Ok(()));
        // Once every curve has settled (and none is noisy or a wave), and
        // the agents no longer change behaviour, memory settles: after 30 s
        // more, no VM changes direction.
        let settled_ms = vms
            .iter()
            .map(|v| {
                let agent = match v.agent {
                    Agent::Honest => 0,
                    Agent::SilentFrom(s) | Agent::AbsurdFrom(s) => s,
                };
                v.demand.settles_at_ms().map(|c| c.max(agent))
            })
            .try_fold(0u64, |acc, s| s.map(|s| acc.max(s)));
        if let Some(ms) = settled_ms {
            let from = (ms / TICK) as usize + SETTLE;
            prop_assert_eq!(check_no_oscillation(&t, from, 0), Ok(()));
        }
    }

    #[test]
    fn heavier_vms_get_at_least_as_much_of_equal_demand(
        weights in proptest::collection::vec(1u32..=10_000, 2..=4),
        demand in 256u64..2000,
        startup in 256u64..2048,
        budget_pct in 30u64..100,
    ) {
        let vms: Vec<SimVm> = weights
            .iter()
            .map(|&w| {
                let mut v = SimVm::new("vm", startup, 128, 4096, Curve::Constant(demand));
                v.settings.weight = w;
                v
            })
            .collect();
        let want: u64 = vms.iter().map(|v| v.settings.target_mib(demand)).sum();
        let budget = (want * budget_pct / 100).max(128 * vms.len() as u64);
        let cfg = PolicyConfig::default();
        let t = simulate(cfg, &vms, budget, TICK, 240).expect("sim");
        prop_assert_eq!(check_safety(&settings_of(&vms), budget, &t), Ok(()));
        // After 30 s, up to one hysteresis step (2 % of 4096 = 82 MiB).
        prop_assert_eq!(check_weight_order(&vms, &t, SETTLE, 82), Ok(()));
        prop_assert_eq!(check_no_oscillation(&t, SETTLE, 0), Ok(()));
    }
}
