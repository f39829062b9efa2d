//! Failures in the guest's user space, read from its console.
//!
//! Two sources: the lines memtide's guest init prints about the `--cmd`
//! command and about the processes it reaps (`guest/src/process.rs` writes
//! them; keep the two in step), and the lines the Linux kernel prints when
//! a user process takes a fault it does not handle (`comm[pid]: segfault
//! at ...`, `traps: comm[pid] general protection fault ...`, `traps:
//! comm[pid] trap invalid opcode ...`). The kernel's lines are
//! `KERN_INFO`, so a guest booted with `quiet` does not print them; the
//! init's lines always arrive.

use std::fmt;

pub use memtide_agent_proto::signal::name as signal_name;

/// The init's line when the `--cmd` command ends:
/// `memtide-init: command exited with status 139 (signal 11, SIGSEGV)`.
const COMMAND_EXITED: &str = "memtide-init: command exited with status ";
/// The init's line when the command cannot be started.
const CANNOT_RUN: &str = "memtide-init: error: cannot run ";
/// The init's line for a reaped process a signal killed:
/// `memtide-init: process 26 (sh) killed by signal 11, SIGSEGV`.
const PROCESS_KILLED: &str = "memtide-init: process ";
/// What follows the name in [`PROCESS_KILLED`] lines.
const KILLED_BY: &str = ") killed by signal ";
/// The kernel's page fault line: `sh[26]: segfault at 0 ip ...`.
const SEGFAULT: &str = "]: segfault at ";
/// The prefix of the kernel's trap lines (x86 `traps.c`).
const TRAPS: &str = "traps: ";
/// A general protection fault: `traps: sh[26] general protection fault ip:...`.
const GP_FAULT: &str = "] general protection fault ip:";
/// Any other trap: `traps: sh[26] trap invalid opcode ip:...`.
const TRAP: &str = "] trap ";
/// What ends the trap's description.
const TRAP_END: &str = " ip:";
/// The longest task name the kernel keeps (`TASK_COMM_LEN` - 1).
const MAX_COMM: usize = 15;
/// The longest piece of guest text memtide repeats in a message.
const MAX_DETAIL: usize = 200;

/// A sign on the guest console that a guest process failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFault {
    /// The init's `--cmd` command ended with a non-zero status.
    CommandFailed {
        /// The shell's status: the exit code, or 128 + the signal number.
        status: i32,
        /// The signal that killed the command, if one did.
        signal: Option<i32>,
    },
    /// The init could not start the `--cmd` command.
    CommandNotStarted {
        /// The init's message.
        detail: String,
    },
    /// The init reaped a process (an orphan, or the agent) that a signal
    /// killed.
    ProcessKilled {
        /// The guest process ID.
        pid: u32,
        /// The process name.
        name: String,
        /// The signal number.
        signal: i32,
    },
    /// The guest kernel reported a fault a user process did not handle
    /// (the process dies of it).
    KernelFault {
        /// The guest process ID.
        pid: u32,
        /// The process name.
        name: String,
        /// The fault, as the kernel names it (`segfault`, `general
        /// protection fault`, `invalid opcode`, ...).
        what: String,
    },
}

impl fmt::Display for GuestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CommandFailed {
                status,
                signal: None,
            } => write!(f, "the guest command exited with status {status}"),
            Self::CommandFailed {
                status,
                signal: Some(sig),
            } => write!(
                f,
                "the guest command exited with status {status} ({})",
                SignalText(*sig)
            ),
            Self::CommandNotStarted { detail } => {
                write!(f, "the guest init could not start the command: {detail}")
            }
            Self::ProcessKilled { pid, name, signal } => write!(
                f,
                "guest process {pid} ({name}) was killed by {}",
                SignalText(*signal)
            ),
            Self::KernelFault { pid, name, what } => write!(
                f,
                "the guest kernel reported an unhandled {what} in process {pid} ({name})"
            ),
        }
    }
}

/// `signal 11, SIGSEGV`, or `signal 40` for a signal without a name.
struct SignalText(i32);

impl fmt::Display for SignalText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match signal_name(self.0) {
            Some(name) => write!(f, "signal {}, {name}", self.0),
            None => write!(f, "signal {}", self.0),
        }
    }
}

/// Reads one console line (without its newline) for a guest failure.
pub fn parse_line(line: &[u8]) -> Option<GuestFault> {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches(['\r', '\n']);
    parse_init_line(line).or_else(|| parse_kernel_line(line))
}

/// The init's lines; they may follow other output on the same line.
fn parse_init_line(line: &str) -> Option<GuestFault> {
    if let Some(rest) = after(line, COMMAND_EXITED) {
        let (status, rest) = leading_int(rest)?;
        if status == 0 {
            return None;
        }
        let signal = after(rest, "(signal ")
            .and_then(leading_int)
            .map(|(s, _)| s);
        return Some(GuestFault::CommandFailed { status, signal });
    }
    if let Some(rest) = after(line, CANNOT_RUN) {
        return Some(GuestFault::CommandNotStarted {
            detail: clean(rest, MAX_DETAIL),
        });
    }
    let rest = after(line, PROCESS_KILLED)?;
    let (pid, rest) = leading_int(rest)?;
    let rest = rest.strip_prefix(" (")?;
    let end = rest.rfind(KILLED_BY)?;
    let (signal, _) = leading_int(&rest[end + KILLED_BY.len()..])?;
    Some(GuestFault::ProcessKilled {
        pid: u32::try_from(pid).ok()?,
        name: clean(&rest[..end], MAX_COMM),
        signal,
    })
}

/// The kernel's lines about a user process's unhandled fault.
fn parse_kernel_line(line: &str) -> Option<GuestFault> {
    if let Some(at) = line.find(SEGFAULT) {
        let (pid, name) = task(&line[..at])?;
        return Some(GuestFault::KernelFault {
            pid,
            name,
            what: "segfault".into(),
        });
    }
    if !line.contains(TRAPS) {
        return None;
    }
    let (at, what) = if let Some(at) = line.find(GP_FAULT) {
        (at, "general protection fault".to_string())
    } else {
        let at = line.find(TRAP)?;
        let desc = &line[at + TRAP.len()..];
        let desc = &desc[..desc.find(TRAP_END)?];
        (at, clean(desc, MAX_DETAIL))
    };
    let (pid, name) = task(&line[..at])?;
    Some(GuestFault::KernelFault { pid, name, what })
}

/// The task in `[ 1.23] traps: comm[pid` (the text before the kernel's
/// `]`): the process ID and its name, which starts after the `traps: `
/// prefix, the timestamp's `] `, or at the start of the line.
fn task(before: &str) -> Option<(u32, String)> {
    let open = before.rfind('[')?;
    let pid: u32 = before[open + 1..].parse().ok()?;
    let head = &before[..open];
    let start = head
        .rfind(TRAPS)
        .map(|i| i + TRAPS.len())
        .or_else(|| head.rfind("] ").map(|i| i + 2))
        .unwrap_or(0);
    let name = &head[start..];
    if name.is_empty() || name.len() > MAX_COMM {
        return None;
    }
    Some((pid, clean(name, MAX_COMM)))
}

/// The text after the first `marker` in `line`.
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// A decimal integer (optionally negative) at the start of `s`, and the rest.
fn leading_int(s: &str) -> Option<(i32, &str)> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let len = digits.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 {
        return None;
    }
    let end = s.len() - digits.len() + len;
    Some((s[..end].parse().ok()?, &s[end..]))
}

/// Guest text made safe to repeat on the host's terminal: at most `max`
/// characters, control characters replaced by `?`.
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<GuestFault> {
        parse_line(s.as_bytes())
    }

    #[test]
    fn command_status_zero_is_no_fault() {
        assert_eq!(parse("memtide-init: command exited with status 0\r"), None);
    }

    #[test]
    fn command_exit_code_is_a_fault() {
        let f = parse("memtide-init: command exited with status 7\r").expect("fault");
        assert_eq!(
            f,
            GuestFault::CommandFailed {
                status: 7,
                signal: None
            }
        );
        assert_eq!(f.to_string(), "the guest command exited with status 7");
    }

    #[test]
    fn command_killed_by_a_signal_names_it() {
        let f = parse("memtide-init: command exited with status 139 (signal 11, SIGSEGV)")
            .expect("fault");
        assert_eq!(
            f,
            GuestFault::CommandFailed {
                status: 139,
                signal: Some(11)
            }
        );
        assert_eq!(
            f.to_string(),
            "the guest command exited with status 139 (signal 11, SIGSEGV)"
        );
    }

    #[test]
    fn exit_139_without_a_signal_is_only_a_status() {
        // `exit 139` looks like a SIGSEGV to the shell; the init only adds
        // "(signal ...)" when a signal really killed the command.
        let f = parse("memtide-init: command exited with status 139").expect("fault");
        assert_eq!(
            f.to_string(),
            "the guest command exited with status 139",
            "{f:?}"
        );
    }

    #[test]
    fn init_line_after_other_output_on_the_same_line() {
        let f = parse("no newline herememtide-init: command exited with status 1").expect("fault");
        assert!(matches!(f, GuestFault::CommandFailed { status: 1, .. }));
    }

    #[test]
    fn command_that_cannot_start_is_a_fault() {
        let f = parse(
            "memtide-init: error: cannot run /bin/sh -c \"true\": No such file or directory (os error 2)",
        )
        .expect("fault");
        assert!(
            f.to_string()
                .starts_with("the guest init could not start the command: /bin/sh -c"),
            "{f}"
        );
    }

    #[test]
    fn other_init_errors_are_not_command_faults() {
        assert_eq!(
            parse("memtide-init: error: mount proc on /proc: EBUSY"),
            None
        );
        assert_eq!(parse("memtide-init: ready uptime=1.23s"), None);
        assert_eq!(parse("memtide-init: powering off"), None);
    }

    #[test]
    fn reaped_process_killed_by_a_signal() {
        let f =
            parse("memtide-init: process 26 (sh) killed by signal 11, SIGSEGV\r").expect("fault");
        assert_eq!(
            f,
            GuestFault::ProcessKilled {
                pid: 26,
                name: "sh".into(),
                signal: 11
            }
        );
        assert_eq!(
            f.to_string(),
            "guest process 26 (sh) was killed by signal 11, SIGSEGV"
        );
    }

    #[test]
    fn reaped_process_with_parentheses_in_its_name() {
        let f =
            parse("memtide-init: process 40 (a (b)) killed by signal 9, SIGKILL").expect("fault");
        assert_eq!(
            f,
            GuestFault::ProcessKilled {
                pid: 40,
                name: "a (b)".into(),
                signal: 9
            }
        );
    }

    #[test]
    fn kernel_segfault_line() {
        let line = "[    3.141592] sh[26]: segfault at 0 ip 00000000004a1b2c sp 00007ffd1e2f3a40 \
                    error 4 in busybox[4a1000+90000] likely on CPU 0 (core 0, socket 0)";
        let f = parse(line).expect("fault");
        assert_eq!(
            f,
            GuestFault::KernelFault {
                pid: 26,
                name: "sh".into(),
                what: "segfault".into()
            }
        );
        assert_eq!(
            f.to_string(),
            "the guest kernel reported an unhandled segfault in process 26 (sh)"
        );
    }

    #[test]
    fn kernel_segfault_line_without_timestamp_and_name_with_space() {
        let f = parse("kworker x[7]: segfault at 10 ip 1 sp 2 error 6").expect("fault");
        assert_eq!(
            f,
            GuestFault::KernelFault {
                pid: 7,
                name: "kworker x".into(),
                what: "segfault".into()
            }
        );
    }

    #[test]
    fn kernel_general_protection_fault_line() {
        let line = "[    2.5] traps: memtide-agent[31] general protection fault ip:401000 \
                    sp:7ffc0 error:0 in memtide-agent[401000+1000]";
        assert_eq!(
            parse(line),
            Some(GuestFault::KernelFault {
                pid: 31,
                name: "memtide-agent".into(),
                what: "general protection fault".into()
            })
        );
    }

    #[test]
    fn kernel_trap_line() {
        let line = "[    2.5] traps: busybox[12] trap invalid opcode ip:4a1b2c sp:7ffc0 error:0";
        assert_eq!(
            parse(line),
            Some(GuestFault::KernelFault {
                pid: 12,
                name: "busybox".into(),
                what: "invalid opcode".into()
            })
        );
    }

    #[test]
    fn ordinary_lines_are_not_faults() {
        for line in [
            "[    0.000000] Linux version 6.12.0",
            "MemTotal:         120000 kB",
            "grep: segfault at: no such file",
            "[    1.0] a name far longer than fifteen[3]: segfault at 0 ip 1",
            "[    1.0] sh[x]: segfault at 0 ip 1",
            "[    1.0] traps: sh[1] trap invalid opcode",
            "memtide-init: command exited with status ",
            "memtide-init: process x (sh) killed by signal 9",
        ] {
            assert_eq!(parse(line), None, "{line}");
        }
    }

    #[test]
    fn guest_names_cannot_carry_control_characters() {
        let f = parse("memtide-init: process 5 (a\x1b[2Jb) killed by signal 15, SIGTERM")
            .expect("fault");
        let GuestFault::ProcessKilled { name, .. } = f else {
            panic!("{f:?}");
        };
        assert_eq!(name, "a?[2Jb");
    }

    #[test]
    fn signal_names() {
        assert_eq!(SignalText(40).to_string(), "signal 40");
    }
}
