//! Helpers shared by memtide's integration tests: finding the binary and
//! the guest images, booting a guest with a deadline, and serializing boots
//! (the CI host has two cores; one guest at a time keeps timings sane).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static BOOT_LOCK: Mutex<()> = Mutex::new(());

/// Serializes guest boots within one test binary.
pub fn boot_lock() -> MutexGuard<'static, ()> {
    BOOT_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether /dev/kvm exists; tests that boot guests skip (loudly) without it.
pub fn kvm_available() -> bool {
    if std::path::Path::new("/dev/kvm").exists() {
        return true;
    }
    eprintln!("\n!!! SKIPPING: /dev/kvm is absent on this host; no guest was booted !!!\n");
    false
}

/// The kernel's line when it hands over to the initramfs' /init.
pub const KERNEL_RUNS_INIT: &str = "Run /init as init process";

/// The memory the guest kernel reports in its `Memory: avail/total` line, in KiB.
pub fn kernel_memory_line_kib(console: &str) -> Option<(u64, u64)> {
    let line = console.lines().find(|l| l.contains("] Memory: "))?;
    let rest = line.split("] Memory: ").nth(1)?;
    let (avail, rest) = rest.split_once("K/")?;
    let total = rest.split('K').next()?;
    Some((avail.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// The `memtide` binary: `$MEMTIDE_BIN`, else next to this test's target dir.
pub fn memtide_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MEMTIDE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/memtide
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile> directory");
    let bin = profile_dir.join("memtide");
    assert!(
        bin.exists(),
        "memtide binary not found at {}; build it first (cargo build -p memtide, same profile) \
         or set MEMTIDE_BIN",
        bin.display()
    );
    bin
}

/// The image cache directory, as memtide computes it.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("MEMTIDE_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/memtide"),
    }
}

/// Asserts that the guest images exist and returns (kernel, initramfs).
pub fn guest_images() -> (PathBuf, PathBuf) {
    let dir = cache_dir();
    let kernel = dir.join("vmlinux");
    let initramfs = dir.join("initramfs.cpio");
    for p in [&kernel, &initramfs] {
        assert!(
            p.exists(),
            "{} is missing: run `cargo xtask images` first",
            p.display()
        );
    }
    (kernel, initramfs)
}

/// What a finished `memtide` process printed and how it ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything on stdout (the guest console).
    pub stdout: String,
    /// Everything on stderr (memtide's messages).
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs `memtide` with `args`, killing it after `deadline`.
pub fn run_memtide(args: &[&str], deadline: Duration) -> Finished {
    let start = Instant::now();
    let mut child = Command::new(memtide_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn memtide");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let status = child.wait().expect("wait after kill");
            let stdout = out_reader.join().unwrap_or_default();
            panic!(
                "memtide {args:?} did not finish within {deadline:?} ({status}); console so far:\n{stdout}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Finished {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// Deadline for one guest boot on the slow nested CI host.
pub const BOOT_DEADLINE: Duration = Duration::from_secs(180);

/// A guest booted with the idle init, a balloon and an API socket; killed
/// when dropped.
pub struct Guest {
    child: Child,
    /// Its API socket.
    pub sock: PathBuf,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

impl Guest {
    /// Starts `memtide run` with `initramfs`, an API socket and `extra`
    /// options, without waiting for anything.
    pub fn start(name: &str, initramfs: &Path, extra: &[&str]) -> Guest {
        let (kernel, _) = guest_images();
        let sock =
            std::env::temp_dir().join(format!("memtide-test-{}-{name}.sock", std::process::id()));
        let child = Command::new(memtide_bin())
            .arg("run")
            .arg("--kernel")
            .arg(&kernel)
            .arg("--initramfs")
            .arg(initramfs)
            .arg("--api-sock")
            .arg(&sock)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn memtide");
        Guest { child, sock }
    }

    /// Boots the idle init with a balloon and `extra` options, and waits
    /// for the balloon driver.
    pub fn boot(name: &str, extra: &[&str]) -> Guest {
        let idle = cache_dir().join("initramfs-idle.cpio");
        assert!(
            idle.exists(),
            "{} missing: run `cargo xtask images`",
            idle.display()
        );
        let mut args = vec!["--balloon"];
        args.extend_from_slice(extra);
        let mut g = Guest::start(name, &idle, &args);
        g.wait_for("the balloon driver", BOOT_DEADLINE, |v| {
            v["driver_ready"] == true
        });
        g
    }

    /// Runs `memtide ctl` against this guest: (success, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(memtide_bin())
            .arg("ctl")
            .arg("--api-sock")
            .arg(&self.sock)
            .args(args)
            .output()
            .expect("memtide ctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `memtide ctl <area> <what>` as JSON.
    pub fn get_from(&self, area: &str, what: &str) -> serde_json::Value {
        let (ok, out, err) = self.ctl(&[area, what]);
        assert!(ok, "ctl {area} {what} failed: {err}");
        serde_json::from_str(&out).expect("JSON from the API")
    }

    /// `memtide ctl balloon <what>` as JSON.
    pub fn get(&self, what: &str) -> serde_json::Value {
        self.get_from("balloon", what)
    }

    /// Polls `GET /balloon` until `done` holds.
    pub fn wait_for(
        &mut self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("memtide exited ({status}) while waiting for {what}");
            }
            if self.sock.exists() {
                let (ok, out, _) = self.ctl(&["balloon", "get"]);
                if ok {
                    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
                    if done(&v) {
                        return v;
                    }
                }
            }
            assert!(start.elapsed() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The guest's free memory from a fresh balloon statistics report.
    pub fn guest_free_mib(&mut self) -> f64 {
        // Statistics arrive every 500 ms; wait for a report newer than now.
        let start = Instant::now();
        let first = self.get("stats")["guest"]["updated_ms"]
            .as_u64()
            .unwrap_or(0);
        loop {
            let s = self.get("stats");
            let updated = s["guest"]["updated_ms"].as_u64().unwrap_or(0);
            if updated > first {
                return s["guest"]["free_memory"].as_f64().expect("free_memory") / (1 << 20) as f64;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no fresh balloon statistics"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
