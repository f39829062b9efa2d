//! The balancer with the balloon statistics' stall signal and idle reclaim
//! (`crate::stall`, `crate::idle`).

use super::*;
use crate::action::Action;
use crate::stall::StallCounters;

/// One VM: startup 512, minimum 128, maximum 2048.
fn one_vm(cfg: PolicyConfig) -> Balancer {
    Balancer::new(cfg, vec![VmSettings::new("a", 512, 128, 2048)]).expect("valid")
}

fn report(committed: u64, t: u64, psi: Option<f32>, stalls: Option<(u64, u64)>) -> Report {
    let mut r = Report::at(committed, 512, t);
    r.psi_some_avg10 = psi;
    r.stalls = stalls.map(|(oom_kills, alloc_stalls)| StallCounters {
        oom_kills,
        alloc_stalls,
    });
    r
}

fn assigned(b: &Balancer) -> u64 {
    b.state(0).expect("vm").assigned_mib()
}

/// A VM that just had 200 MiB ballooned (at t = 0), committed 250.
fn ballooned(cfg: PolicyConfig) -> Balancer {
    let mut b = one_vm(cfg);
    b.vms[0].state.balloon_mib = 200;
    b.vms[0].state.last_change_ms = Some(0);
    b
}

#[test]
fn new_allocation_stalls_deflate_a_ballooned_guest_at_once() {
    let mut b = ballooned(PolicyConfig::default());
    let d = b.step(&[(0, report(250, 0, None, Some((0, 10))))], 4096, 0);
    assert!(d[0].is_noop(), "a baseline, and 312 fits 250 + 20 %: {d:?}");
    // 500 ms later, inside the 1 s rate limit: 3 new stalls.
    let d = b.step(&[(0, report(250, 500, None, Some((0, 13))))], 4096, 500);
    assert_eq!(
        d[0].actions,
        vec![Action::Deflate {
            to_balloon_mib: 122
        }],
        "25 % of 312 MiB back at once: {d:?}"
    );
    assert!(
        d[0].reason
            .contains("balloon stats: 3 allocation stalls since last step: deflate 78 MiB at once"),
        "{}",
        d[0].reason
    );
    assert_eq!(assigned(&b), 390);
    // The same counters again: nothing new, and the stall is remembered
    // (the VM is not shrunk back below the size it stalled at).
    let d = b.step(&[(0, report(250, 1500, None, Some((0, 13))))], 4096, 1500);
    assert!(d[0].is_noop(), "{d:?}");
    assert!(b.vms[0].stall_ratio_pct.is_some());
}

#[test]
fn an_oom_kill_gives_back_the_whole_balloon() {
    let mut b = ballooned(PolicyConfig::default());
    b.step(&[(0, report(250, 0, None, Some((4, 10))))], 4096, 0);
    let d = b.step(&[(0, report(180, 500, None, Some((5, 10))))], 4096, 500);
    assert_eq!(d[0].actions, vec![Action::Deflate { to_balloon_mib: 0 }]);
    assert!(d[0]
        .reason
        .contains("balloon stats: 1 OOM kill since last step"));
}

#[test]
fn a_stall_deflates_only_within_the_budget() {
    let mut b = ballooned(PolicyConfig::default());
    b.step(&[(0, report(250, 0, None, Some((0, 0))))], 350, 0);
    let d = b.step(&[(0, report(250, 500, None, Some((0, 5))))], 350, 500);
    assert_eq!(assigned(&b), 350, "grows to the budget, no further: {d:?}");
}

#[test]
fn a_counter_reset_or_an_absurd_rise_changes_nothing() {
    let mut b = ballooned(PolicyConfig::default());
    b.step(&[(0, report(250, 0, None, Some((2, 5000))))], 4096, 0);
    // A reboot: the counters start again from 0.
    let d = b.step(&[(0, report(250, 2000, None, Some((0, 1))))], 4096, 2000);
    assert!(d[0].is_noop(), "{d:?}");
    assert!(d[0].reason.contains("went back"), "{}", d[0].reason);
    // A lying guest.
    let d = b.step(
        &[(0, report(250, 4000, None, Some((u64::MAX, u64::MAX))))],
        4096,
        4000,
    );
    assert!(d[0].is_noop(), "{d:?}");
    assert!(
        d[0].reason.contains("balloon stats ignored"),
        "{}",
        d[0].reason
    );
    // Counting goes on from the new baseline: the next stall is seen.
    let d = b.step(
        &[(0, report(250, 6000, None, Some((u64::MAX, u64::MAX))))],
        4096,
        6000,
    );
    assert!(d[0].is_noop(), "no rise");
}

#[test]
fn a_stall_with_an_empty_balloon_is_named_and_remembered() {
    let mut b = one_vm(PolicyConfig::default());
    b.step(&[(0, report(250, 0, None, Some((0, 0))))], 4096, 0);
    let d = b.step(&[(0, report(250, 1000, None, Some((0, 2))))], 4096, 1000);
    assert!(
        d[0].reason
            .contains("2 allocation stalls since last step (balloon empty)"),
        "{d:?}"
    );
    // Remembered like a PSI stall: the VM stalled at 204 % of committed,
    // so its target is that plus the calm buffer (a small grow).
    assert_eq!(b.vms[0].stall_ratio_pct, Some(204), "512 / 250");
    assert!(d[0]
        .reason
        .contains("stalled before at 204 % of committed: target 535 MiB"));
}

#[test]
fn without_counters_nothing_changes() {
    let mut b = ballooned(PolicyConfig::default());
    for t in [0, 500, 1000] {
        let d = b.step(&[(0, report(250, t, None, None))], 4096, t);
        assert!(d[0].is_noop() && !d[0].reason.contains("balloon stats"));
    }
}

fn idle_cfg() -> PolicyConfig {
    PolicyConfig {
        idle_reclaim_after_ms: Some(120_000),
        ..PolicyConfig::default()
    }
}

/// Runs `b` with committed `c` and PSI avg10 0 every second from `from_s`
/// to `to_s` and returns the decisions that changed something.
fn run_idle(b: &mut Balancer, c: u64, from_s: u64, to_s: u64) -> Vec<Decision> {
    (from_s..to_s)
        .flat_map(|s| {
            let t = s * 1000;
            b.step(&[(0, report(c, t, Some(0.0), None))], 4096, t)
        })
        .filter(|d| !d.is_noop())
        .collect()
}

#[test]
fn idle_reclaim_is_off_by_default() {
    let mut b = one_vm(PolicyConfig::default());
    run_idle(&mut b, 200, 0, 600);
    assert_eq!(assigned(&b), 512, "a calm guest keeps its startup memory");
}

#[test]
fn an_idle_guest_gives_back_down_to_demand_plus_buffer_below_startup() {
    let mut b = one_vm(idle_cfg());
    let changes = run_idle(&mut b, 200, 0, 119);
    assert!(changes.is_empty(), "not idle long enough: {changes:?}");
    let changes = run_idle(&mut b, 200, 119, 200);
    assert_eq!(assigned(&b), 240, "committed 200 + 20 %: {changes:?}");
    let first = &changes[0];
    assert!(
        first.reason.contains("idle, gives back")
            && first
                .reason
                .contains("idle 120 s: give back 272 MiB above demand + buffer (240 MiB)"),
        "{}",
        first.reason
    );
    // It stays there: no oscillation.
    assert!(run_idle(&mut b, 200, 200, 400).is_empty());
}

#[test]
fn idle_reclaim_keeps_the_minimum() {
    let mut b = one_vm(idle_cfg());
    run_idle(&mut b, 50, 0, 300);
    assert_eq!(assigned(&b), 128);
}

#[test]
fn new_demand_or_psi_restarts_the_idle_time() {
    let mut b = one_vm(idle_cfg());
    run_idle(&mut b, 200, 0, 100);
    // Committed rises by more than the hysteresis at 100 s.
    run_idle(&mut b, 260, 100, 200);
    assert_eq!(assigned(&b), 512, "idle only since 100 s");
    // PSI 5 % at 200 s: not idle.
    b.step(&[(0, report(260, 200_000, Some(5.0), None))], 4096, 200_000);
    run_idle(&mut b, 260, 201, 320);
    assert_eq!(assigned(&b), 512, "idle only since 201 s");
    run_idle(&mut b, 260, 320, 330);
    assert_eq!(assigned(&b), 312, "260 + 20 %");
}

#[test]
fn a_stall_ends_the_idle_time() {
    let mut b = one_vm(idle_cfg());
    b.step(&[(0, report(200, 0, Some(0.0), Some((0, 0))))], 4096, 0);
    run_idle(&mut b, 200, 1, 100);
    b.step(
        &[(0, report(200, 100_000, Some(0.0), Some((0, 1))))],
        4096,
        100_000,
    );
    run_idle(&mut b, 200, 101, 200);
    assert!(
        assigned(&b) >= 512,
        "the stall at 100 s restarted the idle time (and raised the target)"
    );
}
