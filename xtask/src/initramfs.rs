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

/// Assembles `guest/asm/memtide-idle.S` into a static binary.
fn build_idle(out_dir: &Path) -> Result<PathBuf, XtaskError> {
    let src = workspace_root()
        .join("guest")
        .join("asm")
        .join("memtide-idle.S");
    std::fs::create_dir_all(out_dir).map_err(io_at(out_dir))?;
    let out = out_dir.join("memtide-idle");
    run(
        Command::new("gcc")
            .args(["-nostdlib", "-static", "-no-pie", "-o"])
            .arg(&out)
            .arg(&src),
        "",
    )?;
    Ok(out)
}

/// Writes `archive` to `path` atomically.
fn write_archive(path: &Path, archive: &[u8]) -> Result<(), XtaskError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, archive).map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_at(path))
}

/// The idle initramfs: only `/init` = memtide-idle, for guests that must
/// stay up without user space (see `docs/nested-host.md`).
fn build_idle_archive(idle: &[u8], cache: &Path) -> Result<PathBuf, XtaskError> {
    let mut w = CpioWriter::new();
    w.dir("dev");
    w.char_dev("dev/console", 0o600, 5, 1);
    w.file("init", 0o755, idle);
    let out = cache.join("initramfs-idle.cpio");
    let archive = w.finish();
    write_archive(&out, &archive)?;
    println!(
        "[xtask] initramfs: {} ({} bytes, memtide-idle only)",
        out.display(),
        archive.len()
    );
    Ok(out)
}

/// Builds the initramfs; returns its path.
pub fn build() -> Result<PathBuf, XtaskError> {
    let bin_dir = build_guest_programs()?;
    let idle = std::fs::read(build_idle(&bin_dir)?).map_err(io_at(bin_dir.join("memtide-idle")))?;
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
    w.file("sbin/memtide-idle", 0o755, &idle);
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
    write_archive(&out, &archive)?;
    println!(
        "[xtask] initramfs: {} ({} KiB, init + busybox with {} applets)",
        out.display(),
        archive.len() / 1024,
        applets.len()
    );
    build_idle_archive(&idle, &cache)?;
    Ok(out)
}
