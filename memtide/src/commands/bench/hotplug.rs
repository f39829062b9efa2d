//! `memtide bench hotplug`: latency from a hot-add request to the guest
//! reporting the memory online (its `_OST` call), per slot; then the
//! guest's MemTotal, from a balloon statistics sample taken after the last
//! `_OST`; then the same growth by virtio-mem plug in a second guest
//! (`hotplug_vmem.rs`).

use std::time::{Duration, Instant};

use super::figure::Figure;
use super::guest::{Guest, GuestError};
use super::guest_stats::{mib, stats_sample, StatsSample, STATS_POLL};
use super::stats::{median, min_max};
use crate::cli::HotplugBenchArgs;
use memtide_vmm::host_info::HostInfo;

/// How long one slot may take to come online.
const ONLINE_DEADLINE: Duration = Duration::from_secs(300);
/// How often the guest is asked for balloon statistics.
const STATS_INTERVAL: Duration = Duration::from_millis(500);
/// How long to wait for the first statistics sample before the first
/// hot-add (the balloon driver is up by then; the sample follows within a
/// few stats intervals even on the nested host).
const BASELINE_DEADLINE: Duration = Duration::from_secs(60);
/// What a statistics sample says about the hot-added memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemTotalView {
    /// No sample newer than the one current at the last `_OST`: it may
    /// predate the onlining.
    Stale,
    /// A fresh sample, but MemTotal has not grown by all the added memory.
    Short,
    /// A fresh sample with MemTotal grown by at least the added memory.
    Grown,
}

/// Judges `latest` against `baseline` (before the first hot-add), given
/// `added_bytes` hot-added and `stale_ms`, the arrival time of the sample
/// that was current when the last slot's `_OST` was seen.
fn judge(
    baseline: StatsSample,
    added_bytes: u64,
    stale_ms: u64,
    latest: StatsSample,
) -> MemTotalView {
    if latest.updated_ms <= stale_ms {
        MemTotalView::Stale
    } else if latest.total_bytes >= baseline.total_bytes.saturating_add(added_bytes) {
        MemTotalView::Grown
    } else {
        MemTotalView::Short
    }
}

/// How long after the last `_OST` the guest gets to show the memory in its
/// statistics: twice its slowest hot-add (in ms, as measured; the guest's
/// stats work is far less than onlining a slot, on any host) plus four
/// statistics intervals (the host's request timer may just have fired).
pub(super) fn settle_deadline(api_to_ost_ms: &[f64], stats_interval: Duration) -> Duration {
    let slowest_ms = min_max(api_to_ost_ms).map_or(0.0, |(_, hi)| hi);
    Duration::from_secs_f64(2.0 * slowest_ms / 1e3) + 4 * stats_interval
}

/// Polls `guest`'s statistics until one taken after the last `_OST` shows
/// MemTotal grown by `added_bytes` over `baseline`, or `deadline`; prints
/// the outcome as one line.
fn report_mem_total(
    guest: &mut Guest,
    baseline: StatsSample,
    added_bytes: u64,
    deadline: Duration,
) -> Result<(), GuestError> {
    // Statistics are replaced, never cleared: there is a sample at least as
    // new as the baseline.
    let current = stats_sample(&guest.sock)?.unwrap_or(baseline);
    let stale_ms = current.updated_ms;
    let since_ost = Instant::now();
    let mut latest = current;
    let mut view = MemTotalView::Stale;
    let waited = guest.wait_until("the guest's MemTotal to grow", deadline, STATS_POLL, |g| {
        if let Some(s) = stats_sample(&g.sock)? {
            latest = s;
            view = judge(baseline, added_bytes, stale_ms, s);
        }
        Ok(view == MemTotalView::Grown)
    });
    let before = mib(baseline.total_bytes);
    let now = mib(latest.total_bytes);
    match waited {
        Ok(()) => println!(
            "guest MemTotal afterwards (balloon statistics): {now:.0} MiB ({before:.0} MiB before the hot-add, \
             +{:.0} MiB; sample seen {:.1} s after the last _OST was seen)",
            now - before,
            since_ost.elapsed().as_secs_f64()
        ),
        Err(GuestError::Timeout(_)) => {
            let why = match view {
                MemTotalView::Stale => "no statistics sample arrived after the last _OST",
                _ => "the samples after the last _OST do not show it",
            };
            println!(
                "guest MemTotal did NOT grow by the {:.0} MiB hot-added within {:.1} s of the last _OST \
                 ({why}): latest balloon statistics say {now:.0} MiB ({before:.0} MiB before the hot-add, {:+.0} MiB)",
                mib(added_bytes),
                deadline.as_secs_f64(),
                now - before
            );
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Runs the benchmark, prints its report and returns its figures.
pub fn run(args: &HotplugBenchArgs) -> Result<Vec<Figure>, GuestError> {
    let mut vm = args.vm.clone();
    vm.hotplug_slots = args.slots;
    vm.balloon_stats_ms = u64::try_from(STATS_INTERVAL.as_millis()).unwrap_or(u64::MAX);
    println!(
        "memtide bench hotplug: {} x {} MiB slots, guest {} MiB, {} vCPU",
        args.slots, vm.slot_mib, vm.memory_mib, vm.vcpus
    );
    println!("host: {}", HostInfo::detect());
    let mut guest = super::guest::boot(&vm, "hotplug")?;
    let mut baseline = None;
    match guest.wait_until(
        "the guest's first balloon statistics",
        BASELINE_DEADLINE,
        STATS_POLL,
        |g| {
            baseline = stats_sample(&g.sock)?;
            Ok(baseline.is_some())
        },
    ) {
        Ok(()) | Err(GuestError::Timeout(_)) => {}
        Err(e) => return Err(e),
    }
    let mut api_to_ost = Vec::new();
    let mut plug_to_ost = Vec::new();
    for i in 0..args.slots as usize {
        let start = Instant::now();
        guest.api().hot_add(vm.slot_mib)?;
        let mut online_ms = None;
        guest.wait_until(
            "the guest to online the slot",
            ONLINE_DEADLINE,
            Duration::from_millis(5),
            |g| {
                let v = g.api().get_memory()?;
                let slot = v
                    .slots
                    .get(i)
                    .ok_or_else(|| GuestError::BadAnswer(format!("GET /memory has no slot {i}")))?;
                if slot.ost_status.is_some() {
                    online_ms = slot.online_ms;
                    return Ok(true);
                }
                Ok(false)
            },
        )?;
        let total = start.elapsed().as_secs_f64() * 1e3;
        let status = guest
            .api()
            .get_memory()?
            .slots
            .get(i)
            .and_then(|s| s.ost_status)
            .map_or_else(|| "null".to_string(), |s| s.to_string());
        println!(
            "  slot {i}: request to _OST {total:.1} ms (from mapping {:.1} ms), _OST status {status}",
            online_ms.unwrap_or(f64::NAN)
        );
        api_to_ost.push(total);
        if let Some(ms) = online_ms {
            plug_to_ost.push(ms);
        }
    }
    let added_bytes = u64::from(args.slots) * (vm.slot_mib << 20);
    if let (Some(med), Some((lo, hi))) = (median(&api_to_ost), min_max(&api_to_ost)) {
        println!(
            "hot-add of one {} MiB slot, API request to guest _OST: median {med:.1} ms (min {lo:.1}, max {hi:.1}, n={})",
            vm.slot_mib,
            api_to_ost.len()
        );
    }
    if let Some(med) = median(&plug_to_ost) {
        println!("  of which slot mapped to guest _OST: median {med:.1} ms");
    }
    match baseline {
        Some(baseline) => report_mem_total(
            &mut guest,
            baseline,
            added_bytes,
            settle_deadline(&api_to_ost, STATS_INTERVAL),
        )?,
        None => println!(
            "guest MemTotal afterwards: not reported (no balloon statistics within {} s of boot)",
            BASELINE_DEADLINE.as_secs()
        ),
    }
    drop(guest);
    let mut figures: Vec<Figure> = Figure::of(
        "hotplug",
        &format!(
            "hot-add of one {} MiB slot, request to guest _OST",
            vm.slot_mib
        ),
        &api_to_ost,
        "ms",
        0,
    )
    .into_iter()
    .collect();
    figures.extend(super::hotplug_vmem::run(args, args.slots.max(1))?);
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn sample(updated_ms: u64, total_mib: u64) -> StatsSample {
        StatsSample {
            updated_ms,
            total_bytes: total_mib * MIB,
        }
    }

    #[test]
    fn a_sample_from_before_the_last_ost_is_stale_whatever_it_says() {
        let base = sample(1_000, 243);
        // The figure the bench used to print: the sample current at the
        // last _OST, taken before the guest onlined the slots.
        assert_eq!(
            judge(base, 256 * MIB, 5_000, sample(5_000, 243)),
            MemTotalView::Stale
        );
        assert_eq!(
            judge(base, 256 * MIB, 5_000, sample(4_500, 499)),
            MemTotalView::Stale
        );
    }

    #[test]
    fn a_fresh_sample_must_show_all_the_added_memory() {
        let base = sample(1_000, 243);
        assert_eq!(
            judge(base, 256 * MIB, 5_000, sample(5_500, 243)),
            MemTotalView::Short
        );
        assert_eq!(
            judge(base, 256 * MIB, 5_000, sample(5_500, 371)),
            MemTotalView::Short
        );
        assert_eq!(
            judge(base, 256 * MIB, 5_000, sample(5_500, 499)),
            MemTotalView::Grown
        );
        // Init memory freed after the baseline was taken adds a little.
        assert_eq!(
            judge(base, 256 * MIB, 5_000, sample(5_500, 500)),
            MemTotalView::Grown
        );
        // One page short is short.
        let mut almost = sample(5_500, 499);
        almost.total_bytes -= 4096;
        assert_eq!(judge(base, 256 * MIB, 5_000, almost), MemTotalView::Short);
    }

    #[test]
    fn the_deadline_follows_the_slowest_hot_add() {
        let interval = Duration::from_millis(500);
        assert_eq!(
            settle_deadline(&[40.0, 60.0], interval),
            Duration::from_millis(2_120)
        );
        assert_eq!(
            settle_deadline(&[2_500.0, 3_000.0, f64::NAN], interval),
            Duration::from_millis(8_000)
        );
        assert_eq!(settle_deadline(&[], interval), Duration::from_secs(2));
    }
}
