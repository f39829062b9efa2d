//! Runs policies ([`crate::baselines`]) on the same traces
//! ([`crate::workloads`]) with the guest model of [`crate::guest_model`]
//! and measures them.
//!
//! Each tick (1 s): every guest ran the past tick with the memory it had,
//! which advances its PSI; it reports committed memory (the demand curve),
//! MemAvailable (its memory less what it uses, committed or working set,
//! whichever is more) and PSI (avg10 and the stall total); the policy steps; the new sizes are
//! measured. Per policy and trace:
//!
//! - **mean MiB**: the VMs' assigned memory together, averaged over ticks;
//! - **pressure > 100 %**: the share of VM-ticks with committed memory
//!   above assigned memory;
//! - **PSI > 10 %**: the share of VM-ticks whose reported avg10 was above
//!   [`crate::PolicyConfig::psi_high_pct`];
//! - **resizes**: decisions with actions (balloon changes and hot-adds);
//! - **OOM risk**: times a VM's working set went above its memory by more
//!   than [`crate::guest_model::OOM_MARGIN_PCT`] (entries into that state).

use crate::baselines::fixed::Fixed;
use crate::baselines::{Policy, PolicyKind};
use crate::guest_model::{oom_risk, working_set_mib, PsiModel};
use crate::policy::PolicyConfig;
use crate::report::Report;
use crate::settings::SettingsError;
use crate::sim::{settings_of, Tick};
use crate::workloads::{Workload, TICK_MS};

/// What one policy did on one trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metrics {
    /// Sum over ticks of the VMs' assigned memory, MiB x ticks.
    pub assigned_mib_ticks: u64,
    /// Ticks.
    pub ticks: u64,
    /// VM-ticks.
    pub vm_ticks: u64,
    /// VM-ticks with committed above assigned.
    pub pressure_vm_ticks: u64,
    /// VM-ticks with PSI avg10 above the threshold.
    pub psi_vm_ticks: u64,
    /// Decisions with actions.
    pub resizes: u64,
    /// Entries into OOM risk.
    pub oom_events: u64,
}

impl Metrics {
    /// Mean assigned memory of all VMs together, MiB.
    pub fn mean_assigned_mib(&self) -> u64 {
        self.assigned_mib_ticks / self.ticks.max(1)
    }

    /// Share of VM-time with pressure above 100 %, percent.
    pub fn pressure_pct(&self) -> f64 {
        pct(self.pressure_vm_ticks, self.vm_ticks)
    }

    /// Share of VM-time with PSI above the threshold, percent.
    pub fn psi_pct(&self) -> f64 {
        pct(self.psi_vm_ticks, self.vm_ticks)
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole.max(1) as f64
}

/// One policy's run on one trace.
#[derive(Debug, Clone)]
pub struct Run {
    /// The policy's name.
    pub policy: String,
    /// Every tick, for the invariant checks.
    pub ticks: Vec<Tick>,
    /// Per VM, its mean assigned memory, MiB.
    pub mean_per_vm_mib: Vec<u64>,
    /// The measurements.
    pub metrics: Metrics,
}

/// Runs `policy` (called `name`) on `w`.
pub fn run(policy: &mut dyn Policy, name: &str, w: &Workload) -> Run {
    let n = w.vms.len();
    let psi_high = f64::from(PolicyConfig::default().psi_high_pct);
    let mut psi = vec![PsiModel::default(); n];
    let mut at_risk = vec![false; n];
    let mut per_vm = vec![0u64; n];
    let mut m = Metrics::default();
    let mut ticks = Vec::new();
    let assigned_of = |p: &dyn Policy, i: usize| p.state(i).map_or(0, |s| s.assigned_mib());
    for k in 0..w.duration_ms / TICK_MS {
        let t = k * TICK_MS;
        let committed: Vec<u64> = w.vms.iter().map(|v| v.demand.at(t)).collect();
        let ws: Vec<u64> = (0..n)
            .map(|i| working_set_mib(committed[i], w.working_set_pct[i]))
            .collect();
        let mut reports = Vec::with_capacity(n);
        for i in 0..n {
            let a = assigned_of(policy, i);
            if k > 0 {
                psi[i].advance(TICK_MS, ws[i], a);
            }
            let mut r = Report::at(committed[i], a, t);
            r.available_mib = a.saturating_sub(committed[i].max(ws[i]));
            r.psi_some_avg10 = Some(psi[i].avg10());
            r.psi_some_total_us = Some(psi[i].total_us());
            reports.push((i, r));
        }
        let decisions = policy.step(&reports, w.budget_mib, t);
        let states: Vec<_> = (0..n).filter_map(|i| policy.state(i)).collect();
        let assigned: Vec<u64> = states.iter().map(|s| s.assigned_mib()).collect();
        let total: u64 = assigned.iter().sum();
        m.ticks += 1;
        m.assigned_mib_ticks += total;
        m.resizes += decisions.iter().filter(|d| !d.is_noop()).count() as u64;
        for i in 0..n {
            per_vm[i] += assigned[i];
            m.vm_ticks += 1;
            m.pressure_vm_ticks += u64::from(committed[i] > assigned[i]);
            let reported = reports[i].1.psi_some_avg10.map_or(0.0, f64::from);
            m.psi_vm_ticks += u64::from(reported > psi_high);
            let risk = oom_risk(ws[i], assigned[i]);
            m.oom_events += u64::from(risk && !at_risk[i]);
            at_risk[i] = risk;
        }
        ticks.push(Tick {
            t_ms: t,
            plugged: states.iter().map(|s| s.plugged_mib).collect(),
            balloon: states.iter().map(|s| s.balloon_mib).collect(),
            vmem: Vec::new(),
            vmem_plugged: Vec::new(),
            committed,
            target: decisions.iter().map(|d| d.target_mib).collect(),
            honest: vec![true; n],
            over_budget_mib: total.saturating_sub(w.budget_mib),
            reasons: decisions.into_iter().map(|d| d.reason).collect(),
            assigned,
        });
    }
    Run {
        policy: name.to_string(),
        ticks,
        mean_per_vm_mib: per_vm.iter().map(|s| s / m.ticks.max(1)).collect(),
        metrics: m,
    }
}

/// Runs the policy `kind` on `w`.
pub fn run_kind(kind: PolicyKind, w: &Workload) -> Result<Run, SettingsError> {
    let mut p = kind.build(settings_of(&w.vms))?;
    Ok(run(p.as_mut(), kind.name(), w))
}

/// Whether a goal holds on a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It holds.
    Holds,
    /// Equal figures: neither better nor worse.
    Ties,
    /// It does not hold.
    Fails,
}

impl Verdict {
    /// The verdict as a word.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Ties => "ties",
            Verdict::Fails => "FAILS",
        }
    }
}

/// Issue 15's goals on one trace.
#[derive(Debug, Clone)]
pub struct Goals {
    /// memtide uses less memory than MoM at no more pressure-time.
    pub vs_mom: Verdict,
    /// memtide has less pressure-time than static VMs given memtide's own
    /// mean memory per VM.
    pub vs_static: Verdict,
    /// The static run at memtide's memory.
    pub static_equal: Run,
}

/// The goals on `w`, from memtide's and MoM's runs.
pub fn goals(w: &Workload, memtide: &Run, mom: &Run) -> Result<Goals, SettingsError> {
    let (me, mo) = (&memtide.metrics, &mom.metrics);
    let vs_mom = if me.mean_assigned_mib() < mo.mean_assigned_mib()
        && me.pressure_vm_ticks <= mo.pressure_vm_ticks
    {
        Verdict::Holds
    } else {
        Verdict::Fails
    };
    let mut fixed = Fixed::with_sizes(settings_of(&w.vms), &memtide.mean_per_vm_mib)?;
    let static_equal = run(&mut fixed, "static at memtide's memory", w);
    let (a, b) = (me.pressure_vm_ticks, static_equal.metrics.pressure_vm_ticks);
    let vs_static = match a.cmp(&b) {
        std::cmp::Ordering::Less => Verdict::Holds,
        std::cmp::Ordering::Equal => Verdict::Ties,
        std::cmp::Ordering::Greater => Verdict::Fails,
    };
    Ok(Goals {
        vs_mom,
        vs_static,
        static_equal,
    })
}

/// A trace's runs and, when memtide and MoM both ran, the goals.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The trace.
    pub workload: Workload,
    /// One run per policy, in the order asked.
    pub runs: Vec<Run>,
    /// The goals, if memtide and MoM both ran.
    pub goals: Option<Goals>,
}

/// Runs `kinds` on `w`.
pub fn compare(kinds: &[PolicyKind], w: &Workload) -> Result<Comparison, SettingsError> {
    let runs = kinds
        .iter()
        .map(|&k| run_kind(k, w))
        .collect::<Result<Vec<_>, _>>()?;
    let find = |k: PolicyKind| runs.iter().find(|r| r.policy == k.name());
    let goals = match (find(PolicyKind::Memtide), find(PolicyKind::Mom)) {
        (Some(me), Some(mo)) => Some(goals(w, me, mo)?),
        _ => None,
    };
    Ok(Comparison {
        workload: w.clone(),
        runs,
        goals,
    })
}

fn row(r: &Run) -> String {
    let m = &r.metrics;
    format!(
        "| {} | {} | {:.1} | {:.1} | {} | {} |\n",
        r.policy,
        m.mean_assigned_mib(),
        m.pressure_pct(),
        m.psi_pct(),
        m.resizes,
        m.oom_events
    )
}

/// The comparisons as markdown: one table per trace, then the goals.
pub fn markdown(comparisons: &[Comparison]) -> String {
    let mut out = String::new();
    for c in comparisons {
        let w = &c.workload;
        out.push_str(&format!(
            "### {} (budget {} MiB, {} s)\n\n{}\n\n",
            w.name,
            w.budget_mib,
            w.duration_ms / 1000,
            w.about
        ));
        out.push_str("| policy | mean MiB | pressure > 100 % (% of time) | PSI > 10 % (% of time) | resizes | OOM risk |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|\n");
        for r in &c.runs {
            out.push_str(&row(r));
        }
        if let Some(g) = &c.goals {
            out.push_str(&row(&g.static_equal));
            out.push_str(&format!(
                "\nmemtide vs MoM (less memory, no more pressure): {}; memtide vs static at equal memory (less pressure): {}\n\n",
                g.vs_mom.word(),
                g.vs_static.word()
            ));
        } else {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::{check_no_hot_remove, check_safety};
    use crate::workloads::{all, by_name};

    #[test]
    fn every_policy_keeps_the_invariants_on_every_trace() {
        for w in all() {
            let settings = settings_of(&w.vms);
            for kind in PolicyKind::ALL {
                let r = run_kind(kind, &w).expect("valid settings");
                assert_eq!(r.metrics.ticks, w.duration_ms / TICK_MS);
                let ctx = format!("{} on {}", kind.name(), w.name);
                check_safety(&settings, w.budget_mib, &r.ticks).expect(&ctx);
                check_no_hot_remove(&r.ticks).expect(&ctx);
                for t in &r.ticks {
                    assert!(t.assigned.iter().sum::<u64>() <= w.budget_mib, "{ctx}");
                }
            }
        }
    }

    #[test]
    fn the_comparison_is_deterministic_and_prints_every_row() {
        let w = by_name("burst").expect("trace");
        let a = compare(&PolicyKind::ALL, &w).expect("runs");
        let b = compare(&PolicyKind::ALL, &w).expect("runs");
        let text = markdown(&[a]);
        assert_eq!(text, markdown(&[b]));
        for k in PolicyKind::ALL {
            assert!(text.contains(&format!("| {} |", k.name())), "{text}");
        }
        assert!(text.contains("static at memtide's memory") && text.contains("memtide vs MoM"));
    }

    /// Issue 15's goals, asserted as properties of the policies on these
    /// traces, not as figures. On every trace the VMs' committed + buffer
    /// fits the budget at all times (checked first): then memtide grows a
    /// VM within a tick to committed + buffer, so it has no pressure time,
    /// while MoM grows at most every 10 s and only while the host has 20 %
    /// free, so it has at least as much; and MoM pushes every guest towards
    /// its maximum until the host is 80 % used, whatever the demand, while
    /// memtide holds committed + buffer, or committed + the calm buffer
    /// once a guest has not stalled for 30 s, so it uses less. Against
    /// static VMs given memtide's own mean memory per VM, memtide has less
    /// pressure time because every trace has a VM whose demand rises above
    /// its mean.
    #[test]
    fn memtide_beats_mom_and_static_at_equal_memory_on_every_trace() {
        for w in all() {
            let peak: u64 = (0..w.duration_ms / TICK_MS)
                .map(|k| {
                    w.vms
                        .iter()
                        .map(|v| v.settings.target_mib(v.demand.at(k * TICK_MS)))
                        .sum()
                })
                .max()
                .unwrap_or(0);
            let c = compare(&[PolicyKind::Memtide, PolicyKind::Mom], &w).expect("runs");
            let g = c.goals.expect("both ran");
            let (me, mo) = (&c.runs[0].metrics, &c.runs[1].metrics);
            assert_eq!(g.vs_static, Verdict::Holds, "{}", w.name);
            if peak <= w.budget_mib {
                assert_eq!(me.pressure_vm_ticks, 0, "{}", w.name);
                assert_eq!(g.vs_mom, Verdict::Holds, "{}: {me:?} vs {mo:?}", w.name);
            } else {
                // The recorded demo's demand exceeds its budget at its
                // peak: every policy is short there. memtide still meets
                // the goal, by the host reserve: a calm guest gives back
                // below its startup memory while less than 20 % of the
                // budget is free (`the_host_reserve_wins_the_recorded_demo`).
                assert_eq!(w.name, "recorded-demo", "only the recording is over budget");
                assert_eq!(g.vs_mom, Verdict::Holds, "{}: {me:?} vs {mo:?}", w.name);
            }
        }
    }

    /// On the recorded demo memtide without the host reserve keeps an idle
    /// guest at its startup memory while the other runs near the budget,
    /// and uses more memory than MoM; with the default reserve it uses
    /// less, still with no pressure time.
    #[test]
    fn the_host_reserve_wins_the_recorded_demo() {
        use crate::policy::Balancer;
        let w = by_name("recorded-demo").expect("trace");
        let mom = run_kind(PolicyKind::Mom, &w).expect("runs").metrics;
        let with_reserve = |pct: u64| {
            let cfg = PolicyConfig {
                host_reserve_pct: pct,
                ..PolicyConfig::default()
            };
            let mut b = Balancer::new(cfg, settings_of(&w.vms)).expect("valid");
            run(&mut b, "memtide", &w).metrics
        };
        let (off, on) = (with_reserve(0), with_reserve(20));
        assert!(
            off.mean_assigned_mib() > mom.mean_assigned_mib(),
            "{off:?} vs {mom:?}"
        );
        assert!(
            on.mean_assigned_mib() < mom.mean_assigned_mib(),
            "{on:?} vs {mom:?}"
        );
        assert_eq!(on.pressure_vm_ticks, 0, "{on:?}");
    }

    /// The PSI signal at work: on the ramp trace VM b needs 30 % page
    /// cache over its committed memory. A policy blind to PSI (Hyper-V
    /// like) keeps it at committed + 20 % and it stalls all along; memtide
    /// sees its PSI and grows it.
    #[test]
    fn psi_finds_the_guest_that_commit_misjudges() {
        let w = by_name("ramp").expect("trace");
        let me = run_kind(PolicyKind::Memtide, &w).expect("runs");
        let hv = run_kind(PolicyKind::HypervLike, &w).expect("runs");
        assert!(
            me.metrics.psi_vm_ticks * 10 < hv.metrics.psi_vm_ticks,
            "{:?} vs {:?}",
            me.metrics,
            hv.metrics
        );
        assert!(me
            .ticks
            .iter()
            .any(|t| t.reasons[1].contains("PSI some avg10")));
    }
}
