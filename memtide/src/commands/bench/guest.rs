//! A guest booted by a benchmark or the demo: `memtide run` as a child
//! process with a control API socket, as test-support's [`Guest`] (the one
//! guest helper the benchmarks and the integration tests share), killed
//! when dropped.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use memtide_test_support::{Guest, GuestError};

use crate::cli::RunArgs;
use memtide_vmm::config::cache_dir;

/// How long a guest may take to bring its balloon driver up.
const DRIVER_DEADLINE: Duration = Duration::from_secs(300);

/// Boots `args` (plus a balloon and an API socket; the idle initramfs
/// unless one is given) as a child of this `memtide`, and waits for the
/// balloon driver.
pub fn boot(args: &RunArgs, tag: &str) -> Result<Guest, GuestError> {
    let mut args = args.clone();
    let sock =
        std::env::temp_dir().join(format!("memtide-bench-{}-{tag}.sock", std::process::id()));
    args.balloon = true;
    args.api_sock = Some(sock.clone());
    if args.initramfs.is_none() && !args.no_initramfs {
        let cache = cache_dir().map_err(|e| GuestError::Setup(e.to_string()))?;
        args.initramfs = Some(cache.join("initramfs-idle.cpio"));
    }
    let exe = std::env::current_exe().map_err(GuestError::Spawn)?;
    let child = Command::new(exe)
        .args(super::boot::run_argv(&args))
        // A pipe: the demo types on the guest console (Guest::type_line).
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(GuestError::Spawn)?;
    let mut guest = Guest::from_child(child, sock);
    let start = Instant::now();
    guest.wait_until(
        "the balloon driver",
        DRIVER_DEADLINE,
        Duration::from_millis(200),
        |g| Ok(g.api().get_balloon().is_ok_and(|b| b.driver_ready)),
    )?;
    println!(
        "  guest up, balloon driver ready after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(guest)
}
