//! `memtide-init`: PID 1 of memtide guests (one program of the
//! multi-call guest binary, see [`crate::programs`]).
//!
//! Mounts the pseudo file systems, prints `memtide-init: ready uptime=<s>s`,
//! starts the memory agent (`/bin/memtide-agent`, when the guest has a
//! virtio-vsock device and unless `memtide.agent=0`)
//! in the background, runs the command in `memtide.cmd=` (if any) with
//! `/bin/sh -c` (or by itself, for a plain command in an initramfs
//! without a shell), prints its exit status, and powers the VM off. As PID 1 it
//! reaps every orphan and prints a line for each one a signal killed.
//! memtide reads the status line and those lines to set its exit code.
//! Every failure is printed as a `memtide-init: error: ...` line; the VM
//! is powered off in every case.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::agent::launch::{agent_args, vsock_device_present, AGENT_PATH};
use crate::cmdline::{param, CMD_PARAM};
use crate::process::{command_line, killed_line, ExitKind};
use crate::sys::{self, Reaped, Wait};
use crate::uptime;
use memtide_agent_proto::guest_command::plain_words;

/// The pseudo file systems every guest gets, as (type, mount point).
const MOUNTS: &[(&str, &str)] = &[
    ("proc", "/proc"),
    ("sysfs", "/sys"),
    ("devtmpfs", "/dev"),
    ("tmpfs", "/tmp"),
];

/// Runs PID 1; never returns (the VM powers off). Arguments are ignored.
pub fn main(_args: impl Iterator<Item = String>) -> ! {
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
    reap_ended();
    println!("memtide-init: powering off");
    sys::drain_console();
    let err = sys::reboot();
    println!("memtide-init: error: {err}");
    // PID 1 must not exit (the kernel would panic); wait for the reset.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// The shell the init runs commands with, when the initramfs has one.
const SHELL: &str = "/bin/sh";

/// How to start `cmd`: `/bin/sh -c cmd` when there is a shell; without one
/// (the lean initramfs), a plain command's own words, its program looked
/// up in `/bin`; `Err` with a message when it needs a shell.
fn command_for(cmd: &str, have_shell: bool) -> Result<Command, String> {
    if have_shell {
        let mut c = Command::new(SHELL);
        c.arg("-c").arg(cmd);
        return Ok(c);
    }
    let words = plain_words(cmd).ok_or_else(|| {
        format!(
            "cannot run {cmd:?}: it needs a shell and this initramfs has none ({SHELL}); \
             boot the initramfs with busybox (memtide run --initramfs ~/.cache/memtide/initramfs.cpio)"
        )
    })?;
    let program = if words[0].contains('/') {
        words[0].to_string()
    } else {
        format!("/bin/{}", words[0])
    };
    let mut c = Command::new(program);
    c.args(&words[1..]);
    Ok(c)
}

/// `c`'s program and arguments, space-separated, for messages.
fn argv_line(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` on the console (see [`command_for`]) and reports how it
/// ended. While it runs, reaps every other child that ends (orphans
/// re-parented to the init, the agent) and reports those a signal killed.
fn run_command(cmd: &str) {
    let spawned = command_for(cmd, Path::new(SHELL).exists()).and_then(|mut c| {
        c.spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", argv_line(&c)))
    });
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            println!("memtide-init: error: {e}");
            return;
        }
    };
    let pid = child.id();
    loop {
        match sys::reap(Wait::Block) {
            Ok(Some(r)) if r.pid == pid => {
                println!("{}", command_line(r.exit));
                return;
            }
            Ok(Some(r)) => report_reaped(&r),
            Ok(None) => {
                println!("memtide-init: error: the command (pid {pid}) ended unseen");
                return;
            }
            Err(e) => {
                println!("memtide-init: error: {e}");
                break;
            }
        }
    }
    // Waiting for any child failed; wait for the command alone.
    match child.wait() {
        Ok(status) => match ExitKind::from_wait_status(status.into_raw()) {
            Some(exit) => println!("{}", command_line(exit)),
            None => println!("memtide-init: error: the command ended with status {status}"),
        },
        Err(e) => println!("memtide-init: error: cannot wait for the command: {e}"),
    }
}

/// Reaps every child that has already ended, without waiting.
fn reap_ended() {
    loop {
        match sys::reap(Wait::NoHang) {
            Ok(Some(r)) => report_reaped(&r),
            Ok(None) => break,
            Err(e) => {
                println!("memtide-init: error: {e}");
                break;
            }
        }
    }
}

/// Prints a line for a reaped process that a signal killed.
fn report_reaped(r: &Reaped) {
    if let Some(line) = killed_line(r.pid, &r.name, r.exit) {
        println!("{line}");
    }
}

/// Starts the memory agent in the background, if it is installed, the
/// guest has a vsock device and the command line does not turn it off. The init does not wait for it; it
/// inherits the console for its messages but not its input.
fn start_agent(cmdline: &str) {
    let Some(args) = agent_args(cmdline) else {
        return;
    };
    if !Path::new(AGENT_PATH).exists() {
        return;
    }
    if !vsock_device_present() {
        println!("memtide-init: no virtio-vsock device, so no memtide-agent");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Command) -> Vec<String> {
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn with_a_shell_every_command_goes_through_it() {
        let c = command_for("sleep 1; echo x", true).expect("shell");
        assert_eq!(argv(&c), ["/bin/sh", "-c", "sleep 1; echo x"]);
    }

    #[test]
    fn without_a_shell_a_plain_command_runs_from_bin() {
        let c = command_for("memtide-hog 0:20 96:line", false).expect("plain");
        assert_eq!(argv(&c), ["/bin/memtide-hog", "0:20", "96:line"]);
        let c = command_for("/sbin/memtide-idle", false).expect("path");
        assert_eq!(argv(&c), ["/sbin/memtide-idle"]);
    }

    #[test]
    fn without_a_shell_shell_syntax_is_refused_with_the_way_out() {
        let e = command_for("dd if=/dev/zero bs=1M count=1 | wc -c", false).expect_err("pipe");
        // The host names the fault from this prefix (GuestFault).
        assert!(e.starts_with("cannot run \"dd "), "{e}");
        assert!(e.contains("needs a shell"), "{e}");
        assert!(e.contains("initramfs.cpio"), "{e}");
    }
}
