//! memtide-test-support: what memtide's integration tests and benchmarks
//! share. The [`Guest`] helper (a `memtide run` child with an API socket),
//! the [`scripted_agent`] report source, and the integration tests'
//! helpers: finding the binary and
//! the guest images, requiring KVM, booting a guest with a deadline that
//! scales with this host's speed, keeping guest consoles for failure
//! analysis, and serializing boots (the CI host has two cores; one guest at
//! a time keeps timings sane).
//!
//! Environment:
//!
//! - `MEMTIDE_SKIP_KVM_TESTS=1`: on a host without `/dev/kvm`, the tests
//!   that boot guests return early (loudly) instead of failing.
//! - `MEMTIDE_TEST_CONSOLE_DIR=<dir>`: every memtide process a test starts
//!   for a guest writes its console (stdout) and its stderr into files in
//!   `<dir>` ([`spawn_memtide`]), so CI can keep them when a test fails.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use memtide_api::{Client, ClientError};

pub mod metrics;
mod parent_death;
pub mod scripted_agent;

static BOOT_LOCK: Mutex<()> = Mutex::new(());

/// Serializes guest boots within one test binary.
pub fn boot_lock() -> MutexGuard<'static, ()> {
    BOOT_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The variable that lets guest-booting tests skip on a host without KVM.
pub const SKIP_KVM_VAR: &str = "MEMTIDE_SKIP_KVM_TESTS";

/// What a guest-booting test does about KVM on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmDecision {
    /// `/dev/kvm` is there: boot the guest.
    Run,
    /// No `/dev/kvm`, and `MEMTIDE_SKIP_KVM_TESTS=1` allows skipping.
    Skip,
    /// No `/dev/kvm` and no permission to skip: the test fails.
    Fail,
}

/// The decision for a host where `/dev/kvm` is present or not and
/// [`SKIP_KVM_VAR`] has the value `skip`. Only the value `1` skips, and only
/// when KVM is absent: with KVM the tests always run.
pub fn kvm_decision(kvm_present: bool, skip: Option<&OsStr>) -> KvmDecision {
    match (kvm_present, skip) {
        (true, _) => KvmDecision::Run,
        (false, Some(v)) if v == "1" => KvmDecision::Skip,
        (false, _) => KvmDecision::Fail,
    }
}

/// Whether this host's `/dev/kvm` is the nested `kvm_pvm` one (as memtide
/// detects it: `/sys/module/kvm_pvm` exists), where memtide's nested-host
/// assists and refusals apply.
pub fn on_nested_pvm_host() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// Called first by every test that boots a guest: true when `/dev/kvm`
/// exists; false (with a loud message) when it does not and
/// `MEMTIDE_SKIP_KVM_TESTS=1` is set; otherwise panics, so that a host
/// without KVM never passes a test that booted nothing.
pub fn require_kvm() -> bool {
    require_kvm_at(
        Path::new("/dev/kvm"),
        std::env::var_os(SKIP_KVM_VAR).as_deref(),
    )
}

/// [`require_kvm`] for the device node `dev` (other paths only in unit tests).
fn require_kvm_at(dev: &Path, skip: Option<&OsStr>) -> bool {
    match kvm_decision(dev.exists(), skip) {
        KvmDecision::Run => true,
        KvmDecision::Skip => {
            eprintln!(
                "\n!!! SKIPPING: {} is absent on this host and {SKIP_KVM_VAR}=1; \
                 no guest was booted !!!\n",
                dev.display()
            );
            false
        }
        KvmDecision::Fail => panic!(
            "{} is absent: this test boots a guest and cannot run on this host. \
             Set {SKIP_KVM_VAR}=1 to skip the guest-booting tests here{}",
            dev.display(),
            skip.map_or(String::new(), |v| format!(
                " (it is set to {v:?}; only 1 skips)"
            )),
        ),
    }
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

/// Asserts that the lean initramfs (the guest binary, no busybox: for
/// guests whose command is a plain `memtide-hog ...`, or none) exists and
/// returns its path.
pub fn lean_initramfs() -> PathBuf {
    let lean = cache_dir().join("initramfs-lean.cpio");
    assert!(
        lean.exists(),
        "{} is missing: run `cargo xtask images` first",
        lean.display()
    );
    lean
}

/// Asserts that the idle initramfs (`memtide-idle` as init) exists and
/// returns its path.
pub fn idle_initramfs() -> PathBuf {
    let idle = cache_dir().join("initramfs-idle.cpio");
    assert!(
        idle.exists(),
        "{} missing: run `cargo xtask images`",
        idle.display()
    );
    idle
}

// Deadlines. Guest kernel code runs at very different speeds on the CI
// host kinds (nested kvm_pvm on AMD EPYC is ~2.5x slower than on Intel, a
// standard-KVM lane is faster), so a deadline for anything a guest does is
// a multiple of a reference measured on the same host in the same test run
// ([`reference_boot`]), written as [`Boots`], plus the fixed wall-clock time
// the test itself schedules ([`Boots::plus_secs`]). Each factor is at least
// 2x (mostly 3-7x) what that wait took on nested-intel with a reference of
// 8.2-9.3 s, measured while other builds shared the host. Only the reference
// has a fixed cap; host-only work (argument checks, `memtide balance`
// ending) keeps fixed deadlines.

/// The longest the reference boot may take before the host counts as hung:
/// the one fixed deadline for guest work: 12x nested-amd's idle boot
/// (23.8 s in `docs/measurements.md`), 30x nested-intel's (8.2-9.3 s).
pub const REFERENCE_BOOT_CAP: Duration = Duration::from_secs(300);

/// Added to every [`Boots`] deadline: wall-clock costs that do not scale
/// with the guest's speed (process spawns, 100-250 ms polling, the balloon's
/// 500 ms statistics interval, a host busy with a compile).
pub const SLACK: Duration = Duration::from_secs(10);

static REFERENCE_BOOT: OnceLock<Duration> = OnceLock::new();

/// Names a file through which the test binaries of one suite run share
/// one [`reference_boot`]: the first binary measures it and writes the
/// milliseconds there, the later ones read them. `cargo xtask test` sets
/// it per lane and run (a fresh path each time); without it each binary
/// measures its own. One idle boot is 10-30 s on the nested hosts, and
/// the suite has 11 binaries.
pub const REFERENCE_FILE_VAR: &str = "MEMTIDE_TEST_REFERENCE_FILE";

/// How long this host takes to boot the idle guest (256 MiB, a balloon)
/// from the spawn of `memtide run` until the guest's balloon driver is
/// ready. Measured once per test binary, or once per suite run where
/// [`REFERENCE_FILE_VAR`] is set, before the first guest starts (callers
/// hold [`boot_lock`], so nothing else runs alongside), and capped by
/// [`REFERENCE_BOOT_CAP`].
pub fn reference_boot() -> Duration {
    *REFERENCE_BOOT.get_or_init(|| {
        let shared = std::env::var_os(REFERENCE_FILE_VAR).map(PathBuf::from);
        if let Some((path, took)) = shared
            .as_deref()
            .and_then(|p| read_reference(p).map(|t| (p, t)))
        {
            eprintln!(
                "[memtide-tests] reference boot on this host: {:.1} s (measured earlier in \
                 this suite run, {}); guest deadlines are {SLACK:?} + n x that",
                took.as_secs_f64(),
                path.display()
            );
            return took;
        }
        let took = measure_reference_boot();
        if let Some(p) = shared {
            if let Err(e) = std::fs::write(&p, format!("{}\n", took.as_millis())) {
                eprintln!(
                    "[memtide-tests] cannot share the reference boot in {}: {e}",
                    p.display()
                );
            }
        }
        took
    })
}

/// A reference boot another test binary of this run wrote to `path`:
/// milliseconds, more than 0 and at most [`REFERENCE_BOOT_CAP`].
fn read_reference(path: &Path) -> Option<Duration> {
    let ms: u64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    let took = Duration::from_millis(ms);
    (ms > 0 && took <= REFERENCE_BOOT_CAP).then_some(took)
}

/// Boots the idle guest once and times it (see [`reference_boot`]).
fn measure_reference_boot() -> Duration {
    let start = Instant::now();
    let mut g = Guest::spawn(
        "reference-boot",
        &idle_initramfs(),
        &["--memory-mib", "256", "--balloon"],
    );
    g.wait_for(
        "the reference boot's balloon driver",
        REFERENCE_BOOT_CAP,
        |v| v["driver_ready"] == true,
    );
    let took = start.elapsed();
    eprintln!(
        "[memtide-tests] reference boot on this host: {:.1} s; guest deadlines are \
         {SLACK:?} + n x that",
        took.as_secs_f64()
    );
    took
}

/// A deadline for guest work: `Boots(n)` is [`SLACK`] + n x
/// [`reference_boot`]. Waits take `impl Into<Duration>`, so they accept
/// `Boots` as well as a fixed [`Duration`] for host-only work.
#[derive(Debug, Clone, Copy)]
pub struct Boots(pub f64);

impl Boots {
    /// This deadline plus `secs` of fixed wall-clock time the test itself
    /// waits (a guest command's `sleep`, a workload's phases).
    pub fn plus_secs(self, secs: u64) -> Duration {
        Duration::from(self) + Duration::from_secs(secs)
    }
}

impl From<Boots> for Duration {
    fn from(b: Boots) -> Duration {
        SLACK + reference_boot().mul_f64(b.0)
    }
}

/// Deadline for one boot of the full initramfs to its command's end, or of
/// the idle one to its balloon driver. The full boot takes about 2
/// reference boots (its 5 MiB initramfs unpacks in the guest kernel).
pub const BOOT_DEADLINE: Boots = Boots(8.0);

/// Where [`spawn_memtide`] keeps console files when it is set.
pub const CONSOLE_DIR_VAR: &str = "MEMTIDE_TEST_CONSOLE_DIR";

/// The files a memtide process's output went to.
#[derive(Debug, Clone)]
pub struct ConsoleFiles {
    /// Its stdout: the guest console.
    pub console: PathBuf,
    /// Its stderr: memtide's own messages.
    pub stderr: PathBuf,
}

/// `s` with every character but ASCII letters, digits, `-` and `_` as `_`.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// This test binary's name without cargo's hash (`balloon`, not
/// `balloon-0123456789abcdef`).
fn test_binary_name() -> String {
    let exe = std::env::current_exe().expect("test executable path");
    let name = exe
        .file_name()
        .map_or_else(|| "tests".to_string(), |n| n.to_string_lossy().into_owned());
    match name.rsplit_once('-') {
        Some((stem, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            stem.to_string()
        }
        _ => name,
    }
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    file_safe(std::thread::current().name().unwrap_or("memtide"))
}

/// Spawns `cmd`, a memtide process for the guest (or tool) `label`. With
/// `MEMTIDE_TEST_CONSOLE_DIR` set, its stdout (the guest console) and its
/// stderr go to `<test binary>-<label>-<pid>.console` and `.stderr` in that
/// directory, which is created if need be; otherwise to `stdout` and
/// `stderr`. Every test that starts memtide for a guest goes through here.
/// The child is killed when the calling thread (the test's) exits, even if
/// the whole test executable is killed and no `Drop` runs.
pub fn spawn_memtide(
    cmd: &mut Command,
    label: &str,
    stdout: Stdio,
    stderr: Stdio,
) -> (Child, Option<ConsoleFiles>) {
    parent_death::kill_with_parent(cmd);
    let dir = match std::env::var_os(CONSOLE_DIR_VAR) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let child = cmd
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .expect("spawn memtide");
            return (child, None);
        }
    };
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("{CONSOLE_DIR_VAR}={}: {e}", dir.display()));
    // The pid is known only once memtide runs: the files start under a
    // name unique to this spawn and take the pid's name right after.
    static SPAWNS: AtomicU32 = AtomicU32::new(0);
    let stem = format!("{}-{}", test_binary_name(), file_safe(label));
    let spawn_no = SPAWNS.fetch_add(1, Ordering::Relaxed);
    let name = |id: &str, ext: &str| dir.join(format!("{stem}-{id}.{ext}"));
    let provisional = format!("starting-{}-{spawn_no}", std::process::id());
    let create = |path: &Path| {
        File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
    };
    let child = cmd
        .stdout(create(&name(&provisional, "console")))
        .stderr(create(&name(&provisional, "stderr")))
        .spawn()
        .expect("spawn memtide");
    let pid = child.id().to_string();
    let files = ConsoleFiles {
        console: name(&pid, "console"),
        stderr: name(&pid, "stderr"),
    };
    for (from, to) in [
        (name(&provisional, "console"), &files.console),
        (name(&provisional, "stderr"), &files.stderr),
    ] {
        std::fs::rename(&from, to)
            .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", from.display(), to.display()));
    }
    eprintln!(
        "[memtide-tests] {label}: console in {}, stderr in {}",
        files.console.display(),
        files.stderr.display()
    );
    (child, Some(files))
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

/// A thread that reads `from` to its end.
fn read_all(from: impl Read + Send + 'static) -> JoinHandle<String> {
    read_live(from, LiveOutput::default())
}

/// Reads `from` to its end, making every piece visible in `live` as it
/// arrives; returns the whole text.
fn read_live(mut from: impl Read + Send + 'static, live: LiveOutput) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match from.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => live.buf().extend_from_slice(&chunk[..n]),
            }
        }
        let all = live.buf();
        String::from_utf8_lossy(&all).into_owned()
    })
}

/// What a running memtide has printed on its console so far.
#[derive(Debug, Clone, Default)]
pub struct LiveOutput {
    piped: Arc<Mutex<Vec<u8>>>,
    file: Option<PathBuf>,
}

impl LiveOutput {
    fn buf(&self) -> MutexGuard<'_, Vec<u8>> {
        self.piped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The console so far.
    pub fn text(&self) -> String {
        let bytes = match &self.file {
            Some(f) => std::fs::read(f).unwrap_or_default(),
            None => self.buf().clone(),
        };
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether the console so far holds `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.text().contains(needle)
    }

    /// The console's last `n` lines, for a failure message.
    pub fn tail(&self, n: usize) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// The guest console's input (memtide's stdin) of a [`run_memtide_live`]
/// process, for a test that types a line when it has seen what it waits
/// for (e.g. to end a `memtide-hog` phase `MIB:line`).
#[derive(Debug, Clone, Default)]
pub struct ConsoleInput(Arc<Mutex<Option<ChildStdin>>>);

impl ConsoleInput {
    /// Types `line` and a newline on the guest's serial console.
    pub fn type_line(&self, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        let mut stdin = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let stdin = stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("memtide's stdin is closed"))?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()
    }
}

/// One output of a memtide process: what its pipe's reader thread read, or
/// else what its console file holds.
fn collected(reader: Option<JoinHandle<String>>, file: Option<&PathBuf>) -> String {
    match (reader, file) {
        (Some(r), _) => r.join().unwrap_or_default(),
        (None, Some(f)) => std::fs::read(f)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
        (None, None) => String::new(),
    }
}

/// Runs `memtide` with `args`, killing it after `deadline` ([`Boots`] when
/// a guest runs, a fixed [`Duration`] for host-only work). Its output is
/// also kept in console files named after the running test when
/// `MEMTIDE_TEST_CONSOLE_DIR` is set ([`spawn_memtide`]).
pub fn run_memtide(args: &[&str], deadline: impl Into<Duration>) -> Finished {
    run_memtide_live(args, deadline, |_, _| {})
}

/// [`run_memtide`], handing `started` a view of the console that fills as
/// the guest prints and the console's input (for a test that must act on a
/// console line). The input closes when every copy of it is dropped.
pub fn run_memtide_live(
    args: &[&str],
    deadline: impl Into<Duration>,
    started: impl FnOnce(LiveOutput, ConsoleInput),
) -> Finished {
    let deadline = deadline.into();
    let start = Instant::now();
    let mut cmd = Command::new(memtide_bin());
    cmd.args(args).stdin(Stdio::piped());
    let (mut child, files) = spawn_memtide(&mut cmd, &test_name(), Stdio::piped(), Stdio::piped());
    let live = LiveOutput {
        file: files.as_ref().map(|f| f.console.clone()),
        ..LiveOutput::default()
    };
    started(
        live.clone(),
        ConsoleInput(Arc::new(Mutex::new(child.stdin.take()))),
    );
    let out_reader = child.stdout.take().map(|out| read_live(out, live));
    let err_reader = child.stderr.take().map(read_all);
    let console = files.as_ref().map(|f| &f.console);
    let errors = files.as_ref().map(|f| &f.stderr);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let status = child.wait().expect("wait after kill");
            panic!(
                "memtide {args:?} did not finish within {deadline:?} ({status}); stderr:\n{}\n\
                 console so far:\n{}",
                collected(err_reader, errors),
                collected(out_reader, console),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    eprintln!(
        "[memtide-tests] memtide {} ended after {:.1} s (deadline {:.0} s)",
        args.first().unwrap_or(&""),
        elapsed.as_secs_f64(),
        deadline.as_secs_f64()
    );
    Finished {
        status,
        stdout: collected(out_reader, console),
        stderr: collected(err_reader, errors),
        elapsed,
    }
}

/// Errors of the fallible [`Guest`] calls the benchmarks and the demo use
/// (the test conveniences panic instead).
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// `memtide run` could not start or be waited for.
    #[error("cannot start or watch `memtide run`: {0}")]
    Spawn(std::io::Error),
    /// The API did not answer as expected.
    #[error(transparent)]
    Api(#[from] ClientError),
    /// An answer without what was expected in it.
    #[error("unexpected API answer: {0}")]
    BadAnswer(String),
    /// Something took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The guest stopped.
    #[error("the guest stopped ({0})")]
    GuestGone(ExitStatus),
    /// The guest could not be set up (no image cache, ...).
    #[error("{0}")]
    Setup(String),
    /// A line could not be typed on the guest console.
    #[error("cannot type on the guest console (memtide's stdin): {0}")]
    Console(std::io::Error),
}

/// A running `memtide run` child with an API socket; killed when dropped.
/// The one guest helper of the integration tests (which boot the idle init
/// with [`Guest::start`] and [`Guest::boot`] and panic on failure) and of
/// the benchmarks and the demo (which spawn their own command and use
/// [`Guest::from_child`], [`Guest::api`] and [`Guest::wait_until`]).
#[derive(Debug)]
pub struct Guest {
    child: Child,
    /// Its API socket.
    pub sock: PathBuf,
    /// Its console, for guests from [`Guest::start`] and [`Guest::boot`].
    console: Option<LiveOutput>,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

impl Guest {
    /// Takes over a spawned `memtide run` whose API socket is `sock`.
    pub fn from_child(child: Child, sock: PathBuf) -> Guest {
        Guest {
            child,
            sock,
            console: None,
        }
    }

    /// The `memtide run` process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client for its API socket.
    pub fn api(&self) -> Client {
        Client::new(&self.sock)
    }

    /// Polls `done` every `every` until it holds, the guest exits, or
    /// `deadline` passes. `done` runs only once the API socket exists.
    pub fn wait_until(
        &mut self,
        what: &'static str,
        deadline: Duration,
        every: Duration,
        mut done: impl FnMut(&Self) -> Result<bool, GuestError>,
    ) -> Result<(), GuestError> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().map_err(GuestError::Spawn)? {
                return Err(GuestError::GuestGone(status));
            }
            if self.sock.exists() && done(self)? {
                return Ok(());
            }
            if start.elapsed() > deadline {
                return Err(GuestError::Timeout(what));
            }
            std::thread::sleep(every);
        }
    }

    /// Starts `memtide run` with `initramfs`, an API socket and `extra`
    /// options, without waiting for anything (but after the binary's
    /// [`reference_boot`], so that the reference runs alone).
    pub fn start(name: &str, initramfs: &Path, extra: &[&str]) -> Guest {
        reference_boot();
        Guest::spawn(name, initramfs, extra)
    }

    /// [`Guest::start`] without the reference boot.
    fn spawn(name: &str, initramfs: &Path, extra: &[&str]) -> Guest {
        let (kernel, _) = guest_images();
        let sock =
            std::env::temp_dir().join(format!("memtide-test-{}-{name}.sock", std::process::id()));
        let mut cmd = Command::new(memtide_bin());
        cmd.arg("run")
            .arg("--kernel")
            .arg(&kernel)
            .arg("--initramfs")
            .arg(initramfs)
            .arg("--api-sock")
            .arg(&sock)
            .args(extra)
            // A pipe, for [`Guest::send_line`]; it stays open (and silent)
            // as long as the guest runs.
            .stdin(Stdio::piped());
        let (mut child, files) = spawn_memtide(&mut cmd, name, Stdio::piped(), Stdio::inherit());
        let console = LiveOutput {
            file: files.map(|f| f.console),
            ..LiveOutput::default()
        };
        // The reader ends with memtide (its end of the pipe closes).
        if let Some(out) = child.stdout.take() {
            drop(read_live(out, console.clone()));
        }
        Guest {
            child,
            sock,
            console: Some(console),
        }
    }

    /// The last `n` lines of the guest console (empty for a guest from
    /// [`Guest::from_child`]), for failure messages.
    pub fn console_tail(&self, n: usize) -> String {
        self.console
            .as_ref()
            .map_or_else(String::new, |c| c.tail(n))
    }

    /// Waits until the guest console shows `needle`; panics after
    /// `deadline` or if the guest stops, with the console's last lines.
    pub fn wait_console(&mut self, needle: &str, deadline: impl Into<Duration>) -> Duration {
        let deadline = deadline.into();
        let start = Instant::now();
        loop {
            if self.console.as_ref().is_some_and(|c| c.contains(needle)) {
                return start.elapsed();
            }
            let gone = self.child.try_wait().ok().flatten();
            assert!(
                gone.is_none() && start.elapsed() < deadline,
                "no {needle:?} on the guest console within {deadline:?} ({}); its last lines:\n{}",
                gone.map_or_else(|| "guest running".to_string(), |s| s.to_string()),
                self.console_tail(25)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `line` and a newline on the guest's serial console (memtide's
    /// stdin), e.g. to end a `memtide-hog` phase `MIB:line` at the moment
    /// a test has seen what it waited for. Only for guests from
    /// [`Guest::start`] or [`Guest::boot`]; panics on failure.
    pub fn send_line(&mut self, line: &str) {
        self.type_line(line).unwrap_or_else(|e| panic!("{e}"));
    }

    /// [`Guest::send_line`] for a guest whose `memtide run` was spawned
    /// with a piped stdin (the benchmarks' and the demo's), as an error.
    pub fn type_line(&mut self, line: &str) -> Result<(), GuestError> {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().ok_or_else(|| {
            GuestError::Console(std::io::Error::other("memtide's stdin is not a pipe"))
        })?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(GuestError::Console)
    }

    /// Boots the idle init with a balloon and `extra` options, and waits
    /// for the balloon driver.
    pub fn boot(name: &str, extra: &[&str]) -> Guest {
        let mut args = vec!["--balloon"];
        args.extend_from_slice(extra);
        let mut g = Guest::start(name, &idle_initramfs(), &args);
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

    /// Polls `GET /balloon` (through `memtide ctl`) until `done` holds,
    /// failing after `deadline` or when memtide exits.
    pub fn wait_for(
        &mut self,
        what: &str,
        deadline: impl Into<Duration>,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = deadline.into();
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
                        eprintln!(
                            "[memtide-tests] {what}: {:.1} s (deadline {:.0} s)",
                            start.elapsed().as_secs_f64(),
                            deadline.as_secs_f64()
                        );
                        return v;
                    }
                }
            }
            assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The guest's MemTotal, in MiB, from a fresh balloon statistics report.
    pub fn guest_total_mib(&mut self) -> f64 {
        self.guest_free_mib(); // waits for a fresh statistics report
        self.get("stats")["guest"]["total_memory"]
            .as_f64()
            .expect("total_memory")
            / f64::from(1 << 20)
    }

    /// The guest's free memory from a fresh balloon statistics report.
    pub fn guest_free_mib(&mut self) -> f64 {
        // Statistics arrive every 500 ms; wait for a report newer than now.
        let deadline = Duration::from(Boots(2.0));
        let start = Instant::now();
        let first = self.get("stats")["guest"]["updated_ms"]
            .as_u64()
            .unwrap_or(0);
        loop {
            let s = self.get("stats");
            let updated = s["guest"]["updated_ms"].as_u64().unwrap_or(0);
            if updated > first {
                return s["guest"]["free_memory"].as_f64().expect("free_memory")
                    / f64::from(1 << 20);
            }
            assert!(
                start.elapsed() < deadline,
                "no fresh balloon statistics within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `GET path` on a memtide API socket as JSON (any shape).
pub fn get_json(sock: &Path, path: &str) -> Result<serde_json::Value, ClientError> {
    Client::new(sock).get(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_tests_run_with_kvm_whatever_the_variable_says() {
        for skip in [None, Some("1"), Some("0"), Some("")] {
            assert_eq!(
                kvm_decision(true, skip.map(OsStr::new)),
                KvmDecision::Run,
                "{skip:?}"
            );
        }
    }

    #[test]
    fn without_kvm_only_the_variable_set_to_1_skips() {
        assert_eq!(
            kvm_decision(false, Some(OsStr::new("1"))),
            KvmDecision::Skip
        );
        for skip in [None, Some("0"), Some(""), Some("yes"), Some(" 1")] {
            assert_eq!(
                kvm_decision(false, skip.map(OsStr::new)),
                KvmDecision::Fail,
                "{skip:?}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "Set MEMTIDE_SKIP_KVM_TESTS=1 to skip")]
    fn a_missing_kvm_device_fails_the_test() {
        require_kvm_at(Path::new("/nonexistent/kvm"), None);
    }

    #[test]
    #[should_panic(expected = "it is set to \"0\"; only 1 skips")]
    fn a_missing_kvm_device_fails_the_test_when_the_variable_is_not_1() {
        require_kvm_at(Path::new("/nonexistent/kvm"), Some(OsStr::new("0")));
    }

    #[test]
    fn a_missing_kvm_device_skips_with_the_variable_set_to_1() {
        assert!(!require_kvm_at(
            Path::new("/nonexistent/kvm"),
            Some(OsStr::new("1"))
        ));
    }

    #[test]
    fn a_present_device_runs_the_test() {
        // Any existing path stands in for /dev/kvm.
        assert!(require_kvm_at(&std::env::temp_dir(), None));
    }

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_safe("tests::a b/c-d_e"), "tests__a_b_c-d_e");
    }
}
