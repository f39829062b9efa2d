//! Scenario tests: synthetic demand through the simulator, checked against
//! every invariant.

#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top level of their own test binary"
)]

use memtide_balancer::invariants::{
    check_demand_met, check_no_hot_remove, check_no_oscillation, check_safety, check_weight_order,
};
use memtide_balancer::sim::{settings_of, simulate, Agent, Curve, SimVm, Tick};
use memtide_balancer::PolicyConfig;

const TICK: u64 = 250;
/// 30 s of settled demand.
const SETTLE: usize = 120;

fn run(vms: &[SimVm], budget: u64, ticks: u64) -> Vec<Tick> {
    let cfg = PolicyConfig::default();
    let t = simulate(cfg, vms, budget, TICK, ticks).expect("sim");
    check_safety(&settings_of(vms), budget, &t).expect("safety");
    check_no_hot_remove(&t).expect("no hot-remove");
    check_demand_met(&cfg, budget, &t, SETTLE).expect("demand met");
    t
}

#[test]
fn one_vm_is_ballooned_when_short_and_hot_added_when_not() {
    // Startup above a short budget: ballooned down to the budget (not to
    // its target: memory is only taken while the budget is short); when
    // demand steps up it keeps the whole budget and nothing is hot-added.
    let vms = [SimVm::new(
        "a",
        1024,
        256,
        4096,
        Curve::Step {
            at_ms: 20_000,
            before: 200,
            after: 1500,
        },
    )];
    let t = run(&vms, 600, 200);
    let before = &t[79];
    assert_eq!(
        (before.assigned[0], before.balloon[0]),
        (600, 424),
        "{before:?}"
    );
    assert_eq!(t[199].assigned[0], 600);
    assert_eq!(t[199].plugged[0], 1024);

    let t = run(&vms, 4096, 200);
    // Within budget nothing is taken: no balloon before the step.
    assert_eq!(t[79].balloon[0], 0);
    let end = t.last().expect("ticks");
    assert_eq!(end.assigned[0], 1800, "1500 * 1.2");
    // 776 MiB more: 7 slots, the overshoot (120 MiB) in the balloon.
    assert_eq!((end.plugged[0], end.balloon[0]), (1024 + 7 * 128, 120));
    assert!(end.reasons[0].contains("no change"), "{:?}", end.reasons);
}

#[test]
fn deflate_before_hot_add_in_one_vm() {
    // Shrunk while the other VM needs memory, then grows back: deflate
    // covers the first part, hot-add the rest.
    let vms = [
        SimVm::new(
            "a",
            1024,
            256,
            4096,
            Curve::Step {
                at_ms: 15_000,
                before: 300,
                after: 1200,
            },
        ),
        SimVm::new(
            "b",
            512,
            256,
            4096,
            Curve::Step {
                at_ms: 15_000,
                before: 900,
                after: 100,
            },
        ),
    ];
    let t = run(&vms, 1800, 200);
    let mid = &t[59];
    assert!(mid.balloon[0] > 0, "a was ballooned for b: {mid:?}");
    let grow = t
        .iter()
        .skip(60)
        .find(|k| k.reasons[0].contains("grow"))
        .expect("a grows");
    assert!(
        grow.reasons[0].contains("from the balloon"),
        "{:?}",
        grow.reasons
    );
    let end = t.last().expect("ticks");
    assert_eq!(end.assigned[0], 1440, "{end:?}");
    assert!(end.plugged[0] > 1024, "hot-added: {end:?}");
}

#[test]
fn a_growing_vm_takes_memory_from_an_idle_one() {
    let vms = [
        SimVm::new(
            "a",
            512,
            256,
            2048,
            Curve::Step {
                at_ms: 5_000,
                before: 200,
                after: 900,
            },
        ),
        SimVm::new("b", 1024, 256, 2048, Curve::Idle),
    ];
    let t = run(&vms, 1536, 200);
    let end = t.last().expect("ticks");
    assert!(end.assigned[0] >= 1080, "{end:?}");
    assert!(end.balloon[1] > 0 && end.assigned[1] >= 256, "{end:?}");
    check_no_oscillation(&t, 120, 0).expect("settled");
}

#[test]
fn weights_share_a_shortage() {
    let mut heavy = SimVm::new("heavy", 512, 256, 4096, Curve::Constant(1000));
    heavy.settings.weight = 9000;
    let mut light = SimVm::new("light", 512, 256, 4096, Curve::Constant(1000));
    light.settings.weight = 1000;
    let vms = [heavy, light];
    let t = run(&vms, 2100, 200);
    let end = t.last().expect("ticks");
    // Floors 1000 each; 100 above them shared 9:1.
    assert_eq!(end.assigned, vec![1090, 1010]);
    check_weight_order(&vms, &t, 0, 0).expect("weight order");
    check_no_oscillation(&t, 40, 0).expect("settled");
}

#[test]
fn a_silent_agent_keeps_its_memory() {
    let mut a = SimVm::new("a", 1024, 256, 2048, Curve::Idle);
    a.agent = Agent::SilentFrom(0);
    let vms = [a, SimVm::new("b", 512, 256, 2048, Curve::Constant(900))];
    let t = run(&vms, 1600, 100);
    assert!(t.iter().all(|k| k.assigned[0] == 1024));
    assert!(t[50].reasons[0].contains("no recent report"));
    // b gets what the budget leaves: 576, not its target of 1080.
    assert_eq!(t[99].assigned[1], 576);
}

#[test]
fn an_agent_that_goes_silent_later_keeps_what_it_had() {
    let mut a = SimVm::new("a", 512, 256, 2048, Curve::Constant(800));
    a.agent = Agent::SilentFrom(10_000);
    let t = run(&[a], 4096, 100);
    assert_eq!(t[39].assigned[0], 960);
    // Stale after 5 s; nothing changes either way.
    assert!(t[99].reasons[0].contains("no recent report"));
    assert!(t.iter().skip(4).all(|k| k.assigned[0] == 960));
}

#[test]
fn absurd_reports_are_ignored() {
    let mut a = SimVm::new("a", 1024, 256, 2048, Curve::Constant(400));
    a.agent = Agent::AbsurdFrom(2_000);
    let t = run(&[a], 4096, 100);
    assert!(
        t[99].reasons[0].contains("report ignored"),
        "{:?}",
        t[99].reasons
    );
    assert!(t.iter().all(|k| k.assigned[0] == 1024));
}

#[test]
fn noisy_demand_does_not_oscillate() {
    let vms = [SimVm::new(
        "a",
        1024,
        256,
        2048,
        Curve::Noisy {
            base: 600,
            pct: 5,
            seed: 7,
        },
    )];
    let t = run(&vms, 4096, 400);
    check_no_oscillation(&t, 40, 0).expect("settled");
    // Two VMs sharing a short budget under noise: bounded.
    let vms = [
        SimVm::new(
            "a",
            1024,
            256,
            2048,
            Curve::Noisy {
                base: 800,
                pct: 5,
                seed: 1,
            },
        ),
        SimVm::new(
            "b",
            1024,
            256,
            2048,
            Curve::Noisy {
                base: 800,
                pct: 5,
                seed: 2,
            },
        ),
    ];
    let t = run(&vms, 2000, 400);
    check_no_oscillation(&t, 40, 0).expect("settled");
}

#[test]
fn a_sine_wave_is_followed_up_and_kept_while_the_budget_allows() {
    let vms = [SimVm::new(
        "a",
        512,
        256,
        4096,
        Curve::Sine {
            base: 1000,
            amplitude: 500,
            period_ms: 20_000,
        },
    )];
    let t = run(&vms, 8192, 400);
    // Memory is only taken when the budget is short: it ratchets up to the
    // peak target (1800), up to hysteresis (2 % of assigned).
    let end = t.last().expect("ticks").assigned[0];
    assert!((1800 - 36..=1800).contains(&end), "{end}");
    check_no_oscillation(&t, 0, 0).expect("monotone");
}
