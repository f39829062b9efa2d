//! `cargo xtask initramfs`: the static guest programs (init, memory agent)
//! plus busybox, packed into an uncompressed cpio at
//! `$MEMTIDE_CACHE/initramfs.cpio`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::busybox::{self, Applets};
use crate::cpio::CpioWriter;
use crate::error::{io_at, XtaskError};
use crate::paths::{cache_dir, workspace_root, INITRAMFS_FILE, INITRAMFS_IDLE_FILE};
use crate::process::run;
use crate::static_binary::add_binary;

/// Target triple of the guest binaries (static glibc). Explicit, so that
/// `RUSTFLAGS` reaches only the guest code, not host build scripts.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Guest programs built from `guest/`, installed as (archive path, binary
/// name): the init, and the memory agent the init starts
/// (`docs/agent.md`).
const GUEST_PROGRAMS: &[(&str, &str)] = &[
    ("init", "memtide-init"),
    ("bin/memtide-agent", "memtide-agent"),
    ("bin/memtide-hog", "memtide-hog"),
];
/// Release-profile overrides for the guest build (its own target dir, so
/// the host build is unaffected): the guest kernel copies every initramfs
/// byte under emulation on a nested host (several seconds per MiB), so
/// size matters more than speed here.
const SIZE_PROFILE: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s"),
    ("CARGO_PROFILE_RELEASE_LTO", "fat"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
    ("CARGO_PROFILE_RELEASE_PANIC", "abort"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "0"),
];
/// Directories of the archive (no leading slash).
const DIRS: &[&str] = &[
    "dev", "proc", "sys", "tmp", "bin", "sbin", "etc", "root", "usr", "usr/bin",
];

/// Builds the guest programs statically; returns their directory.
fn build_guest_programs() -> Result<PathBuf, XtaskError> {
    let root = workspace_root();
    let target_dir = root.join("target").join("guest");
    println!("[xtask] initramfs: building static guest programs ...");
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args(["build", "--release", "-p", "memtide-guest", "--target"])
            .arg(GUEST_TARGET)
            .arg("--target-dir")
            .arg(&target_dir)
            .env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C strip=symbols",
            )
            .envs(SIZE_PROFILE.iter().copied()),
        "",
    )?;
    Ok(target_dir.join(GUEST_TARGET).join("release"))
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
fn build_idle_archive(idle: &Path, cache: &Path) -> Result<PathBuf, XtaskError> {
    let mut w = CpioWriter::new();
    w.dir("dev")?;
    w.char_dev("dev/console", 0o600, 5, 1)?;
    add_binary(&mut w, "init", idle)?;
    let out = cache.join(INITRAMFS_IDLE_FILE);
    let archive = w.finish()?;
    write_archive(&out, &archive)?;
    println!(
        "[xtask] initramfs: {} ({} bytes, memtide-idle only)",
        out.display(),
        archive.len()
    );
    Ok(out)
}

/// Builds the initramfs with busybox links for `applets`; returns its path.
pub fn build(applets: Applets) -> Result<PathBuf, XtaskError> {
    let bin_dir = build_guest_programs()?;
    let idle = build_idle(&bin_dir)?;
    let mut w = CpioWriter::new();
    for d in DIRS {
        w.dir(d)?;
    }
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    for (path, name) in GUEST_PROGRAMS {
        add_binary(&mut w, path, &bin_dir.join(name))?;
    }
    add_binary(&mut w, "sbin/memtide-idle", &idle)?;
    let links = busybox::add(&mut w, applets)?;
    let archive = w.finish()?;
    let cache = cache_dir()?;
    std::fs::create_dir_all(&cache).map_err(io_at(&cache))?;
    let out = cache.join(INITRAMFS_FILE);
    write_archive(&out, &archive)?;
    println!(
        "[xtask] initramfs: {} ({} KiB: init, busybox, {links} applet links)",
        out.display(),
        archive.len() / 1024,
    );
    build_idle_archive(&idle, &cache)?;
    Ok(out)
}
