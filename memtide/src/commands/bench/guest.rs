//! A guest booted by a benchmark or the demo: `memtide run` as a child
//! process with a control API socket, as test-support's [`Guest`] (the one
//! guest helper the benchmarks and the integration tests share), killed
//! when dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
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
    let (guest, _) = spawn_and_wait(args, tag, None)?;
    Ok(guest)
}

/// A console line a thread watches for; the rest of the console is read
/// and dropped (so the guest never blocks on a full pipe).
#[derive(Debug)]
pub struct ConsoleWatch {
    rx: Receiver<()>,
    seen: bool,
}

impl ConsoleWatch {
    /// Whether the line has appeared (it stays seen once it has).
    pub fn seen(&mut self) -> bool {
        self.seen = self.seen || self.rx.try_recv().is_ok();
        self.seen
    }
}

/// [`boot`], with the guest's console watched for a line containing
/// `marker` (the initramfs must be one whose init prints the `--cmd`
/// output, such as the default image).
pub fn boot_watching(
    args: &RunArgs,
    tag: &str,
    marker: &str,
) -> Result<(Guest, ConsoleWatch), GuestError> {
    let (guest, watch) = spawn_and_wait(args, tag, Some(marker))?;
    let watch = watch.ok_or_else(|| GuestError::Setup("the console was not captured".into()))?;
    Ok((guest, watch))
}

/// Spawns the guest (watching its console for `marker`, if given) and waits
/// for its balloon driver.
fn spawn_and_wait(
    args: &RunArgs,
    tag: &str,
    marker: Option<&str>,
) -> Result<(Guest, Option<ConsoleWatch>), GuestError> {
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
    let stdout = if marker.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = Command::new(exe)
        .args(super::boot::run_argv(&args))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(GuestError::Spawn)?;
    let watch = match (marker, child.stdout.take()) {
        (Some(m), Some(out)) => Some(watch_console(out, m.to_string())),
        _ => None,
    };
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
    Ok((guest, watch))
}

/// Reads `out` to its end on a thread; signals once when a line contains
/// `marker`.
fn watch_console(out: impl Read + Send + 'static, marker: String) -> ConsoleWatch {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(out);
        let mut line = Vec::new();
        let mut sent = false;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if !sent && String::from_utf8_lossy(&line).contains(&marker) {
                        sent = tx.send(()).is_ok();
                    }
                }
            }
        }
    });
    ConsoleWatch { rx, seen: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_sees_a_marker_line_once_and_keeps_it_seen() {
        let console =
            b"[ 1.0] kernel line memtide.cmd='echo x:'done''\nnoise\nx:done\nmore\n".to_vec();
        let mut w = watch_console(std::io::Cursor::new(console), "x:done".into());
        let start = Instant::now();
        while !w.seen() {
            assert!(start.elapsed() < Duration::from_secs(5), "never seen");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(w.seen(), "stays seen");
    }

    #[test]
    fn the_watch_does_not_see_an_absent_marker() {
        let mut w = watch_console(std::io::Cursor::new(b"a\nb\n".to_vec()), "x:done".into());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!w.seen());
    }
}
