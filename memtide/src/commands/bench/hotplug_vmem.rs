//! `memtide bench hotplug`'s virtio-mem rows: a second guest, booted like
//! the hot-add guest but with a virtio-mem region of one slot's size
//! instead of slots (a separate guest, so that the hot-add figures keep
//! their configuration: with virtio-mem, memtide onlines hot-added memory
//! as movable). Each round plugs one slot's worth, timed from
//! `PUT /memory/virtio-mem` to `plugged_mib == requested` and to a balloon
//! statistics sample showing MemTotal grown by it, then unplugs it again.

use std::time::{Duration, Instant};

use super::figure::Figure;
use super::guest::GuestError;
use super::guest_stats::{current_ms, wait_fresh, StatsSample};
use super::hotplug::settle_deadline;
use super::stats::median;
use super::vmem;
use crate::cli::HotplugBenchArgs;

/// How often the guest is asked for balloon statistics.
const STATS_INTERVAL: Duration = Duration::from_millis(500);
/// The least time MemTotal gets to show a plug.
const GROWN_DEADLINE: Duration = Duration::from_secs(60);
/// How long to wait for a statistics sample before a plug.
const BASELINE_DEADLINE: Duration = Duration::from_secs(60);

/// Plugs and unplugs `rounds` times in a fresh guest; prints each round
/// and returns the figures.
pub fn run(args: &HotplugBenchArgs, rounds: u32) -> Result<Vec<Figure>, GuestError> {
    let mut vm = args.vm.clone();
    let size = vm.slot_mib;
    vm.hotplug_slots = 0;
    vm.virtio_mem_mib = vmem::region_for(size);
    vm.balloon_stats_ms = u64::try_from(STATS_INTERVAL.as_millis()).unwrap_or(u64::MAX);
    println!(
        "virtio-mem plug: a second guest ({} MiB, {} MiB virtio-mem region), {rounds} round(s) of plug {size} MiB + unplug",
        vm.memory_mib, vm.virtio_mem_mib
    );
    let mut guest = super::guest::boot(&vm, "hotplug-vmem")?;
    vmem::wait_driver(&mut guest)?;
    let (mut plug_ms, mut grown_ms, mut unplug_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut totals: Option<(f64, f64)> = None;
    for r in 1..=rounds {
        // A sample from after the previous round's unplug.
        let after = current_ms(&guest)?;
        let Some(baseline) = wait_fresh(&mut guest, after, BASELINE_DEADLINE, |_| true)? else {
            return Err(GuestError::Timeout(
                "balloon statistics before a virtio-mem plug",
            ));
        };
        let start = Instant::now();
        let plug_s = vmem::resize(&mut guest, size)?;
        let grown =
            |s: &StatsSample| s.total_bytes >= baseline.total_bytes.saturating_add(size << 20);
        // Linux acknowledges the plug before it adds and onlines the
        // memory: the first round's plug took 68 ms and MemTotal grew
        // seconds later on the nested host.
        let deadline = settle_deadline(&[plug_s * 1e3], STATS_INTERVAL).max(GROWN_DEADLINE);
        let seen = wait_fresh(&mut guest, baseline.updated_ms, deadline, grown)?;
        let grown_after = start.elapsed().as_secs_f64();
        let verdict = match seen {
            Some(s) if grown(&s) => {
                grown_ms.push(grown_after * 1e3);
                totals.get_or_insert((baseline.total_mib(), s.total_mib()));
                format!(
                    "MemTotal {:.0} -> {:.0} MiB seen after {:.0} ms",
                    baseline.total_mib(),
                    s.total_mib(),
                    grown_after * 1e3
                )
            }
            Some(s) => format!(
                "MemTotal did NOT grow by {size} MiB within {:.1} s: {:.0} -> {:.0} MiB",
                deadline.as_secs_f64(),
                baseline.total_mib(),
                s.total_mib()
            ),
            None => "no balloon statistics sample after the plug".to_string(),
        };
        let unplug_s = vmem::resize(&mut guest, 0)?;
        println!(
            "  virtio-mem round {r}: plug {:.1} ms ({verdict}), unplug {:.1} ms",
            plug_s * 1e3,
            unplug_s * 1e3
        );
        plug_ms.push(plug_s * 1e3);
        unplug_ms.push(unplug_s * 1e3);
    }
    if let Some(m) = median(&plug_ms) {
        println!(
            "virtio-mem plug of {size} MiB, request to plugged == requested: median {m:.1} ms ({:.0} MiB/s), n={}",
            size as f64 / (m / 1e3),
            plug_ms.len()
        );
    }
    if let Some(m) = median(&grown_ms) {
        println!(
            "  to a statistics sample showing MemTotal grown: median {m:.1} ms (samples every {} ms), {} of {} rounds",
            STATS_INTERVAL.as_millis(),
            grown_ms.len(),
            plug_ms.len()
        );
    }
    let mut figures = Vec::new();
    if let Some(f) = Figure::of(
        "hotplug",
        &format!("virtio-mem plug of {size} MiB, request to plugged == requested"),
        &plug_ms,
        "ms",
        0,
    ) {
        figures.push(f);
    }
    if let Some(mut f) = Figure::of(
        "hotplug",
        &format!(
            "virtio-mem plug of {size} MiB, request to MemTotal grown (statistics every {} ms)",
            STATS_INTERVAL.as_millis()
        ),
        &grown_ms,
        "ms",
        0,
    ) {
        if let Some((before, after)) = totals {
            f.detail = format!(
                "{}; MemTotal {before:.0} -> {after:.0} MiB; grown in {} of {} rounds",
                f.detail,
                grown_ms.len(),
                plug_ms.len()
            );
        }
        figures.push(f);
    }
    Ok(figures)
}
