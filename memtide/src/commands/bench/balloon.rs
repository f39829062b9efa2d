//! `memtide bench balloon`: inflate and deflate latency and throughput.
//!
//! Boots one guest per host discard mode (merged ranges, then one
//! `madvise` per 4 KiB page), inflates the balloon by `--mib` and deflates
//! it again for `--rounds` rounds through the control API, and prints
//! medians, MiB/s, host RSS of guest RAM, and the ratio between the modes.
//! The guest runs `memtide-idle` as init: inflation is the guest kernel's
//! work, no user space is needed.

use std::time::{Duration, Instant};

use super::figure::Figure;
use super::guest::{Guest, GuestError};
use super::stats::median;
use crate::cli::{BalloonBenchArgs, DiscardArg};
use memtide_vmm::host_info::HostInfo;

/// How long one inflate or deflate may take.
const STEP_DEADLINE: Duration = Duration::from_secs(300);

/// One inflate + deflate round.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// Seconds until `actual` reached the target.
    pub inflate_s: f64,
    /// Seconds until `actual` was back at 0.
    pub deflate_s: f64,
    /// Guest RAM resident on the host before inflating, MiB.
    pub rss_before_mib: f64,
    /// ... after inflating, MiB.
    pub rss_inflated_mib: f64,
}

/// Sets the target and waits until the guest's `actual` equals it.
fn resize(guest: &mut Guest, mib: u64) -> Result<f64, GuestError> {
    let start = Instant::now();
    guest.api().set_balloon_target(mib)?;
    guest.wait_until(
        "the balloon to reach its target",
        STEP_DEADLINE,
        Duration::from_millis(2),
        |g| Ok(g.api().get_balloon()?.actual_mib == mib),
    )?;
    Ok(start.elapsed().as_secs_f64())
}

/// Boots a guest with `mode` and measures `rounds` rounds; returns the
/// rounds and the mean host `madvise` time per inflate, in ns.
pub fn measure(args: &BalloonBenchArgs, mode: DiscardArg) -> Result<(Vec<Round>, f64), GuestError> {
    let tag = if mode == DiscardArg::Ranges {
        "ranges"
    } else {
        "pages"
    };
    let mut vm = args.vm.clone();
    vm.balloon_discard = mode;
    vm.balloon_stats_ms = 0;
    vm.prefault = true;
    let mut guest = super::guest::boot(&vm, tag)?;
    let discard_ns = |g: &Guest| -> Result<f64, GuestError> {
        Ok(g.api().get_balloon_statistics()?.host.discard_ns as f64)
    };
    let resident = |g: &Guest| -> Result<f64, GuestError> {
        Ok(g.api().get_balloon()?.guest_ram_resident_mib as f64)
    };
    let mut rounds = Vec::new();
    let mut total_ns = 0.0;
    for r in 1..=args.rounds {
        let before = resident(&guest)?;
        let ns0 = discard_ns(&guest)?;
        let inflate_s = resize(&mut guest, args.mib)?;
        total_ns += discard_ns(&guest)? - ns0;
        let inflated = resident(&guest)?;
        let deflate_s = resize(&mut guest, 0)?;
        println!(
            "  {tag} round {r}: inflate {:.1} ms, deflate {:.1} ms, resident {before:.0} -> {inflated:.0} MiB",
            inflate_s * 1e3,
            deflate_s * 1e3
        );
        rounds.push(Round {
            inflate_s,
            deflate_s,
            rss_before_mib: before,
            rss_inflated_mib: inflated,
        });
    }
    Ok((rounds, total_ns / f64::from(args.rounds.max(1))))
}

/// Runs the benchmark, prints its report and returns its figures.
pub fn run(args: &BalloonBenchArgs) -> Result<Vec<Figure>, GuestError> {
    println!(
        "memtide bench balloon: {} MiB x {} rounds per mode, guest {} MiB, {} vCPU",
        args.mib, args.rounds, args.vm.memory_mib, args.vm.vcpus
    );
    println!("host: {}", HostInfo::detect());
    let (ranges, ranges_ns) = measure(args, DiscardArg::Ranges)?;
    let (pages, pages_ns) = measure(args, DiscardArg::PerPage)?;
    let mib = args.mib as f64;
    let summary = |name: &str, rounds: &[Round], ns: f64| {
        let med = |f: fn(&Round) -> f64| {
            median(&rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let (inflate, deflate) = (med(|r| r.inflate_s), med(|r| r.deflate_s));
        // Only the first round starts from fully resident (prefaulted) RAM:
        // deflated pages stay non-resident until the guest touches them.
        let (before, after) = rounds.first().map_or((f64::NAN, f64::NAN), |r| {
            (r.rss_before_mib, r.rss_inflated_mib)
        });
        println!(
            "| {name} | {:.1} ms ({:.0} MiB/s) | {:.1} ms ({:.0} MiB/s) | {:.2} ms | {before:.0} -> {after:.0} MiB |",
            inflate * 1e3,
            mib / inflate,
            deflate * 1e3,
            mib / deflate,
            ns / 1e6,
        );
        inflate
    };
    println!("| host path | inflate (median) | deflate (median) | host madvise time per inflate | guest RAM resident before -> after 1st inflate |");
    println!("|---|---|---|---|---|");
    let a = summary("merged ranges", &ranges, ranges_ns);
    let b = summary("one madvise per 4 KiB", &pages, pages_ns);
    println!(
        "ratio per-page / ranges: inflate wall time {:.2}x, host madvise time {:.1}x",
        b / a,
        pages_ns / ranges_ns
    );
    let mut figures = Vec::new();
    for (what, rounds, pick) in [
        (
            "inflate (merged ranges)",
            &ranges,
            (|r: &Round| r.inflate_s) as fn(&Round) -> f64,
        ),
        ("deflate (merged ranges)", &ranges, |r: &Round| r.deflate_s),
    ] {
        let ms: Vec<f64> = rounds.iter().map(|r| pick(r) * 1e3).collect();
        if let Some(mut f) = Figure::of("balloon", &format!("{what}, {mib} MiB"), &ms, "ms", 0) {
            if let Some(m) = median(&ms) {
                f.median = format!("{} ({:.1} MiB/s)", f.median, mib / (m / 1e3));
            }
            figures.push(f);
        }
    }
    figures.push(Figure::text(
        "balloon",
        &format!("host madvise time per {mib} MiB inflate, ranges vs per page"),
        format!("{:.2} ms vs {:.2} ms", ranges_ns / 1e6, pages_ns / 1e6),
        format!(
            "per-page / ranges {:.1}x (inflate wall time {:.2}x)",
            pages_ns / ranges_ns,
            b / a
        ),
    ));
    Ok(figures)
}
