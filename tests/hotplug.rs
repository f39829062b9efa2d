//! Memory hot-add on a real guest: ACPI memory devices, the GED
//! notification, the guest onlining the memory, refusals that change
//! nothing, and the balloon inflating into hot-added memory.
//!
//! The guests run `memtide-idle` (no user space needed): the guest's memory
//! size is read from its balloon statistics, which the kernel fills in.

#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top level of their own test binary"
)]

use std::time::{Duration, Instant};

use memtide_test_support::{boot_lock, require_kvm, Boots, Guest};

#[test]
fn hot_added_slots_come_online_and_the_balloon_can_use_them() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    let mut g = Guest::boot(
        "hotplug",
        &[
            "--memory-mib",
            "128",
            "--hotplug-slots",
            "2",
            "--balloon-stats-ms",
            "500",
        ],
    );
    let before = g.guest_total_mib();
    let mem = g.get_from("memory", "get");
    assert_eq!(mem["plugged_mib"], 128);
    assert_eq!(mem["max_mib"], 384);

    // Refusals change nothing.
    for (size, why) in [("100", "multiple"), ("384", "exceed"), ("0", "multiple")] {
        let (ok, _, err) = g.ctl(&["memory", "add", size]);
        assert!(
            !ok && err.contains("400") && err.contains(why),
            "add {size}: {err}"
        );
    }
    assert_eq!(g.get_from("memory", "get")["plugged_mib"], 128);

    let (ok, _, err) = g.ctl(&["memory", "add", "256"]);
    assert!(ok, "{err}");
    let deadline = Duration::from(Boots(6.0));
    let start = Instant::now();
    loop {
        let m = g.get_from("memory", "get");
        let online = m["slots"]
            .as_array()
            .expect("slots")
            .iter()
            .all(|s| s["present"] == true && s["ost_status"] == 0);
        if online {
            break;
        }
        assert!(
            start.elapsed() < deadline,
            "slots never reported online: {m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = g.guest_total_mib();
    assert!(
        after - before >= 250.0,
        "guest MemTotal {before:.0} -> {after:.0} MiB"
    );
    let (ok, _, err) = g.ctl(&["memory", "add", "128"]);
    assert!(
        !ok && err.contains("exceed"),
        "the maximum is reached: {err}"
    );
    assert_eq!(g.get_from("memory", "get")["plugged_mib"], 384);

    // The boot memory has ~90 MiB free; 150 MiB can only come from the new slots.
    let (ok, _, err) = g.ctl(&["balloon", "set", "150"]);
    assert!(ok, "{err}");
    g.wait_for("inflation into hot-added memory", Boots(10.0), |v| {
        v["actual_mib"] == 150
    });
    let host = &g.get("stats")["host"];
    assert_eq!(
        host["pfns_out_of_range"], 0,
        "the balloon did not see the hot-added memory: {host}"
    );
    assert_eq!(host["discard_errors"], 0);
}
