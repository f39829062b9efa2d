//! The API server against clients that misbehave: silent, one byte at a
//! time, half a body, too many at once.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memtide_api::{Client, Timeouts};
use memtide_balancer::driver::BalancerStatus;

use super::*;
use crate::api::{start_with, ApiState};

const DEADLINE: Duration = Duration::from_millis(800);

fn serve(name: &str, max_connections: usize) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "memtide-api-srv-{}-{name}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let state = ApiState::balancer_only(Arc::new(Mutex::new(BalancerStatus {
        budget_mib: 1024,
        ..BalancerStatus::default()
    })));
    let limits = ApiLimits {
        request_deadline: DEADLINE,
        write_deadline: DEADLINE,
        max_connections,
    };
    start_with(&path, state, limits).expect("server");
    path
}

/// A normal `GET /balancer`; returns how long it took.
fn normal_request(path: &PathBuf) -> Duration {
    let c = Client::new(path).with_timeouts(Timeouts::all(Duration::from_secs(10)));
    let start = Instant::now();
    let b = c.get_balancer().expect("a normal request is answered");
    assert_eq!(b.budget_mib, 1024);
    start.elapsed()
}

/// Reads the whole answer of a misbehaving client: its status line.
fn status_line(mut s: &UnixStream) -> String {
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

#[test]
fn slot_counting_stops_at_the_cap_and_frees_on_drop() {
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = Slot::try_take(&active, 2).expect("1");
    let b = Slot::try_take(&active, 2).expect("2");
    assert!(Slot::try_take(&active, 2).is_none());
    drop(a);
    let _c = Slot::try_take(&active, 2).expect("freed");
    drop(b);
    let limits = ApiLimits::default();
    assert_eq!(refusal(&HttpError::TimedOut, &limits).status, 408);
    assert_eq!(refusal(&HttpError::TooLarge, &limits).status, 413);
}

#[test]
fn misbehaving_clients_do_not_delay_a_normal_request() {
    let path = serve("slow", 16);
    let silent = UnixStream::connect(&path).expect("silent");
    let mut half = UnixStream::connect(&path).expect("half body");
    half.write_all(b"PUT /balloon HTTP/1.1\r\nContent-Length: 20\r\n\r\n{\"target")
        .expect("half");
    let dribble_path = path.clone();
    let dribbler = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&dribble_path).expect("dribbler");
        let start = Instant::now();
        // One byte every 50 ms, forever unless the server gives up: the
        // request never ends (`X-Pad` header lines).
        for b in b"GET /balancer HTTP/1.1\r\n"
            .iter()
            .chain(b"X-Pad: a".iter().cycle())
        {
            if s.write_all(&[*b]).is_err() || start.elapsed() > DEADLINE * 10 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        (start.elapsed(), status_line(&s))
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        worst = worst.max(normal_request(&path));
    }
    println!(
        "normal request with a silent, a 1-byte-per-50-ms and a half-body client open: \
         slowest of 5 took {worst:?} (request deadline {DEADLINE:?})"
    );
    assert!(worst < DEADLINE, "{worst:?}");
    let start = Instant::now();
    let silent_status = status_line(&silent);
    let half_status = status_line(&half);
    println!(
        "silent client: {silent_status:?} after {:?} more",
        start.elapsed()
    );
    assert!(silent_status.contains("408"), "{silent_status}");
    assert!(half_status.contains("408"), "{half_status}");
    let (dribbled, dribble_status) = dribbler.join().expect("dribbler");
    println!("1-byte client dropped after {dribbled:?}: {dribble_status:?}");
    assert!(dribbled < DEADLINE * 3, "{dribbled:?}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn connections_over_the_cap_get_503_and_the_server_survives_200_clients() {
    let path = serve("cap", 4);
    let silent: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&path).expect("silent"))
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let c = Client::new(&path).with_timeouts(Timeouts::all(Duration::from_secs(5)));
    let start = Instant::now();
    let e = c.get_balancer().expect_err("over the cap");
    println!("over the cap: {e} after {:?}", start.elapsed());
    // 503, or a reset if the server closed before the request was sent.
    assert!(e.status() == Some(503) || !e.is_timeout(), "{e}");
    drop(silent);
    std::thread::sleep(Duration::from_millis(50));
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || c.get_balancer().map_err(|e| e.status()))
        })
        .collect();
    let (mut ok, mut busy) = (0, 0);
    for h in clients {
        match h.join().expect("client") {
            Ok(_) => ok += 1,
            Err(_) => busy += 1,
        }
    }
    println!("200 concurrent clients: {ok} answered, {busy} refused (cap 4)");
    assert!(ok > 0);
    assert!(normal_request(&path) < DEADLINE, "the server still answers");
    let _ = std::fs::remove_file(&path);
}
