//! `memtide-init`: PID 1 of memtide guests.
//!
//! Mounts the pseudo file systems, prints `memtide-init: ready uptime=<s>s`,
//! runs the command in `memtide.cmd=` (if any) with `/bin/sh -c`, prints
//! its exit status, and powers the VM off.

use std::process::Command;

use memtide_guest::cmdline::{param, CMD_PARAM};
use memtide_guest::sys;

fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .and_then(|s| s.parse::<f64>().ok())
        .map_or_else(|| "?".into(), |u| format!("{u:.2}"))
}

fn main() {
    for (fstype, target) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("tmpfs", "/tmp"),
    ] {
        if let Err(e) = sys::mount(fstype, target) {
            println!("memtide-init: error: {e}");
        }
    }
    println!("memtide-init: ready uptime={}s", uptime());

    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Some(cmd) = param(&cmdline, CMD_PARAM) {
        match Command::new("/bin/sh").arg("-c").arg(&cmd).status() {
            Ok(status) => {
                let code = status
                    .code()
                    .map_or_else(|| format!("{status}"), |c| c.to_string());
                println!("memtide-init: command exited with status {code}");
            }
            Err(e) => println!("memtide-init: error: cannot run /bin/sh -c {cmd:?}: {e}"),
        }
    }
    sys::reap_zombies();
    println!("memtide-init: powering off");
    let err = sys::reboot();
    println!("memtide-init: error: {err}");
    // PID 1 must not exit; wait for the reset.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
