//! `memtide bench hotplug`: latency from a hot-add request to the guest
//! reporting the memory online (its `_OST` call), per slot.

use std::time::{Duration, Instant};

use super::figure::Figure;
use super::guest::{get_json, BenchGuest, GuestError};
use super::stats::{median, min_max};
use crate::cli::HotplugBenchArgs;
use crate::ctl::call;
use crate::host::HostInfo;

/// How long one slot may take to come online.
const ONLINE_DEADLINE: Duration = Duration::from_secs(300);

/// Runs the benchmark, prints its report and returns its figures.
pub fn run(args: &HotplugBenchArgs) -> Result<Vec<Figure>, GuestError> {
    let mut vm = args.vm.clone();
    vm.hotplug_slots = args.slots;
    vm.balloon_stats_ms = 500;
    println!(
        "memtide bench hotplug: {} x {} MiB slots, guest {} MiB, {} vCPU",
        args.slots, vm.slot_mib, vm.memory_mib, vm.vcpus
    );
    println!("host: {}", HostInfo::detect());
    let mut guest = BenchGuest::boot(&vm, "hotplug")?;
    let mut api_to_ost = Vec::new();
    let mut plug_to_ost = Vec::new();
    for i in 0..args.slots as usize {
        let start = Instant::now();
        call(
            &guest.sock,
            "PUT",
            "/memory",
            &format!("{{\"size_mib\":{}}}", vm.slot_mib),
        )?;
        let mut online_ms = None;
        guest.wait_until(
            "the guest to online the slot",
            ONLINE_DEADLINE,
            Duration::from_millis(5),
            |g| {
                let v = get_json(&g.sock, "/memory")?;
                let slot = &v["slots"][i];
                if slot["ost_status"].is_number() {
                    online_ms = slot["online_ms"].as_f64();
                    return Ok(true);
                }
                Ok(false)
            },
        )?;
        let total = start.elapsed().as_secs_f64() * 1e3;
        let status = get_json(&guest.sock, "/memory")?["slots"][i]["ost_status"].clone();
        println!(
            "  slot {i}: request to _OST {total:.1} ms (from mapping {:.1} ms), _OST status {status}",
            online_ms.unwrap_or(f64::NAN)
        );
        api_to_ost.push(total);
        if let Some(ms) = online_ms {
            plug_to_ost.push(ms);
        }
    }
    let total_mib = get_json(&guest.sock, "/balloon/statistics")?["guest"]["total_memory"]
        .as_f64()
        .map(|b| b / f64::from(1 << 20));
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
    if let Some(t) = total_mib {
        println!("guest MemTotal afterwards (balloon statistics): {t:.0} MiB");
    }
    Ok(Figure::of(
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
    .collect())
}
