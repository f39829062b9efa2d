//! `cargo xtask initramfs`: the static guest init plus busybox, packed into
//! an uncompressed cpio at `$MEMTIDE_CACHE/initramfs.cpio`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::CpioWriter;
use crate::error::{io_at, XtaskError};
use crate::paths::{cache_dir, workspace_root};
use crate::process::run;

/// Target triple of the guest binaries (static glibc).
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Debian's busybox-static binary.
const BUSYBOX: &str = "/bin/busybox";
/// Guest programs built from `guest/`, installed as (archive path, binary name).
const GUEST_PROGRAMS: &[(&str, &str)] = &[("init", "memtide-init")];

/// Builds the guest programs statically; returns their directory.
fn build_guest_programs() -> Result<PathBuf, XtaskError> {
    let root = workspace_root();
    let target_dir = root.join("target").join("guest");
    println!("[xtask] initramfs: building static guest programs ...");
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "-p",
                "memtide-guest",
                "--target",
                GUEST_TARGET,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C strip=symbols",
            ),
        "",
    )?;
    Ok(target_dir.join(GUEST_TARGET).join("release"))
}

fn busybox_applets(busybox: &Path) -> Result<Vec<String>, XtaskError> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(io_at(busybox))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect())
}

/// Builds the initramfs; returns its path.
pub fn build() -> Result<PathBuf, XtaskError> {
    let bin_dir = build_guest_programs()?;
    let mut w = CpioWriter::new();
    for d in [
        "dev", "proc", "sys", "tmp", "bin", "sbin", "etc", "root", "usr", "usr/bin",
    ] {
        w.dir(d);
    }
    w.char_dev("dev/console", 0o600, 5, 1);
    w.char_dev("dev/null", 0o666, 1, 3);
    for (path, name) in GUEST_PROGRAMS {
        let src = bin_dir.join(name);
        let data = std::fs::read(&src).map_err(io_at(&src))?;
        w.file(path, 0o755, &data);
    }
    let busybox = Path::new(BUSYBOX);
    let data = std::fs::read(busybox).map_err(io_at(busybox))?;
    w.file("bin/busybox", 0o755, &data);
    let applets = busybox_applets(busybox)?;
    for applet in &applets {
        w.symlink(&format!("bin/{applet}"), "busybox");
    }
    let archive = w.finish();
    let cache = cache_dir()?;
    std::fs::create_dir_all(&cache).map_err(io_at(&cache))?;
    let out = cache.join("initramfs.cpio");
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &archive).map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, &out).map_err(io_at(&out))?;
    println!(
        "[xtask] initramfs: {} ({} KiB, init + busybox with {} applets)",
        out.display(),
        archive.len() / 1024,
        applets.len()
    );
    Ok(out)
}
