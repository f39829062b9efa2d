//! `memtide run`'s sandbox on a real guest: every thread of a running VM
//! holds no capability, has `no_new_privs` and runs under the seccomp
//! filter, and the guest still works (the balloon inflates and deflates);
//! `--no-sandbox` turns both off. (Every other integration test also runs
//! its VMs under the filter.)

#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top level of their own test binary"
)]

use memtide_test_support::{boot_lock, require_kvm, Guest, BOOT_DEADLINE};

/// One thread's sandbox fields from `/proc/PID/task/TID/status`.
#[derive(Debug, PartialEq, Eq)]
struct ThreadSandbox {
    name: String,
    seccomp: String,
    no_new_privs: String,
    cap_eff: String,
    cap_prm: String,
}

/// Every thread of process `pid`.
fn threads(pid: u32) -> Vec<ThreadSandbox> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.expect("task entry").path().join("status");
        let Ok(status) = std::fs::read_to_string(&path) else {
            continue; // the thread ended
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in {}", path.display()))
        };
        out.push(ThreadSandbox {
            name: field("Name:"),
            seccomp: field("Seccomp:"),
            no_new_privs: field("NoNewPrivs:"),
            cap_eff: field("CapEff:"),
            cap_prm: field("CapPrm:"),
        });
    }
    out
}

#[test]
fn every_thread_of_a_running_vm_is_filtered_and_holds_no_capability() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    let mut g = Guest::boot("sandbox", &["--balloon-stats-ms", "500"]);
    let (ok, _, err) = g.ctl(&["balloon", "set", "32"]);
    assert!(ok, "{err}");
    g.wait_for("32 MiB inflated", BOOT_DEADLINE, |v| v["actual_mib"] == 32);
    let (ok, _, err) = g.ctl(&["balloon", "set", "0"]);
    assert!(ok, "{err}");
    g.wait_for("the balloon deflated", BOOT_DEADLINE, |v| {
        v["actual_mib"] == 0
    });

    let threads = threads(g.pid());
    let names: Vec<&str> = threads.iter().map(|t| t.name.as_str()).collect();
    assert!(
        names.iter().any(|n| n.starts_with("vcpu")) && threads.len() >= 3,
        "threads: {names:?}"
    );
    let zero = "0000000000000000";
    for t in &threads {
        assert_eq!(
            (
                t.seccomp.as_str(),
                t.no_new_privs.as_str(),
                t.cap_eff.as_str(),
                t.cap_prm.as_str()
            ),
            ("2", "1", zero, zero),
            "thread {t:?}"
        );
    }
}

#[test]
fn no_sandbox_leaves_threads_unfiltered() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    let g = Guest::boot("no-sandbox", &["--no-sandbox"]);
    for t in threads(g.pid()) {
        assert_eq!(t.seccomp, "0", "thread {t:?}");
    }
}
