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

/// How the L1 run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum L1End {
    /// The command ran and exited with this status.
    Command(i32),
    /// The L1 init could not set up the lane (module, /dev/kvm).
    Setup,
    /// QEMU ended without the init's status line (L1 crashed or hung up).
    NoStatus,
    /// The wall-clock limit passed; QEMU was killed.
    TimedOut,
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
    cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max", "-nodefaults"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .arg("-no-reboot")
        .args(["-smp", &m.cpus.to_string(), "-m", &m.memory_mib.to_string()])
        .arg("-kernel")
        .arg(m.kernel)
        .arg("-initrd")
        .arg(m.initramfs)
        .args(["-append", "console=ttyS0 quiet panic=-1 rdinit=/init"])
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
    let timed_out = loop {
        if child
            .try_wait()
            .map_err(io_at("qemu-system-x86_64"))?
            .is_some()
        {
            break false;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let status = reader
        .join()
        .map_err(|_| XtaskError::Lane("the console reader panicked".into()))??;
    Ok(match (timed_out, status) {
        (true, _) => L1End::TimedOut,
        (false, Some(s)) => s,
        (false, None) => L1End::NoStatus,
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
}
