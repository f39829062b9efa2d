//! `memtide demo --one-guest`: dynamic memory on one guest, narrated.
//! Boots a guest with a balloon and hot-add slots, shrinks it with the
//! balloon (the host gets the memory back), grows it by hot-add, deflates
//! the balloon, and prints what the guest and the host saw at each step.

use std::time::{Duration, Instant};

use crate::bench::guest::{field, get_json, BenchGuest, GuestError};
use crate::cli::DemoArgs;
use crate::ctl::call;
use crate::host_info::HostInfo;

const STEP_DEADLINE: Duration = Duration::from_secs(300);

/// The guest's and the host's view at one moment.
struct Snapshot {
    guest_total_mib: f64,
    guest_free_mib: f64,
    host_resident_mib: f64,
    balloon_mib: f64,
    plugged_mib: f64,
}

fn snapshot(g: &mut BenchGuest) -> Result<Snapshot, GuestError> {
    // Wait for a statistics report newer than this moment.
    let since = field(
        &get_json(&g.sock, "/balloon/statistics")?["guest"],
        "updated_ms",
    )
    .unwrap_or(0.0);
    g.wait_until(
        "fresh guest statistics",
        STEP_DEADLINE,
        Duration::from_millis(100),
        |g| {
            Ok(field(
                &get_json(&g.sock, "/balloon/statistics")?["guest"],
                "updated_ms",
            )
            .unwrap_or(0.0)
                > since)
        },
    )?;
    let stats = get_json(&g.sock, "/balloon/statistics")?;
    let balloon = get_json(&g.sock, "/balloon")?;
    let memory = get_json(&g.sock, "/memory")?;
    let mib = |v: f64| v / f64::from(1 << 20);
    Ok(Snapshot {
        guest_total_mib: mib(field(&stats["guest"], "total_memory")?),
        guest_free_mib: mib(field(&stats["guest"], "free_memory")?),
        host_resident_mib: field(&balloon, "guest_ram_resident_mib")?,
        balloon_mib: field(&balloon, "actual_mib")?,
        plugged_mib: field(&memory, "plugged_mib")?,
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
    let mut g = BenchGuest::boot(&vm, "demo")?;
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
    call(
        &g.sock,
        "PUT",
        "/balloon",
        &format!("{{\"target_mib\":{}}}", args.balloon_mib),
    )?;
    let target = args.balloon_mib as f64;
    g.wait_until(
        "the balloon to inflate",
        STEP_DEADLINE,
        Duration::from_millis(20),
        |g| Ok(field(&get_json(&g.sock, "/balloon")?, "actual_mib")? >= target),
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
    call(
        &g.sock,
        "PUT",
        "/memory",
        &format!("{{\"size_mib\":{}}}", vm.slot_mib),
    )?;
    g.wait_until(
        "the guest to online the memory",
        STEP_DEADLINE,
        Duration::from_millis(50),
        |g| {
            let m = get_json(&g.sock, "/memory")?;
            Ok(m["slots"][0]["ost_status"].is_number())
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
    call(&g.sock, "PUT", "/balloon", "{\"target_mib\":0}")?;
    g.wait_until(
        "the balloon to deflate",
        STEP_DEADLINE,
        Duration::from_millis(20),
        |g| Ok(field(&get_json(&g.sock, "/balloon")?, "actual_mib")? == 0.0),
    )?;
    let took = t.elapsed();
    row("balloon deflated", &snapshot(&mut g)?, Some(took));
    println!("[demo] done: the guest grew by hot-add and lent memory back to the host through its balloon");
    Ok(())
}
