//! `cargo xtask initramfs`: the static multi-call guest binary (init,
//! memory agent, memory hog) plus busybox, packed into an uncompressed cpio at
//! `$MEMTIDE_CACHE/initramfs.cpio`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::busybox::{self, Applets};
use crate::cpio::CpioWriter;
use crate::error::{io_at, XtaskError};
use crate::paths::{
    cache_dir, workspace_root, INITRAMFS_FILE, INITRAMFS_IDLE_FILE, INITRAMFS_LEAN_FILE,
};
use crate::process::run;
use crate::static_binary::add_binary;

/// Target triple of the guest binaries (static glibc). Explicit, so that
/// `RUSTFLAGS` reaches only the guest code, not host build scripts.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The multi-call guest binary (`guest/src/main.rs`): init, memory agent
/// and memory hog in one static program that picks what to run by the name
/// it runs as (`docs/guest-image.md`).
const GUEST_BINARY: &str = "memtide-guest";
/// Cargo profile of the guest build (`[profile.guest]` in the workspace
/// manifest: opt-level s, fat LTO, one codegen unit, panic=abort,
/// stripped): the guest kernel unpacks every initramfs byte under
/// emulation on a nested host, so size matters more than speed here.
const GUEST_PROFILE: &str = "guest";
/// Flags for the guest code only: static glibc, and a non-PIE executable
/// (no self-relocation code and tables: about 3% smaller).
const GUEST_RUSTFLAGS: &str = "-C target-feature=+crt-static -C relocation-model=static";
/// Where the guest binary goes in the archive: `/init`, the file the
/// kernel runs.
const GUEST_PATH: &str = "init";
/// The other names of the guest binary: symbolic links to `/init`
/// (the init starts `/bin/memtide-agent`; `docs/agent.md`).
const GUEST_LINKS: &[&str] = &["bin/memtide-agent", "bin/memtide-hog"];
/// Directories of the archive (no leading slash).
const DIRS: &[&str] = &[
    "dev", "proc", "sys", "tmp", "bin", "sbin", "etc", "root", "usr", "usr/bin",
];

/// Builds the static multi-call guest binary; returns its directory.
fn build_guest_programs() -> Result<PathBuf, XtaskError> {
    let root = workspace_root();
    let target_dir = root.join("target").join("guest");
    println!("[xtask] initramfs: building the static guest binary ...");
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args(["build", "--profile", GUEST_PROFILE, "-p", "memtide-guest"])
            .args(["--bin", GUEST_BINARY, "--target", GUEST_TARGET])
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", GUEST_RUSTFLAGS),
        "",
    )?;
    Ok(target_dir.join(GUEST_TARGET).join(GUEST_PROFILE))
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
    // A name of this process's own: two xtasks may write the same archive.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
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

/// The archive's entries other than busybox: directories, console and null
/// devices, the guest binary as `/init` with its links, and memtide-idle.
fn guest_entries(bin_dir: &Path, idle: &Path) -> Result<CpioWriter, XtaskError> {
    let mut w = CpioWriter::new();
    for d in DIRS {
        w.dir(d)?;
    }
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    add_binary(&mut w, GUEST_PATH, &bin_dir.join(GUEST_BINARY))?;
    for link in GUEST_LINKS {
        w.symlink(link, &format!("/{GUEST_PATH}"))?;
    }
    add_binary(&mut w, "sbin/memtide-idle", idle)?;
    Ok(w)
}

/// Builds the initramfs with busybox links for `applets`, and the lean one
/// without busybox next to it; returns the first's path.
pub fn build(applets: Applets) -> Result<PathBuf, XtaskError> {
    let bin_dir = build_guest_programs()?;
    let idle = build_idle(&bin_dir)?;
    let cache = cache_dir()?;
    std::fs::create_dir_all(&cache).map_err(io_at(&cache))?;

    let lean = guest_entries(&bin_dir, &idle)?.finish()?;
    let lean_out = cache.join(INITRAMFS_LEAN_FILE);
    write_archive(&lean_out, &lean)?;
    println!(
        "[xtask] initramfs: {} ({} KiB: init, no shell)",
        lean_out.display(),
        lean.len() / 1024,
    );

    let mut w = guest_entries(&bin_dir, &idle)?;
    let links = busybox::add(&mut w, applets)?;
    let archive = w.finish()?;
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
