//! The simulator with virtio-mem: a guest that grows by plug, is shrunk by
//! unplug when another guest needs the budget, keeps some blocks it cannot
//! unplug (pinned), has them ballooned instead, and later trades that
//! balloon for unplugged blocks; every invariant holds on the way, and so
//! do they on random traces of VMs with and without virtio-mem.

#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top level of their own test binary"
)]

use memtide_balancer::invariants::{
    check_no_hot_remove, check_no_oscillation, check_safety, check_virtio_mem,
};
use memtide_balancer::sim::{settings_of, simulate, Curve, Pinned, SimVm};
use memtide_balancer::{PolicyConfig, VirtioMemSettings};

const TICK: u64 = 500;

fn vmem(mut v: SimVm, region_mib: u64) -> SimVm {
    v.settings.virtio_mem = Some(VirtioMemSettings {
        region_mib,
        block_mib: 2,
    });
    v
}

fn scenario(pinned: Option<Pinned>) -> (Vec<SimVm>, u64) {
    let mut a = vmem(
        SimVm::new(
            "a",
            256,
            128,
            512,
            Curve::Step {
                at_ms: 30_000,
                before: 300,
                after: 100,
            },
        ),
        256,
    );
    a.pinned = pinned;
    let b = SimVm::new(
        "b",
        256,
        128,
        512,
        Curve::Step {
            at_ms: 30_000,
            before: 100,
            after: 300,
        },
    );
    (vec![a, b], 640)
}

fn reasons(ticks: &[memtide_balancer::sim::Tick], vm: usize) -> Vec<String> {
    ticks
        .iter()
        .map(|t| t.reasons[vm].clone())
        .filter(|r| !r.is_empty())
        .collect()
}

#[test]
fn plug_unplug_short_unplug_and_conversion_keep_the_invariants() {
    let cfg = PolicyConfig::default();
    let (vms, budget) = scenario(Some(Pinned {
        mib: 44,
        until_ms: 60_000,
    }));
    let ticks = simulate(cfg, &vms, budget, TICK, 240).expect("sim");
    let settings = settings_of(&vms);
    check_safety(&settings, budget, &ticks).expect("safety");
    check_no_hot_remove(&ticks).expect("no hot-remove of slots");
    check_virtio_mem(&settings, &ticks, cfg.vmem_settle_ms).expect("virtio-mem accounting");
    check_no_oscillation(&ticks, 0, 4).expect("no oscillation");
    let r = reasons(&ticks, 0);
    let has = |s: &str| r.iter().any(|x| x.contains(s));
    assert!(has("plug 104 MiB (virtio-mem)"), "{r:#?}");
    assert!(has("unplug 80 MiB (virtio-mem)"), "{r:#?}");
    assert!(has("balloon 20 MiB: unplug left 20 MiB plugged"), "{r:#?}");
    assert!(
        has("unplug 20 MiB (virtio-mem) in place of 20 MiB of balloon"),
        "{r:#?}"
    );
    let last = ticks.last().expect("ticks");
    // In the end: a at 280 MiB, all by blocks (24 MiB plugged, no balloon).
    assert_eq!(
        (
            last.assigned[0],
            last.vmem[0],
            last.vmem_plugged[0],
            last.balloon[0]
        ),
        (280, 24, 24, 0)
    );
    assert_eq!(last.assigned[1], 360);
}

#[test]
fn a_guest_that_unplugs_everything_needs_no_balloon() {
    let cfg = PolicyConfig::default();
    let (vms, budget) = scenario(None);
    let ticks = simulate(cfg, &vms, budget, TICK, 120).expect("sim");
    let settings = settings_of(&vms);
    check_safety(&settings, budget, &ticks).expect("safety");
    check_virtio_mem(&settings, &ticks, cfg.vmem_settle_ms).expect("virtio-mem accounting");
    assert!(ticks.iter().all(|t| t.balloon[0] == 0), "a never ballooned");
    let r = reasons(&ticks, 0);
    assert!(r.iter().all(|x| !x.contains("slot(s) hot-added")), "{r:#?}");
}

#[test]
fn the_checker_catches_unplugged_memory_counted_as_assigned() {
    let cfg = PolicyConfig::default();
    let (vms, budget) = scenario(None);
    let mut ticks = simulate(cfg, &vms, budget, TICK, 120).expect("sim");
    let settings = settings_of(&vms);
    let last = ticks.len() - 1;
    // Pretend the device has 10 MiB less plugged than the balancer counts.
    assert!(ticks[last].vmem[0] >= 10, "{:?}", ticks[last]);
    ticks[last].vmem_plugged[0] = ticks[last].vmem[0] - 10;
    let err = check_virtio_mem(&settings, &ticks, cfg.vmem_settle_ms).expect_err("caught");
    assert!(err.contains("only"), "{err}");
}

mod random {
    use super::*;
    use proptest::prelude::*;

    fn curve() -> impl Strategy<Value = Curve> {
        prop_oneof![
            (64u64..900).prop_map(Curve::Constant),
            (0u64..60_000, 64u64..900, 64u64..900).prop_map(|(at_ms, before, after)| {
                Curve::Step {
                    at_ms,
                    before,
                    after,
                }
            }),
            (100u64..600, 0u64..300, 5_000u64..60_000).prop_map(|(base, amplitude, period_ms)| {
                Curve::Sine {
                    base,
                    amplitude,
                    period_ms,
                }
            }),
        ]
    }

    fn vm() -> impl Strategy<Value = SimVm> {
        (
            curve(),
            1u64..=4,
            prop_oneof![Just(2u64), Just(4), Just(32)],
            prop::option::of((0u64..200, 0u64..120_000)),
            any::<bool>(),
        )
            .prop_map(|(demand, blocks, block_mib, pinned, with_vmem)| {
                let region = blocks * 128;
                let mut v = SimVm::new("vm", 256, 128, 256 + region, demand);
                if with_vmem {
                    v.settings.virtio_mem = Some(VirtioMemSettings {
                        region_mib: region,
                        block_mib,
                    });
                    v.pinned = pinned.map(|(mib, until_ms)| Pinned { mib, until_ms });
                }
                v
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn invariants_hold_with_and_without_virtio_mem(
            vms in prop::collection::vec(vm(), 2..=3),
            budget in 400u64..1500,
        ) {
            let cfg = PolicyConfig::default();
            let ticks = simulate(cfg, &vms, budget, TICK, 300).expect("sim");
            let settings = settings_of(&vms);
            check_safety(&settings, budget, &ticks).map_err(TestCaseError::fail)?;
            check_no_hot_remove(&ticks).map_err(TestCaseError::fail)?;
            check_virtio_mem(&settings, &ticks, cfg.vmem_settle_ms)
                .map_err(TestCaseError::fail)?;
        }
    }
}
