//! `memtide bench shrink`: the same guest shrunk by `--mib` twice, first by
//! virtio-mem unplug, then by balloon inflate; per mechanism the time from
//! the request to the guest reporting done, MiB/s, the guest's MemTotal and
//! the host's residency of guest RAM before and after, and the speed ratio.
//!
//! One guest per run, with both devices: boot RAM prefaulted (as in `bench
//! balloon`), a virtio-mem region of `--mib` (rounded up to 128 MiB) and
//! the default initramfs, whose init runs a command that waits for the
//! plugged memory, touches `--mib` + 16 MiB from user space (Linux takes
//! user pages from the highest zone first: the plugged, movable memory),
//! frees it and prints a line. So before the unplug the plugged MiB are
//! resident on the host and free in the guest, as the boot RAM is before
//! the inflate. The unplug comes first: the balloon driver also takes its
//! pages from the highest zone, so inflating first would put balloon pages
//! in the blocks to be unplugged; after the unplug the inflate works on
//! boot RAM, as in a guest without virtio-mem.

use std::time::{Duration, Instant};

use super::figure::Figure;
use super::guest::{ConsoleWatch, Guest, GuestError};
use super::guest_stats::{current_ms, wait_fresh, StatsSample};
use super::shrink_report::{Run, Step, Summary, MEMTOTAL_TOLERANCE};
use super::vmem;
use crate::cli::ShrinkBenchArgs;
use memtide_vmm::config::cache_dir;
use memtide_vmm::host_info::HostInfo;

/// What the guest touches beyond the plugged memory, MiB (so that all of
/// the movable zone is used, whatever the allocator keeps back).
const TOUCH_EXTRA_MIB: u64 = 16;
/// The console line the guest prints once it has touched and freed the
/// memory. Its `--cmd` quotes it differently, so that the kernel's echo of
/// its command line does not match.
const TOUCHED: &str = "memtide-bench-shrink: touched";
/// How long the guest may take to touch the memory (about 2 MiB/s on a
/// nested host).
const TOUCH_DEADLINE: Duration = Duration::from_secs(1200);
/// How often a progress line is printed while the guest touches memory.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);
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

/// The guest's command: wait until MemTotal exceeds boot memory plus half
/// the plug (boot RAM alone always shows less than `--memory-mib`), touch
/// `touch_mib` in one buffer (busybox `dd` reading /dev/zero into it),
/// free it by exiting, print the line, idle.
fn guest_cmd(memory_mib: u64, mib: u64, touch_mib: u64) -> String {
    let threshold_kib = memory_mib * 1024 + mib * 512;
    let (head, tail) = TOUCHED.split_once(' ').unwrap_or((TOUCHED, ""));
    format!(
        "until [ $(sed -n '/^MemTotal:/s/[^0-9]//gp' /proc/meminfo) -gt {threshold_kib} ]; do sleep 1; done; \
         dd if=/dev/zero of=/dev/null bs={touch_mib}M count=1 2>/dev/null; \
         echo {head} '{tail}'; sleep 1000000"
    )
}

/// Guest RAM resident on the host, MiB.
fn resident(guest: &Guest) -> Result<f64, GuestError> {
    Ok(guest.api().get_balloon()?.guest_ram_resident_mib as f64)
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

/// Waits for the guest to print [`TOUCHED`], with a progress line now and
/// then.
fn wait_touched(
    guest: &mut Guest,
    watch: &mut ConsoleWatch,
    run: u32,
    touch_mib: u64,
) -> Result<(), GuestError> {
    let start = Instant::now();
    let mut next = PROGRESS_EVERY;
    guest.wait_until(
        "the guest to touch the plugged memory",
        TOUCH_DEADLINE,
        Duration::from_millis(100),
        |g| {
            if watch.seen() {
                return Ok(true);
            }
            if start.elapsed() >= next {
                next += PROGRESS_EVERY;
                println!(
                    "  run {run}: the guest is touching {touch_mib} MiB ({:.0} s; host resident {:.0} MiB)",
                    start.elapsed().as_secs_f64(),
                    resident(g)?
                );
            }
            Ok(false)
        },
    )?;
    println!(
        "  run {run}: touched and freed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
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

/// One run: boot, plug and touch, unplug, inflate.
fn one_run(args: &ShrinkBenchArgs, run: u32) -> Result<Run, ShrinkBenchError> {
    let mib = args.mib;
    let touch_mib = mib + TOUCH_EXTRA_MIB;
    let mut vm = args.vm.clone();
    vm.prefault = true;
    vm.balloon_stats_ms = STATS_MS;
    vm.virtio_mem_mib = vmem::region_for(mib);
    vm.cmd = Some(guest_cmd(vm.memory_mib, mib, touch_mib));
    if vm.initramfs.is_none() && !vm.no_initramfs {
        let cache = cache_dir().map_err(|e| GuestError::Setup(e.to_string()))?;
        vm.initramfs = Some(cache.join("initramfs.cpio"));
    }
    let (mut guest, mut watch) = super::guest::boot_watching(&vm, "shrink", TOUCHED)?;
    vmem::wait_driver(&mut guest)?;
    let plug_s = vmem::resize(&mut guest, mib)?;
    println!(
        "  run {run}: plugged {mib} MiB in {:.0} ms; the guest touches {touch_mib} MiB",
        plug_s * 1e3
    );
    wait_touched(&mut guest, &mut watch, run, touch_mib)?;

    // virtio-mem unplug.
    let before = fresh_sample(&mut guest)?;
    let resident_before = resident(&guest)?;
    let unplug_s = vmem::resize(&mut guest, 0)?;
    let resident_after = resident(&guest)?;
    let done_ms = current_ms(&guest)?;
    let shrunk = (mib as f64 * (1.0 - MEMTOTAL_TOLERANCE)) * f64::from(1 << 20);
    let total_unplugged = total_after(&mut guest, done_ms, |s| {
        (before.total_bytes.saturating_sub(s.total_bytes)) as f64 >= shrunk
    })?;
    let unplug = Step {
        seconds: unplug_s,
        total_before_mib: before.total_mib(),
        total_after_mib: total_unplugged,
        resident_before_mib: resident_before,
        resident_after_mib: resident_after,
    };

    // Balloon inflate.
    let before = fresh_sample(&mut guest)?;
    let resident_before = resident(&guest)?;
    let inflate_s = inflate(&mut guest, mib)?;
    let resident_after = resident(&guest)?;
    let done_ms = current_ms(&guest)?;
    let inflate = Step {
        seconds: inflate_s,
        total_before_mib: before.total_mib(),
        total_after_mib: total_after(&mut guest, done_ms, |_| true)?,
        resident_before_mib: resident_before,
        resident_after_mib: resident_after,
    };
    for (name, s) in [("unplug", &unplug), ("inflate", &inflate)] {
        println!(
            "  run {run}: {name} {:.0} ms, MemTotal {:.0} -> {:.0} MiB, resident {:.0} -> {:.0} MiB",
            s.seconds * 1e3,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_waits_for_the_plug_and_does_not_echo_the_marker_itself() {
        let cmd = guest_cmd(256, 128, 144);
        assert!(cmd.contains("-gt 327680 ]"), "{cmd}");
        assert!(cmd.contains("bs=144M count=1"), "{cmd}");
        assert!(
            cmd.contains("echo memtide-bench-shrink: 'touched'"),
            "{cmd}"
        );
        assert!(!cmd.contains(TOUCHED), "{cmd}");
        assert!(!cmd.contains('"') && !cmd.contains('\n'), "{cmd}");
    }
}
