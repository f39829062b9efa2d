//! Idle reclaim on random traces: the invariants hold with it on too, and
//! it gives memory back only down to demand + buffer.

#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top level of their own test binary"
)]

mod common;

use memtide_balancer::invariants::{check_no_hot_remove, check_no_oscillation, check_safety};
use memtide_balancer::sim::{settings_of, simulate, Agent, SimVm};
use memtide_balancer::{PolicyConfig, VmSettings};
use proptest::prelude::*;

const TICK: u64 = 250;
/// 160 s.
const TICKS: u64 = 640;
/// Idle reclaim after 10 s.
const IDLE_AFTER_MS: u64 = 10_000;

fn sim_vm() -> impl Strategy<Value = SimVm> {
    (
        (128u64..1024, 0u64..1024, 0u64..2048),
        (0u32..=100, 1u32..=10_000),
        common::settling_curve(),
    )
        .prop_map(
            |((min, extra_start, extra_max), (buffer, weight), demand)| {
                let mut settings =
                    VmSettings::new("vm", min + extra_start, min, min + extra_start + extra_max);
                settings.buffer_pct = buffer;
                settings.weight = weight;
                SimVm {
                    settings,
                    demand,
                    agent: Agent::Honest,
                    pinned: None,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn idle_reclaim_keeps_the_invariants_and_settles(
        vms in proptest::collection::vec(sim_vm(), 2..=4),
        budget in 512u64..8192,
    ) {
        let cfg = PolicyConfig {
            idle_reclaim_after_ms: Some(IDLE_AFTER_MS),
            ..PolicyConfig::default()
        };
        let t = simulate(cfg, &vms, budget, TICK, TICKS).expect("sim");
        let settings = settings_of(&vms);
        prop_assert_eq!(check_safety(&settings, budget, &t), Ok(()));
        prop_assert_eq!(check_no_hot_remove(&t), Ok(()));
        // Settled by 60 s; idle 10 s later; the give-back (at most 256 MiB
        // a second, up to ~3 GiB) is done within 20 s more: from then on
        // no VM changes direction.
        let from = ((60_000 + IDLE_AFTER_MS + 20_000) / TICK) as usize;
        prop_assert_eq!(check_no_oscillation(&t, from, 0), Ok(()));
        // At the end, no VM is below its minimum, nor below demand + buffer
        // when the budget holds every VM's demand + buffer.
        let last = t.last().expect("ticks");
        let targets: u64 = last.target.iter().sum();
        for (i, s) in settings.iter().enumerate() {
            prop_assert!(last.assigned[i] >= s.minimum_mib);
            if targets <= budget {
                prop_assert!(
                    last.assigned[i] + 82 >= last.target[i],
                    "vm {i}: {} < target {}", last.assigned[i], last.target[i]
                );
            }
        }
    }
}
