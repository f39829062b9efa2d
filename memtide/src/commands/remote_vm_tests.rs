//! `memtide balance` with one VM whose API never answers.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use memtide_api::Timeouts;
use memtide_balancer::driver::Driver;
use memtide_balancer::{PolicyConfig, VmSettings};

use super::*;

fn sock(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("memtide-rvm-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Answers every request with an agent report that moves on (a new
/// uptime each time).
fn healthy_vm(path: &PathBuf) {
    let listener = UnixListener::bind(path).expect("bind");
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(stream) = conn else { return };
            answer(&stream, n as u64);
        }
    });
}

fn answer(stream: &UnixStream, n: u64) {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    while r.read_line(&mut line).is_ok_and(|k| k > 0) && line != "\r\n" {
        line.clear();
    }
    let body = serde_json::json!({"latest": {
        "seq": n, "mem_total_kib": 262144, "mem_free_kib": 0, "mem_available_kib": 131072,
        "committed_as_kib": 204800, "commit_limit_kib": 0, "swap_total_kib": 0,
        "swap_free_kib": 0, "uptime_ms": 1000 + n, "age_ms": 10, "pressure_pct": 78,
        "psi": null
    }, "reports": n, "rejected": 0, "connections": 1, "last_error": null})
    .to_string();
    let mut w = stream;
    let _ = write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

#[test]
fn a_stuck_vm_is_marked_and_the_others_keep_being_balanced() {
    let (ok_path, stuck_path) = (sock("ok"), sock("stuck"));
    healthy_vm(&ok_path);
    // The kernel takes the connections; nobody ever reads or answers.
    let stuck = UnixListener::bind(&stuck_path).expect("bind");
    let limit = Duration::from_millis(300);
    let port = |p: &PathBuf| {
        let c = Client::new(p).with_timeouts(Timeouts::all(limit));
        Box::new(RemoteVm::start(c, Duration::from_millis(50), false).expect("poller"))
            as Box<dyn VmPort>
    };
    let settings = |name: &str| VmSettings::new(name, 256, 128, 256);
    let mut driver = Driver::new(
        PolicyConfig::default(),
        vec![
            (settings("stuck"), port(&stuck_path)),
            (settings("ok"), port(&ok_path)),
        ],
        1024,
    )
    .expect("driver");
    let status = driver.status();
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut now = 0;
    while start.elapsed() < limit * 3 {
        let t = Instant::now();
        driver.tick_at(now);
        slowest = slowest.max(t.elapsed());
        now += 50;
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = memtide_balancer::driver::lock(&status).clone();
    println!(
        "slowest tick with one stuck VM: {slowest:?} (API limit {limit:?}); stuck VM: {:?}",
        s.vms[0].last_error
    );
    assert!(
        slowest < limit / 3,
        "ticks never wait on a socket: {slowest:?}"
    );
    let why = s.vms[0].last_error.clone().unwrap_or_default();
    assert!(why.starts_with("API timed out"), "{why}");
    assert_eq!(s.vms[1].last_error, None);
    assert_eq!(
        s.vms[1].committed_mib,
        Some(200),
        "the healthy VM is balanced"
    );
    drop(stuck);
    let _ = std::fs::remove_file(&ok_path);
    let _ = std::fs::remove_file(&stuck_path);
}

#[test]
fn stall_counters_come_from_the_balloon_statistics_when_the_guest_sends_them() {
    let with = |guest: serde_json::Value| -> memtide_api::BalloonStatistics {
        serde_json::from_value(serde_json::json!({
            "guest": guest,
            "host": {"inflate_requests": 0, "deflate_requests": 0, "pfns_out_of_range": 0,
                "pfns_duplicate": 0, "malformed_descriptors": 0, "discard_calls": 0,
                "discard_errors": 0, "discard_ns": 0, "reported_pages": 0}
        }))
        .expect("statistics")
    };
    let base = serde_json::json!({"total_memory": 1, "free_memory": 1, "available_memory": 1,
        "disk_caches": 1, "swap_in": null, "swap_out": null, "major_faults": null,
        "minor_faults": null, "updated_ms": 5});
    assert_eq!(
        stalls_from_api(&with(base.clone())),
        None,
        "an older guest kernel"
    );
    assert_eq!(stalls_from_api(&with(serde_json::Value::Null)), None);
    let mut counters = base;
    counters["oom_kills"] = 1.into();
    counters["alloc_stalls"] = 42.into();
    assert_eq!(
        stalls_from_api(&with(counters)),
        Some(StallCounters {
            oom_kills: 1,
            alloc_stalls: 42
        })
    );
}
