//! `cargo xtask kernel`: the guest kernel from Debian's linux-source-6.12.
//!
//! The build is cached in `$MEMTIDE_CACHE/kernel-<hash>/`, keyed by the
//! config fragment and the source tarball, and the newest build is copied to
//! `$MEMTIDE_CACHE/vmlinux` and `$MEMTIDE_CACHE/bzImage`, where `memtide run`
//! looks by default.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::error::{io_at, XtaskError};
use crate::kconfig;
use crate::paths::{
    cache_dir, kernel_dir, workspace_root, BZIMAGE_FILE, KERNEL_SRC_NAME, KERNEL_TARBALL,
    VMLINUX_FILE,
};
use crate::process::run;

/// Seconds between progress lines during the compile.
const PROGRESS_EVERY_S: u64 = 20;

/// The built kernel images.
#[derive(Debug)]
pub struct KernelImages {
    /// Uncompressed ELF kernel (what memtide boots by default).
    pub vmlinux: PathBuf,
    /// Compressed bzImage.
    pub bzimage: PathBuf,
}

/// The config fragment in the repository.
pub fn fragment_path() -> PathBuf {
    workspace_root()
        .join("guest-kernel-config")
        .join("memtide.config")
}

/// Cache key: the fragment's bytes, the tarball's name and size.
pub fn cache_key(fragment: &[u8], tarball_name: &str, tarball_size: u64) -> String {
    let mut h = Sha256::new();
    h.update(fragment);
    h.update(tarball_name.as_bytes());
    h.update(tarball_size.to_le_bytes());
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Builds (or finds in the cache) the guest kernel.
pub fn build() -> Result<KernelImages, XtaskError> {
    let cache = cache_dir()?;
    let _lock = crate::paths::lock_cache(&cache, "kernel")?;
    let fragment_file = fragment_path();
    let fragment = std::fs::read(&fragment_file).map_err(io_at(&fragment_file))?;
    let tarball = Path::new(KERNEL_TARBALL);
    let size = std::fs::metadata(tarball).map_err(io_at(tarball))?.len();
    let key = cache_key(&fragment, KERNEL_TARBALL, size);
    let out = kernel_dir(&cache, &key);
    let images = KernelImages {
        vmlinux: out.join(VMLINUX_FILE),
        bzimage: out.join(BZIMAGE_FILE),
    };
    if images.vmlinux.exists() && images.bzimage.exists() {
        println!(
            "[xtask] kernel: cached build {} (config unchanged)",
            out.display()
        );
    } else {
        let src = extract_source(&cache)?;
        compile(&src, &out, &fragment_file, &fragment)?;
    }
    // Always re-publish: the top-level copies may come from another build.
    publish(&images.vmlinux, &cache.join(VMLINUX_FILE))?;
    publish(&images.bzimage, &cache.join(BZIMAGE_FILE))?;
    println!("[xtask] kernel: {}", cache.join(VMLINUX_FILE).display());
    Ok(images)
}

/// Marker written once the source tree is completely extracted, so that an
/// interrupted `tar` is redone rather than trusted.
const EXTRACTED_MARKER: &str = ".memtide-extracted";

fn extract_source(cache: &Path) -> Result<PathBuf, XtaskError> {
    let src_parent = cache.join("src");
    let src = src_parent.join(KERNEL_SRC_NAME);
    let marker = src.join(EXTRACTED_MARKER);
    if marker.exists() {
        return Ok(src);
    }
    if src.exists() {
        std::fs::remove_dir_all(&src).map_err(io_at(&src))?;
    }
    std::fs::create_dir_all(&src_parent).map_err(io_at(&src_parent))?;
    println!(
        "[xtask] kernel: extracting {KERNEL_SRC_NAME} from {KERNEL_TARBALL} (about a minute) ..."
    );
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(KERNEL_TARBALL)
            .arg("-C")
            .arg(&src_parent),
        "",
    )?;
    std::fs::write(&marker, b"").map_err(io_at(&marker))?;
    Ok(src)
}

fn compile(
    src: &Path,
    out: &Path,
    fragment_file: &Path,
    fragment: &[u8],
) -> Result<(), XtaskError> {
    let build = out.join("build");
    std::fs::create_dir_all(&build).map_err(io_at(&build))?;
    let make = |args: &[&str]| {
        let mut c = Command::new("make");
        c.arg("-C")
            .arg(src)
            .arg(format!("O={}", build.display()))
            .args(args);
        c
    };
    println!(
        "[xtask] kernel: configuring (tinyconfig + {}) ...",
        fragment_file.display()
    );
    run(make(&["-s", "tinyconfig"]).stdout(Stdio::null()), "")?;
    run(
        Command::new(src.join("scripts/kconfig/merge_config.sh"))
            .current_dir(src)
            .arg("-m")
            .arg("-O")
            .arg(&build)
            .arg(build.join(".config"))
            .arg(fragment_file)
            .stdout(Stdio::null()),
        "",
    )?;
    run(make(&["-s", "olddefconfig"]).stdout(Stdio::null()), "")?;
    let config_path = build.join(".config");
    let config = std::fs::read_to_string(&config_path).map_err(io_at(&config_path))?;
    let dropped = kconfig::dropped(&String::from_utf8_lossy(fragment), &config);
    if dropped.is_empty() {
        println!("[xtask] kernel: every option of the fragment is in the final .config");
    } else {
        // Not fatal: a Debian kernel update may rename or re-depend an
        // option, and the guest may still boot. The tests will tell.
        println!(
            "[xtask] kernel: WARNING: {} fragment option(s) did not survive olddefconfig:",
            dropped.len()
        );
        for option in &dropped {
            println!("[xtask] kernel: WARNING:   {option}");
        }
    }

    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let log_path = out.join("build.log");
    println!(
        "[xtask] kernel: compiling vmlinux + bzImage with {jobs} jobs (2-4 minutes on 2 cores); log: {}",
        log_path.display()
    );
    let mut log = std::fs::File::create(&log_path).map_err(io_at(&log_path))?;
    let start = Instant::now();
    let mut child = make(&[&format!("-j{jobs}"), "vmlinux", "bzImage"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| XtaskError::Spawn {
            cmd: "make vmlinux bzImage".into(),
            source,
        })?;
    let mut steps = 0u64;
    let mut last_report = 0u64;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            use std::io::Write;
            let _ = writeln!(log, "{line}");
            steps += 1;
            let elapsed = start.elapsed().as_secs();
            if elapsed >= last_report + PROGRESS_EVERY_S {
                last_report = elapsed;
                println!(
                    "[xtask] kernel: {elapsed:>4} s, {steps} build steps, at: {}",
                    line.trim()
                );
            }
        }
    }
    let status = child.wait().map_err(io_at(&log_path))?;
    if !status.success() {
        return Err(XtaskError::Failed {
            cmd: "make vmlinux bzImage".into(),
            status,
            hint: format!("; see {}", log_path.display()),
        });
    }
    println!("[xtask] kernel: built in {} s", start.elapsed().as_secs());
    for (from, to) in [
        (build.join("vmlinux"), out.join(VMLINUX_FILE)),
        (build.join("arch/x86/boot/bzImage"), out.join(BZIMAGE_FILE)),
    ] {
        std::fs::copy(&from, &to).map_err(io_at(&from))?;
    }
    Ok(())
}

/// Copies `from` to `to` atomically (copy to a temporary name, then rename).
pub fn publish(from: &Path, to: &Path) -> Result<(), XtaskError> {
    if !from.exists() {
        return Err(XtaskError::Missing(from.to_path_buf()));
    }
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, to).map_err(io_at(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_changes_with_every_input() {
        let base = cache_key(b"CONFIG_A=y\n", "/usr/src/x.tar.xz", 10);
        assert_eq!(base.len(), 16);
        assert_eq!(base, cache_key(b"CONFIG_A=y\n", "/usr/src/x.tar.xz", 10));
        assert_ne!(base, cache_key(b"CONFIG_A=n\n", "/usr/src/x.tar.xz", 10));
        assert_ne!(base, cache_key(b"CONFIG_A=y\n", "/usr/src/y.tar.xz", 10));
        assert_ne!(base, cache_key(b"CONFIG_A=y\n", "/usr/src/x.tar.xz", 11));
    }

    #[test]
    fn the_fragment_in_the_repo_parses() {
        let text = std::fs::read_to_string(fragment_path()).expect("fragment");
        let opts = kconfig::parse(&text);
        assert_eq!(
            opts.get("CONFIG_VIRTIO_BALLOON").map(String::as_str),
            Some("y")
        );
        assert_eq!(opts.get("CONFIG_VT").map(String::as_str), Some("n"));
    }
}
