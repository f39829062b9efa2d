//! Two real guests under one budget with `memtide balance`.
//!
//! Guest A's demand steps up, the balancer grows A (hot-add) and takes
//! memory from idle guest B (B's balloon inflates in B's kernel); then A's
//! demand falls and B's rises, and memory flows back to B. The invariants
//! of the policy's simulator are asserted on the recorded trace, and the
//! guests' own devices are checked to have followed the decisions.
//!
//! The demand comes from memtide's scripted report source on the host
//! (`memtide::scripted_agent`), which writes the guest agent's wire format
//! into each VM's report socket (`<uds>_5100`), with MemTotal taken from
//! what the VM's API says the guest has: exact demand makes every step of
//! the scenario certain. Everything after the report socket (reader,
//! policy, driver, control API, balloon and hot-add in the guest kernel) is
//! the real path; `tests/demo.rs` runs the same loop with the real agent
//! and a workload in each guest, and `tests/vsock_agent.rs` covers the
//! agent itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memtide::bench::guest::get_json;
use memtide::scripted_agent::ScriptedAgent;
use memtide_balancer::invariants::{check_no_hot_remove, check_no_oscillation, check_safety};
use memtide_balancer::trace::Trace;
use memtide_tests::{boot_lock, kvm_available, memtide_bin, Guest};

/// `GET path` on a memtide API socket, as JSON.
fn api_get(sock: &Path, path: &str) -> Option<serde_json::Value> {
    get_json(sock, path).ok()
}

/// Waits until `done` holds for the balancer's status, or panics.
fn wait_status(
    api: &Path,
    what: &str,
    deadline: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) {
    let start = Instant::now();
    loop {
        if let Some(v) = api_get(api, "/balancer") {
            if done(&v) {
                eprintln!("[{:>5.1} s] {what}: {v}", start.elapsed().as_secs_f64());
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "timed out waiting for {what}: {v}"
            );
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until the guest's balloon has reached its target.
fn wait_balloon(api: &Path, deadline: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(v) = api_get(api, "/balloon") {
            if v["actual_mib"] == v["target_mib"] {
                return v;
            }
            assert!(
                start.elapsed() < deadline,
                "balloon never reached its target: {v}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn assigned(v: &serde_json::Value, vm: usize) -> u64 {
    v["vms"][vm]["assigned_mib"].as_u64().unwrap_or(0)
}

#[test]
fn memory_flows_to_the_busy_guest_and_back_under_one_budget() {
    if !kvm_available() {
        return;
    }
    let _guard = boot_lock();
    let dir = std::env::temp_dir().join(format!("memtide-balance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let boot = |name: &str| {
        let uds = dir.join(format!("{name}.vsock"));
        let g = Guest::boot(
            &format!("balance-{name}"),
            &[
                "--memory-mib",
                "256",
                "--hotplug-slots",
                "1",
                "--vsock-uds",
                uds.to_str().expect("utf-8"),
                "--no-balancer",
            ],
        );
        let mut report_sock = uds.into_os_string();
        report_sock.push("_5100");
        (g, PathBuf::from(report_sock))
    };
    let (a, a_reports) = boot("a");
    let (b, b_reports) = boot("b");

    let a_agent = ScriptedAgent::spawn(a.sock.clone(), a_reports, 100);
    let b_agent = ScriptedAgent::spawn(b.sock.clone(), b_reports, 100);

    // Budget 576 MiB for two 256 MiB guests that may each grow to 384.
    let trace_path = dir.join("trace.json");
    let balance_api = dir.join("balance.sock");
    let mut balancer = Command::new(memtide_bin())
        .arg("balance")
        .args(["--budget-mib", "576", "--interval-ms", "250"])
        .arg("--vm")
        .arg(format!("{},name=a", a.sock.display()))
        .arg("--vm")
        .arg(format!("{},name=b", b.sock.display()))
        .arg("--trace")
        .arg(&trace_path)
        .arg("--api-sock")
        .arg(&balance_api)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("memtide balance");

    // Idle: both under their startup memory; the budget is not short, so
    // nobody is shrunk (memory is only taken when the budget is short).
    wait_status(&balance_api, "idle reports", Duration::from_secs(60), |v| {
        v["ticks"].as_u64().unwrap_or(0) > 8
    });
    // A commits 300 MiB: target 360, more than the 64 MiB of headroom, so
    // B is ballooned and A hot-adds a slot.
    a_agent.set(300);
    wait_status(
        &balance_api,
        "A grown to its demand",
        Duration::from_secs(120),
        |v| assigned(v, 0) >= 352 && assigned(v, 0) + assigned(v, 1) <= 576,
    );
    let a_mem = api_get(&a.sock, "/memory").expect("A memory");
    assert_eq!(
        a_mem["plugged_mib"], 384,
        "A's slot is plugged in the guest: {a_mem}"
    );
    let b_balloon = wait_balloon(&b.sock, Duration::from_secs(300));
    assert!(
        b_balloon["actual_mib"].as_u64().unwrap_or(0) >= 32,
        "B gave memory up in its kernel: {b_balloon}"
    );

    // A's workload ends and B's demand rises: memory flows back to B.
    a_agent.set(100);
    b_agent.set(230);
    wait_status(
        &balance_api,
        "B back to its demand",
        Duration::from_secs(180),
        |v| assigned(v, 1) >= 268 && assigned(v, 0) + assigned(v, 1) <= 576,
    );
    wait_balloon(&a.sock, Duration::from_secs(300));
    wait_balloon(&b.sock, Duration::from_secs(300));

    drop((a_agent, b_agent));
    // With both VMs gone, `memtide balance` writes the whole trace and ends.
    drop((a, b));
    let end = Instant::now();
    let status = loop {
        if let Some(status) = balancer.try_wait().expect("wait") {
            break status;
        }
        if end.elapsed() > Duration::from_secs(30) {
            let _ = balancer.kill();
            panic!("memtide balance did not end when its VMs did");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "memtide balance: {status}");
    let text = std::fs::read_to_string(&trace_path).expect("trace written");
    let trace = Trace::from_json(&text).expect("a valid trace");
    assert!(trace.ticks.len() > 20, "{} ticks", trace.ticks.len());
    check_safety(&trace.vms, trace.budget_mib, &trace.ticks).expect("safety invariants");
    check_no_hot_remove(&trace.ticks).expect("no hot-remove");
    check_no_oscillation(&trace.ticks, 0, 4).expect("no oscillation");

    // The recorded run draws as an SVG timeline.
    let svg_path = dir.join("trace.svg");
    let out = Command::new(memtide_bin())
        .arg("plot")
        .arg("--trace")
        .arg(&trace_path)
        .arg("--out")
        .arg(&svg_path)
        .output()
        .expect("memtide plot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&svg_path).expect("SVG written");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg:.200}"
    );
    assert_eq!(svg.matches("<svg").count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
