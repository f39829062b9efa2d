//! Building and validating the guest kernel command line, on
//! `linux_loader::cmdline::Cmdline`; memtide adds errors a user can act
//! on and the quoted `memtide.cmd="..."` parameter for the guest init.

use linux_loader::cmdline::Cmdline;

use crate::arch::x86_64::layout::CMDLINE_MAX_SIZE;

/// Options every memtide guest gets: console on COM1, reset through the
/// i8042 on reboot (memtide's stop signal), reboot at once on panic.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 8250.nr_uarts=1 pci=off";

/// The parameter the guest init reads its command from.
pub const GUEST_CMD_PARAM: &str = "memtide.cmd";

/// Errors in the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// The line would exceed the kernel's limit.
    #[error("kernel command line would be {len} bytes; the limit is {max}")]
    TooLong {
        /// Length it would have.
        len: usize,
        /// The limit (excluding the NUL).
        max: usize,
    },
    /// A character the kernel cannot take.
    #[error("kernel command line may only hold printable ASCII; got {0:?}")]
    BadCharacter(char),
    /// A guest command that cannot be quoted on the command line.
    #[error("the guest command may not contain a double quote or a newline: {0:?}")]
    UnquotableCommand(String),
    /// linux-loader refused the line.
    #[error("kernel command line: {0}")]
    Loader(linux_loader::cmdline::Error),
}

/// A kernel command line under construction.
#[derive(Debug, Clone)]
pub struct KernelCmdline(Cmdline);

impl Default for KernelCmdline {
    fn default() -> Self {
        Self(Cmdline::new(CMDLINE_MAX_SIZE).expect("CMDLINE_MAX_SIZE is not zero"))
    }
}

impl PartialEq for KernelCmdline {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for KernelCmdline {}

impl std::fmt::Display for KernelCmdline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl KernelCmdline {
    /// Starts from `base` (validated).
    pub fn new(base: &str) -> Result<Self, CmdlineError> {
        let mut c = Self::default();
        c.push(base)?;
        Ok(c)
    }

    /// Appends `args` separated by a space.
    pub fn push(&mut self, args: &str) -> Result<(), CmdlineError> {
        let args = args.trim();
        if args.is_empty() {
            return Ok(());
        }
        if let Some(c) = args.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
            return Err(CmdlineError::BadCharacter(c));
        }
        let current = self.as_str().len();
        let len = current + usize::from(current > 0) + args.len();
        let max = CMDLINE_MAX_SIZE - 1;
        self.0.insert_str(args).map_err(|e| match e {
            linux_loader::cmdline::Error::TooLarge => CmdlineError::TooLong { len, max },
            e => CmdlineError::Loader(e),
        })
    }

    /// Appends the command the guest init runs with `/bin/sh -c`.
    pub fn push_guest_command(&mut self, cmd: &str) -> Result<(), CmdlineError> {
        if cmd.contains('"') || cmd.contains('\n') {
            return Err(CmdlineError::UnquotableCommand(cmd.to_string()));
        }
        self.push(&format!("{GUEST_CMD_PARAM}=\"{cmd}\""))
    }

    /// The line as text (a copy).
    pub fn as_str(&self) -> String {
        self.0
            .as_cstring()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The line with its terminating NUL, as written into guest memory.
    pub fn to_bytes_with_nul(&self) -> Result<Vec<u8>, CmdlineError> {
        self.0
            .as_cstring()
            .map(|c| c.into_bytes_with_nul())
            .map_err(CmdlineError::Loader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_are_space_separated_and_trimmed() {
        let mut c = KernelCmdline::new(BASE_CMDLINE).expect("base");
        c.push("  quiet ").expect("push");
        c.push("").expect("empty");
        assert_eq!(c.as_str(), format!("{BASE_CMDLINE} quiet"));
        assert_eq!(c.to_bytes_with_nul().expect("bytes").last(), Some(&0));
    }

    #[test]
    fn guest_command_is_quoted() {
        let mut c = KernelCmdline::default();
        c.push_guest_command("cat /proc/meminfo").expect("cmd");
        assert_eq!(c.as_str(), "memtide.cmd=\"cat /proc/meminfo\"");
        assert!(matches!(
            c.push_guest_command("echo \"x\""),
            Err(CmdlineError::UnquotableCommand(_))
        ));
    }

    #[test]
    fn rejects_control_characters_and_overlong_lines() {
        let mut c = KernelCmdline::default();
        assert_eq!(c.push("a\tb"), Err(CmdlineError::BadCharacter('\t')));
        assert!(matches!(
            c.push(&"x".repeat(CMDLINE_MAX_SIZE)),
            Err(CmdlineError::TooLong { .. })
        ));
        c.push(&"x".repeat(CMDLINE_MAX_SIZE - 1))
            .expect("exactly the limit fits");
    }
}
