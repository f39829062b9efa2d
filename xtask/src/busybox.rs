//! Busybox in the initramfs: the binary and its applet links.
//!
//! Each archive entry costs the guest kernel tens of milliseconds to unpack
//! on the nested CI host (measured: 268 applet symlinks added about 9 s to
//! the boot, 3 MiB of file data about 8 s), so by default only the applets
//! that scripts and tests commonly call by path are linked. Debian's
//! busybox-static runs every applet from `sh` without a link anyway (it is
//! built with the standalone shell), and `/bin/busybox <applet>` always
//! works.

use std::path::Path;
use std::process::Command;

use crate::cpio::CpioWriter;
use crate::deps::BUSYBOX;
use crate::error::{io_at, XtaskError};
use crate::static_binary::add_binary;

/// The applets linked into `/bin` by default.
pub const CORE_APPLETS: &[&str] = &[
    "sh", "cat", "ls", "echo", "sleep", "dd", "head", "tail", "grep", "free", "mount", "umount",
    "uname", "ps", "mkdir", "rm", "cp", "mv", "ln", "sync", "true", "false", "env", "wc", "sed",
    "dmesg", "stat", "top",
];

/// The applets linked with [`Applets::Shell`]: the init runs commands
/// with `/bin/sh -c`, and the standalone shell runs every other applet.
pub const SHELL_APPLETS: &[&str] = &["sh"];

/// Which applets get a `/bin/<applet>` symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Applets {
    /// The common applets (`CORE_APPLETS`, those this busybox has).
    Core,
    /// Only `sh`: what the init and its `sh -c` commands need.
    #[value(name = "sh")]
    Shell,
    /// Everything `busybox --list` prints.
    All,
}

/// Busybox's applet names (`busybox --list`).
fn list(busybox: &Path) -> Result<Vec<String>, XtaskError> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(io_at(busybox))?;
    Ok(parse_list(&String::from_utf8_lossy(&out.stdout)))
}

/// Applet names from `busybox --list` output (one per line).
fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect()
}

/// The applets of `available` that are in `wanted`.
fn keep(available: Vec<String>, wanted: &[&str]) -> Vec<String> {
    available
        .into_iter()
        .filter(|a| wanted.contains(&a.as_str()))
        .collect()
}

/// The applets of `available` to link for `which`.
fn select(available: Vec<String>, which: Applets) -> Vec<String> {
    match which {
        Applets::All => available,
        Applets::Core => keep(available, CORE_APPLETS),
        Applets::Shell => keep(available, SHELL_APPLETS),
    }
}

/// Adds `/bin/busybox` and the chosen applet links; returns how many links.
pub fn add(w: &mut CpioWriter, which: Applets) -> Result<usize, XtaskError> {
    let busybox = Path::new(BUSYBOX);
    add_binary(w, "bin/busybox", busybox)?;
    let applets = select(list(busybox)?, which);
    for applet in &applets {
        w.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    Ok(applets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_list_and_selects_core_applets() {
        let all = parse_list("[\n[[\nsh\ncat\nbusybox\nzcip\n\n");
        assert_eq!(all, vec!["[", "[[", "sh", "cat", "zcip"]);
        assert_eq!(select(all.clone(), Applets::Core), vec!["sh", "cat"]);
        assert_eq!(select(all.clone(), Applets::Shell), vec!["sh"]);
        assert_eq!(select(all, Applets::All).len(), 5);
    }
}
