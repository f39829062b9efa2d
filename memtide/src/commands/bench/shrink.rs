//! `memtide bench shrink`: the same guest shrunk by `--mib` twice, first by
//! virtio-mem unplug, then by balloon inflate; per mechanism the time from
//! the request to the guest reporting done, MiB/s, the guest's MemTotal and
//! the host's residency of guest RAM before and after, and the speed ratio.
//!
//! One guest per run, with both devices and `--prefault` (as in `bench
//! balloon`): boot RAM is resident before the guest starts, and memtide
//! makes each virtio-mem plug resident before acknowledging it (as QEMU's
//! `prealloc=on`). The guest (`memtide-idle`) has `--mib` plugged and
//! onlined (a region of `--mib` rounded up to 128 MiB) and the benchmark
//! then unplugs it all: before the unplug the plugged MiB are resident on
//! the host and free in the guest, as the boot RAM is before the inflate.
//! (Touching them from guest user space instead ran at 0.15 MiB/s on the
//! nested AMD host: 15 minutes per run.) The unplug comes first: the
//! balloon driver takes its pages from the highest zone, the plugged
//! movable memory, so inflating first would put balloon pages in the blocks
//! to be unplugged; after the unplug the inflate works on boot RAM, as in a
//! guest without virtio-mem.

use std::time::{Duration, Instant};

use super::figure::Figure;
use super::guest::{Guest, GuestError};
use super::guest_stats::{current_ms, wait_fresh, StatsSample};
use super::shrink_report::{Run, Step, Summary, MEMTOTAL_TOLERANCE};
use super::vmem;
use crate::cli::ShrinkBenchArgs;
use memtide_vmm::host_info::HostInfo;

/// How often the guest sends balloon statistics.
const STATS_MS: u64 = 500;
/// How long to wait for statistics to show a shrink's effect.
const SETTLE_DEADLINE: Duration = Duration::from_secs(20);
/// How long one balloon inflate may take.
const INFLATE_DEADLINE: Duration = Duration::from_secs(600);

/// Errors of `memtide bench shrink`.
#[derive(Debug, thiserror::Error)]
pub enum ShrinkBenchError {
    /// Zero runs requested.
    #[error("--runs must be at least 1")]
    NoRuns,
    /// A shrink that virtio-mem cannot do exactly.
    #[error("--mib {mib} must be a positive multiple of the virtio-mem block size ({block} MiB)")]
    NotBlocks {
        /// The size asked for.
        mib: u64,
        /// `--virtio-mem-block-mib`.
        block: u64,
    },
    /// A balloon the guest's boot RAM cannot hold.
    #[error("--mib {mib} must be below the guest's boot memory ({memory} MiB): the balloon inflates in boot RAM")]
    TooBig {
        /// The size asked for.
        mib: u64,
        /// `--memory-mib`.
        memory: u64,
    },
    /// The guest or its API.
    #[error(transparent)]
    Guest(#[from] GuestError),
}

/// The least MemTotal change, bytes, that counts as `mib` plugged or
/// unplugged.
fn shrunk_bytes(mib: u64) -> f64 {
    mib as f64 * (1.0 - MEMTOTAL_TOLERANCE) * f64::from(1 << 20)
}

/// Guest RAM resident on the host, MiB.
fn resident(guest: &Guest) -> Result<f64, GuestError> {
    Ok(guest.api().get_balloon()?.guest_ram_resident_mib as f64)
}

/// Nanoseconds memtide has spent discarding unplugged virtio-mem blocks.
fn vmem_discard_ns(guest: &Guest) -> Result<f64, GuestError> {
    Ok(guest.api().get_virtio_mem()?.counters.discard_ns as f64)
}

/// Nanoseconds memtide has spent discarding inflated balloon pages.
fn balloon_discard_ns(guest: &Guest) -> Result<f64, GuestError> {
    Ok(guest.api().get_balloon_statistics()?.host.discard_ns as f64)
}

/// A fresh statistics sample (newer than now), or an error.
fn fresh_sample(guest: &mut Guest) -> Result<StatsSample, GuestError> {
    let after = current_ms(guest)?;
    wait_fresh(guest, after, SETTLE_DEADLINE, |_| true)?
        .ok_or(GuestError::Timeout("a balloon statistics sample"))
}

/// MemTotal, MiB, from the first sample that arrives after `after_ms` and
/// satisfies `done` (or the latest fresh one at the deadline; NaN if none).
fn total_after(
    guest: &mut Guest,
    after_ms: u64,
    done: impl Fn(&StatsSample) -> bool,
) -> Result<f64, GuestError> {
    Ok(wait_fresh(guest, after_ms, SETTLE_DEADLINE, done)?.map_or(f64::NAN, |s| s.total_mib()))
}

/// Sets the balloon target and waits until the guest's `actual` equals it;
/// returns the seconds taken.
fn inflate(guest: &mut Guest, mib: u64) -> Result<f64, GuestError> {
    let start = Instant::now();
    guest.api().set_balloon_target(mib)?;
    guest.wait_until(
        "the balloon to reach its target",
        INFLATE_DEADLINE,
        Duration::from_millis(2),
        |g| Ok(g.api().get_balloon()?.actual_mib == mib),
    )?;
    Ok(start.elapsed().as_secs_f64())
}

/// One run: boot, plug, unplug, inflate.
fn one_run(args: &ShrinkBenchArgs, run: u32) -> Result<Run, ShrinkBenchError> {
    let mib = args.mib;
    let mut vm = args.vm.clone();
    vm.prefault = true;
    vm.balloon_stats_ms = STATS_MS;
    vm.virtio_mem_mib = vmem::region_for(mib);
    let mut guest = super::guest::boot(&vm, "shrink")?;
    vmem::wait_driver(&mut guest)?;
    let unplugged = fresh_sample(&mut guest)?;
    let plug_s = vmem::resize(&mut guest, mib)?;
    println!(
        "  run {run}: plugged {mib} MiB in {:.0} ms (made resident on the host)",
        plug_s * 1e3
    );
    // The unplug starts once MemTotal shows the plug.
    let plugged = |s: &StatsSample| {
        s.total_bytes.saturating_sub(unplugged.total_bytes) as f64 >= shrunk_bytes(mib)
    };
    wait_fresh(&mut guest, unplugged.updated_ms, SETTLE_DEADLINE, plugged)?;

    // virtio-mem unplug.
    let before = fresh_sample(&mut guest)?;
    let resident_before = resident(&guest)?;
    let ns_before = vmem_discard_ns(&guest)?;
    let unplug_s = vmem::resize(&mut guest, 0)?;
    let host_ms = (vmem_discard_ns(&guest)? - ns_before) / 1e6;
    let resident_after = resident(&guest)?;
    let done_ms = current_ms(&guest)?;
    let total_unplugged = total_after(&mut guest, done_ms, |s| {
        (before.total_bytes.saturating_sub(s.total_bytes)) as f64 >= shrunk_bytes(mib)
    })?;
    let unplug = Step {
        seconds: unplug_s,
        host_ms,
        total_before_mib: before.total_mib(),
        total_after_mib: total_unplugged,
        resident_before_mib: resident_before,
        resident_after_mib: resident_after,
    };

    // Balloon inflate.
    let before = fresh_sample(&mut guest)?;
    let resident_before = resident(&guest)?;
    let ns_before = balloon_discard_ns(&guest)?;
    let inflate_s = inflate(&mut guest, mib)?;
    let host_ms = (balloon_discard_ns(&guest)? - ns_before) / 1e6;
    let resident_after = resident(&guest)?;
    let done_ms = current_ms(&guest)?;
    let inflate = Step {
        seconds: inflate_s,
        host_ms,
        total_before_mib: before.total_mib(),
        total_after_mib: total_after(&mut guest, done_ms, |_| true)?,
        resident_before_mib: resident_before,
        resident_after_mib: resident_after,
    };
    for (name, s) in [("unplug", &unplug), ("inflate", &inflate)] {
        println!(
            "  run {run}: {name} {:.0} ms (host madvise {:.1} ms), MemTotal {:.0} -> {:.0} MiB, resident {:.0} -> {:.0} MiB",
            s.seconds * 1e3,
            s.host_ms,
            s.total_before_mib,
            s.total_after_mib,
            s.resident_before_mib,
            s.resident_after_mib
        );
    }
    Ok(Run { unplug, inflate })
}

/// Runs the benchmark, prints its report and returns its figures.
pub fn run(args: &ShrinkBenchArgs) -> Result<Vec<Figure>, ShrinkBenchError> {
    let (mib, block) = (args.mib, args.vm.virtio_mem_block_mib);
    if args.runs == 0 {
        return Err(ShrinkBenchError::NoRuns);
    }
    if mib == 0 || block == 0 || mib % block != 0 {
        return Err(ShrinkBenchError::NotBlocks { mib, block });
    }
    if mib >= args.vm.memory_mib {
        return Err(ShrinkBenchError::TooBig {
            mib,
            memory: args.vm.memory_mib,
        });
    }
    println!(
        "memtide bench shrink: {mib} MiB by virtio-mem unplug, then by balloon inflate, in one guest per run; {} run(s), guest {} MiB + {} MiB virtio-mem region, {} vCPU",
        args.runs,
        args.vm.memory_mib,
        vmem::region_for(mib),
        args.vm.vcpus
    );
    println!("host: {}", HostInfo::detect());
    let mut runs = Vec::new();
    for r in 1..=args.runs {
        println!("run {r} of {}", args.runs);
        runs.push(one_run(args, r)?);
    }
    let Some(summary) = Summary::of(mib, &runs) else {
        return Ok(Vec::new());
    };
    print!("{}", summary.table());
    for line in summary.goal_lines() {
        println!("{line}");
    }
    Ok(summary.figures())
}
