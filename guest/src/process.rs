//! How a child process ended, and the console lines the init prints about
//! it.
//!
//! memtide reads two of these lines on the guest console to decide its own
//! exit code (`devices/src/serial/guest_fault.rs` parses them; keep the two
//! in step): [`command_line`] for the `--cmd` command and [`killed_line`]
//! for any other process the init reaps after a signal killed it.

/// The start of the line that reports how the `--cmd` command ended.
pub const COMMAND_EXITED: &str = "memtide-init: command exited with status ";

/// The start of the line that reports a reaped process a signal killed.
pub const PROCESS_KILLED: &str = "memtide-init: process ";

/// How a process ended, decoded from a `waitpid` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// It called `exit` with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether the kernel wrote (or tried to write) a core dump.
        core_dumped: bool,
    },
}

impl ExitKind {
    /// Decodes a `waitpid` status; `None` for a stopped or continued child
    /// (the init never asks for those).
    pub fn from_wait_status(status: i32) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(Self::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(Self::Signaled {
                signal: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            })
        } else {
            None
        }
    }

    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn shell_status(self) -> i32 {
        match self {
            Self::Exited(code) => code,
            Self::Signaled { signal, .. } => 128 + signal,
        }
    }
}

pub use memtide_agent_proto::signal::name as signal_name;

/// `signal 11, SIGSEGV` (or `signal 40` for a signal without a name).
fn describe_signal(signal: i32) -> String {
    match signal_name(signal) {
        Some(name) => format!("signal {signal}, {name}"),
        None => format!("signal {signal}"),
    }
}

/// The line the init prints when the `--cmd` command ends:
/// `memtide-init: command exited with status 139 (signal 11, SIGSEGV)`.
pub fn command_line(exit: ExitKind) -> String {
    let status = exit.shell_status();
    match exit {
        ExitKind::Exited(_) => format!("{COMMAND_EXITED}{status}"),
        ExitKind::Signaled { signal, .. } => {
            format!("{COMMAND_EXITED}{status} ({})", describe_signal(signal))
        }
    }
}

/// The line the init prints when it reaps a process other than the command
/// that a signal killed: `memtide-init: process 26 (sh) killed by signal
/// 11, SIGSEGV`. `None` for a process that exited by itself.
pub fn killed_line(pid: u32, name: &str, exit: ExitKind) -> Option<String> {
    match exit {
        ExitKind::Exited(_) => None,
        ExitKind::Signaled { signal, .. } => Some(format!(
            "{PROCESS_KILLED}{pid} ({name}) killed by {}",
            describe_signal(signal)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_exit_codes_and_signals() {
        // Linux's encoding: exit code in bits 8-15; signal in bits 0-6,
        // core dump flag in bit 7.
        assert_eq!(
            ExitKind::from_wait_status(7 << 8),
            Some(ExitKind::Exited(7))
        );
        assert_eq!(ExitKind::from_wait_status(0), Some(ExitKind::Exited(0)));
        assert_eq!(
            ExitKind::from_wait_status(11),
            Some(ExitKind::Signaled {
                signal: 11,
                core_dumped: false
            })
        );
        assert_eq!(
            ExitKind::from_wait_status(0x80 | 6),
            Some(ExitKind::Signaled {
                signal: 6,
                core_dumped: true
            })
        );
        // Stopped by SIGSTOP (0x7f in the low byte).
        assert_eq!(ExitKind::from_wait_status((19 << 8) | 0x7f), None);
    }

    #[test]
    fn shell_status_adds_128_for_signals() {
        assert_eq!(ExitKind::Exited(7).shell_status(), 7);
        let segv = ExitKind::Signaled {
            signal: 11,
            core_dumped: true,
        };
        assert_eq!(segv.shell_status(), 139);
    }

    #[test]
    fn command_lines_name_the_signal() {
        assert_eq!(
            command_line(ExitKind::Exited(0)),
            "memtide-init: command exited with status 0"
        );
        assert_eq!(
            command_line(ExitKind::Exited(7)),
            "memtide-init: command exited with status 7"
        );
        assert_eq!(
            command_line(ExitKind::Signaled {
                signal: 11,
                core_dumped: false
            }),
            "memtide-init: command exited with status 139 (signal 11, SIGSEGV)"
        );
        assert_eq!(
            command_line(ExitKind::Signaled {
                signal: 40,
                core_dumped: false
            }),
            "memtide-init: command exited with status 168 (signal 40)"
        );
    }

    #[test]
    fn killed_lines_only_for_signals() {
        assert_eq!(killed_line(26, "sh", ExitKind::Exited(1)), None);
        assert_eq!(
            killed_line(
                26,
                "sh",
                ExitKind::Signaled {
                    signal: 9,
                    core_dumped: false
                }
            )
            .as_deref(),
            Some("memtide-init: process 26 (sh) killed by signal 9, SIGKILL")
        );
    }
}
