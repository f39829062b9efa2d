//! `memtide-init`: PID 1 of memtide guests.
//!
//! Mounts the pseudo file systems, prints `memtide-init: ready uptime=<s>s`,
//! starts the memory agent (`/bin/memtide-agent`, unless `memtide.agent=0`)
//! in the background, runs the command in `memtide.cmd=` (if any) with
//! `/bin/sh -c`, prints its exit status, and powers the VM off. Every
//! failure is printed as a `memtide-init: error: ...` line; the VM is
//! powered off in every case.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use memtide_guest::agent::launch::{agent_args, AGENT_PATH};
use memtide_guest::cmdline::{param, CMD_PARAM};
use memtide_guest::{sys, uptime};

/// The pseudo file systems every guest gets, as (type, mount point).
const MOUNTS: &[(&str, &str)] = &[
    ("proc", "/proc"),
    ("sysfs", "/sys"),
    ("devtmpfs", "/dev"),
    ("tmpfs", "/tmp"),
];

/// The shell's convention: the exit code, or 128 + the signal number.
fn status_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

fn main() {
    for (fstype, target) in MOUNTS {
        if let Err(e) = sys::mount(fstype, target) {
            println!("memtide-init: error: {e}");
        }
    }
    let up = uptime::read().map_or_else(
        |e| {
            println!("memtide-init: error: {e}");
            "?".to_string()
        },
        |u| format!("{u:.2}"),
    );
    println!("memtide-init: ready uptime={up}s");

    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_else(|e| {
        println!("memtide-init: error: /proc/cmdline: {e}");
        String::new()
    });
    start_agent(&cmdline);
    if let Some(cmd) = param(&cmdline, CMD_PARAM) {
        run_command(&cmd);
    }
    sys::reap_zombies();
    println!("memtide-init: powering off");
    let err = sys::reboot();
    println!("memtide-init: error: {err}");
    // PID 1 must not exit (the kernel would panic); wait for the reset.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Runs `cmd` with `/bin/sh -c` on the console and reports how it ended.
fn run_command(cmd: &str) {
    match Command::new("/bin/sh").arg("-c").arg(cmd).status() {
        Ok(status) => {
            let code = status_code(status);
            println!("memtide-init: command exited with status {code}");
        }
        Err(e) => println!("memtide-init: error: cannot run /bin/sh -c {cmd:?}: {e}"),
    }
}

/// Starts the memory agent in the background, if it is installed and the
/// command line does not turn it off. The init does not wait for it; it
/// inherits the console for its messages but not its input.
fn start_agent(cmdline: &str) {
    let Some(args) = agent_args(cmdline) else {
        return;
    };
    if !Path::new(AGENT_PATH).exists() {
        return;
    }
    match Command::new(AGENT_PATH)
        .args(&args)
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(child) => println!("memtide-init: started memtide-agent (pid {})", child.id()),
        Err(e) => println!("memtide-init: error: cannot start {AGENT_PATH}: {e}"),
    }
}
