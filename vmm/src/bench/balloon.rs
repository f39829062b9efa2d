//! `memtide bench balloon`: inflate and deflate latency and throughput.
//!
//! Boots one guest per host discard mode (merged ranges, then one
//! `madvise` per 4 KiB page), inflates the balloon by `--mib` and deflates
//! it again for `--rounds` rounds through the control API, and prints
//! medians, MiB/s, host RSS of guest RAM, and the ratio between the modes.
//! The guest runs `memtide-idle` as init: inflation is the guest kernel's
//! work, no user space is needed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::stats::median;
use crate::cli::{BalloonBenchArgs, DiscardArg, RunArgs};
use crate::config::cache_dir;
use crate::ctl::{call, CtlError};
use crate::host::HostInfo;

/// How long a guest may take to bring its balloon driver up.
const DRIVER_DEADLINE: Duration = Duration::from_secs(300);
/// How long one inflate or deflate may take.
const STEP_DEADLINE: Duration = Duration::from_secs(300);

/// Errors from the balloon benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BalloonBenchError {
    /// `memtide run` could not start.
    #[error("cannot start `memtide run`: {0}")]
    Spawn(std::io::Error),
    /// The API did not answer as expected.
    #[error(transparent)]
    Api(#[from] CtlError),
    /// An answer that is not the JSON expected.
    #[error("unexpected API answer: {0}")]
    BadAnswer(String),
    /// Something took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The guest stopped during the benchmark.
    #[error("the guest stopped during the benchmark ({0})")]
    GuestGone(std::process::ExitStatus),
    /// No image cache.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// One inflate + deflate round.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// Seconds until `actual` reached the target.
    pub inflate_s: f64,
    /// Seconds until `actual` was back at 0.
    pub deflate_s: f64,
    /// Guest RAM resident on the host before inflating, MiB.
    pub rss_before_mib: f64,
    /// ... after inflating, MiB.
    pub rss_inflated_mib: f64,
}

struct Guest {
    child: Child,
    sock: PathBuf,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

fn get_json(sock: &Path, path: &str) -> Result<serde_json::Value, BalloonBenchError> {
    let body = call(sock, "GET", path, "")?;
    serde_json::from_str(&body).map_err(|_| BalloonBenchError::BadAnswer(body))
}

fn field(v: &serde_json::Value, name: &str) -> Result<f64, BalloonBenchError> {
    v[name]
        .as_f64()
        .ok_or_else(|| BalloonBenchError::BadAnswer(format!("no {name} in {v}")))
}

fn boot(vm: &RunArgs, mode: DiscardArg, tag: &str) -> Result<Guest, BalloonBenchError> {
    let mut args = vm.clone();
    let sock =
        std::env::temp_dir().join(format!("memtide-bench-{}-{tag}.sock", std::process::id()));
    args.balloon = true;
    args.balloon_discard = mode;
    args.balloon_stats_ms = 0;
    args.prefault = true;
    args.api_sock = Some(sock.clone());
    if args.initramfs.is_none() && !args.no_initramfs {
        args.initramfs = Some(cache_dir()?.join("initramfs-idle.cpio"));
    }
    let exe = std::env::current_exe().map_err(BalloonBenchError::Spawn)?;
    let child = Command::new(exe)
        .args(super::boot::run_argv(&args))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(BalloonBenchError::Spawn)?;
    let mut guest = Guest { child, sock };
    let start = Instant::now();
    loop {
        if let Some(status) = guest.child.try_wait().map_err(BalloonBenchError::Spawn)? {
            return Err(BalloonBenchError::GuestGone(status));
        }
        if let Ok(v) = get_json(&guest.sock, "/balloon") {
            if v["driver_ready"] == serde_json::Value::Bool(true) {
                println!(
                    "  guest up, balloon driver ready after {:.1} s",
                    start.elapsed().as_secs_f64()
                );
                return Ok(guest);
            }
        }
        if start.elapsed() > DRIVER_DEADLINE {
            return Err(BalloonBenchError::Timeout("the balloon driver"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sets the target and waits until the guest's `actual` equals it.
fn resize(guest: &mut Guest, mib: u64) -> Result<f64, BalloonBenchError> {
    let start = Instant::now();
    call(
        &guest.sock,
        "PUT",
        "/balloon",
        &format!("{{\"target_mib\":{mib}}}"),
    )?;
    loop {
        let v = get_json(&guest.sock, "/balloon")?;
        if field(&v, "actual_mib")? as u64 == mib {
            return Ok(start.elapsed().as_secs_f64());
        }
        if let Some(status) = guest.child.try_wait().map_err(BalloonBenchError::Spawn)? {
            return Err(BalloonBenchError::GuestGone(status));
        }
        if start.elapsed() > STEP_DEADLINE {
            return Err(BalloonBenchError::Timeout(
                "the balloon to reach its target",
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Boots a guest with `mode` and measures `rounds` rounds.
pub fn measure(
    args: &BalloonBenchArgs,
    mode: DiscardArg,
) -> Result<(Vec<Round>, f64), BalloonBenchError> {
    let tag = if mode == DiscardArg::Ranges {
        "ranges"
    } else {
        "pages"
    };
    let mut guest = boot(&args.vm, mode, tag)?;
    let mut rounds = Vec::new();
    let mut discard_ns = 0.0;
    for r in 1..=args.rounds {
        let before = field(
            &get_json(&guest.sock, "/balloon")?,
            "guest_ram_resident_mib",
        )?;
        let ns0 = field(
            &get_json(&guest.sock, "/balloon/statistics")?["host"],
            "discard_ns",
        )?;
        let inflate_s = resize(&mut guest, args.mib)?;
        let ns1 = field(
            &get_json(&guest.sock, "/balloon/statistics")?["host"],
            "discard_ns",
        )?;
        discard_ns += ns1 - ns0;
        let inflated = field(
            &get_json(&guest.sock, "/balloon")?,
            "guest_ram_resident_mib",
        )?;
        let deflate_s = resize(&mut guest, 0)?;
        println!(
            "  {tag} round {r}: inflate {:.1} ms, deflate {:.1} ms, resident {before:.0} -> {inflated:.0} MiB",
            inflate_s * 1e3,
            deflate_s * 1e3
        );
        rounds.push(Round {
            inflate_s,
            deflate_s,
            rss_before_mib: before,
            rss_inflated_mib: inflated,
        });
    }
    Ok((rounds, discard_ns / f64::from(args.rounds.max(1))))
}

/// Runs the benchmark and prints its report.
pub fn run(args: &BalloonBenchArgs) -> Result<(), BalloonBenchError> {
    println!(
        "memtide bench balloon: {} MiB x {} rounds per mode, guest {} MiB, {} vCPU",
        args.mib, args.rounds, args.vm.memory_mib, args.vm.vcpus
    );
    println!("host: {}", HostInfo::detect());
    let (ranges, ranges_ns) = measure(args, DiscardArg::Ranges)?;
    let (pages, pages_ns) = measure(args, DiscardArg::PerPage)?;
    let mib = args.mib as f64;
    let summary = |name: &str, rounds: &[Round], ns: f64| {
        let inflate =
            median(&rounds.iter().map(|r| r.inflate_s).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        let deflate =
            median(&rounds.iter().map(|r| r.deflate_s).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        let before = median(&rounds.iter().map(|r| r.rss_before_mib).collect::<Vec<_>>())
            .unwrap_or(f64::NAN);
        let after = median(
            &rounds
                .iter()
                .map(|r| r.rss_inflated_mib)
                .collect::<Vec<_>>(),
        )
        .unwrap_or(f64::NAN);
        println!(
            "| {name} | {:.1} ms ({:.0} MiB/s) | {:.1} ms ({:.0} MiB/s) | {:.2} ms | {before:.0} -> {after:.0} MiB |",
            inflate * 1e3,
            mib / inflate,
            deflate * 1e3,
            mib / deflate,
            ns / 1e6,
        );
        inflate
    };
    println!("| host path | inflate (median) | deflate (median) | host madvise time per inflate | guest RAM resident before -> after 1st inflate |");
    println!("|---|---|---|---|---|");
    let a = summary("merged ranges", &ranges, ranges_ns);
    let b = summary("one madvise per 4 KiB", &pages, pages_ns);
    println!(
        "ratio per-page / ranges: inflate wall time {:.2}x, host madvise time {:.1}x",
        b / a,
        pages_ns / ranges_ns
    );
    Ok(())
}
