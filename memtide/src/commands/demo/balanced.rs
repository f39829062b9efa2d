//! The balancer demo: two or three guests under one host budget run a
//! phased memory workload; one balancer (`memtide balance`'s, in-process)
//! moves memory between them, shown live; at the end the JSON trace and an
//! SVG timeline are written and the trace's invariants are checked.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memtide_balancer::invariants::{check_no_hot_remove, check_safety, check_virtio_mem};
use memtide_balancer::reader::port_socket_path;
use memtide_balancer::trace::Trace;
use memtide_balancer::PolicyConfig;

use crate::cli::{DemoArgs, WorkloadSource};
use crate::commands::balance::{self, BalanceError, BalanceOptions, VmArg};
use crate::commands::bench::guest::{Guest, GuestError};
use memtide_api::Client;
use memtide_test_support::scripted_agent::ScriptedAgent;
use memtide_vmm::config::{cache_dir, DEFAULT_AGENT_PORT};
use memtide_vmm::host_info::HostInfo;

/// The guests' names and their committed memory (MiB) in each phase.
pub const WORKLOAD: [(&str, [u64; 5]); 3] = [
    ("web", [100, 300, 300, 100, 100]),
    ("batch", [100, 100, 240, 300, 100]),
    ("cache", [100, 100, 100, 220, 100]),
];
/// What an idle demo guest commits (init, agent, shell: about 8 MiB as its
/// agent reports it); the `memtide-hog` share of a phase is the phase's
/// figure minus this, so that the agent reports about the figure.
const IDLE_COMMITTED_MIB: u64 = 8;
/// Hot-add slots per guest.
const SLOTS: u32 = 2;

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A guest could not be booted or driven.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The balancer failed.
    #[error(transparent)]
    Balance(#[from] BalanceError),
    /// The output directory.
    #[error("cannot use {path}: {source}")]
    Output {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The plot.
    #[error(transparent)]
    Plot(#[from] crate::commands::plot::PlotError),
    /// The recorded run broke an invariant.
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// The balancer thread panicked.
    #[error("the balancer thread stopped unexpectedly")]
    BalancerThread,
}

/// The `memtide-hog` command that makes `phases` in a guest: it idles
/// until the demo types a line on the guest console (once every agent
/// reports), then runs the timed phases.
fn hog_command(phases: &[u64; 5], phase_s: u64) -> String {
    let args: Vec<String> = phases
        .iter()
        .map(|c| format!("{}:{phase_s}", c.saturating_sub(IDLE_COMMITTED_MIB)))
        .collect();
    format!("memtide-hog 0:line {}", args.join(" "))
}

/// How long the guests' agents may take to send their first reports after
/// the balloon drivers are up (seen: 40-60 s on a loaded nested AMD host).
const FIRST_REPORT_DEADLINE: Duration = Duration::from_secs(300);

/// Waits until every guest's agent has sent a report.
fn wait_for_agents(guests: &mut [Guest]) -> Result<(), GuestError> {
    let start = Instant::now();
    for g in guests.iter_mut() {
        g.wait_until(
            "the agent's first report",
            FIRST_REPORT_DEADLINE.saturating_sub(start.elapsed()),
            Duration::from_millis(200),
            |g| Ok(g.api().get_guest_memory().is_ok_and(|m| m.reports > 0)),
        )?;
    }
    println!(
        "[demo] every agent reports ({:.1} s after the guests were up)",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How long a guest's workload may take to show its first phase in its
/// agent's reports after the demo typed the line that starts it.
const FIRST_PHASE_DEADLINE: Duration = Duration::from_secs(120);

/// Waits until every guest's agent reports at least 90 % of its first
/// phase's commit (`firsts`, MiB), so that the demo's phase clock starts
/// when the workloads' own clocks do: on a slow host the typed line takes
/// seconds to reach a guest, and the phases would slip against the demo's.
fn wait_for_first_phase(guests: &mut [Guest], firsts: &[u64]) -> Result<(), GuestError> {
    let start = Instant::now();
    for (g, &first) in guests.iter_mut().zip(firsts) {
        g.wait_until(
            "the workload's first phase",
            FIRST_PHASE_DEADLINE.saturating_sub(start.elapsed()),
            Duration::from_millis(100),
            |g| {
                Ok(g.api().get_guest_memory().is_ok_and(|m| {
                    m.latest
                        .is_some_and(|r| r.committed_as_kib / 1024 >= first * 9 / 10)
                }))
            },
        )?;
    }
    println!(
        "[demo] every workload is in its first phase ({:.1} s after the line)",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints one screen of the live view.
fn show(balance_sock: &Path, phase: usize, elapsed: Duration, tty: bool) {
    let v = match Client::new(balance_sock).get_balancer() {
        Ok(v) => v,
        Err(e) => {
            log::debug!("demo: GET /balancer: {e}");
            return;
        }
    };
    let screen = crate::commands::top::render(&v);
    let head = format!(
        "[demo] phase {}/5, {:.0} s in",
        phase + 1,
        elapsed.as_secs_f64()
    );
    if tty {
        print!("\x1b[2J\x1b[H{head}\n{screen}");
    } else {
        println!("{head}\n{screen}");
    }
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    let source = args.workload;
    let out = &args.out_dir;
    std::fs::create_dir_all(out).map_err(|source| DemoError::Output {
        path: out.clone(),
        source,
    })?;
    let work = std::env::temp_dir().join(format!("memtide-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|source| DemoError::Output {
        path: work.clone(),
        source,
    })?;
    let n = usize::from(args.guests);
    let vm_mib = args.vm.memory_mib;
    let slot_mib = args.vm.slot_mib;
    let budget = args.budget_mib.unwrap_or(vm_mib * n as u64 + slot_mib);
    // With --virtio-mem: a region as large as the slots would be, unless
    // --virtio-mem-mib says otherwise, and no slots.
    let vmem_mib = match (args.virtio_mem, args.vm.virtio_mem_mib) {
        (true, 0) => u64::from(SLOTS) * slot_mib,
        (true, m) => m,
        (false, _) => 0,
    };
    let growth = if vmem_mib > 0 {
        format!(
            "up to {} MiB each by virtio-mem plug, {} MiB blocks",
            vm_mib + vmem_mib,
            args.vm.virtio_mem_block_mib
        )
    } else {
        format!(
            "up to {} MiB each by hot-add",
            vm_mib + u64::from(SLOTS) * slot_mib
        )
    };
    println!("memtide demo on {}", HostInfo::detect());
    println!(
        "[demo] {n} guests of {vm_mib} MiB ({growth}) under a {budget} MiB budget; 5 phases of {} s; demand from {}",
        args.phase_s,
        match source {
            WorkloadSource::Agent => "memtide-agent + memtide-hog in each guest",
            WorkloadSource::Scripted => "a scripted report source on the host",
        }
    );
    // Boot every guest at once; their workloads wait for a line on their
    // consoles, typed when every agent reports, so that they run in step
    // with the demo's phases however long the boots and agents take.
    let mut configs = Vec::with_capacity(n);
    for (name, phases) in WORKLOAD.iter().take(n) {
        let mut vm = args.vm.clone();
        let uds = work.join(format!("{name}.vsock"));
        vm.vsock_uds = Some(uds.clone());
        vm.no_balancer = true;
        if vmem_mib > 0 {
            vm.hotplug_slots = 0;
            vm.virtio_mem_mib = vmem_mib;
        } else {
            vm.hotplug_slots = SLOTS;
        }
        if source == WorkloadSource::Agent {
            let cmd = hog_command(phases, args.phase_s);
            vm.initramfs = Some(crate::commands::run::default_initramfs(
                &cache_dir().map_err(|e| GuestError::Setup(e.to_string()))?,
                Some(&cmd),
            ));
            vm.cmd = Some(cmd);
        }
        configs.push((*name, *phases, vm, uds));
    }
    println!(
        "[demo] booting {} ...",
        configs.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
    );
    let start = Instant::now();
    let booted: Vec<Result<Guest, GuestError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = configs
            .iter()
            .map(|(name, _, vm, _)| {
                scope
                    .spawn(move || crate::commands::bench::guest::boot(vm, &format!("demo-{name}")))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or(Err(GuestError::Timeout("a guest boot thread")))
            })
            .collect()
    });
    let mut guests = Vec::with_capacity(n);
    let mut agents = Vec::with_capacity(n);
    for ((name, phases, _, uds), g) in configs.iter().zip(booted) {
        let g = g?;
        println!(
            "[demo] guest {name} up ({:.1} s since the boots began)",
            start.elapsed().as_secs_f64()
        );
        if source == WorkloadSource::Scripted {
            agents.push(ScriptedAgent::spawn(
                g.sock.clone(),
                port_socket_path(uds, DEFAULT_AGENT_PORT),
                phases[0],
            ));
        }
        guests.push(g);
    }

    let balance_sock = work.join("balance.sock");
    let trace_path = out.join("trace.json");
    let total = Duration::from_secs(args.phase_s * 5);
    let opts = BalanceOptions {
        budget_mib: budget,
        vms: guests
            .iter()
            .zip(WORKLOAD.iter())
            .map(|(g, (name, _))| VmArg {
                sock: g.sock.clone(),
                name: Some((*name).to_string()),
                weight: None,
                minimum_mib: None,
                buffer_pct: None,
            })
            .collect(),
        interval: Duration::from_millis(250),
        duration: Some(total),
        trace: Some(trace_path.clone()),
        api_sock: Some(balance_sock.clone()),
        policy: super::signals::demo_policy(args.phase_s),
    };
    println!(
        "[demo] starting the balancer; `memtide top --api-sock {}` shows it from another terminal",
        balance_sock.display()
    );
    if source == WorkloadSource::Agent {
        wait_for_agents(&mut guests)?;
        for g in &mut guests {
            g.type_line("demo: phase 1")?;
        }
        let firsts: Vec<u64> = WORKLOAD.iter().map(|(_, p)| p[0]).collect();
        wait_for_first_phase(&mut guests, &firsts)?;
    }
    let balancer = std::thread::spawn(move || balance::run(&opts));
    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    for phase in 0..5 {
        for (agent, (_, phases)) in agents.iter().zip(WORKLOAD.iter()) {
            agent.set(phases[phase]);
        }
        let phase_end = Duration::from_secs(args.phase_s * (phase as u64 + 1));
        let mut last_show: Option<Instant> = None;
        while start.elapsed() < phase_end {
            let every = if tty { 1 } else { 5 };
            if last_show.is_none_or(|t| t.elapsed() >= Duration::from_secs(every)) {
                show(&balance_sock, phase, start.elapsed(), tty);
                last_show = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let trace = balancer.join().map_err(|_| DemoError::BalancerThread)??;
    drop(agents);
    drop(guests);
    finish(&trace, out)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Writes the plot, checks the invariants and says where everything is.
fn finish(trace: &Trace, out: &Path) -> Result<(), DemoError> {
    let svg = out.join("timeline.svg");
    crate::commands::plot::write(trace, &svg)?;
    let decisions: usize = trace
        .ticks
        .iter()
        .map(|t| t.reasons.iter().filter(|r| !r.is_empty()).count())
        .sum();
    let assigned: u64 = trace
        .ticks
        .iter()
        .map(|t| t.assigned.iter().sum::<u64>())
        .sum();
    let ticks = trace.ticks.len();
    println!(
        "[demo] done: {ticks} ticks, {decisions} resize decisions, {} MiB assigned on average (budget {} MiB)",
        assigned / (ticks.max(1) as u64),
        trace.budget_mib
    );
    super::signals::print(trace);
    println!(
        "[demo] trace: {}\n[demo] timeline: {}",
        out.join("trace.json").display(),
        svg.display()
    );
    check_safety(&trace.vms, trace.budget_mib, &trace.ticks)
        .and_then(|()| check_no_hot_remove(&trace.ticks))
        .and_then(|()| {
            check_virtio_mem(
                &trace.vms,
                &trace.ticks,
                PolicyConfig::default().vmem_settle_ms,
            )
        })
        .map_err(DemoError::Invariant)?;
    println!(
        "[demo] invariants hold on the whole run: every guest within [minimum, maximum], the budget kept, no hot-added slot removed, unplugged memory never counted as assigned"
    );
    if trace.vms.iter().any(|v| v.virtio_mem.is_some()) {
        let count = |what: &str| {
            trace
                .ticks
                .iter()
                .flat_map(|t| &t.reasons)
                .filter(|r| r.contains(what))
                .count()
        };
        println!(
            "[demo] virtio-mem: {} decisions plugged, {} unplugged, {} ballooned what an unplug left",
            count(": plug ") + count(", plug "),
            count("unplug "),
            count("unplug left"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hog_command_adds_to_the_idle_baseline() {
        assert_eq!(
            hog_command(&WORKLOAD[0].1, 20),
            "memtide-hog 0:line 92:20 292:20 292:20 92:20 92:20"
        );
    }
}
