//! virtio-vsock and the guest memory agent on a real guest.
//!
//! - Everywhere with KVM: the guest kernel's vsock driver brings the device
//!   up with memtide's CID, and a host client's `CONNECT` to a port nobody
//!   listens on is answered by the guest kernel with a reset (the whole
//!   host -> device -> guest kernel -> device -> host path, no user space).
//! - Where guest user space runs: the agent's reports arrive, MemTotal
//!   matches the guest, Committed_AS rises while a guest process commits
//!   memory, and a host client reaches the agent's listener (host -> guest).

#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top level of their own test binary"
)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use memtide_test_support::metrics::{sample, scrape};
use memtide_test_support::{
    boot_lock, guest_images, lean_initramfs, memtide_bin, require_kvm, Boots, Guest, BOOT_DEADLINE,
};

/// A fresh directory for one test's sockets.
fn socket_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memtide-vsock-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("socket dir");
    dir
}

/// `GET <path>` on the API socket, through `memtide ctl`.
fn ctl_json(sock: &Path, args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new(memtide_bin())
        .arg("ctl")
        .arg("--api-sock")
        .arg(sock)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Polls `memtide ctl <args>` until `done` holds or `deadline` passes.
fn poll(
    sock: &Path,
    args: &[&str],
    what: &str,
    deadline: impl Into<Duration>,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = deadline.into();
    let start = Instant::now();
    loop {
        if let Some(v) = ctl_json(sock, args) {
            if done(&v) {
                return v;
            }
            assert!(
                start.elapsed() < deadline,
                "timed out waiting for {what}; last answer: {v}"
            );
        } else {
            assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_guest_driver_brings_vsock_up_and_resets_a_connect_to_a_closed_port() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    let dir = socket_dir("driver");
    let uds = dir.join("v.sock");
    let uds_arg = uds.to_str().expect("utf-8 path");
    let g = Guest::boot(
        "vsock-driver",
        &["--vsock-uds", uds_arg, "--guest-cid", "7"],
    );
    let v = poll(
        &g.sock,
        &["vsock", "get"],
        "the vsock driver",
        BOOT_DEADLINE,
        |v| v["driver_ready"] == true,
    );
    assert_eq!(v["guest_cid"], 7, "{v}");

    // Nothing listens on guest port 4321: the guest kernel answers the
    // device's REQUEST with RST, and the device closes our client.
    let mut client = UnixStream::connect(&uds).expect("connect to the vsock socket");
    client
        .set_read_timeout(Some(Boots(4.0).into()))
        .expect("timeout");
    client.write_all(b"CONNECT 4321\n").expect("CONNECT");
    let mut answer = Vec::new();
    let n = client
        .read_to_end(&mut answer)
        .expect("the device closes the client");
    assert_eq!(
        n,
        0,
        "unexpected answer {:?}",
        String::from_utf8_lossy(&answer)
    );
    let v = poll(
        &g.sock,
        &["vsock", "get"],
        "the reset to be counted",
        Boots(1.0),
        |v| v["connections_reset"].as_u64().unwrap_or(0) >= 1,
    );
    assert!(v["tx_packets"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert!(v["rx_packets"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert_eq!(v["connections"], 0, "{v}");
    drop(g);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A guest running `cmd`, its vsock sockets in `dir`: with the lean image
/// (init, agent, hog) for a plain `memtide-hog` command, which boots
/// sooner, else with the full one (busybox too).
fn agent_guest(name: &str, dir: &Path, memory_mib: &str, cmd: &str) -> Guest {
    let initramfs = if cmd.starts_with("memtide-hog ") {
        lean_initramfs()
    } else {
        guest_images().1
    };
    let uds = dir.join("v.sock");
    Guest::start(
        name,
        &initramfs,
        &[
            "--memory-mib",
            memory_mib,
            "--vsock-uds",
            uds.to_str().expect("utf-8 path"),
            "--cmd",
            cmd,
        ],
    )
}

#[test]
fn agent_reports_arrive_match_the_guest_and_follow_committed_memory() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    // Idle for 20 s, then commit and touch 96 MiB until the test ends (a
    // timed end could come before a slow host's reports show the rise).
    let dir = socket_dir("reports");
    let g = agent_guest("reports", &dir, "384", "memtide-hog 0:20 96:line");
    let first = poll(
        &g.sock,
        &["memory", "guest"],
        "3 agent reports",
        BOOT_DEADLINE,
        |v| v["reports"].as_u64().unwrap_or(0) >= 3,
    );
    let start = Instant::now();
    let latest = &first["latest"];
    let total_mib = latest["mem_total_kib"].as_u64().expect("MemTotal") >> 10;
    assert!(
        (300..=384).contains(&total_mib),
        "MemTotal {total_mib} MiB for a 384 MiB guest: {first}"
    );
    let idle_committed = latest["committed_as_kib"].as_u64().expect("Committed_AS");
    // Reports keep coming at the agent's interval (250 ms; 1 s on the
    // nested host, where memtide asks for that): ten more within seconds,
    // not one per boot.
    let seq0 = latest["seq"].as_u64().expect("seq");
    let v = poll(
        &g.sock,
        &["memory", "guest"],
        "ten more reports",
        Boots(1.0),
        |v| v["latest"]["seq"].as_u64().unwrap_or(0) >= seq0 + 10,
    );
    assert_eq!(v["rejected"], 0, "{v}");
    let v = poll(
        &g.sock,
        &["memory", "guest"],
        "Committed_AS to rise by 80 MiB",
        Boots(4.0).plus_secs(20),
        |v| v["latest"]["committed_as_kib"].as_u64().unwrap_or(0) >= idle_committed + (80 << 10),
    );
    eprintln!(
        "Committed_AS {} -> {} KiB after {:?}",
        idle_committed,
        v["latest"]["committed_as_kib"],
        start.elapsed()
    );
    // GET /metrics carries the agent's figures and the balancer's.
    let m = scrape(&g.sock);
    assert_eq!(m.status, 200, "{}", m.body);
    let metric =
        |name: &str| sample(&m.body, name, &[]).unwrap_or_else(|| panic!("no {name}:\n{}", m.body));
    #[allow(clippy::cast_precision_loss, reason = "KiB counts far below 2^52")]
    let risen = (idle_committed + (80 << 10)) as f64 * 1024.0;
    assert!(
        metric("memtide_guest_committed_bytes") >= risen,
        "{}",
        m.body
    );
    assert!(metric("memtide_agent_reports_total") >= 13.0, "{}", m.body);
    assert_eq!(metric("memtide_agent_reports_rejected_total"), 0.0);
    assert!(metric("memtide_balancer_budget_bytes") > 0.0, "{}", m.body);
    drop(g);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_host_client_reaches_the_agent_listener_in_the_guest() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    let dir = socket_dir("host-to-guest");
    let g = agent_guest("host-to-guest", &dir, "256", "sleep 60");
    poll(
        &g.sock,
        &["memory", "guest"],
        "the first agent report",
        BOOT_DEADLINE,
        |v| v["reports"].as_u64().unwrap_or(0) >= 1,
    );
    // The agent answers every connection on its query port (agent port + 1)
    // with one report frame, then closes.
    let mut client = UnixStream::connect(dir.join("v.sock")).expect("connect");
    client
        .set_read_timeout(Some(Boots(2.0).into()))
        .expect("timeout");
    client.write_all(b"CONNECT 5101\n").expect("CONNECT");
    let mut bytes = Vec::new();
    client.read_to_end(&mut bytes).expect("read");
    let text_end = bytes.iter().position(|&b| b == b'\n').expect("OK line");
    let ok = String::from_utf8_lossy(&bytes[..text_end]).into_owned();
    assert!(ok.starts_with("OK "), "handshake answer {ok:?}");
    let frame = &bytes[text_end + 1..];
    if frame.len() < 4 {
        // Seen twice on the nested host (2026-12-02, ci30 on 2026-12-04)
        // while the agent pushed a report before it gave the listener the
        // same frame: a client that had seen the push could find the
        // listener still empty, and it closed the connection without a
        // frame. The agent now hands the frame over first. The host side's
        // counters say whether the guest sent anything at all.
        let vsock = g.get_from("vsock", "get");
        panic!(
            "no report frame after {ok:?} ({} bytes); vsock status: {vsock}",
            frame.len()
        );
    }
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(frame.len(), 4 + len, "one whole frame");
    let report = memtide_agent_proto::decode_payload(&frame[4..]).expect("a valid report");
    assert!(report.mem_total_kib > 100 << 10, "{report:?}");
    drop(g);
    let _ = std::fs::remove_dir_all(&dir);
}
