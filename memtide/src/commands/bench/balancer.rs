//! `memtide bench balancer`: the balancer's reaction time. Each round boots
//! a guest with a balloon, hot-add slots, the agent channel and its own
//! balancer, lets it report a low committed memory, then steps committed
//! memory up and measures, from the first report that shows the step, the
//! time until the guest has more memory (a hot-added slot onlined by the
//! guest, as its `_OST` says, or the balloon smaller) and until it has its
//! whole demand (committed + buffer).
//!
//! The step comes from a scripted report source on the host that writes
//! the agent's wire format into the VM's report socket, at the agent's
//! 250 ms interval. It measures the host side of the loop (report reader,
//! policy, hot-add or balloon, the guest kernel onlining the memory); the
//! agent's own sampling adds up to one interval on top. A scripted step
//! keeps rounds exact and repeatable; the demo shows the same loop driven
//! by the real agent and a workload in the guest.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use memtide_balancer::reader::port_socket_path;

use super::figure::Figure;
use super::guest::GuestError;
use super::stats::{median, min_max};
use crate::cli::BalancerBenchArgs;
use memtide_test_support::scripted_agent::{frame, guest_memory, REPORT_INTERVAL};
use memtide_vmm::host_info::HostInfo;

/// How long a round may wait for the memory to arrive.
const ROUND_DEADLINE: Duration = Duration::from_secs(300);

/// The scripted report source of one round.
struct Scripted {
    conn: UnixStream,
    seq: u64,
    start: Instant,
}

impl Scripted {
    fn connect(path: &Path) -> Result<Self, GuestError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match UnixStream::connect(path) {
                Ok(conn) => {
                    return Ok(Self {
                        conn,
                        seq: 0,
                        start: Instant::now(),
                    })
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(REPORT_INTERVAL),
                Err(_) => return Err(GuestError::Timeout("the agent report socket")),
            }
        }
    }

    fn send(&mut self, visible: u64, committed: u64) -> Result<(), GuestError> {
        let uptime = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let frame = frame(self.seq, uptime, visible, committed);
        self.seq += 1;
        self.conn
            .write_all(&frame)
            .map_err(|e| GuestError::BadAnswer(format!("report socket: {e}")))
    }
}

/// One round's figures, ms from the step's first report.
struct Round {
    first_ms: f64,
    met_ms: f64,
}

fn round(args: &BalancerBenchArgs, i: u32) -> Result<Round, GuestError> {
    let dir =
        std::env::temp_dir().join(format!("memtide-bench-balancer-{}-{i}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let uds = dir.join("v.sock");
    let mut vm = args.vm.clone();
    vm.vsock_uds = Some(uds.clone());
    vm.no_balancer = false;
    vm.hotplug_slots = vm.hotplug_slots.max(1);
    vm.balancer_interval_ms = args.interval_ms;
    let mut guest = super::guest::boot(&vm, &format!("balancer-{i}"))?;
    let mut src = Scripted::connect(&port_socket_path(&uds, vm.agent_port))?;
    let (plugged0, balloon0) = guest_memory(&guest.sock)?;
    let visible0 = plugged0 - balloon0;
    let low = args.low_mib.min(visible0);
    // Settle: a few low reports, so the step is news to the balancer.
    for _ in 0..8 {
        src.send(visible0, low)?;
        std::thread::sleep(REPORT_INTERVAL);
    }
    let high = args.high_mib;
    let buffer = u64::from(vm.buffer_pct);
    let max = vm
        .max_memory_mib
        .unwrap_or(vm.memory_mib + u64::from(vm.hotplug_slots) * vm.slot_mib);
    let demand = (high + (high * buffer).div_ceil(100)).min(max);
    let step = Instant::now();
    let mut last_send = Instant::now() - REPORT_INTERVAL;
    let mut first_ms = None;
    let mut visible = visible0;
    guest.wait_until(
        "the balancer to meet the demand",
        ROUND_DEADLINE,
        Duration::from_millis(5),
        |g| {
            if last_send.elapsed() >= REPORT_INTERVAL {
                src.send(visible, high)?;
                last_send = Instant::now();
            }
            let (plugged, balloon) = guest_memory(&g.sock)?;
            visible = plugged.saturating_sub(balloon);
            let ms = step.elapsed().as_secs_f64() * 1e3;
            if first_ms.is_none() && visible > visible0 {
                first_ms = Some(ms);
            }
            Ok(visible >= demand)
        },
    )?;
    let met_ms = step.elapsed().as_secs_f64() * 1e3;
    let reason = guest
        .api()
        .get_balancer()?
        .vms
        .first()
        .and_then(|v| v.last_action.as_ref())
        .map_or_else(|| "null".to_string(), |a| format!("{:?}", a.reason));
    println!(
        "  round {i}: committed {low} -> {high} MiB, demand {demand} MiB: first memory after {:.0} ms, demand met after {met_ms:.0} ms ({visible0} -> {visible} MiB; {reason})",
        first_ms.unwrap_or(met_ms)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Round {
        first_ms: first_ms.unwrap_or(met_ms),
        met_ms,
    })
}

/// Runs the benchmark, prints its report and returns its figures.
pub fn run(args: &BalancerBenchArgs) -> Result<Vec<Figure>, GuestError> {
    println!(
        "memtide bench balancer: {} round(s), guest {} MiB + {} x {} MiB slots, committed step {} -> {} MiB, balancer every {} ms, reports every {} ms from a scripted source on the host",
        args.rounds,
        args.vm.memory_mib,
        args.vm.hotplug_slots.max(1),
        args.vm.slot_mib,
        args.low_mib,
        args.high_mib,
        args.interval_ms,
        REPORT_INTERVAL.as_millis()
    );
    println!("host: {}", HostInfo::detect());
    let mut first = Vec::new();
    let mut met = Vec::new();
    for i in 0..args.rounds {
        let r = round(args, i)?;
        first.push(r.first_ms);
        met.push(r.met_ms);
    }
    let mut figures = Vec::new();
    for (what, v) in [
        ("step report to first memory added", &first),
        ("step report to demand met", &met),
    ] {
        if let (Some(m), Some((lo, hi))) = (median(v), min_max(v)) {
            println!(
                "{what}: median {m:.0} ms (min {lo:.0}, max {hi:.0}, n={})",
                v.len()
            );
        }
        figures.extend(Figure::of(
            "balancer",
            &format!(
                "{what} (committed {} -> {} MiB)",
                args.low_mib, args.high_mib
            ),
            v,
            "ms",
            0,
        ));
    }
    Ok(figures)
}
