//! Debian packages the builds need, installed only when missing.

use std::path::Path;
use std::process::Command;

use crate::elf;
use crate::error::{io_at, XtaskError};
use crate::process::run;

/// Packages for the kernel build, the static init and the initramfs.
pub const PACKAGES: &[&str] = &[
    "linux-source-6.12",
    "build-essential",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "xz-utils",
    "busybox-static",
];

/// The busybox that goes into the initramfs (from `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// Whether dpkg reports `pkg` as installed (`dpkg -s`).
fn installed(pkg: &str) -> bool {
    Command::new("dpkg")
        .args(["-s", pkg])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("Status: install ok installed")
        })
        .unwrap_or(false)
}

/// Whether [`BUSYBOX`] exists and is statically linked.
fn busybox_is_static() -> Result<bool, XtaskError> {
    let path = Path::new(BUSYBOX);
    match std::fs::read(path) {
        Ok(bytes) => Ok(elf::is_static_executable(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Installs whatever in [`PACKAGES`] is missing (needs root, as on CI),
/// and `busybox-static` again if [`BUSYBOX`] is not a static binary.
pub fn ensure() -> Result<(), XtaskError> {
    let mut missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if !missing.contains(&"busybox-static") && !busybox_is_static()? {
        println!("[xtask] deps: {BUSYBOX} is not a static binary; reinstalling busybox-static");
        missing.push("busybox-static");
    }
    install(&missing)?;
    if !busybox_is_static()? {
        return Err(XtaskError::NotStatic(BUSYBOX.into()));
    }
    Ok(())
}

/// Installs whatever in `packages` is missing.
pub fn ensure_packages(packages: &[&str]) -> Result<(), XtaskError> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    install(&missing)
}

/// `apt-get install`s `missing`, refreshing the package lists once if the
/// first try fails.
fn install(missing: &[&str]) -> Result<(), XtaskError> {
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "[xtask] deps: installing Debian packages: {}",
        missing.join(" ")
    );
    let hint =
        " (memtide needs Debian's linux-source-6.12: Debian 12 with security updates, or newer)";
    // --reinstall: busybox-static may be "installed" with its binary replaced.
    let install_cmd = || {
        let mut c = apt(&[
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "--reinstall",
        ]);
        c.args(missing);
        c
    };
    if run(&mut install_cmd(), "").is_err() {
        // The package lists may be stale or absent (fresh containers).
        println!("[xtask] deps: install failed; refreshing the package lists and retrying");
        run(&mut apt(&["update", "-q"]), "")?;
        run(&mut install_cmd(), hint)?;
    }
    Ok(())
}

/// `apt-get <args>`, through sudo unless we are root.
pub fn apt(args: &[&str]) -> Command {
    let mut c = if is_root() {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    };
    c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
