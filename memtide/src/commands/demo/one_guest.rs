//! `memtide demo --one-guest`: dynamic memory on one guest, narrated.
//! Boots a guest with a balloon and hot-add slots, shrinks it with the
//! balloon (the host gets the memory back), grows it by hot-add, deflates
//! the balloon, and prints what the guest and the host saw at each step.

use std::time::{Duration, Instant};

use crate::cli::DemoArgs;
use crate::commands::bench::guest::{Guest, GuestError};
use memtide_vmm::host_info::HostInfo;

const STEP_DEADLINE: Duration = Duration::from_secs(300);

/// The guest's and the host's view at one moment.
struct Snapshot {
    guest_total_mib: f64,
    guest_free_mib: f64,
    host_resident_mib: f64,
    balloon_mib: f64,
    plugged_mib: f64,
}

fn snapshot(g: &mut Guest) -> Result<Snapshot, GuestError> {
    // Wait for a statistics report newer than this moment.
    let updated = |g: &Guest| -> Result<u64, GuestError> {
        Ok(g.api()
            .get_balloon_statistics()?
            .guest
            .map_or(0, |s| s.updated_ms))
    };
    let since = updated(g)?;
    g.wait_until(
        "fresh guest statistics",
        STEP_DEADLINE,
        Duration::from_millis(100),
        |g| Ok(updated(g)? > since),
    )?;
    let api = g.api();
    let stats = api
        .get_balloon_statistics()?
        .guest
        .ok_or_else(|| GuestError::BadAnswer("no guest balloon statistics".into()))?;
    let balloon = api.get_balloon()?;
    let memory = api.get_memory()?;
    let mib = |v: Option<u64>, name: &str| {
        v.map(|b| b as f64 / f64::from(1 << 20))
            .ok_or_else(|| GuestError::BadAnswer(format!("no {name} in the guest statistics")))
    };
    Ok(Snapshot {
        guest_total_mib: mib(stats.total_memory, "total_memory")?,
        guest_free_mib: mib(stats.free_memory, "free_memory")?,
        host_resident_mib: balloon.guest_ram_resident_mib as f64,
        balloon_mib: balloon.actual_mib as f64,
        plugged_mib: memory.plugged_mib as f64,
    })
}

fn row(step: &str, s: &Snapshot, took: Option<Duration>) {
    let took = took.map_or_else(String::new, |d| format!("{:.1} s", d.as_secs_f64()));
    println!(
        "| {step:<28} | {:>8.0} | {:>7.0} | {:>7.0} | {:>7.0} | {:>12.0} | {took:>7} |",
        s.plugged_mib, s.balloon_mib, s.guest_total_mib, s.guest_free_mib, s.host_resident_mib
    );
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<(), GuestError> {
    let mut vm = args.vm.clone();
    vm.hotplug_slots = vm.hotplug_slots.max(1);
    vm.balloon_stats_ms = 500;
    vm.prefault = true;
    println!("memtide demo on {}", HostInfo::detect());
    println!(
        "[demo] booting a {} MiB guest with a virtio-balloon and {} hot-add slot(s) of {} MiB ...",
        vm.memory_mib, vm.hotplug_slots, vm.slot_mib
    );
    let mut g = crate::commands::bench::guest::boot(&vm, "demo")?;
    println!(
        "| {:<28} | {:>8} | {:>7} | {:>7} | {:>7} | {:>12} | {:>7} |",
        "step (MiB)", "plugged", "balloon", "total", "free", "host-resident", "took"
    );
    println!("|---|---|---|---|---|---|---|");
    let first = snapshot(&mut g)?;
    row("booted (RAM prefaulted)", &first, None);

    println!(
        "[demo] inflating the balloon to {} MiB ...",
        args.balloon_mib
    );
    let t = Instant::now();
    g.api().set_balloon_target(args.balloon_mib)?;
    let target = args.balloon_mib;
    g.wait_until(
        "the balloon to inflate",
        STEP_DEADLINE,
        Duration::from_millis(20),
        |g| Ok(g.api().get_balloon()?.actual_mib >= target),
    )?;
    let took = t.elapsed();
    row(
        &format!("balloon inflated to {} MiB", args.balloon_mib),
        &snapshot(&mut g)?,
        Some(took),
    );

    println!(
        "[demo] hot-adding {} MiB (ACPI PNP0C80 + GED) ...",
        vm.slot_mib
    );
    let t = Instant::now();
    g.api().hot_add(vm.slot_mib)?;
    g.wait_until(
        "the guest to online the memory",
        STEP_DEADLINE,
        Duration::from_millis(50),
        |g| {
            let m = g.api().get_memory()?;
            Ok(m.slots.first().is_some_and(|s| s.ost_status.is_some()))
        },
    )?;
    let took = t.elapsed();
    row(
        &format!("hot-added {} MiB", vm.slot_mib),
        &snapshot(&mut g)?,
        Some(took),
    );

    println!("[demo] deflating the balloon ...");
    let t = Instant::now();
    g.api().set_balloon_target(0)?;
    g.wait_until(
        "the balloon to deflate",
        STEP_DEADLINE,
        Duration::from_millis(20),
        |g| Ok(g.api().get_balloon()?.actual_mib == 0),
    )?;
    let took = t.elapsed();
    row("balloon deflated", &snapshot(&mut g)?, Some(took));
    println!("[demo] done: the guest grew by hot-add and lent memory back to the host through its balloon");
    Ok(())
}
