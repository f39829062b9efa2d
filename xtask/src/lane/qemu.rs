//! Running the L1 VM under QEMU's TCG with nested SVM: console to the
//! terminal and to a file, a wall-clock limit, and the command's exit
//! status read from the init's last line.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{io_at, XtaskError};

/// The line prefix the L1 init gives the command's exit status.
pub const STATUS_PREFIX: &str = "memtide-lane: status=";

/// How long L1 may go without a heartbeat on its second serial port
/// before it counts as hung (the init writes one every 10 s).
pub const HEARTBEAT_LIMIT: Duration = Duration::from_secs(120);

/// How the L1 run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum L1End {
    /// The command ran and exited with this status.
    Command(i32),
    /// The L1 init could not set up the lane (module, /dev/kvm).
    Setup,
    /// The L1 kernel itself crashed (it printed this line): a fault of L1's
    /// KVM or of QEMU's SVM emulation, never of memtide, which runs as an
    /// unprivileged process in L1.
    L1Crashed(String),
    /// L1 stopped sending heartbeats: its kernel (or QEMU) hung.
    L1Hung,
    /// QEMU ended without the init's status line or a crash line.
    NoStatus,
    /// The wall-clock limit passed; QEMU was killed.
    TimedOut,
}

/// The L1 kernel's first crash line in its console log, if any.
pub fn l1_crash(kernel_log: &str) -> Option<String> {
    kernel_log
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find(|l| is_l1_crash_line(l))
        .map(str::to_string)
}

/// Whether `line` (of the L1 kernel's console) reports its own crash.
pub fn is_l1_crash_line(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix('[') else {
        return false;
    };
    let Some((_, msg)) = rest.split_once(']') else {
        return false;
    };
    let msg = msg.trim_start();
    [
        "BUG:",
        "Kernel panic",
        "Oops:",
        "general protection fault",
        "watchdog: BUG",
    ]
    .iter()
    .any(|p| msg.starts_with(p))
}

/// What QEMU gets: kernel, initramfs, results disk, size.
pub struct L1Machine<'a> {
    /// The L1 kernel.
    pub kernel: &'a Path,
    /// The L1 initramfs.
    pub initramfs: &'a Path,
    /// Raw disk the init writes its results to (a tar stream).
    pub results_disk: &'a Path,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: usize,
    /// TCG threading (`multi` or `single`).
    pub tcg_thread: &'a str,
    /// QEMU's `-cpu` model.
    pub cpu_model: &'a str,
    /// File that receives L1's heartbeats (its second serial port).
    pub heartbeat: &'a Path,
    /// File that receives the L1 kernel's own console (its third serial
    /// port), kept apart from the command's output so that a guest console
    /// a test prints is never taken for L1's.
    pub kernel_log: &'a Path,
}

/// Reads the status from one console line, if it is the init's status line.
pub fn parse_status(line: &str) -> Option<L1End> {
    let value = line.trim().strip_prefix(STATUS_PREFIX)?;
    Some(match value.parse() {
        Ok(code) => L1End::Command(code),
        Err(_) => L1End::Setup,
    })
}

/// Boots L1, copies its console to stdout and `console_log`, and waits at
/// most `limit`.
pub fn run(m: &L1Machine, console_log: &Path, limit: Duration) -> Result<L1End, XtaskError> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", &format!("tcg,thread={}", m.tcg_thread)])
        .args(["-cpu", m.cpu_model, "-nodefaults"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", m.heartbeat.display()))
        .arg("-serial")
        .arg(format!("file:{}", m.kernel_log.display()))
        .arg("-no-reboot")
        .args(["-smp", &m.cpus.to_string(), "-m", &m.memory_mib.to_string()])
        .arg("-kernel")
        .arg(m.kernel)
        .arg("-initrd")
        .arg(m.initramfs)
        .args(["-append", "console=ttyS2 quiet panic=-1 rdinit=/init"])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio",
            m.results_disk.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let line = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .map_err(|source| XtaskError::Spawn { cmd: line, source })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| XtaskError::Lane("QEMU's console pipe is missing".into()))?;
    let log = std::fs::File::create(console_log).map_err(io_at(console_log))?;
    let log_path: PathBuf = console_log.to_path_buf();
    let reader = std::thread::spawn(move || tee(stdout, log, &log_path));
    let start = Instant::now();
    let mut last_beat = (0u64, Instant::now());
    let killed = loop {
        if child
            .try_wait()
            .map_err(io_at("qemu-system-x86_64"))?
            .is_some()
        {
            break None;
        }
        let beats = std::fs::metadata(m.heartbeat).map_or(0, |md| md.len());
        if beats != last_beat.0 {
            last_beat = (beats, Instant::now());
        }
        let reason = if start.elapsed() > limit {
            Some(L1End::TimedOut)
        } else if last_beat.1.elapsed() > HEARTBEAT_LIMIT {
            Some(L1End::L1Hung)
        } else {
            None
        };
        if reason.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            break reason;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let status = reader
        .join()
        .map_err(|_| XtaskError::Lane("the console reader panicked".into()))??;
    let kernel_log = std::fs::read(m.kernel_log).unwrap_or_default();
    let crash = l1_crash(&String::from_utf8_lossy(&kernel_log));
    Ok(match (crash, killed, status) {
        (Some(line), _, _) => L1End::L1Crashed(line),
        (None, Some(reason), _) => reason,
        (None, None, Some(s)) => s,
        (None, None, None) => L1End::NoStatus,
    })
}

/// Copies the console to stdout and the log; returns the last status line.
fn tee(
    console: impl std::io::Read,
    mut log: std::fs::File,
    log_path: &Path,
) -> Result<Option<L1End>, XtaskError> {
    let mut status = None;
    let mut out = std::io::stdout();
    for line in BufReader::new(console).split(b'\n') {
        let line = line.map_err(io_at(log_path))?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\r');
        writeln!(log, "{text}").map_err(io_at(log_path))?;
        let _ = writeln!(out, "{text}");
        if let Some(s) = parse_status(text) {
            status = Some(s);
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_carries_the_exit_code() {
        assert_eq!(
            parse_status("memtide-lane: status=0\r"),
            Some(L1End::Command(0))
        );
        assert_eq!(
            parse_status("memtide-lane: status=101"),
            Some(L1End::Command(101))
        );
        assert_eq!(
            parse_status("memtide-lane: status=lane-setup"),
            Some(L1End::Setup)
        );
        assert_eq!(parse_status("[  1.0] memtide-lane: status=3"), None);
        assert_eq!(parse_status("test result: ok"), None);
    }

    #[test]
    fn l1_kernel_crash_lines_are_recognized() {
        assert!(is_l1_crash_line(
            "[   42.411219] BUG: TASK stack guard page was hit at 000000000dbfe8e6"
        ));
        assert!(is_l1_crash_line(
            "[   44.319310] Kernel panic - not syncing: corrupted stack end"
        ));
        assert!(!is_l1_crash_line(
            "memtide: vCPU 0 triple-faulted; the guest crashed"
        ));
        assert!(!is_l1_crash_line(
            "[    1.0] kvm: Nested Virtualization enabled"
        ));
        assert!(!is_l1_crash_line("test bug_is_found ... ok"));
        let log = "[    1.0] kvm: Nested Virtualization enabled\r\n\
                   [   42.4] BUG: TASK stack guard page was hit\r\n\
                   [   44.3] Kernel panic - not syncing: corrupted stack end\r\n";
        assert_eq!(
            l1_crash(log).as_deref(),
            Some("[   42.4] BUG: TASK stack guard page was hit")
        );
        assert_eq!(
            l1_crash("[    1.0] kvm: Nested Virtualization enabled\n"),
            None
        );
    }
}
